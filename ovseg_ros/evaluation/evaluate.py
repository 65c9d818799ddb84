"""Run a Segmenter over a Dataset with the dataset's class names as the vocabulary; score it.

Protocol (OVSeg's): the vocabulary is the dataset's class list in label order, the prompt
templates are the settings' (OVSeg evaluates with the 14 ViLD templates, our default), each
image is segmented at ``max_image_side`` and its labels compared at the ground truth's full
resolution; unlabelled output pixels count as misses.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from ..segmentation.panoptic import SegmentationResult
from ..segmentation.vocabulary import Vocabulary
from .datasets import Dataset, read_image
from .metrics import PanopticMetrics, PanopticScores, SemanticMetrics, SemanticScores


@dataclass
class Report:
    """What ``ovseg-eval`` prints and writes as JSON."""

    dataset: str
    images: int
    classes: list[str]
    semantic: SemanticScores
    panoptic: PanopticScores | None = None
    paper: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """The scores as JSON-ready data: per-class IoU keyed by class name, NaN as null."""
        data = asdict(self)
        data["semantic"]["per_class_iou"] = {
            name: (None if math.isnan(v) else v)
            for name, v in zip(self.classes, self.semantic.per_class_iou)
        }
        del data["classes"]
        return data


def dataset_vocabulary(dataset: Dataset) -> Vocabulary:
    """The dataset's classes as a vocabulary (its stuff classes marked when known)."""
    stuff = [dataset.names[i] for i in dataset.stuffs]
    return Vocabulary.parse(list(dataset.names), max_classes=len(dataset.names), stuff=stuff)


def score(
    dataset: Dataset, results: Iterable[tuple[int, SegmentationResult]], model: str = ""
) -> Report:
    """Accumulate metrics over (sample index, result) pairs in any order."""
    semantic = SemanticMetrics(len(dataset.names))
    panoptic = PanopticMetrics(dataset.things, dataset.stuffs) if dataset.has_panoptic else None
    images = 0
    for index, result in results:
        sample = dataset.samples[index]
        prediction = result.semantic.astype(np.int64)
        semantic.update(prediction, dataset.label(sample))
        gt = dataset.panoptic_label(sample) if panoptic is not None else None
        if gt is not None:
            panoptic.update(prediction, result.instance_map, *gt)
        images += 1
    return Report(
        dataset.spec.key,
        images,
        list(dataset.names),
        semantic.compute(),
        panoptic.compute() if panoptic is not None and panoptic.images else None,
        paper=dict(dataset.spec.paper),
    )


def segment_samples(
    segmenter, dataset: Dataset, indices: Iterable[int]
) -> Iterable[tuple[int, SegmentationResult]]:
    """(index, result) for the given samples, in the given order."""
    encoded = segmenter.encode_vocabulary(dataset_vocabulary(dataset))
    for index in indices:
        yield index, segmenter.segment(read_image(dataset.samples[index].image_path), encoded)


def table(report: Report) -> str:
    """A plain-text table shaped like OVSeg's: the dataset's column, ours then the paper's."""
    s = report.semantic
    rows = [("method", f"{report.dataset} mIoU", "pAcc", "PQ", "SQ", "RQ")]

    def fmt(v: float | None) -> str:
        return "-" if v is None or math.isnan(v) else f"{v:.1f}"

    p = report.panoptic
    rows.append(
        (
            "ovseg_ros (this run)",
            fmt(s.miou),
            fmt(s.pixel_accuracy),
            *(fmt(getattr(p, k)) if p else "-" for k in ("pq", "sq", "rq")),
        )
    )
    for model, miou in report.paper.items():
        rows.append((f"OVSeg {model} (paper)", fmt(miou), "-", "-", "-", "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.append(f"{report.images} images, {len(report.classes)} classes")
    return "\n".join(lines)


@dataclass(frozen=True)
class DatasetShard:
    """Picklable work for a remote replica: segment the given samples of a dataset."""

    key: str
    root: str

    def __call__(self, segmenter, indices: list[int]) -> list[tuple[int, SegmentationResult]]:
        return list(segment_samples(segmenter, Dataset(self.key, self.root), indices))
