"""Per-frame cost of the 3D and tracking stages (scene.locate, scene.track), of the node's 3D
outputs (labelled points, markers, 3D detections) and of the overlay, on a synthetic 640x480
frame with N instances on a grid that move a pixel per frame, 16UC1 depth with holes, each
beside the implementation it replaced (reference/: the oracles of the differential tests),
timed on the same frames in the same process.

    python benchmarks/bench_scene.py --instances 100 --repeats 20

With ROS 2 and the built package sourced, messages are rclpy's (as the node builds them) and
the PointCloud2 (sensor_msgs_py) is timed too; without, rosbags' classes stand in.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.append(str(Path(__file__).resolve().parent.parent))  # reference/ (after a built ovseg_ros)

from ovseg_ros.messages import convert
from ovseg_ros.offline import bag_types
from ovseg_ros.scene.geometry import back_project, decode_depth
from ovseg_ros.scene.placement import labelled_points, locate, track
from ovseg_ros.scene.tracking import Tracker
from ovseg_ros.segmentation.panoptic import Instance, SegmentationResult
from ovseg_ros.segmentation.visualize import overlay
from ovseg_ros.segmentation.vocabulary import Vocabulary
from reference.iou_tracker import ReferenceTracker
from reference.overlay import reference_overlay
from reference.scene_geometry import reference_measure_instances


def synthetic_frame(instances: int, shift: int, height=480, width=640, seed=0):
    rng = np.random.default_rng(seed)
    columns = int(np.ceil(np.sqrt(instances * width / height)))
    rows = int(np.ceil(instances / columns))
    cell_h, cell_w = height // rows, width // columns
    instance_map = np.zeros((height, width), np.uint16)
    # A CLIP-sized unit embedding per object (the same objects every frame) plus noise.
    objects = np.random.default_rng(1).normal(size=(instances, 768))
    embeddings = objects + 0.02 * rng.normal(size=objects.shape)
    embeddings = (embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)).astype(np.float32)
    records = []
    for index in range(instances):
        top, left = (index // columns) * cell_h, (index % columns) * cell_w + shift
        instance_map[top + 2 : top + cell_h - 2, left + 2 : min(left + cell_w - 2, width)] = (
            index + 1
        )
        records.append(
            Instance(
                index + 1,
                index % 10,
                f"class{index % 10}",
                0.9,
                0.9,
                True,
                (left, top, cell_w, cell_h),
                cell_w * cell_h,
                embedding=embeddings[index],
            )
        )
    depth = rng.integers(800, 4000, (height, width)).astype(np.uint16)
    depth[rng.random((height, width)) < 0.05] = 0  # holes
    vocabulary = Vocabulary(tuple(f"class{i}" for i in range(10)))
    return SegmentationResult(np.zeros_like(instance_map), instance_map, records, vocabulary), depth


def message_types():
    """rclpy's classes where ROS 2 and the package are sourced, else rosbags'; and a header."""
    try:
        from std_msgs.msg import Header

        from ovseg_ros.node.message_types import ros_message_types
        from ovseg_ros.node.outputs import points_message

        return ros_message_types(), Header(frame_id="camera"), points_message, "rclpy"
    except ImportError:
        header = bag_types.header(bag_types.typestore(), 0, "camera")
        return bag_types.message_types(), header, None, "rosbags"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--points-stride", type=int, default=4)
    args = parser.parse_args()
    k = np.array([[615.0, 0, 320], [0, 615.0, 240], [0, 0, 1]])
    tracker, reference_tracker = Tracker(), ReferenceTracker()
    types, header, points_message, kind = message_types()
    pool = convert.MessagePool()
    timed: dict[str, dict[str, list[float]]] = {
        "3D and tracking": {},
        "3D outputs": {},
        "overlay": {},
    }

    def lap(group: str, name: str, step: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = step()
        if repeat:  # the first run warms caches
            timed[group].setdefault(name, []).append(1e3 * (time.perf_counter() - start))
        return value

    for repeat in range(args.repeats + 1):
        result, raw = synthetic_frame(args.instances, shift=repeat % 3, seed=repeat)
        depth = lap("3D and tracking", "decode_depth", lambda: decode_depth(raw, "16UC1"))
        points = lap("3D and tracking", "locate", lambda: locate(result, depth, k))
        lap("3D and tracking", "track", lambda: track(result, tracker, stamp=repeat / 30))
        lap(
            "3D and tracking",
            "reference locate",
            lambda: reference_measure_instances(
                back_project(depth, k), result.instance_map, len(result.instances)
            ),
        )
        lap(
            "3D and tracking",
            "reference track",
            lambda: reference_tracker.update(
                result.instance_map, [i.label for i in result.instances]
            ),
        )
        rgb = np.zeros((*depth.shape, 3), np.uint8)
        cloud = lap(
            "3D outputs",
            "labelled_points",
            lambda: labelled_points(points, rgb, result, args.points_stride),
        )
        if points_message is not None:
            lap("3D outputs", "points_message", lambda: points_message(header, cloud))
        lap("3D outputs", "markers", lambda: convert.markers_message(types, header, result, pool))
        lap(
            "3D outputs",
            "detections_3d",
            lambda: convert.detections_3d_message(types, header, result, pool),
        )
        lap("3D outputs", "reference markers", lambda: reference_markers(types, header, result))
        lap("overlay", "overlay", lambda: overlay(rgb, result))
        lap("overlay", "reference overlay", lambda: reference_overlay(rgb, result))
    assert len({i.track_id for i in result.instances}) == args.instances
    print(
        f"640x480, {args.instances} instances, median (p95) of {args.repeats} runs, ms; "
        f"{kind} messages, points_stride {args.points_stride} ({len(cloud)} points):"
    )
    for group, steps in timed.items():
        print(f"{group}:")
        report(steps)


def reference_markers(types: Any, header: Any, result: Any) -> Any:
    """Markers as the converters built them before: new messages, sub-messages passed to the
    constructors (which build their defaults too)."""
    markers = [types.Marker(header=header, action=convert.MARKER_DELETEALL)]
    for instance in result.instances:
        (x, y, z), extent = instance.geometry.centroid, instance.geometry.extent
        sizes = [max(float(e), convert.MIN_MARKER_SIZE_M) for e in extent]
        for ns, kind, text in (
            ("boxes", convert.MARKER_CUBE, ""),
            ("labels", convert.MARKER_TEXT, instance.label),
        ):
            markers.append(
                types.Marker(
                    header=header,
                    ns=ns,
                    id=convert.object_id(instance),
                    type=kind,
                    action=convert.MARKER_ADD,
                    pose=types.Pose(
                        position=types.Point(x=float(x), y=float(y), z=float(z)),
                        orientation=types.Quaternion(x=0.0, y=0.0, z=0.0, w=1.0),
                    ),
                    scale=types.Vector3(x=sizes[0], y=sizes[1], z=sizes[2]),
                    color=types.ColorRGBA(r=0.5, g=0.5, b=0.5, a=0.5),
                    text=text,
                )
            )
    return types.MarkerArray(markers=markers)


def report(steps: dict[str, list[float]]) -> None:
    """Each step's median (p95), the total of the steps in use and of the references, and
    each reference's ratio to its replacement."""
    for step, values in steps.items():
        line = (
            f"  {step:20s} {statistics.median(values):7.2f}  (p95 "
            f"{sorted(values)[int(0.95 * (len(values) - 1))]:.2f})"
        )
        replaced = step.removeprefix("reference ")
        if replaced != step:
            line += f"  {statistics.median(values) / statistics.median(steps[replaced]):.1f}x"
        print(line)
    in_use = [
        sum(v)
        for v in zip(
            *(values for step, values in steps.items() if not step.startswith("reference "))
        )
    ]
    print(f"  {'total':20s} {statistics.median(in_use):7.2f}")


if __name__ == "__main__":
    main()
