"""Track ids across frames: kept through small motion and a missed frame, new for new objects,
ended after max_age, never reused, and kept across a vocabulary change for the names that stay."""

import numpy as np

from ovseg_ros.tracking import Tracker, TrackingSettings


def frame(*boxes, size=(60, 80)):
    """An instance image with one instance per (top, left, height, width) box, in order."""
    image = np.zeros(size, dtype=np.uint16)
    for index, (top, left, height, width) in enumerate(boxes, start=1):
        image[top:top + height, left:left + width] = index
    return image


def test_ids_stay_through_small_motion_and_follow_the_object_not_the_index():
    tracker = Tracker()
    first = tracker.update(frame((5, 5, 20, 20), (30, 40, 20, 20)), ["mug", "chair"])
    assert first == [1, 2]
    # both moved 3 px and the segmenter lists them in the other order
    second = tracker.update(frame((33, 43, 20, 20), (8, 8, 20, 20)), ["chair", "mug"])
    assert second == [2, 1]


def test_a_missed_frame_keeps_the_id_and_max_age_ends_the_track():
    tracker = Tracker(TrackingSettings(max_age=2))
    mug = (5, 5, 20, 20)
    assert tracker.update(frame(mug), ["mug"]) == [1]
    assert tracker.update(frame(), []) == []             # missed once
    assert tracker.update(frame(mug), ["mug"]) == [1]    # back: same id
    for _ in range(3):                                   # missed three times > max_age
        tracker.update(frame(), [])
    assert tracker.update(frame(mug), ["mug"]) == [2]    # a new track; 1 is never reused


def test_a_new_object_gets_a_new_id_and_another_class_never_continues_a_track():
    tracker = Tracker()
    tracker.update(frame((5, 5, 20, 20)), ["mug"])
    assert tracker.update(frame((5, 5, 20, 20), (30, 40, 20, 20)), ["cup", "mug"]) == [2, 3]


def test_below_min_iou_is_a_new_track():
    tracker = Tracker(TrackingSettings(min_iou=0.5))
    tracker.update(frame((5, 5, 20, 20)), ["mug"])
    # 10 px shift of a 20 px box: IoU = 200 / 600 = 0.33
    assert tracker.update(frame((5, 15, 20, 20)), ["mug"]) == [2]
    tracker = Tracker(TrackingSettings(min_iou=0.3))
    tracker.update(frame((5, 5, 20, 20)), ["mug"])
    assert tracker.update(frame((5, 15, 20, 20)), ["mug"]) == [1]


def test_hungarian_assignment_gives_each_track_its_best_overall_match():
    tracker = Tracker(TrackingSettings(min_iou=0.1))
    tracker.update(frame((0, 0, 10, 20), (0, 20, 10, 20)), ["box", "box"])  # columns 0-19, 20-39
    # instance 1 (columns 8-29): IoU 0.4 with track 1, 0.31 with track 2; instance 2 (columns
    # 0-6): IoU 0.35 with track 1 only. Greedy matching of instance 1 first would take track 1
    # and leave instance 2 unmatched; the assignment maximises the total IoU.
    ids = tracker.update(frame((0, 8, 10, 22), (0, 0, 10, 7)), ["box", "box"])
    assert ids == [2, 1]


def test_a_vocabulary_change_keeps_the_tracks_of_names_that_stay():
    tracker = Tracker()
    tracker.update(frame((5, 5, 20, 20), (30, 40, 20, 20)), ["mug", "chair"])
    # new vocabulary [chair, table]: class indices changed, names matched
    assert tracker.update(frame((30, 40, 20, 20), (5, 5, 20, 20)), ["chair", "table"]) == [2, 3]


def test_a_new_image_size_starts_over_without_crashing():
    tracker = Tracker()
    tracker.update(frame((5, 5, 20, 20)), ["mug"])
    assert tracker.update(frame((5, 5, 20, 20), size=(30, 40)), ["mug"]) == [2]


def test_a_track_follows_an_object_that_drifts_far_from_where_it_started():
    tracker = Tracker()
    ids = [tracker.update(frame((5, left, 20, 20)), ["mug"])[0] for left in range(0, 60, 8)]
    assert ids == [1] * len(ids)  # 8 px a frame: IoU 0.43 each step, none with the first box


def test_missed_for_exactly_max_age_frames_keeps_the_id_one_more_ends_it():
    mug = (5, 5, 20, 20)
    tracker = Tracker(TrackingSettings(max_age=5))
    assert tracker.update(frame(mug), ["mug"]) == [1]
    for _ in range(5):
        tracker.update(frame(), [])
    assert tracker.update(frame(mug), ["mug"]) == [1]  # away 5 frames: the same object
    for _ in range(6):
        tracker.update(frame(), [])
    assert tracker.update(frame(mug), ["mug"]) == [2]  # away 6 frames: a new track
