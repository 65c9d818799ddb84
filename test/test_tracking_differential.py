"""The tracker's overlaps and boxes against plain per-mask computations: the mask IoU of every
track seen in the last frame with every instance (one joint histogram in the tracker, boolean
masks here), and the instance boxes (scipy's find_objects there, np.nonzero here), on random
streams of moving, vanishing and relabelled objects."""

import numpy as np
import pytest

from ovseg_ros.scene.boxes import box_iou as _box_iou
from ovseg_ros.scene.boxes import instance_boxes as _boxes
from ovseg_ros.scene.tracking import Tracker, TrackingSettings

CLASSES = ["mug", "chair", "person"]


def random_stream(seed: int, frames: int, objects: int, size=(60, 80)):
    """Frames of boxes that drift, jump now and then, hide for a few frames, change class,
    overlap (later ones on top), plus instance ids in shuffled order and some listed
    instances with no pixels."""
    rng = np.random.default_rng(seed)
    position = rng.uniform(0, 1, (objects, 2)) * np.array(size)
    velocity = rng.normal(0, 2, (objects, 2))
    extent = rng.integers(2, 25, (objects, 2))
    label = rng.integers(0, len(CLASSES), objects)
    for _ in range(frames):
        position += velocity
        jump = rng.random(objects) < 0.05
        position[jump] = rng.uniform(0, 1, (jump.sum(), 2)) * np.array(size)
        label[rng.random(objects) < 0.03] = rng.integers(0, len(CLASSES))
        shown = np.flatnonzero(rng.random(objects) > 0.25)
        rng.shuffle(shown)
        image = np.zeros(size, np.uint16)
        labels = []
        for index, obj in enumerate(shown, start=1):
            top, left = position[obj].astype(int)
            image[
                max(top, 0) : max(top + extent[obj, 0], 0),
                max(left, 0) : max(left + extent[obj, 1], 0),
            ] = index
            labels.append(CLASSES[label[obj]])
        labels += ["mug"] * int(rng.integers(0, 2))  # listed, no pixels
        yield image, labels


def plain_overlaps(tracks, last, image, count):
    """[tracks, count] IoU of each track's mask in the last frame with each instance."""
    overlap = np.zeros((len(tracks), count))
    for row, track in enumerate(tracks):
        if not track.instance:
            continue
        before = last == track.instance
        for col in range(count):
            now = image == col + 1
            union = (before | now).sum()
            overlap[row, col] = (before & now).sum() / union if union else 0.0
    return overlap


@pytest.mark.parametrize("seed, objects", [(0, 3), (1, 12), (2, 40), (3, 60)])
def test_mask_overlaps_and_boxes_equal_plain_per_mask_computations(seed, objects):
    tracker = Tracker(TrackingSettings(max_age=3))
    last = None
    compared = 0
    for image, labels in random_stream(seed, 40, objects):
        count = len(labels)
        flat = image.ravel()
        if last is not None:
            overlap, areas = tracker._mask_overlaps(flat, count)
            np.testing.assert_allclose(
                overlap, plain_overlaps(tracker.tracks, last, image, count), rtol=0, atol=1e-12
            )
            np.testing.assert_array_equal(areas, [(image == k + 1).sum() for k in range(count)])
            compared += int((overlap > 0).sum())
        for index, box in enumerate(_boxes(image, flat, count, None)):
            rows, cols = np.nonzero(image == index + 1)
            expected = (
                (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
                if rows.size
                else (0, 0, 0, 0)
            )
            assert tuple(box) == expected
        tracker.update(image, labels)
        last = image
    assert compared > 0  # the streams do overlap


def test_box_iou_equals_torchvision():
    """Boxes that overlap, touch, nest, are empty or are degenerate."""
    torch = pytest.importorskip("torch")
    from torchvision.ops import box_iou

    rng = np.random.default_rng(7)
    a = rng.uniform(0, 100, (60, 4))
    a[:, 2:] = a[:, :2] + rng.choice([0.0, 0.5, 3.0, 40.0], (60, 2))
    b = np.concatenate([a[:20] + rng.normal(0, 2, (20, 4)), a[20:40], rng.uniform(0, 100, (20, 4))])
    b[:, 2:] = np.maximum(b[:, 2:], b[:, :2])
    expected = box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(_box_iou(a, b), np.nan_to_num(expected), rtol=1e-12, atol=1e-12)
