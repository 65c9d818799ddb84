"""TextEmbedder: the text encoder sees a bounded number of prompts per call."""

from __future__ import annotations

import pytest
import torch

from ovseg_ros.segmentation import vocabulary as vocabulary_module
from ovseg_ros.segmentation.vocabulary import TextEmbedder, Vocabulary, template_set


class RecordingEncoder:
    """A deterministic 'text tower' (one random vector per prompt) that records call sizes."""

    def __init__(self):
        self.prompts: list[str] = []
        self.calls: list[int] = []

    def tokenize(self, prompts: list[str]) -> torch.Tensor:
        self.prompts.extend(prompts)
        return torch.arange(len(self.prompts) - len(prompts), len(self.prompts))

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(tokens))
        rows = []
        for i in tokens.tolist():
            g = torch.Generator().manual_seed(sum(map(ord, self.prompts[i])) * 7919 % 2**31)
            rows.append(torch.randn(8, generator=g))
        return torch.stack(rows)


@pytest.mark.parametrize("templates", ["single", "vild", "imagenet"])
def test_text_is_encoded_in_bounded_chunks_with_unchanged_embeddings(templates, monkeypatch):
    names = ", ".join(f"class {i}" for i in range(40))
    whole_encoder = RecordingEncoder()
    monkeypatch.setattr(vocabulary_module, "TEXT_BATCH", 10**6)
    whole = TextEmbedder(whole_encoder.encode, whole_encoder.tokenize, "cpu", templates)
    expected = whole.encode(Vocabulary.parse(names)).embeddings
    assert whole_encoder.calls == [40 * len(template_set(templates))]

    monkeypatch.setattr(vocabulary_module, "TEXT_BATCH", 30)
    encoder = RecordingEncoder()
    chunked = TextEmbedder(encoder.encode, encoder.tokenize, "cpu", templates)
    got = chunked.encode(Vocabulary.parse(names)).embeddings
    bound = max(30, len(template_set(templates)))
    assert len(encoder.calls) > 1 and max(encoder.calls) <= bound
    assert sum(encoder.calls) == 40 * len(template_set(templates))
    torch.testing.assert_close(got, expected, atol=0, rtol=0)
    assert chunked.encoded_names == 40
