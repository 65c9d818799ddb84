"""Segmentation metrics: mIoU / per-class IoU / pixel accuracy, and PQ / SQ / RQ.

Semantic segmentation is scored as OVSeg's evaluator scores it
(``open_vocab_seg/evaluation/generalized_sem_seg_evaluation.py``, built on detectron2's
SemSegEvaluator of its time): one confusion matrix summed over the whole dataset, IoU and
accuracy per class from it, and the mean IoU over the classes that occur in the ground truth
or in the predictions (a class only predicted counts 0). Where it differs: OVSeg takes an
argmax, so every pixel has a class; ours may leave pixels unlabelled, and those count as
misses of the ground-truth class. OVSeg also reports frequency-weighted IoU and a seen/unseen
split; this module does not. The confusion matrix is torchmetrics'.

Panoptic quality is panopticapi's ``pq_compute`` (the COCO panoptic reference), crowd
regions included; torchmetrics' PanopticQuality has no crowd regions, so the counting here
is our own, pinned to panopticapi's numbers by tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix

IGNORE = -1  # ground-truth value of pixels that are not scored


@dataclass
class SemanticScores:
    """Totals over a dataset, in percent (NaN for a class absent from GT and predictions)."""

    miou: float
    pixel_accuracy: float
    mean_accuracy: float
    per_class_iou: list[float]
    pixels: int


class SemanticMetrics:
    """Accumulates a [C+1, C+1] confusion matrix; row = ground truth, column = prediction.

    Predictions outside 0..C-1 (unlabelled pixels) count in the extra column C: they are
    misses for the ground-truth class, never a false positive of any class.
    """

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self._matrix = MulticlassConfusionMatrix(
            num_classes + 1, ignore_index=IGNORE, validate_args=False
        )

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """prediction: [H, W] class indices (anything else = unlabelled); target: [H, W]
        class indices 0..C-1 or IGNORE. Same shape."""
        if prediction.shape != target.shape:
            raise ValueError(
                f"prediction {prediction.shape} and target {target.shape} differ in shape"
            )
        pred = torch.from_numpy(prediction.astype(np.int64))
        pred[(pred < 0) | (pred >= self.num_classes)] = self.num_classes
        self._matrix.update(pred.flatten(), torch.from_numpy(target.astype(np.int64)).flatten())

    def confusion(self) -> np.ndarray:
        """[C, C+1] counts (the last column: ground truth left unlabelled)."""
        return self._matrix.compute().numpy()[: self.num_classes].astype(np.int64)

    def compute(self) -> SemanticScores:
        """mIoU, pixel and mean accuracy (percent) over the images so far. A class's IoU is
        NaN when it is neither in the ground truth nor predicted, its accuracy NaN when it is
        not in the ground truth; NaNs are left out of the means."""
        matrix = self.confusion()
        tp = np.diag(matrix[:, : self.num_classes]).astype(np.float64)
        gt = matrix.sum(axis=1).astype(np.float64)
        predicted = matrix[:, : self.num_classes].sum(axis=0).astype(np.float64)
        union = gt + predicted - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            accuracy = np.where(gt > 0, tp / gt, np.nan)
        total = gt.sum()
        return SemanticScores(
            miou=100.0 * float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            pixel_accuracy=100.0 * float(tp.sum() / total) if total else float("nan"),
            mean_accuracy=100.0 * float(np.nanmean(accuracy))
            if np.isfinite(accuracy).any()
            else float("nan"),
            per_class_iou=[100.0 * float(v) for v in iou],
            pixels=int(total),
        )


@dataclass
class PanopticScores:
    """COCO's panoptic quality over a dataset, in percent."""

    pq: float
    sq: float
    rq: float


@dataclass(frozen=True)
class Segment:
    """One ground-truth segment of a COCO panoptic annotation."""

    class_index: int
    iscrowd: bool = False


class PanopticMetrics:
    """Panoptic quality as panopticapi's ``pq_compute`` counts it, image by image.

    Ground truth per image: [H, W] segment ids (0 = void) and the listed segments (id ->
    Segment, in the annotation's order). Prediction: [H, W] class and instance maps; each
    distinct (class, instance) pair with a class in 0..C-1 is one segment, and unlabelled
    pixels are the prediction's void. The rules, as panopticapi's:

    - a ground-truth and a predicted segment of one class match when their IoU > 0.5, the
      union leaving out the predicted pixels on ground-truth void (crowd pixels stay in it);
    - crowd segments never match and are never missed;
    - an unmatched predicted segment is a false positive unless more than half of it lies
      on void plus the crowd region of its own class (the last crowd segment of that class
      listed, as panopticapi keeps one per class);
    - ground-truth pixels of an id that is not listed are neither void nor a segment.

    Segment areas are counted from the maps (panopticapi reads the ground truth's from the
    annotation's ``area``, which COCO files keep equal to the PNG's).
    """

    def __init__(self, things: set[int], stuffs: set[int]):
        self.num_classes = len(things) + len(stuffs)
        self.things = set(things)
        self._tp = np.zeros(self.num_classes, dtype=np.int64)
        self._fp = np.zeros(self.num_classes, dtype=np.int64)
        self._fn = np.zeros(self.num_classes, dtype=np.int64)
        self._iou = np.zeros(self.num_classes, dtype=np.float64)
        self.images = 0

    def update(
        self,
        pred_classes: np.ndarray,
        pred_instances: np.ndarray,
        gt_ids: np.ndarray,
        gt_segments: Mapping[int, Segment],
    ) -> None:
        """Add one image (all maps [H, W]; classes outside 0..C-1 are unlabelled)."""
        if not pred_classes.shape == pred_instances.shape == gt_ids.shape:
            raise ValueError(
                f"prediction {pred_classes.shape} / {pred_instances.shape} and "
                f"ground truth {gt_ids.shape} differ in shape"
            )
        # Predicted segments: compact ids, 0 = void.
        classes = pred_classes.astype(np.int64).ravel()
        labelled = (classes >= 0) & (classes < self.num_classes)
        span = int(pred_instances.max(initial=0)) + 1
        key = np.where(labelled, classes * span + pred_instances.astype(np.int64).ravel() + 1, 0)
        pred_keys, pred = np.unique(key, return_inverse=True)
        if pred_keys[0] != 0:  # no void pixel: index 0 stays the void all the same
            pred_keys, pred = np.concatenate([[0], pred_keys]), pred + 1
        n_pred = len(pred_keys)
        pred_class = np.where(pred_keys > 0, (pred_keys - 1) // span, -1)
        # Ground-truth segments: listed ones get 1..n in their order; 0 = void, and one more
        # index for pixels of unlisted ids.
        listed = list(gt_segments.items())
        ids = gt_ids.astype(np.int64).ravel()
        gt_keys = np.array([0] + [segment_id for segment_id, _ in listed], dtype=np.int64)
        order = np.argsort(gt_keys, kind="stable")
        position = np.searchsorted(gt_keys[order], ids).clip(max=len(gt_keys) - 1)
        found = gt_keys[order][position] == ids
        unlisted = len(gt_keys)
        gt = np.where(found, order[position], unlisted)
        n_gt = len(gt_keys) + 1
        joint = np.bincount(gt * n_pred + pred, minlength=n_gt * n_pred).reshape(n_gt, n_pred)
        pred_area = joint.sum(axis=0)
        gt_area = joint.sum(axis=1)
        gt_class = np.array([-1] + [s.class_index for _, s in listed] + [-1], dtype=np.int64)
        crowd = np.array([False] + [bool(s.iscrowd) for _, s in listed] + [False])

        # Matches: same class, not crowd, IoU > 0.5 (at most one per segment, so greedy is
        # exact).
        g, p = np.nonzero(joint[1:unlisted, 1:])
        g, p = g + 1, p + 1
        keep = (~crowd[g]) & (gt_class[g] == pred_class[p])
        g, p = g[keep], p[keep]
        inter = joint[g, p]
        union = pred_area[p] + gt_area[g] - inter - joint[0, p]
        iou = inter / union
        hit = iou > 0.5
        g, p, iou = g[hit], p[hit], iou[hit]
        np.add.at(self._tp, gt_class[g], 1)
        np.add.at(self._iou, gt_class[g], iou)

        gt_matched = np.zeros(n_gt, dtype=bool)
        gt_matched[g] = True
        missed = np.nonzero(~gt_matched[1:unlisted] & ~crowd[1:unlisted])[0] + 1
        np.add.at(self._fn, gt_class[missed], 1)

        crowd_of_class: dict[int, int] = {}
        for index in np.nonzero(crowd)[0]:
            crowd_of_class[int(gt_class[index])] = int(index)  # the last one listed wins
        pred_matched = np.zeros(n_pred, dtype=bool)
        pred_matched[p] = True
        for segment in np.nonzero(~pred_matched[1:])[0] + 1:
            forgiven = joint[0, segment]
            region = crowd_of_class.get(int(pred_class[segment]))
            if region is not None:
                forgiven += joint[region, segment]
            if forgiven / pred_area[segment] <= 0.5:
                self._fp[pred_class[segment]] += 1
        self.images += 1

    def compute(self) -> PanopticScores:
        """Means over the categories with any segment (TP + FP + FN > 0), as panopticapi:
        a category only missed or only predicted counts 0 in every mean."""
        tp, fp, fn = (v.astype(np.float64) for v in (self._tp, self._fp, self._fn))
        seen = (tp + fp + fn) > 0
        if not seen.any():
            return PanopticScores(float("nan"), float("nan"), float("nan"))
        sq = np.where(tp > 0, self._iou / np.maximum(tp, 1), 0.0)
        rq = tp / np.maximum(tp + 0.5 * fp + 0.5 * fn, 1e-12)
        pq = self._iou / np.maximum(tp + 0.5 * fp + 0.5 * fn, 1e-12)
        return PanopticScores(
            pq=100.0 * float(pq[seen].mean()),
            sq=100.0 * float(sq[seen].mean()),
            rq=100.0 * float(rq[seen].mean()),
        )
