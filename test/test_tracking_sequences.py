"""The tracker against its targets on the synthetic sequences of benchmarks/bench_tracking.py,
scored by py-motmetrics (ground-truth masks as detections: only the ids are scored)."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("motmetrics")
sys.path.append(str(Path(__file__).resolve().parent.parent / "benchmarks"))

from tracking_sequences import SEQUENCES, score

from ovseg_ros.scene.tracking import Tracker

TARGETS = {  # sequence: (most switches, least IDF1)
    "crossing, one hidden 1 frame": (0, 1.0),
    "occlusion 3 frames": (0, 1.0),
    "occlusion 8 frames": (0, 1.0),
    "occlusion 30 frames": (0, 1.0),
    "fast mover, 12 px/frame, radius 5": (1, 0.9),
    "camera pan, 40 px in one frame": (0, 1.0),
    "sliver behind an occluder": (0, 1.0),
    "10 % of detections dropped": (1, 0.95),
}


def ids_by(tracker: Tracker):
    return lambda f: tracker.update(
        f.instance_map,
        f.labels,
        boxes=f.boxes,
        embeddings=f.embeddings,
        centroids=f.centroids,
        stamp=f.stamp,
    )


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_sequence_meets_its_target(name):
    switches, idf1 = TARGETS[name]
    scores = score(SEQUENCES[name][0](), ids_by(Tracker()))
    assert scores["switches"] <= switches and scores["idf1"] >= idf1 - 1e-9, scores


def test_the_ids_are_never_reused_and_unique_in_each_frame():
    for name, (build, _) in SEQUENCES.items():
        tracker, retired, live = Tracker(), set(), set()
        for frame in build():
            ids = ids_by(tracker)(frame)
            assert len(set(ids)) == len(ids), name
            assert not set(ids) & retired, name
            known = {t.id for t in tracker.tracks}
            retired |= live - known
            live = known
