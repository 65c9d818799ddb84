"""The overlay against the one-instance-at-a-time drawing it replaced (reference/overlay.py):
the same tint, outlines in each instance's class colour on its border, labels drawn."""

import cv2
import numpy as np

from ovseg_ros.segmentation.panoptic import UNLABELLED, Instance, SegmentationResult
from ovseg_ros.segmentation.visualize import class_colours, outline_band, overlay
from ovseg_ros.segmentation.vocabulary import Vocabulary
from reference.overlay import reference_overlay


def random_result(seed: int, instances: int = 30, size=(120, 160)):
    """Overlapping boxes of random classes, some pixels labelled but of no instance."""
    rng = np.random.default_rng(seed)
    vocabulary = Vocabulary(tuple(f"class {i}" for i in range(7)))
    semantic = np.full(size, UNLABELLED, np.uint16)
    instance_map = np.zeros(size, np.uint16)
    semantic[:20, :] = 6  # stuff-like, no instance
    listed = []
    for index in range(1, instances + 1):
        top, left = rng.integers(0, size[0] - 5), rng.integers(0, size[1] - 5)
        height, width = rng.integers(3, 40), rng.integers(3, 50)
        class_index = int(rng.integers(0, 6))
        instance_map[top : top + height, left : left + width] = index
        semantic[top : top + height, left : left + width] = class_index
        listed.append(
            Instance(
                index, class_index, vocabulary.names[class_index], 0.5, 0.9, True, (0, 0, 0, 0), 0
            )
        )
    for instance in listed:  # boxes and areas of what stayed visible
        rows, cols = np.nonzero(instance_map == instance.id)
        if rows.size:
            instance.bbox = (
                int(cols.min()),
                int(rows.min()),
                int(cols.max() - cols.min() + 1),
                int(rows.max() - rows.min() + 1),
            )
            instance.area = int(rows.size)
    image = rng.integers(0, 256, (*size, 3), np.uint8)
    return image, SegmentationResult(semantic, instance_map, listed, vocabulary)


def near_a_border(instance_map, reach):
    """Pixels within ``reach`` of a change of instance (either side)."""
    kernel = np.ones((2 * reach + 1,) * 2, np.uint8)
    return cv2.erode(instance_map, kernel) != cv2.dilate(instance_map, kernel)


def label_boxes(result):
    """Where the labels may be drawn, generously."""
    boxes = np.zeros(result.semantic.shape, bool)
    for instance in result.instances:
        x, y = instance.bbox[:2]
        boxes[max(y - 16, 0) : y + 16, max(x - 2, 0) : x + 120] = True
    return boxes


def test_the_tint_is_the_references_away_from_outlines_and_labels():
    for seed in range(3):
        image, result = random_result(seed)
        new, old = overlay(image, result).astype(int), reference_overlay(image, result).astype(int)
        away = ~(near_a_border(result.instance_map, 3) | label_boxes(result))
        assert away.sum() > 1000
        # the reference truncates the blend, OpenCV rounds it
        assert np.abs(new - old)[away].max() <= 1
        unlabelled = away & (result.semantic == UNLABELLED)
        assert unlabelled.any() and np.array_equal(new[unlabelled], image[unlabelled])
        tinted = away & (result.semantic != UNLABELLED)
        assert tinted.any() and np.abs(new[tinted] - image[tinted]).max() > 10


def test_outlines_are_drawn_in_the_class_colour_on_every_instance_border():
    image, result = random_result(4)
    drawn = overlay(image, result)
    colours = class_colours(len(result.vocabulary))
    band = outline_band(result.instance_map)
    labels = label_boxes(result)
    for instance in result.instances:
        if instance.area == 0:
            continue
        own = (result.instance_map == instance.id) & band & ~labels
        assert np.all(drawn[own] == colours[instance.class_index])
        mask = result.instance_map == instance.id
        # the border pixels of the mask (a neighbour outside it) are all in the band
        inner = mask.copy()
        inner[1:-1, 1:-1] &= mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
        assert not np.any(mask & ~inner & ~band)


def test_every_instance_gets_its_label():
    image, result = random_result(5, instances=5, size=(200, 400))
    plain = overlay(
        image, SegmentationResult(result.semantic, result.instance_map, [], result.vocabulary)
    )
    drawn = overlay(image, result)
    for instance in result.instances:
        if instance.area:
            x, y = instance.bbox[:2]
            box = (slice(max(y - 14, 0), y + 2), slice(x, x + 40))
            assert np.any(drawn[box] != plain[box]), instance.label
