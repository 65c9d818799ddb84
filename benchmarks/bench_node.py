"""The node on a real ROS 2 graph: what a robot gets from it (published frames per second,
latency, drops, CPU), with a stand-in segmenter of a given cost, side by side with a bare
rclpy relay and with the serial frame path, in one run.

A camera (640x480 rgb8 by default, stamped with the clock at publishing; with ``--depth`` also
a registered 16UC1 depth image and CameraInfo with the same stamp) and subscribers to every
output of the node under test run in this process. Each run starts, in a child process, one of

- ``staged``: ``OvsegNode`` (pipeline_depth 2, the default) with ``MovingSegmenter``:
  ``segment`` holds ``--segmenter-ms`` without the GIL (as a wait for CUDA does) and returns
  a result with ``--instances`` instances that move a few pixels every frame, so tracking
  does real work;
- ``serial``: the same with pipeline_depth 1;
- ``relay``: a bare rclpy node that republishes each image as it comes (the baseline: the
  same DDS transfer of the image in, one message of similar size out).

The subscribers take every output raw (serialized, not turned into Python objects, as a
subscriber in another process would) and read the header stamp of ``~/panoptic`` from its
bytes. Reported per kind, as the median over the runs: published frames per second over the
timed window, latency from the header stamp to ``~/panoptic`` received (median, p95), the
child's CPU time per published frame (utime + stime from /proc), the node's drops per stage
and step times from /diagnostics, and how busy the machine was (load average, all cores' busy
share). Needs a sourced ROS 2 and the package built by colcon:

    source .venv/bin/activate && source /opt/ros/jazzy/setup.bash
    colcon build --packages-select ovseg_ros && source install/setup.bash
    python3 benchmarks/bench_node.py --segmenter-ms 25 --depth --track --rate 30 --runs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

NAMESPACE = "/bench"
CAMERA = "/bench/camera/image_raw"
DEPTH = "/bench/camera/depth/image_raw"
CAMERA_INFO = "/bench/camera/camera_info"  # image_transport's sibling of CAMERA
VOCABULARY = ["mug", "kettle", "person", "chair", "table", "door", "floor", "wall", "book", "lamp"]
# Kind -> the node's pipeline_depth (the relay has none).
PIPELINE_DEPTHS = {"staged": 2, "serial": 1}
KINDS = ("relay", *PIPELINE_DEPTHS)
FOCAL_PX = 600.0
MOTION_FRAMES = 8  # the instances move back and forth over this many frames, 2 px a frame


def fixed_result(
    height: int, width: int, instances: int, vocabulary: Any, version: int, shift: int = 0
):
    """A SegmentationResult of realistic size: ``instances`` blocks tiling the frame, moved
    ``shift`` pixels right."""
    from ovseg_ros.segmentation.panoptic import Instance, SegmentationResult

    semantic = np.full((height, width), 65535, np.uint16)
    instance_map = np.zeros((height, width), np.uint16)
    columns = int(np.ceil(np.sqrt(instances * width / height)))
    rows = int(np.ceil(instances / columns))
    block_h, block_w = height // rows, width // columns
    # A CLIP-sized unit embedding per object, as the segmenter gives each instance.
    looks = np.random.default_rng(instances).normal(size=(instances, 768)).astype(np.float32)
    looks /= np.linalg.norm(looks, axis=1, keepdims=True)
    listed = []
    for k in range(instances):
        y, x = (k // columns) * block_h, (k % columns) * block_w + shift
        h, w = block_h - 2, max(min(block_w - 2, width - x), 0)
        class_index = k % len(vocabulary)
        semantic[y : y + h, x : x + w] = class_index
        instance_map[y : y + h, x : x + w] = k + 1
        listed.append(
            Instance(
                k + 1,
                class_index,
                vocabulary.names[class_index],
                0.9,
                0.95,
                True,
                (x, y, w, h),
                w * h,
                embedding=looks[k],
            )
        )
    return SegmentationResult(semantic, instance_map, listed, vocabulary, version)


class MovingSegmenter:
    """SegmenterLike: segment() holds ``delay_ms`` without the GIL, then returns a fresh result
    (its own Instance objects: the node writes track ids and geometry into them) whose
    instances move 2 px a frame, back and forth. Results are precomputed per frame size."""

    device = "cpu"

    def __init__(self, settings: Any, instances: int, delay_ms: float = 0.0):
        self.settings = settings
        self._instances = instances
        self._delay_s = delay_ms / 1000.0
        self._version = 0
        self._frames = 0
        self._results: dict[tuple, list[Any]] = {}

    def update_settings(self, settings: Any) -> None:
        self.settings = settings

    def encode_vocabulary(self, vocabulary: Any):
        import torch

        from ovseg_ros.segmentation.vocabulary import EncodedVocabulary

        self._version += 1
        return EncodedVocabulary(vocabulary, torch.zeros(len(vocabulary), 4), self._version)

    def segment(self, image: np.ndarray, vocabulary: Any):
        from ovseg_ros.segmentation.panoptic import SegmentationResult

        if self._delay_s:
            time.sleep(self._delay_s)
        key = (image.shape[:2], vocabulary.version)
        if key not in self._results:
            self._results[key] = [
                fixed_result(
                    *image.shape[:2],
                    self._instances,
                    vocabulary.vocabulary,
                    vocabulary.version,
                    shift=2 * step,
                )
                for step in (*range(MOTION_FRAMES), *range(MOTION_FRAMES - 2, 0, -1))
            ]
        cycle = self._results[key]
        shown = cycle[self._frames % len(cycle)]
        self._frames += 1
        return SegmentationResult(
            shown.semantic,
            shown.instance_map,
            [dataclasses.replace(i) for i in shown.instances],
            shown.vocabulary,
            shown.vocabulary_version,
        )


def ros_arguments(kind: str, args: argparse.Namespace) -> list[str]:
    arguments = [
        "--ros-args",
        "-r",
        f"__node:={kind}",
        "-r",
        f"__ns:={NAMESPACE}",
        "-r",
        f"image:={CAMERA}",
    ]
    if kind != "relay":
        arguments += [
            "-p",
            f"vocabulary:=[{', '.join(VOCABULARY)}]",
            "-p",
            f"pipeline_depth:={PIPELINE_DEPTHS[kind]}",
            "-p",
            f"track:={'true' if args.track else 'false'}",
        ]
        if args.depth:
            arguments += ["-p", "use_depth:=true", "-r", f"depth:={DEPTH}"]
    return arguments


def run_child(kind: str, args: argparse.Namespace) -> None:
    """The node under test, in this (child) process, until SIGINT."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init(args=[sys.argv[0], *ros_arguments(kind, args)])
    if kind == "relay":
        node = rclpy.create_node(kind)
        out = node.create_publisher(
            Image, "~/image", QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        )
        node.create_subscription(Image, "image", out.publish, qos_profile_sensor_data)
    else:
        from ovseg_ros.node.node import OvsegNode

        node = OvsegNode(
            make_segmenter=lambda settings: MovingSegmenter(
                settings, args.instances, args.segmenter_ms
            )
        )
        node.start()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if kind != "relay":
            node.stop()
        node.destroy_node()
        rclpy.try_shutdown()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores since boot."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def stamp_of(raw: bytes) -> int:
    """Nanoseconds of the header stamp at the start of a serialized message (CDR: 4 bytes
    of encapsulation, then int32 sec and uint32 nanosec)."""
    little = raw[1] == 1  # CDR_LE
    sec, nanosec = struct.unpack("<iI" if little else ">iI", raw[4:12])
    return sec * 10**9 + nanosec


def output_types(kind: str, depth: bool) -> dict[str, Any]:
    """Topic -> message type of every output of the node under test."""
    from sensor_msgs.msg import Image, PointCloud2
    from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
    from visualization_msgs.msg import MarkerArray

    from ovseg_ros.msg import PanopticSegmentation

    if kind == "relay":
        return {f"{NAMESPACE}/relay/image": Image}
    base = f"{NAMESPACE}/{kind}"
    outputs = {
        f"{base}/panoptic": PanopticSegmentation,
        f"{base}/semantic": Image,
        f"{base}/instances": Image,
        f"{base}/detections": Detection2DArray,
        f"{base}/overlay": Image,
        f"{base}/label_info": LabelInfo,
    }
    if depth:
        outputs.update(
            {
                f"{base}/points": PointCloud2,
                f"{base}/markers": MarkerArray,
                f"{base}/detections_3d": Detection3DArray,
            }
        )
    return outputs


def camera_messages(args: argparse.Namespace) -> tuple[Any, Any, Any]:
    """The colour image, the registered depth image (a slanted plane, 0.8 to 3 m, 5% holes)
    and the CameraInfo the camera publishes."""
    from sensor_msgs.msg import CameraInfo, Image

    rng = np.random.default_rng(0)
    width, height = args.width, args.height
    colour = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    colour.header.frame_id = "bench_camera"
    colour.data.frombytes(rng.integers(0, 255, (height, width, 3), np.uint8).tobytes())
    millimetres = np.linspace(800, 3000, width, dtype=np.float32)[None, :].repeat(height, 0)
    millimetres[rng.random((height, width)) < 0.05] = 0
    depth = Image(height=height, width=width, encoding="16UC1", is_bigendian=0, step=width * 2)
    depth.header.frame_id = "bench_camera"
    depth.data.frombytes(millimetres.astype("<u2").tobytes())
    info = CameraInfo(height=height, width=width)
    info.header.frame_id = "bench_camera"
    info.k = [FOCAL_PX, 0.0, width / 2, 0.0, FOCAL_PX, height / 2, 0.0, 0.0, 1.0]
    info.p = [FOCAL_PX, 0.0, width / 2, 0.0, 0.0, FOCAL_PX, height / 2, 0.0, 0.0, 0.0, 1.0, 0.0]
    return colour, depth, info


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run of one kind: start the child, warm up, stream, time, stop."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    command = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--instances",
        str(args.instances),
        "--segmenter-ms",
        str(args.segmenter_ms),
    ]
    command += ["--depth"] if args.depth else []
    command += ["--track"] if args.track else []
    child = subprocess.Popen(
        command, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    )
    node = rclpy.create_node(f"bench_{kind}_driver")
    latencies: list[float] = []
    diagnostics: list[dict[str, str]] = []
    counting = [False]
    outputs = output_types(kind, args.depth)
    watched = next(iter(outputs))  # ~/panoptic (or the relay's image)
    if args.subscribe != "all":
        wanted = {name.strip() for name in args.subscribe.split(",")} | {"panoptic"}
        outputs = {
            topic: kind_
            for topic, kind_ in outputs.items()
            if topic == watched or topic.rpartition("/")[2] in wanted
        }
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    subscriptions = []
    for topic, message_type in outputs.items():
        if topic == watched:

            def on_output(raw: bytes) -> None:
                if counting[0]:
                    latencies.append((node.get_clock().now().nanoseconds - stamp_of(raw)) / 1e6)

            callback = on_output
        else:

            def callback(raw: bytes) -> None:
                pass

        subscriptions.append(
            node.create_subscription(message_type, topic, callback, reliable, raw=True)
        )

    def on_diagnostics(msg: Any) -> None:
        for status in msg.status:
            if status.name == f"{kind}: segmentation" and counting[0]:
                diagnostics.append({kv.key: kv.value for kv in status.values})

    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    camera = node.create_publisher(Image, CAMERA, qos_profile_sensor_data)
    depth_out = node.create_publisher(Image, DEPTH, qos_profile_sensor_data)
    info_out = node.create_publisher(CameraInfo, CAMERA_INFO, qos_profile_sensor_data)
    colour, depth, info = camera_messages(args)
    sent = [0]

    def publish() -> None:
        stamp = node.get_clock().now().to_msg()
        colour.header.stamp = stamp
        camera.publish(colour)
        if args.depth:
            depth.header.stamp = info.header.stamp = stamp
            depth_out.publish(depth)
            info_out.publish(info)
        sent[0] += counting[0]

    def spin_for(seconds: float, period: float | None = None) -> None:
        end = time.monotonic() + seconds
        next_frame = time.monotonic()
        while time.monotonic() < end:
            if period is not None and time.monotonic() >= next_frame:
                publish()
                next_frame += period
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.002, next_frame - time.monotonic())))

    try:
        deadline = time.monotonic() + 120.0
        while (
            camera.get_subscription_count() == 0
            or any(node.count_publishers(topic) == 0 for topic in outputs)
        ) and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        period = 1.0 / args.rate
        spin_for(args.warmup_s, period)  # the vocabulary is encoded, caches are filled
        with open("/proc/loadavg") as load:
            load_before = float(load.read().split()[0])
        counting[0] = True
        busy_start, total_start = machine_ticks()
        cpu_start, wall_start = cpu_seconds(child.pid), time.monotonic()
        spin_for(args.frames * period, period)
        cpu_used = cpu_seconds(child.pid) - cpu_start
        wall = time.monotonic() - wall_start
        busy_end, total_end = machine_ticks()
        received_in_window = len(latencies)
        spin_for(1.0)  # the last frames' outputs
        counting[0] = False
        with open("/proc/loadavg") as load:
            load_after = float(load.read().split()[0])
    finally:
        node.destroy_node()
        child.send_signal(signal.SIGINT)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    published = len(latencies)
    result = {
        "kind": kind,
        "sent": sent[0],
        "published": published,
        "published_fps": received_in_window / wall,
        "latency_median_ms": percentile(latencies, 50),
        "latency_p95_ms": percentile(latencies, 95),
        "cpu_ms_per_published_frame": cpu_used * 1000.0 / max(published, 1),
        "node_cpu_load": cpu_used / wall,
        "machine_busy": (busy_end - busy_start) / max(total_end - total_start, 1),
        "load_average": (load_before + load_after) / 2,
    }
    if diagnostics:
        last = diagnostics[-1]
        for key, name in (
            ("frames received", "node_received"),
            ("frames dropped (a newer one arrived)", "dropped_before_segment"),
            ("results dropped (a newer one was segmented)", "dropped_before_output"),
            ("frames processed", "node_published"),
        ):
            if key in last:
                result[name] = float(last[key])
        steps = {
            key[len("latency ") : -len(" (ms)")]
            for d in diagnostics
            for key in d
            if key.startswith("latency ")
        }
        for step in sorted(steps):
            values = [
                float(d[f"latency {step} (ms)"]) for d in diagnostics if f"latency {step} (ms)" in d
            ]
            result[f"node_{step}_ms"] = statistics.median(values)
        for stage in ("segment", "output"):
            values = [
                float(d[f"busy {stage} stage (%)"])
                for d in diagnostics
                if f"busy {stage} stage (%)" in d
            ]
            if values:
                result[f"busy_{stage}_percent"] = statistics.median(values)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--kinds", default="relay,staged,serial", help=f"comma separated, of {', '.join(KINDS)}"
    )
    parser.add_argument("--runs", type=int, default=3, help="runs of each kind (alternating)")
    parser.add_argument("--frames", type=int, default=300, help="camera frames per timed window")
    parser.add_argument("--warmup-s", type=float, default=3.0)
    parser.add_argument("--rate", type=float, default=30.0, help="camera frames per second")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--instances", type=int, default=100)
    parser.add_argument(
        "--segmenter-ms",
        type=float,
        default=0.0,
        help="time segment() holds without the GIL, as a GPU wait does",
    )
    parser.add_argument(
        "--depth", action="store_true", help="a registered depth camera with CameraInfo (use_depth)"
    )
    parser.add_argument("--track", action="store_true", help="tracking on")
    parser.add_argument(
        "--subscribe",
        default="all",
        help="the outputs subscribed to (names under ~/, comma separated; "
        "~/panoptic always): 'all' by default",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args)
        return 0
    kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = set(kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kind(s) {', '.join(sorted(unknown))}; use {', '.join(KINDS)}")

    import rclpy

    rclpy.init()
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    try:
        for run in range(args.runs):
            for kind in kinds:
                result = measure(kind, args)
                runs[kind].append(result)
                print(
                    f"run {run + 1} {kind:6s}: "
                    + ", ".join(
                        f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}"
                        for key, value in result.items()
                        if key != "kind"
                    ),
                    flush=True,
                )
    finally:
        rclpy.try_shutdown()
    summary = {
        kind: {
            key: statistics.median(r[key] for r in results)
            for key in results[0]
            if key != "kind" and all(key in r for r in results)
        }
        for kind, results in runs.items()
    }
    print(
        f"\n{args.width}x{args.height} rgb8 at {args.rate:g} Hz, {args.instances} instances, "
        f"segmenter {args.segmenter_ms:g} ms, depth {'on' if args.depth else 'off'}, "
        f"tracking {'on' if args.track else 'off'}, subscribed: {args.subscribe}; median of "
        f"{args.runs} runs of "
        f"{args.frames} frames"
    )
    columns = (
        ("published_fps", "fps"),
        ("latency_median_ms", "lat med"),
        ("latency_p95_ms", "lat p95"),
        ("cpu_ms_per_published_frame", "CPU/frame"),
        ("dropped_before_segment", "drop seg"),
        ("dropped_before_output", "drop out"),
        ("busy_segment_percent", "busy seg%"),
        ("busy_output_percent", "busy out%"),
        ("machine_busy", "machine"),
        ("load_average", "load"),
    )
    print(f"{'':8s}" + "".join(f"{title:>11s}" for _, title in columns))
    for kind in kinds:
        print(
            f"{kind:8s}"
            + "".join(f"{summary[kind].get(key, float('nan')):11.2f}" for key, _ in columns)
        )
    for kind in kinds:
        steps = {
            key: value
            for key, value in summary[kind].items()
            if key.startswith("node_") and key.endswith("_ms")
        }
        if steps:
            print(
                f"{kind} steps (ms): "
                + ", ".join(f"{key[5:-3]} {value:.1f}" for key, value in steps.items())
            )
    if "relay" in summary:
        for kind in kinds:
            if kind != "relay":
                overhead = (
                    summary[kind]["latency_median_ms"] - summary["relay"]["latency_median_ms"]
                )
                print(f"{kind} latency over the relay's: {overhead:.2f} ms")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"args": vars(args) | {"json": str(args.json)}, "runs": runs, "summary": summary},
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
