"""The overlay drawn one instance at a time (a full-image mask and OpenCV contours per
instance): the oracle that the tests and the benchmark hold ovseg_ros.segmentation.visualize.overlay
against. Not part of the package.
"""

from __future__ import annotations

import cv2
import numpy as np

from ovseg_ros.segmentation.panoptic import UNLABELLED, SegmentationResult
from ovseg_ros.segmentation.visualize import class_colours


def reference_overlay(
    image: np.ndarray, result: SegmentationResult, alpha: float = 0.5
) -> np.ndarray:
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
        cv2.putText(
            out, text, (x, y_text - base), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
    return out
