"""Instrumentation of the pipeline benchmark: device-synced clocks, the split of a propose call
around SAM's image encoder, the Segmenter's per-stage report, and the per-frame record.

Nothing here changes pipeline code: the encoder split uses forward hooks on
``sam.image_encoder``, and the Segmenter reports its stages through its ``on_stage`` callback.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ovseg_ros.segmentation.proposals import MaskProposals

# Masks are "the same" when each stock mask has a fast mask with at least this IoU.
MASK_IOU_TARGET = 0.95
# fp32 batched crops must give the reference's probabilities within this (absolute); the
# crops equal the reference up to float rounding, and softmax(100 * cos) amplifies a cosine
# difference by at most 25x.
PROB_TOLERANCE_FP32 = 1e-3


# --------------------------------------------------------------------------- clocks


class Clock:
    """Wall-clock reads that wait for the device first, so GPU work is counted where it
    is issued."""

    def __init__(self, device: torch.device):
        self.device = device

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()


class EncoderSpans:
    """Forward hooks on SAM's image encoder recording (start, end) of every call."""

    def __init__(self, encoder: torch.nn.Module, clock: Clock):
        self.spans: list[tuple[float, float]] = []
        self._start = 0.0
        self._clock = clock
        encoder.register_forward_pre_hook(self._before)
        encoder.register_forward_hook(self._after)

    def _before(self, module: torch.nn.Module, args: Any) -> None:
        self._start = self._clock.now()

    def _after(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        self.spans.append((self._start, self._clock.now()))


def timed_propose(
    propose: Callable[[np.ndarray], MaskProposals],
    image: np.ndarray,
    clock: Clock,
    encoder: EncoderSpans,
) -> tuple[MaskProposals, dict]:
    """Run one propose call; milliseconds of proposals and its preprocess / encoder /
    post_encoder split (None when the encoder did not run exactly once in the call)."""
    encoder.spans.clear()
    start = clock.now()
    proposals = propose(image)
    return proposals, proposal_split(start, clock.now(), encoder)


def proposal_split(start: float, end: float, encoder: EncoderSpans) -> dict:
    """Milliseconds of a propose call that ran from ``start`` to ``end`` (clock seconds):
    proposals, and its preprocess / encoder / post_encoder split around the encoder span
    recorded in it (None each when the encoder did not run exactly once)."""
    times = {"proposals": ms(end - start)}
    if len(encoder.spans) == 1:
        enc_start, enc_end = encoder.spans[0]
        times.update(
            preprocess=ms(enc_start - start),
            encoder=ms(enc_end - enc_start),
            post_encoder=ms(end - enc_end),
        )
    else:
        times.update(preprocess=None, encoder=None, post_encoder=None)
    return times


class StageRecorder:
    """``Segmenter.on_stage``: each stage's (output, milliseconds) of the latest segment
    call, and the proposals stage split around the encoder, so the fast pipeline's proposals
    and probabilities can be compared and timed without a second run.

    The Segmenter syncs the device before it reports a stage, so the clock read here is the
    stage's end; its start is that end less the stage's milliseconds.
    """

    def __init__(self, clock: Clock, encoder: EncoderSpans):
        self._clock, self._encoder = clock, encoder
        self.last: dict[str, tuple[Any, float]] = {}
        self.proposal_times: dict | None = None

    def clear(self) -> None:
        self.last.clear()
        self.proposal_times = None
        self._encoder.spans.clear()

    def __call__(self, stage: str, milliseconds: float, output: Any) -> None:
        self.last[stage] = (output, milliseconds)
        if stage == "proposals":
            end = self._clock.now()
            self.proposal_times = proposal_split(end - milliseconds / 1000.0, end, self._encoder)


def ms(seconds: float) -> float:
    return seconds * 1000.0


# --------------------------------------------------------------------------- fidelity


def best_ious(reference: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
    """[A] IoU of each reference mask [A, H, W] with its best match among candidates
    [B, H, W] (both bool; two empty masks count as IoU 1)."""
    if reference.shape[0] == 0:
        return torch.zeros(0)
    if candidates.shape[0] == 0:
        return torch.zeros(reference.shape[0])
    a = reference.flatten(1).float()
    b = candidates.to(reference.device).flatten(1).float()
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None] - inter
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter))
    return iou.max(dim=1).values.cpu()


def same_proposals(a: MaskProposals, b: MaskProposals) -> bool:
    """The same masks and boxes in the same order (what the classifiers read)."""
    return (
        a.masks.shape == b.masks.shape
        and bool(torch.equal(a.masks, b.masks))
        and bool(torch.equal(a.boxes.to(b.boxes), b.boxes))
    )


# --------------------------------------------------------------------------- the record


@dataclass
class Samples:
    """Per-frame measurements of both sides."""

    stock: dict[str, list[float]] = field(default_factory=dict)
    fast: dict[str, list[float]] = field(default_factory=dict)
    stock_counts: list[int] = field(default_factory=list)
    fast_counts: list[int] = field(default_factory=list)
    min_best_iou: list[float] = field(default_factory=list)
    area_fraction: list[float] = field(default_factory=list)
    prob_diff: list[float] = field(default_factory=list)
    classified: list[int] = field(default_factory=list)
    classify_reused: int = 0  # frames whose fast crop timing is the Segmenter's own call
    peak_mib: dict[str, float] = field(default_factory=dict)

    def add(self, side: str, times: dict[str, float | None]) -> None:
        for name, value in times.items():
            if value is not None:
                getattr(self, side).setdefault(name, []).append(value)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def note_peak(record: Samples, side: str, device: torch.device) -> None:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        record.peak_mib[side] = max(record.peak_mib.get(side, 0.0), peak)
