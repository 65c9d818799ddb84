"""Tracker against the per-track-pixels oracle it replaced (reference/iou_tracker.py): the
same ids on random streams of moving, vanishing, reappearing and relabelled objects."""

import numpy as np
import pytest

from ovseg_ros.tracking import Tracker, TrackingSettings
from reference.iou_tracker import ReferenceTracker

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
            image[max(top, 0):max(top + extent[obj, 0], 0),
                  max(left, 0):max(left + extent[obj, 1], 0)] = index
            labels.append(CLASSES[label[obj]])
        labels += ["mug"] * int(rng.integers(0, 2))  # listed, no pixels
        yield image, labels


@pytest.mark.parametrize("seed, objects, min_iou, max_age", [
    (0, 3, 0.3, 5), (1, 12, 0.3, 5), (2, 40, 0.1, 2), (3, 25, 0.5, 0), (4, 60, 0.3, 10)])
def test_the_same_ids_as_the_per_pixel_oracle(seed, objects, min_iou, max_age):
    settings = TrackingSettings(min_iou=min_iou, max_age=max_age)
    tracker, oracle = Tracker(settings), ReferenceTracker(settings)
    continued = 0
    for image, labels in random_stream(seed, 60, objects):
        ids = tracker.update(image, labels)
        assert ids == oracle.update(image, labels)
        continued += sum(i < tracker._next_id - len(labels) for i in ids)
    assert continued > 0  # the streams do continue tracks, not only start new ones


def test_a_change_of_image_size_ends_every_track_as_the_oracle_does():
    tracker, oracle = Tracker(), ReferenceTracker()
    for size in ((60, 80), (60, 80), (30, 40), (30, 40)):
        image = np.zeros(size, np.uint16)
        image[5:20, 5:20] = 1
        assert tracker.update(image, ["mug"]) == oracle.update(image, ["mug"])
