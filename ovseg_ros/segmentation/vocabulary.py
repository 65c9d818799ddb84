"""The vocabulary: parsing and validation, and cached text embeddings of its names (the prompt
templates they go through are ovseg_ros.settings.templates)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from ..settings.templates import TEMPLATE_SETS
from .vocabulary_text import VocabularyError, parse_names, refuse_hidden_control

MAX_NAME_LENGTH = 200

# Prompts per text-encoder call (more when one name has more templates): bounds the
# encoder's memory for any vocabulary size; BENCHMARKS.md has the measured memory and time.
TEXT_BATCH = 256

# With a single class, OVSeg's demo adds this one so the softmax has something to compare with.
OTHERS = "others"


def template_set(name: str) -> tuple[str, ...]:
    """The prompt templates of a set named in ``templates.TEMPLATE_SETS`` ('vild' ...);
    VocabularyError for any other name."""
    if name not in TEMPLATE_SETS:
        raise VocabularyError(f"unknown template set {name!r}: use {', '.join(TEMPLATE_SETS)}")
    return TEMPLATE_SETS[name]()


def check_names(names: Sequence[str], *, max_classes: int, what: str = "") -> None:
    """Refuse (VocabularyError) names over MAX_NAME_LENGTH characters, with control
    characters, appearing twice ignoring case, or more than ``max_classes`` of them.
    ``what`` prefixes the messages ('stuff_classes ')."""
    if len(names) > max_classes:
        raise VocabularyError(
            f"{what}{len(names)} classes given; at most {max_classes} are "
            "allowed (setting max_classes)"
        )
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if len(name) > MAX_NAME_LENGTH:
            raise VocabularyError(
                f"{what}entry {position} is {len(name)} characters long; "
                f"the limit is {MAX_NAME_LENGTH}"
            )
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise VocabularyError(f"{what}entry {position} ({name!r}) has control characters")
        key = name.casefold()
        if key in seen:
            raise VocabularyError(
                f"{what}{name!r} appears twice (entries {seen[key]} and "
                f"{position}); class names must be unique"
            )
        seen[key] = position


def stuff_names(entries: Iterable[str], *, max_classes: int = 256) -> tuple[str, ...]:
    """The stuff_classes list, stripped and checked like a vocabulary (check_names).

    Blank entries are dropped, so ``['']`` clears the list (as ``[]`` does).
    """
    entries = list(entries)
    for entry in entries:
        if not isinstance(entry, str):
            raise VocabularyError(f"stuff_classes entries must be strings, got {entry!r}")
    refuse_hidden_control(entries, "stuff_classes ")
    names = [name for name in (entry.strip() for entry in entries) if name]
    check_names(names, max_classes=max_classes, what="stuff_classes ")
    return tuple(names)


@dataclass(frozen=True)
class Vocabulary:
    """An ordered, validated list of class names; class index = position in ``names``.

    ``stuff`` holds the names that are amorphous regions (merged into one region per class
    in the panoptic output); every other class is a countable thing.
    """

    names: tuple[str, ...]
    stuff: frozenset[str] = frozenset()

    @classmethod
    def parse(
        cls, entries: str | Sequence[str], *, max_classes: int = 256, stuff: Iterable[str] = ()
    ) -> Vocabulary:
        """Build from a list, or from text as ``parse_names`` reads it; refuse bad input with a
        reason.

        Whitespace is stripped. Refused: no entries at all, blank entries, duplicates (ignoring
        case), entries longer than MAX_NAME_LENGTH or with control characters, and more than
        ``max_classes`` entries. ``stuff`` names the classes that are stuff when they are in
        the vocabulary (matched ignoring case); the others are ignored, so one stuff list can
        serve every vocabulary.
        """
        if isinstance(entries, str):
            raw = parse_names(entries)
        else:
            raw = list(entries)
            for entry in raw:
                if not isinstance(entry, str):
                    raise VocabularyError(f"vocabulary entries must be strings, got {entry!r}")
        refuse_hidden_control(raw)
        names = [entry.strip() for entry in raw]
        if not names or names == [""]:
            raise VocabularyError(
                "vocabulary is empty: give at least one class name, e.g. 'mug, door handle'"
            )
        for position, name in enumerate(names, start=1):
            if not name:
                raise VocabularyError(f"entry {position} is blank (check for a stray comma)")
        check_names(names, max_classes=max_classes)
        stuff_keys = {name.casefold() for name in stuff_names(stuff, max_classes=max_classes)}
        return cls(tuple(names), frozenset(n for n in names if n.casefold() in stuff_keys))

    @classmethod
    def from_settings(cls, entries: str | Sequence[str], settings) -> Vocabulary:
        """``parse`` with the limits and stuff classes of a Settings object."""
        return cls.parse(entries, max_classes=settings.max_classes, stuff=settings.stuff_classes)

    def __len__(self) -> int:
        return len(self.names)

    def is_thing(self, class_index: int) -> bool:
        """True unless the class at class_index is a stuff class."""
        return self.names[class_index] not in self.stuff


@dataclass(frozen=True)
class EncodedVocabulary:
    """A vocabulary with its text embeddings, swapped as one object so a frame never mixes two.

    ``embeddings`` is [C, D] (unit rows), or [C + 1, D] when the single class got OVSeg's
    extra 'others' row; ``version`` increases with every change.
    """

    vocabulary: Vocabulary
    embeddings: torch.Tensor
    version: int


class TextEmbedder:
    """Text embeddings per class name, cached so changing one word encodes only that word.

    A class embedding is OVSeg's: each template's text embedding normalised, averaged over
    the templates, normalised again.
    """

    def __init__(
        self,
        encode_text: Callable[[torch.Tensor], torch.Tensor],
        tokenizer: Callable[[list[str]], torch.Tensor],
        device: torch.device | str,
        templates: str = "vild",
    ):
        self._encode_text = encode_text
        self._tokenizer = tokenizer
        self._device = torch.device(device)
        self._templates = templates
        self._cache: dict[tuple[str, str], torch.Tensor] = {}
        self._version = 0
        self._lock = threading.Lock()
        self.encoded_names = 0  # how many names were run through the text encoder so far

    def set_templates(self, templates: str) -> None:
        """Use another template set from the next encoding (cached embeddings are kept per
        set); an unknown name raises VocabularyError and changes nothing."""
        template_set(templates)  # refuse unknown names before anything changes
        self._templates = templates

    @torch.inference_mode()
    def embed_names(self, names: Sequence[str]) -> torch.Tensor:
        """[len(names), D] unit-norm float32 embeddings, encoding only names not cached yet.

        Names go through the text encoder a few at a time, whole names per call: at most
        max(TEXT_BATCH, number of templates) prompts at once, so the encoder's activations
        are bounded whatever the vocabulary size (they grow linearly with the prompts in
        one call); only the [names, D] results accumulate.
        """
        templates = self._templates
        prompts_per_name = template_set(templates)
        missing = [n for n in dict.fromkeys(names) if (n, templates) not in self._cache]
        names_per_call = max(1, TEXT_BATCH // len(prompts_per_name))
        for start in range(0, len(missing), names_per_call):
            chunk = missing[start : start + names_per_call]
            prompts = [t.format(n) for n in chunk for t in prompts_per_name]
            tokens = self._tokenizer(prompts).to(self._device)
            features = self._encode_text(tokens).float()
            features = features / features.norm(dim=-1, keepdim=True)
            per_name = features.reshape(len(chunk), -1, features.shape[-1]).mean(dim=1)
            per_name = per_name / per_name.norm(dim=-1, keepdim=True)
            for name, embedding in zip(chunk, per_name):
                self._cache[(name, templates)] = embedding
            self.encoded_names += len(chunk)
        return torch.stack([self._cache[(n, templates)] for n in names])

    def encode(self, vocabulary: Vocabulary) -> EncodedVocabulary:
        """Embed a vocabulary (adding OVSeg's 'others' row for a single class)."""
        has_others = len(vocabulary) == 1 and vocabulary.names[0].casefold() != OTHERS
        names = list(vocabulary.names) + ([OTHERS] if has_others else [])
        embeddings = self.embed_names(names)
        with self._lock:
            self._version += 1
            version = self._version
        return EncodedVocabulary(vocabulary, embeddings, version)
