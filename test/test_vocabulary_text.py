"""The vocabulary-list reader shared by the CLI, the launch file and the vocabulary topic."""

import pytest

from ovseg_ros.offline.cli import main
from ovseg_ros.segmentation.vocabulary import Vocabulary
from ovseg_ros.segmentation.vocabulary_text import VocabularyError, decode_names_file, parse_names


@pytest.mark.parametrize(
    "text, names",
    [
        ("mug, door handle\nperson", ["mug", "door handle", "person"]),
        ("\ufeffmug\nkettle\n", ["mug", "kettle"]),  # byte order mark
        ("mug\nkettle\n\n  \n\t\n", ["mug", "kettle"]),  # trailing blank lines
        ("mug\n\nkettle", ["mug", "kettle"]),  # a blank line between
        ("mug\r\nkettle\r\n", ["mug", "kettle"]),  # Windows line ends
        ('[yes, no, null, 1.5, "door handle"]', ["yes", "no", "null", "1.5", "door handle"]),
        ("\ufeff[mug, kettle]", ["mug", "kettle"]),
        ("mug,,kettle", ["mug", "", "kettle"]),  # kept for the stray-comma check
        ("", []),
        ("[]", []),
    ],
)
def test_names_from_text(text, names):
    assert parse_names(text) == names


@pytest.mark.parametrize(
    "text, words",
    [
        ("mug\x0bkettle", "control characters"),  # would have split the name unseen
        ("mug\x1ekettle", "control characters"),
        ("[mug, [cup, glass]]", "flat list"),
        ("[mug, kettle", "not a valid YAML list"),
    ],
)
def test_bad_text_is_refused_with_the_reason(text, words):
    with pytest.raises(VocabularyError, match=words):
        parse_names(text)


def test_a_trailing_blank_line_is_no_stray_comma_but_a_stray_comma_still_is():
    assert Vocabulary.parse("mug\nkettle\n\n").names == ("mug", "kettle")
    with pytest.raises(VocabularyError, match="entry 2 is blank"):
        Vocabulary.parse("mug,\nkettle")


def test_utf8_files_with_a_byte_order_mark_and_latin1_files():
    assert decode_names_file("\ufeffcafé\n".encode("utf-8"), "f") == "café\n"
    with pytest.raises(VocabularyError) as err:
        decode_names_file("mug\ncafé\n".encode("latin-1"), "--vocab-file v.txt")
    assert "--vocab-file v.txt is not UTF-8 text (byte 0xe9 at offset 7)" in str(err.value)
    assert "iconv" in str(err.value)


def test_cli_vocab_file_errors_are_one_line_before_any_model_loads(tmp_path, capsys):
    image = tmp_path / "in"
    image.mkdir()
    vocab = tmp_path / "classes.txt"
    vocab.write_bytes("mug\ncafé\n".encode("latin-1"))
    assert main([str(image), "--vocab-file", str(vocab), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ovseg-segment: error:") and "not UTF-8 text" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
