"""Per-frame cost of the 3D and tracking stages (scene.locate, scene.track) and of the node's
3D outputs (labelled points, markers, 3D detections) on a synthetic 640x480 frame with N
instances on a grid, 16UC1 depth with holes and noise.

    python benchmarks/bench_scene.py --instances 100 --repeats 20

The markers and 3D detections are built with rosbags' message classes (no ROS needed); the
PointCloud2 (sensor_msgs_py) is timed only where the built package and ROS 2 are sourced.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from ovseg_ros import bag_types, convert
from ovseg_ros.geometry import decode_depth
from ovseg_ros.panoptic import Instance, SegmentationResult
from ovseg_ros.scene import labelled_points, locate, track
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
    parser.add_argument("--points-stride", type=int, default=4)
    args = parser.parse_args()
    k = np.array([[615.0, 0, 320], [0, 615.0, 240], [0, 0, 1]])
    tracker = Tracker()
    types = bag_types.message_types()
    header = bag_types.header(bag_types.typestore(), 0, "camera_color_optical_frame")
    try:
        from ovseg_ros.outputs import points_message
    except ImportError:  # no ROS 2 sourced: the PointCloud2 is not timed
        points_message = None
    stages: dict[str, list[float]] = {"decode_depth": [], "locate": [], "track": []}
    outputs: dict[str, list[float]] = {"labelled_points": [], "markers": [],
                                       "detections_3d": []}
    if points_message is not None:
        outputs["points_message"] = []
    for repeat in range(args.repeats + 1):
        result, raw = synthetic_frame(args.instances, shift=repeat % 3)
        start = time.perf_counter()
        depth = decode_depth(raw, "16UC1")
        decoded = time.perf_counter()
        points = locate(result, depth, k)
        located = time.perf_counter()
        track(result, tracker)
        tracked = time.perf_counter()
        rgb = np.zeros((*depth.shape, 3), np.uint8)
        cloud = labelled_points(points, rgb, result, args.points_stride)
        clouded = time.perf_counter()
        convert.markers_message(types, header, result)
        marked = time.perf_counter()
        convert.detections_3d_message(types, header, result)
        detected = time.perf_counter()
        if points_message is not None:
            points_message(_ros_header(), cloud)
        if repeat:  # the first run warms caches
            stages["decode_depth"].append(1e3 * (decoded - start))
            stages["locate"].append(1e3 * (located - decoded))
            stages["track"].append(1e3 * (tracked - located))
            outputs["labelled_points"].append(1e3 * (clouded - tracked))
            outputs["markers"].append(1e3 * (marked - clouded))
            outputs["detections_3d"].append(1e3 * (detected - marked))
            if points_message is not None:
                outputs["points_message"].append(1e3 * (time.perf_counter() - detected))
    assert len({i.track_id for i in result.instances}) == args.instances
    print(f"640x480, {args.instances} instances, median of {args.repeats} runs (ms):")
    report(stages)
    print(f"the node's 3D outputs (points_stride {args.points_stride}, {len(cloud)} points; "
          "built only for subscribers):")
    report(outputs)


def report(stages: dict[str, list[float]]) -> None:
    for stage, values in stages.items():
        print(f"  {stage:15s} {statistics.median(values):7.2f}  (p95 "
              f"{sorted(values)[int(0.95 * (len(values) - 1))]:.2f})")
    total = [sum(v) for v in zip(*stages.values())]
    print(f"  {'total':15s} {statistics.median(total):7.2f}")


def _ros_header():
    from std_msgs.msg import Header

    return Header(frame_id="camera_color_optical_frame")


if __name__ == "__main__":
    main()
