"""Per-frame cost of the 3D and tracking stages (scene.locate, scene.track) on a synthetic
640x480 frame with N instances on a grid, 16UC1 depth with holes and noise.

    python benchmarks/bench_scene.py --instances 100 --repeats 20
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ovseg_ros.geometry import decode_depth
from ovseg_ros.panoptic import Instance, SegmentationResult
from ovseg_ros.scene import locate, track
from ovseg_ros.tracking import Tracker
from ovseg_ros.vocabulary import Vocabulary


def synthetic_frame(instances: int, shift: int, height=480, width=640, seed=0):
    rng = np.random.default_rng(seed)
    columns = int(np.ceil(np.sqrt(instances * width / height)))
    rows = int(np.ceil(instances / columns))
    cell_h, cell_w = height // rows, width // columns
    instance_map = np.zeros((height, width), np.uint16)
    records = []
    for index in range(instances):
        top, left = (index // columns) * cell_h, (index % columns) * cell_w + shift
        instance_map[top + 2:top + cell_h - 2, left + 2:min(left + cell_w - 2, width)] = index + 1
        records.append(Instance(index + 1, index % 10, f"class{index % 10}", 0.9, 0.9, True,
                                (left, top, cell_w, cell_h), cell_w * cell_h))
    depth = rng.integers(800, 4000, (height, width)).astype(np.uint16)
    depth[rng.random((height, width)) < 0.05] = 0  # holes
    vocabulary = Vocabulary(tuple(f"class{i}" for i in range(10)))
    return SegmentationResult(np.zeros_like(instance_map), instance_map, records, vocabulary), depth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    k = np.array([[615.0, 0, 320], [0, 615.0, 240], [0, 0, 1]])
    tracker = Tracker()
    stages: dict[str, list[float]] = {"decode_depth": [], "locate": [], "track": []}
    for repeat in range(args.repeats + 1):
        result, raw = synthetic_frame(args.instances, shift=repeat % 3)
        start = time.perf_counter()
        depth = decode_depth(raw, "16UC1")
        decoded = time.perf_counter()
        locate(result, depth, k)
        located = time.perf_counter()
        track(result, tracker)
        tracked = time.perf_counter()
        if repeat:  # the first run warms caches
            stages["decode_depth"].append(1e3 * (decoded - start))
            stages["locate"].append(1e3 * (located - decoded))
            stages["track"].append(1e3 * (tracked - located))
    assert len({i.track_id for i in result.instances}) == args.instances
    print(f"640x480, {args.instances} instances, median of {args.repeats} runs (ms):")
    for stage, values in stages.items():
        print(f"  {stage:13s} {statistics.median(values):7.2f}  (p95 "
              f"{sorted(values)[int(0.95 * (len(values) - 1))]:.2f})")
    total = [sum(v) for v in zip(*stages.values())]
    print(f"  {'total':13s} {statistics.median(total):7.2f}")


if __name__ == "__main__":
    main()
