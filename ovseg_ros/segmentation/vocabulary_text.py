"""Vocabulary lists written as text: the one reader for ``--vocab``, ``--vocab-file``,
``--stuff``, the launch file's ``vocabulary`` argument and the node's vocabulary topic.

Torch-free, so that the launch file can import it.
"""

from __future__ import annotations

import yaml

BOM = "\ufeff"


class VocabularyError(ValueError):
    """The vocabulary cannot be used; the message says which entry and why."""


def refuse_hidden_control(entries: list[str], what: str = "") -> None:
    """Refuse control characters that str.strip() would remove unseen (\\x0b, \\x0c,
    \\x1c-\\x1f) before the entries are stripped; tabs and line ends at the ends are
    whitespace, inside a name the vocabulary's checks refuse them."""
    for position, entry in enumerate(entries, start=1):
        if any((ord(c) < 32 and c not in "\t\n\r") or ord(c) == 127 for c in entry):
            raise VocabularyError(f"{what}entry {position} ({entry!r}) has control characters")


def parse_names(text: str, what: str = "") -> list[str]:
    """'mug, door handle', one name per line, or a YAML list '[mug, "door handle"]' ->
    the names, stripped, in order.

    A leading UTF-8 byte order mark is dropped and lines holding only spaces or tabs are
    skipped (a trailing blank line is not a class). Blank entries between commas are kept as
    '' so that the vocabulary's checks can point at the stray comma. In the YAML form every
    entry stays a string: a class called yes, no, null or 1.5 keeps its name. Only ``\\n``,
    ``\\r\\n`` and ``\\r`` end lines, so other control characters reach the checks instead of
    splitting names unseen. ``what`` prefixes the messages ('stuff_classes ').
    """
    text = text.removeprefix(BOM)
    if text.strip().startswith("["):
        entries = yaml_list(text, what)
    else:
        lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
        entries = [part for line in lines if line.strip(" \t") for part in line.split(",")]
    refuse_hidden_control(entries, what)
    return [entry.strip() for entry in entries]


def yaml_list(text: str, what: str = "") -> list[str]:
    """A one-level YAML list of strings (BaseLoader: no type guessing)."""
    try:
        value = yaml.load(text, Loader=yaml.BaseLoader)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise VocabularyError(
            f"{what}list {text.strip()!r} is not a valid YAML list "
            f"({problem}); write it as [mug, door handle] or "
            "'mug, door handle'"
        ) from None
    if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
        raise VocabularyError(
            f"{what}list {text.strip()!r} must be a flat list of names, e.g. [mug, door handle]"
        )
    return value


def decode_names_file(data: bytes, source: str) -> str:
    """The text of a vocabulary file: UTF-8, with or without a byte order mark; anything
    else is refused with the offending byte and how to convert the file."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise VocabularyError(
            f"{source} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
            "save it as UTF-8, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8"
        ) from None
