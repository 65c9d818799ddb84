"""Segmenter: (RGB image, encoded vocabulary) -> SegmentationResult, OVSeg's two-stage recipe.

SAM proposes class-agnostic masks, mask-adapted CLIP classifies each against the vocabulary,
and the panoptic fusion turns them into label and instance images. The ROS node and the CLI
both go through this class and nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

import cv2
import numpy as np
import torch

from ..models.weights import ClipBundle, load_clip, load_sam, model_device
from ..settings.config import Settings, SettingsError, start_only_changes
from . import panoptic
from .classifier import MaskClassifier, class_probabilities
from .panoptic import SegmentationResult
from .proposals import MaskProposals, MaskProposer
from .vocabulary import EncodedVocabulary, TextEmbedder, Vocabulary


class Classified(NamedTuple):
    """The classify stage's output: [N, C] class probabilities and the [N, D] unit CLIP
    embeddings they came from (each instance keeps its own, for tracking by appearance)."""

    probs: torch.Tensor
    embeddings: torch.Tensor


StageCallback = Callable[[str, float, Any], None]
"""Called by ``Segmenter.segment`` after each stage, in order: ``(stage, milliseconds, output)``
with stage 'proposals' (output: MaskProposals), 'classify' (Classified),
'fuse' (the SegmentationResult) and 'total' (the same result). The milliseconds are those of
``result.timings_ms``, read after a device sync."""


class ImageError(ValueError):
    """The image cannot be segmented; the message says what is wrong with it."""


def check_image(image: np.ndarray) -> None:
    """Refuse anything but a non-empty HxWx3 uint8 array, with a reason."""
    if not isinstance(image, np.ndarray):
        raise ImageError(f"expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ImageError(f"expected 8-bit RGB (uint8), got {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ImageError(f"expected an HxWx3 RGB image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image has zero size: {image.shape[1]}x{image.shape[0]}")


def working_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(height, width) scaled so the longest side is at most max_side (0: unchanged)."""
    longest = max(height, width)
    if max_side <= 0 or longest <= max_side:
        return height, width
    scale = max_side / longest
    return max(1, round(height * scale)), max(1, round(width * scale))


class Segmenter:
    """Owns the models and runs the pipeline. ``segment`` may run in one thread while
    ``encode_vocabulary`` runs in another (the text tower is separate from the image path).

    ``on_stage`` (optional, also settable later) is told each stage's time and output as the
    stage ends: for statistics and benchmarks that need more than ``result.timings_ms``.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        sam: torch.nn.Module | None = None,
        clip: ClipBundle | None = None,
        on_stage: StageCallback | None = None,
    ):
        settings.validate()
        self._settings = settings
        self.on_stage = on_stage
        self.device = model_device(settings)
        sam = sam if sam is not None else load_sam(settings, self.device)
        clip = clip if clip is not None else load_clip(settings, self.device)
        self.clip = clip
        self.proposer = MaskProposer(sam, settings)
        self.classifier = MaskClassifier(
            clip, mode=settings.classifier_mode, precision=settings.precision
        )
        self.text = TextEmbedder(
            clip.model.encode_text, clip.tokenizer, self.device, settings.templates
        )

    @property
    def settings(self) -> Settings:
        """The settings the next frame runs with."""
        return self._settings

    def update_settings(self, settings: Settings) -> None:
        """Apply live changes (thresholds, granularity, mode...); start-only ones are refused."""
        settings.validate()
        fixed = start_only_changes(self._settings, settings)
        if fixed:
            raise SettingsError(
                f"{', '.join(fixed)} can only be set at start (restart the "
                "node or the command to change them)"
            )
        self.proposer.update_settings(settings)
        self.classifier.mode = settings.classifier_mode
        self.text.set_templates(settings.templates)
        self._settings = settings

    def encode_vocabulary(self, vocabulary: Vocabulary) -> EncodedVocabulary:
        """Text embeddings for a vocabulary (only new names are run through the encoder)."""
        return self.text.encode(vocabulary)

    @torch.inference_mode()
    def segment(self, image: np.ndarray, vocabulary: EncodedVocabulary) -> SegmentationResult:
        """Segment one HxWx3 uint8 RGB image with one vocabulary; outputs are at HxW."""
        check_image(image)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        height, width = image.shape[:2]
        work_h, work_w = working_size(height, width, self._settings.max_image_side)
        work = (
            np.ascontiguousarray(image)
            if (work_h, work_w) == (height, width)
            else cv2.resize(image, (work_w, work_h), interpolation=cv2.INTER_AREA)
        )
        proposals = self._timed(timings, "proposals", self.proposer.propose, work)
        classified = self._timed(timings, "classify", self._classify, work, proposals, vocabulary)
        result = self._timed(
            timings, "fuse", self._fuse, proposals, classified, vocabulary, (height, width)
        )
        timings["total"] = (time.perf_counter() - start) * 1000.0
        result.timings_ms = timings
        if self.on_stage is not None:
            self.on_stage("total", timings["total"], result)
        return result

    def _classify(
        self, work: np.ndarray, proposals: MaskProposals, vocabulary: EncodedVocabulary
    ) -> Classified:
        """The proposals' CLIP embeddings and class probabilities on the working image."""
        if not len(proposals):
            width = self.classifier.clip.model.visual.output_dim
            return Classified(
                torch.zeros(0, vocabulary.embeddings.shape[0], device=self.device),
                torch.zeros(0, width, device=self.device),
            )
        # A frame may be a read-only view of message bytes; torch wants writable.
        pixels = work if work.flags.writeable else work.copy()
        image_t = torch.from_numpy(pixels).to(self.device)
        embeddings = self.classifier.embed_masks(image_t, proposals.masks, proposals.boxes)
        return Classified(class_probabilities(embeddings, vocabulary.embeddings), embeddings)

    def _fuse(
        self,
        proposals: MaskProposals,
        classified: Classified,
        vocabulary: EncodedVocabulary,
        size: tuple[int, int],
    ) -> SegmentationResult:
        """Label and instance images at the input size ``(height, width)``."""
        settings = self._settings
        result = panoptic.fuse(
            proposals.masks,
            classified.probs,
            proposals.predicted_iou,
            vocabulary.vocabulary,
            granularity=settings.granularity,
            unknown_thresh=settings.unknown_thresh,
            vocabulary_version=vocabulary.version,
            embeddings=classified.embeddings,
        )
        if result.semantic.shape != size:
            result = panoptic.resized(result, *size)
        return result

    def _timed(
        self, timings: dict[str, float], name: str, step: Callable[..., Any], *args: Any
    ) -> Any:
        """``step(*args)``, its milliseconds (after a device sync) in timings[name], and
        on_stage told."""
        start = time.perf_counter()
        output = step(*args)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        timings[name] = (time.perf_counter() - start) * 1000.0
        if self.on_stage is not None:
            self.on_stage(name, timings[name], output)
        return output
