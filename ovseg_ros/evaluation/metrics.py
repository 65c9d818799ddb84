"""Segmentation metrics: mIoU / per-class IoU / pixel accuracy, and PQ / SQ / RQ.

The counting is torchmetrics' (MulticlassConfusionMatrix and PanopticQuality); this module
only maps our label images onto them and reduces the totals the way detectron2's
SemSegEvaluator does (the protocol OVSeg's tables were produced with): IoU and accuracy are
computed from one confusion matrix summed over the whole dataset, and the mean IoU is over
the classes that occur in the ground truth or in the predictions of at least one image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchmetrics.classification import MulticlassConfusionMatrix
from torchmetrics.detection import PanopticQuality

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
        self._matrix = MulticlassConfusionMatrix(num_classes + 1, ignore_index=IGNORE,
                                                 validate_args=False)

    def update(self, prediction: np.ndarray, target: np.ndarray) -> None:
        """prediction: [H, W] class indices (anything else = unlabelled); target: [H, W]
        class indices 0..C-1 or IGNORE. Same shape."""
        if prediction.shape != target.shape:
            raise ValueError(f"prediction {prediction.shape} and target {target.shape} differ "
                             "in shape")
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
            mean_accuracy=100.0 * float(np.nanmean(accuracy)) if np.isfinite(accuracy).any()
            else float("nan"),
            per_class_iou=[100.0 * float(v) for v in iou],
            pixels=int(total))


@dataclass
class PanopticScores:
    """COCO's panoptic quality over a dataset, in percent."""

    pq: float
    sq: float
    rq: float


class PanopticMetrics:
    """COCO panoptic quality (segments match at IoU > 0.5), counted by torchmetrics.

    Inputs per image are [H, W] class and [H, W] instance-id maps. Ground-truth pixels with
    class IGNORE are void, as in COCO: predicted segments lying mostly on them are not false
    positives. Unlabelled predicted pixels are NOT void (torchmetrics would then forgive the
    ground-truth segments they cover): they form one extra stuff category, so a segment left
    unlabelled is a miss; that category is left out of the averages.
    """

    def __init__(self, things: set[int], stuffs: set[int]):
        self.num_classes = len(things) + len(stuffs)
        self._unlabelled = self.num_classes
        self._void = self.num_classes + 1  # neither thing nor stuff: torchmetrics' void
        self._metric = PanopticQuality(things=set(things), stuffs={*stuffs, self._unlabelled})
        self.images = 0

    def _stack(self, classes: np.ndarray, instances: np.ndarray, outside: int) -> torch.Tensor:
        category = torch.from_numpy(classes.astype(np.int64))
        category[(category < 0) | (category >= self.num_classes)] = outside
        return torch.stack([category, torch.from_numpy(instances.astype(np.int64))], dim=-1)

    def update(self, pred_classes: np.ndarray, pred_instances: np.ndarray,
               gt_classes: np.ndarray, gt_instances: np.ndarray) -> None:
        """Add one image: [H, W] class and instance ids of the prediction and the ground
        truth (classes outside the vocabulary count as unlabelled / void)."""
        self._metric.update(self._stack(pred_classes, pred_instances, self._unlabelled)[None],
                            self._stack(gt_classes, gt_instances, self._void)[None])
        self.images += 1

    def compute(self) -> PanopticScores:
        """Means over the real categories with any segment (panopticapi's rule)."""
        m = self._metric
        n = self.num_classes  # torchmetrics orders things then stuffs; ours comes last
        tp, fp, fn = (getattr(m, k)[:n].double() for k in
                      ("true_positives", "false_positives", "false_negatives"))
        iou = m.iou_sum[:n].double()
        seen = (tp + fp + fn) > 0
        if not seen.any():
            return PanopticScores(float("nan"), float("nan"), float("nan"))
        sq = torch.where(tp > 0, iou / tp.clamp(min=1), torch.zeros_like(iou))
        rq = tp / (tp + 0.5 * fp + 0.5 * fn).clamp(min=1e-12)
        return PanopticScores(pq=100.0 * float((sq * rq)[seen].mean()),
                              sq=100.0 * float(sq[seen].mean()),
                              rq=100.0 * float(rq[seen].mean()))
