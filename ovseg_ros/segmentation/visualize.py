"""Overlay drawing: the image with class colours, instance outlines and labels (RGB).

Drawn for the whole image at once: the tint is one colour lookup and one blend, the outlines
the band of pixels within OUTLINE_PX of another instance or of the background (two
morphology passes over the instance image), so its cost hardly grows with the number of
instances; only the labels are drawn one by one.
"""

from __future__ import annotations

import cv2
import numpy as np

from .panoptic import UNLABELLED, SegmentationResult

OUTLINE_PX = 2
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.45


def class_colours(count: int) -> np.ndarray:
    """[count, 3] uint8 RGB colours, well apart and the same for a class index every time."""
    hues = (np.arange(count) * 0.618033988749895) % 1.0  # golden-ratio steps around the wheel
    hsv = np.stack([hues * 179, np.full(count, 200), np.full(count, 255)], axis=1)
    return cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]


def outline_band(instance_map: np.ndarray, width: int = OUTLINE_PX) -> np.ndarray:
    """[H, W] bool: instance pixels within ``width`` pixels (8-connected) of a pixel of another
    instance or of none, inside the image."""
    kernel = np.ones((2 * width + 1,) * 2, np.uint8)
    low, high = cv2.erode(instance_map, kernel), cv2.dilate(instance_map, kernel)
    return (instance_map > 0) & ((low != instance_map) | (high != instance_map))


def overlay(image: np.ndarray, result: SegmentationResult, alpha: float = 0.5) -> np.ndarray:
    """HxWx3 uint8 RGB: labelled pixels tinted by class, instance outlines in their class
    colour, one label (name and score) at the top left of each instance's box."""
    colours = class_colours(max(len(result.vocabulary), 1))
    semantic, instance_map = result.semantic, result.instance_map
    labelled = (semantic != UNLABELLED).view(np.uint8)
    # Classes past the vocabulary (UNLABELLED among them) look up the last, unused row.
    table = np.zeros((len(colours) + 1, 3), np.uint8)
    table[: len(colours)] = colours
    tint = np.take(table, np.minimum(semantic, len(colours)), axis=0)
    out = cv2.copyTo(cv2.addWeighted(image, 1 - alpha, tint, alpha, 0.0), labelled, image.copy())
    if result.instances:
        instance_colours = np.zeros((int(instance_map.max(initial=0)) + 1, 3), np.uint8)
        for instance in result.instances:
            if instance.id < len(instance_colours):
                instance_colours[instance.id] = colours[instance.class_index]
        out = cv2.copyTo(
            np.take(instance_colours, instance_map, axis=0),
            outline_band(instance_map).view(np.uint8),
            out,
        )
    for instance in result.instances:
        if instance.area == 0:
            continue
        colour = tuple(int(c) for c in colours[instance.class_index])
        x, y, _, _ = instance.bbox
        text = f"{instance.label} {instance.score:.2f}"
        (tw, th), base = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
        y_text = max(y, th + base)
        cv2.rectangle(out, (x, y_text - th - base), (x + tw, y_text), colour, -1)
        cv2.putText(out, text, (x, y_text - base), FONT, FONT_SCALE, (0, 0, 0), 1, cv2.LINE_AA)
    return out
