"""Overlay drawing: the image with class colours, instance outlines and labels (RGB)."""

from __future__ import annotations

import cv2
import numpy as np

from .panoptic import UNLABELLED, SegmentationResult


def class_colours(count: int) -> np.ndarray:
    """[count, 3] uint8 RGB colours, well apart and the same for a class index every time."""
    hues = (np.arange(count) * 0.618033988749895) % 1.0  # golden-ratio steps around the wheel
    hsv = np.stack([hues * 179, np.full(count, 200), np.full(count, 255)], axis=1)
    return cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]


def overlay(image: np.ndarray, result: SegmentationResult, alpha: float = 0.5) -> np.ndarray:
    """HxWx3 uint8 RGB: labelled pixels tinted by class, instance outlines, one label each."""
    colours = class_colours(max(len(result.vocabulary), 1))
    labelled = result.semantic != UNLABELLED
    out = image.copy()
    tint = colours[np.where(labelled, result.semantic, 0)]
    out[labelled] = (image[labelled] * (1 - alpha) + tint[labelled] * alpha).astype(np.uint8)
    for instance in result.instances:
        if instance.area == 0:
            continue
        mask = (result.instance_map == instance.id).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        colour = tuple(int(c) for c in colours[instance.class_index])
        cv2.drawContours(out, contours, -1, colour, 2)
        x, y, _, _ = instance.bbox
        text = f"{instance.label} {instance.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
        y_text = max(y, th + base)
        cv2.rectangle(out, (x, y_text - th - base), (x + tw, y_text), colour, -1)
        cv2.putText(out, text, (x, y_text - base), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return out
