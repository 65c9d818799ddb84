"""Boxes for tracking, as (x0, y0, x1, y1) float arrays with exclusive ends: the boxes of an
instance image, their IoU, their centres, and the whole object's box when only part of it
is seen."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

PARTLY_HIDDEN = 0.9  # a seen box narrower than this share of the predicted one: part hidden


def instance_boxes(
    instance_map: np.ndarray, flat: np.ndarray, count: int, boxes: np.ndarray | None
) -> np.ndarray:
    """[count, 4] float (x0, y0, x1, y1), ends exclusive; zeros for an instance with no
    pixels."""
    if boxes is not None:
        xywh = np.asarray(boxes, dtype=np.float64).reshape(count, 4)
        return np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    found = np.zeros((count, 4))
    image = flat.reshape(instance_map.shape)
    for index, where in enumerate(ndimage.find_objects(image, max_label=count)):
        if where is not None:
            rows, cols = where
            found[index] = (cols.start, rows.start, cols.stop, rows.stop)
    return found


def whole_boxes(seen: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """[N, 4] boxes of the whole objects from the boxes of what is seen of them and their
    predicted boxes: on an axis where a seen box is less than PARTLY_HIDDEN of the predicted
    size, the object is taken to be partly hidden, its size kept and its box anchored on the
    seen edge that agrees better with the prediction (so an object passing behind another
    keeps moving as it moved, rather than as its visible part shrinks)."""
    whole = seen.astype(np.float64).copy()
    for low, high in ((0, 2), (1, 3)):
        size = predicted[:, high] - predicted[:, low]
        hidden = seen[:, high] - seen[:, low] < PARTLY_HIDDEN * size
        low_agrees = np.abs(seen[:, low] - predicted[:, low]) <= np.abs(
            seen[:, high] - predicted[:, high]
        )
        whole[:, high] = np.where(hidden & low_agrees, seen[:, low] + size, whole[:, high])
        whole[:, low] = np.where(hidden & ~low_agrees, seen[:, high] - size, whole[:, low])
    return whole


def centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[A, 4] and [B, 4] (x0, y0, x1, y1) -> [A, B] IoU: torchvision.ops.box_iou's, in
    numpy, without a round trip through torch for these small arrays (the differential test
    holds it to torchvision's)."""
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)
