"""Track ids across frames: kept through small motion and a missed frame, new for new objects,
ended after max_age, never reused, and kept across a vocabulary change for the names that stay."""

import numpy as np

from ovseg_ros.scene.tracking import Tracker, TrackingSettings


def frame(*boxes, size=(60, 80)):
    """An instance image with one instance per (top, left, height, width) box, in order."""
    image = np.zeros(size, dtype=np.uint16)
    for index, (top, left, height, width) in enumerate(boxes, start=1):
        image[top : top + height, left : left + width] = index
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
    assert tracker.update(frame(), []) == []  # missed once
    assert tracker.update(frame(mug), ["mug"]) == [1]  # back: same id
    for _ in range(3):  # missed three times > max_age
        tracker.update(frame(), [])
    assert tracker.update(frame(mug), ["mug"]) == [2]  # a new track; 1 is never reused


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


# ------------------------------------------------------------------ motion, appearance, 3D
def unit(seed: int, like: np.ndarray | None = None, noise: float = 0.02) -> np.ndarray:
    """A unit vector in 64-D: a random one, or ``like`` plus a little noise."""
    rng = np.random.default_rng(seed)
    vector = (like if like is not None else rng.normal(size=64)) + noise * rng.normal(size=64)
    return vector / np.linalg.norm(vector)


def disc_frame(*centres, radius=5, size=(60, 120)):
    rows, cols = np.ogrid[: size[0], : size[1]]
    image = np.zeros(size, dtype=np.uint16)
    for index, (x, y) in enumerate(centres, start=1):
        image[(cols - x) ** 2 + (rows - y) ** 2 <= radius**2] = index
    return image


def test_a_fast_mover_with_no_overlap_keeps_its_id_by_appearance_then_motion():
    """A ball moving 12 px a frame (radius 5: consecutive masks never overlap): the first
    step is matched by appearance near where it was, the next ones by the predicted box."""
    ball = unit(1)
    tracker = Tracker()
    ids = [
        tracker.update(disc_frame((8 + 12 * t, 30)), ["ball"], embeddings=[unit(10 + t, ball)])[0]
        for t in range(9)
    ]
    assert ids == [1] * 9
    plain = Tracker()  # without appearance only the motion model is left: the first step
    ids = [plain.update(disc_frame((8 + 12 * t, 30)), ["ball"])[0] for t in range(9)]
    assert ids[0] != ids[1]  # ... has no velocity yet and starts a new track


def test_motion_alone_keeps_two_crossing_objects_apart_through_a_hidden_frame():
    """Two same-class balls cross at 3 px a frame each; when their centres meet, one hides
    the other. No appearance: the predicted boxes keep the ids."""
    tracker = Tracker()
    history = []
    for t in range(21):
        a, b = 20 + 3 * t, 80 - 3 * t
        image = disc_frame((b, 30), (a, 30), radius=8)  # a painted last: on top
        labels = ["ball", "ball"] if a != b else ["ball"]
        if a == b:
            image[image == 2] = 1  # b is fully hidden: one instance
        history.append(tracker.update(image, labels))
    assert history[0] == [1, 2]
    assert history[-1] == [1, 2]  # b still 1, a still 2, on the other side


def test_a_lost_track_is_re_identified_by_appearance_after_max_age():
    mug = unit(2)
    tracker = Tracker(TrackingSettings(max_age=2, reid_age=30))
    assert tracker.update(frame((5, 5, 20, 20)), ["mug"], embeddings=[unit(3, mug)]) == [1]
    for _ in range(8):  # away 8 frames: past max_age, within reid_age
        tracker.update(frame(), [], embeddings=np.zeros((0, 64)))
    # back somewhere else in the image: the appearance is the only cue
    assert tracker.update(frame((30, 50, 20, 20)), ["mug"], embeddings=[unit(4, mug)]) == [1]
    for _ in range(31):  # away longer than reid_age: the track has ended
        tracker.update(frame(), [])
    assert tracker.update(frame((30, 50, 20, 20)), ["mug"], embeddings=[unit(5, mug)]) == [2]


def test_re_identification_needs_the_same_class_and_a_similar_appearance():
    mug = unit(6)
    tracker = Tracker(TrackingSettings(max_age=1))
    tracker.update(frame((5, 5, 20, 20)), ["mug"], embeddings=[mug])
    for _ in range(3):
        tracker.update(frame(), [])
    assert tracker.update(frame((5, 5, 20, 20)), ["cup"], embeddings=[mug]) == [2]
    for _ in range(3):
        tracker.update(frame(), [])
    assert tracker.update(frame((5, 5, 20, 20)), ["mug"], embeddings=[unit(7)]) == [3]


def test_a_3d_jump_faster_than_max_speed_is_refused():
    """The same box and appearance, but the centroid 2 m away 1/30 s later: another object
    (e.g. one behind it); 2 cm away: the same one. Without stamps there is no speed gate."""
    mug = unit(8)
    box = (5, 5, 20, 20)
    near, far = np.array([[0.0, 0.0, 1.0]]), np.array([[0.0, 0.0, 3.0]])
    tracker = Tracker(TrackingSettings(max_speed=3.0))
    assert tracker.update(frame(box), ["mug"], embeddings=[mug], centroids=near, stamp=10.0) == [1]
    assert tracker.update(
        frame(box), ["mug"], embeddings=[mug], centroids=near + [0, 0, 0.02], stamp=10.0 + 1 / 30
    ) == [1]
    assert tracker.update(
        frame(box), ["mug"], embeddings=[mug], centroids=far, stamp=10.0 + 2 / 30
    ) == [2]
    unstamped = Tracker(TrackingSettings(max_speed=3.0))
    unstamped.update(frame(box), ["mug"], embeddings=[mug], centroids=near)
    assert unstamped.update(frame(box), ["mug"], embeddings=[mug], centroids=far) == [1]


def test_the_3d_gate_also_refuses_a_re_identification():
    mug = unit(9)
    tracker = Tracker(TrackingSettings(max_age=1, max_speed=1.0))
    tracker.update(
        frame((5, 5, 20, 20)), ["mug"], embeddings=[mug], centroids=[[0.0, 0.0, 1.0]], stamp=0.0
    )
    for k in range(1, 4):
        tracker.update(frame(), [], stamp=k / 10)
    # 0.4 s later, 2 m away: faster than 1 m/s
    assert tracker.update(
        frame((5, 5, 20, 20)), ["mug"], embeddings=[mug], centroids=[[2.0, 0.0, 1.0]], stamp=0.4
    ) == [2]


def test_appearance_alone_never_merges_two_objects_seen_in_one_frame():
    """Two mugs that look alike, side by side, get two ids; both go away for longer than
    max_age; when one comes back, its appearance fits both tracks, so it is not guessed: it
    gets a new id. In one frame two instances never share an id."""
    first = unit(11)
    second = unit(12, first, noise=0.005)
    tracker = Tracker(TrackingSettings(max_age=1))
    assert tracker.update(
        frame((5, 5, 15, 15), (5, 40, 15, 15)), ["mug", "mug"], embeddings=[first, second]
    ) == [1, 2]
    for _ in range(3):
        tracker.update(frame(), [])
    assert tracker.update(frame((30, 60, 15, 15)), ["mug"], embeddings=[first]) == [3]
    both = tracker.update(
        frame((30, 60, 15, 15), (5, 5, 15, 15)), ["mug", "mug"], embeddings=[first, second]
    )
    assert len(set(both)) == 2


def test_an_appearance_match_far_from_the_prediction_is_not_taken_while_the_track_is_live():
    """Within max_age, appearance continues a track only near its predicted box (2
    diagonals); a look-alike across the image is a new object (it may be re-identified only
    once the track is lost)."""
    mug = unit(13)
    tracker = Tracker(TrackingSettings(max_age=5, reid_age=0))
    tracker.update(frame((5, 5, 10, 10)), ["mug"], embeddings=[mug])
    assert tracker.update(frame((45, 65, 10, 10)), ["mug"], embeddings=[mug]) == [2]


def test_the_appearance_follows_an_object_that_slowly_changes_its_look():
    """A mug turning round: its embedding drifts, frame by frame, to one whose similarity to
    the first is 0.5. After it is lost, it is re-identified by how it looked last."""
    start, end = unit(14), unit(15)
    tracker = Tracker(TrackingSettings(max_age=1))
    for t in range(21):
        look = (1 - t / 20) * start + (t / 20) * end
        tracker.update(frame((5, 5, 20, 20)), ["mug"], embeddings=[look / np.linalg.norm(look)])
    for _ in range(3):
        tracker.update(frame(), [])
    assert tracker.update(frame((30, 50, 20, 20)), ["mug"], embeddings=[unit(16, end)]) == [1]


def test_an_instance_without_pixels_never_continues_a_track():
    """An instance listed with no pixels (it vanished when the result was resized) has no
    place: it gets an id of its own, even with the appearance of a live track near the
    image corner."""
    mug = unit(17)
    tracker = Tracker()
    assert tracker.update(frame((0, 0, 6, 6)), ["mug"], embeddings=[mug]) == [1]
    assert tracker.update(frame(), ["mug"], embeddings=[mug]) == [2]
