"""Vocabulary rules, template sets and the per-name text embedding cache."""

import pytest
import torch

from ovseg_ros.segmentation.vocabulary import (
    TextEmbedder,
    Vocabulary,
    VocabularyError,
    check_names,
    refuse_hidden_control,
    stuff_names,
    template_set,
)
from ovseg_ros.settings.templates import VILD_TEMPLATES


def test_parse_string_and_list():
    assert Vocabulary.parse(" mug, door handle\nperson ").names == ("mug", "door handle", "person")
    assert Vocabulary.parse(["mug ", " kettle"]).names == ("mug", "kettle")


@pytest.mark.parametrize(
    "entries, words",
    [
        ("", "vocabulary is empty"),
        ([], "vocabulary is empty"),
        ("   ", "vocabulary is empty"),
        ("mug,,kettle", "entry 2 is blank"),
        ("mug, Mug", "'Mug' appears twice (entries 1 and 2)"),
        (["x" * 201], "201 characters long"),
        (["mug\x00"], "control characters"),
        ([3], "must be strings"),
    ],
)
def test_bad_vocabularies_are_refused_with_the_reason(entries, words):
    with pytest.raises(VocabularyError) as err:
        Vocabulary.parse(entries)
    assert words in str(err.value)


def test_max_classes():
    Vocabulary.parse("a, b, c", max_classes=3)
    with pytest.raises(VocabularyError, match="3 classes given; at most 2"):
        Vocabulary.parse("a, b, c", max_classes=2)


def test_stuff_classes_are_matched_ignoring_case_and_others_are_things():
    vocab = Vocabulary.parse("Floor, mug, sky", stuff=["floor", "SKY", "grass"])
    assert vocab.stuff == {"Floor", "sky"}
    assert [vocab.is_thing(i) for i in range(3)] == [False, True, False]


def test_template_sets():
    assert template_set("single") == ("a photo of a {}.",)
    assert len(template_set("vild")) == 14 == len(VILD_TEMPLATES)
    imagenet = template_set("imagenet")
    assert len(imagenet) == 80 and all("{}" in t for t in imagenet)
    with pytest.raises(VocabularyError, match="unknown template set"):
        template_set("fancy")


class CountingEncoder:
    """A deterministic 'text tower': one embedding per prompt from a fixed random table."""

    def __init__(self):
        self.prompts: list[str] = []
        self.table: dict[str, torch.Tensor] = {}

    def tokenize(self, prompts):
        self.prompts.extend(prompts)
        return torch.arange(len(self.prompts) - len(prompts), len(self.prompts))

    def encode(self, tokens):
        out = []
        for i in tokens.tolist():
            prompt = self.prompts[i]
            if prompt not in self.table:
                g = torch.Generator().manual_seed(hash(prompt) % (2**31))
                self.table[prompt] = torch.randn(8, generator=g) * 3
            out.append(self.table[prompt])
        return torch.stack(out)


def test_embeddings_average_normalised_templates_and_cache_per_name():
    enc = CountingEncoder()
    embedder = TextEmbedder(enc.encode, enc.tokenize, "cpu", templates="vild")
    first = embedder.encode(Vocabulary.parse("mug, kettle"))
    assert first.embeddings.shape == (2, 8)
    expected = torch.stack([enc.table[t.format("mug")] for t in VILD_TEMPLATES])
    expected = expected / expected.norm(dim=1, keepdim=True)
    expected = expected.mean(0) / expected.mean(0).norm()
    torch.testing.assert_close(first.embeddings[0], expected)
    assert embedder.encoded_names == 2
    second = embedder.encode(Vocabulary.parse("kettle, person"))
    assert embedder.encoded_names == 3  # only 'person' was new
    torch.testing.assert_close(second.embeddings[0], first.embeddings[1])
    assert second.version > first.version
    embedder.set_templates("single")
    embedder.encode(Vocabulary.parse("mug"))
    assert embedder.encoded_names == 5  # other templates: 'mug' and 'others' encoded again


def test_single_class_gets_ovseg_others_row():
    enc = CountingEncoder()
    embedder = TextEmbedder(enc.encode, enc.tokenize, "cpu", templates="single")
    encoded = embedder.encode(Vocabulary.parse("mug"))
    assert encoded.embeddings.shape[0] == 2  # and the 'others' row
    assert "a photo of a others." in enc.prompts


@pytest.mark.parametrize(
    "entries, reason",
    [
        (["mug\nkettle"], "has control characters"),
        (["x" * 10_000], "10000 characters long"),
        (["floor", "Floor"], "'Floor' appears twice"),
        ([f"c{i}" for i in range(300)], "300 classes given; at most 256"),
    ],
)
def test_stuff_classes_follow_the_vocabulary_rules(entries, reason):
    from ovseg_ros.segmentation.vocabulary import stuff_names

    with pytest.raises(VocabularyError, match=reason):
        stuff_names(entries)
    with pytest.raises(VocabularyError, match="stuff_classes"):
        Vocabulary.parse("floor, mug", stuff=entries)


def test_blank_stuff_entries_are_dropped_so_a_blank_list_clears_it():
    from ovseg_ros.segmentation.vocabulary import stuff_names

    assert stuff_names([""]) == ()
    assert stuff_names([" floor ", ""]) == ("floor",)


def test_name_of_exactly_max_length_is_accepted_one_more_is_refused():
    assert Vocabulary.parse(["a" * 200]).names == ("a" * 200,)
    with pytest.raises(VocabularyError):
        Vocabulary.parse(["a" * 201])


def test_delete_character_is_refused():
    with pytest.raises(VocabularyError, match="control"):
        Vocabulary.parse(["mug\x7f"])


def test_delete_character_is_refused_by_each_check():
    # parse runs both checks, so each must refuse DEL on its own for the rule to hold.
    with pytest.raises(VocabularyError, match="control characters"):
        check_names(["mug\x7f"], max_classes=5)
    with pytest.raises(VocabularyError, match="control characters"):
        refuse_hidden_control(["\x7fmug"])
    check_names(["mug~"], max_classes=5)  # 0x7e, the character before DEL, is fine


def test_control_characters_that_strip_would_hide_are_refused():
    for name in ("\x1emug", "mug\x1f", "\x0bmug", "\x1cmug"):
        with pytest.raises(VocabularyError, match="control characters"):
            Vocabulary.parse([name, "kettle"])
        with pytest.raises(VocabularyError, match="control characters"):
            stuff_names([name])
    assert Vocabulary.parse([" mug\t", "kettle\n"]).names == ("mug", "kettle")
