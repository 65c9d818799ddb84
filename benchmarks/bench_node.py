"""The node's own cost on a real ROS 2 graph: the ovseg node with a zero-cost segmenter
against a bare rclpy relay that republishes the image, side by side.

A camera publisher (640x480 rgb8 by default, stamped with the clock at publishing) and a
subscriber timing ``now - header.stamp`` run in this process. Each run starts, in a child
process of this script, either

- ``ovseg``: ``OvsegNode(make_segmenter=FixedSegmenter)``, a SegmenterLike whose ``segment``
  returns one precomputed result of the frame's size with --instances instances, so the
  node's work is decode + convert + publish; the subscriber times ``~/panoptic``;
- ``relay``: a bare rclpy node that republishes each image as it comes (the baseline: the same
  DDS transfer of the image in, one message of similar size out).

Reported per kind, as the median over the runs: the median and p95 end-to-end latency, the
child's CPU time per frame (utime + stime from /proc), and for ovseg the node's own
per-stage means from /diagnostics (decode; publish = convert + publish). Node overhead is
ovseg's latency minus the relay's. Needs a sourced ROS 2 and the package built by colcon:

    source .venv/bin/activate && source /opt/ros/jazzy/setup.bash
    colcon build --packages-select ovseg_ros && source install/setup.bash
    python3 benchmarks/bench_node.py --runs 5 --json bench_node.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

NAMESPACE = "/bench"
CAMERA = "/bench/camera/image_raw"
VOCABULARY = ["mug", "kettle", "person", "chair", "table", "door", "floor", "wall", "book",
              "lamp"]
OUT_TOPICS = {"ovseg": f"{NAMESPACE}/ovseg/panoptic", "relay": f"{NAMESPACE}/relay/image"}


def fixed_result(height: int, width: int, instances: int, vocabulary: Any, version: int):
    """A SegmentationResult of realistic size: `instances` blocks tiling the frame."""
    from ovseg_ros.panoptic import Instance, SegmentationResult

    semantic = np.full((height, width), 65535, np.uint16)
    instance_map = np.zeros((height, width), np.uint16)
    columns = int(np.ceil(np.sqrt(instances * width / height)))
    rows = int(np.ceil(instances / columns))
    block_h, block_w = height // rows, width // columns
    listed = []
    for k in range(instances):
        y, x = (k // columns) * block_h, (k % columns) * block_w
        h, w = block_h - 2, block_w - 2
        class_index = k % len(vocabulary)
        semantic[y:y + h, x:x + w] = class_index
        instance_map[y:y + h, x:x + w] = k + 1
        listed.append(Instance(k + 1, class_index, vocabulary.names[class_index], 0.9, 0.95,
                               True, (x, y, w, h), w * h))
    return SegmentationResult(semantic, instance_map, listed, vocabulary, version)


class FixedSegmenter:
    """SegmenterLike at zero cost: segment() returns one precomputed result per frame size."""

    device = "cpu"

    def __init__(self, settings: Any, instances: int):
        self.settings = settings
        self._instances = instances
        self._version = 0
        self._results: dict[tuple, Any] = {}

    def update_settings(self, settings: Any) -> None:
        self.settings = settings

    def encode_vocabulary(self, vocabulary: Any):
        import torch

        from ovseg_ros.vocabulary import EncodedVocabulary

        self._version += 1
        return EncodedVocabulary(vocabulary, torch.zeros(len(vocabulary), 4), self._version)

    def segment(self, image: np.ndarray, vocabulary: Any):
        key = (image.shape[:2], vocabulary.version)
        if key not in self._results:
            self._results[key] = fixed_result(*image.shape[:2], self._instances,
                                              vocabulary.vocabulary, vocabulary.version)
        return self._results[key]


def ros_arguments(name: str) -> list[str]:
    return ["--ros-args", "-r", f"__node:={name}", "-r", f"__ns:={NAMESPACE}",
            "-r", f"image:={CAMERA}", "-p", f"vocabulary:=[{', '.join(VOCABULARY)}]"]


def run_child(kind: str, instances: int) -> None:
    """The node under test, in this (child) process, until SIGINT."""
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    rclpy.init(args=[sys.argv[0], *ros_arguments(kind)])
    if kind == "ovseg":
        from ovseg_ros.node import OvsegNode

        node = OvsegNode(make_segmenter=lambda settings: FixedSegmenter(settings, instances))
        node.start()
    else:
        node = rclpy.create_node(kind)
        out = node.create_publisher(Image, "~/image", QoSProfile(
            depth=5, reliability=ReliabilityPolicy.RELIABLE))
        node.create_subscription(Image, "image", out.publish, qos_profile_sensor_data)
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if kind == "ovseg":
            node.stop()
        node.destroy_node()
        rclpy.try_shutdown()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def measure(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """One run of one kind: start the child, warm up, stream, time, stop."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import Image

    if kind == "ovseg":
        from ovseg_ros.msg import PanopticSegmentation as OutType
    else:
        OutType = Image
    child = subprocess.Popen([sys.executable, __file__, "--child", kind,
                              "--instances", str(args.instances)],
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    node = rclpy.create_node(f"bench_{kind}_driver")
    latencies: list[float] = []
    diagnostics: list[dict[str, str]] = []
    counting = [False]

    def on_output(msg: Any) -> None:
        if counting[0]:
            sent = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            latencies.append((node.get_clock().now().nanoseconds - sent) / 1e6)

    def on_diagnostics(msg: Any) -> None:
        for status in msg.status:
            if status.name == "ovseg: segmentation" and counting[0]:
                diagnostics.append({kv.key: kv.value for kv in status.values})

    node.create_subscription(OutType, OUT_TOPICS[kind], on_output, QoSProfile(
        depth=10, reliability=ReliabilityPolicy.RELIABLE))
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    camera = node.create_publisher(Image, CAMERA, qos_profile_sensor_data)
    pixels = np.random.default_rng(0).integers(0, 255, (args.height, args.width, 3), np.uint8)
    template = Image(height=args.height, width=args.width, encoding="rgb8", is_bigendian=0,
                     step=args.width * 3)
    template.header.frame_id = "bench_camera"
    template.data.frombytes(pixels.tobytes())

    def publish() -> None:
        template.header.stamp = node.get_clock().now().to_msg()
        camera.publish(template)

    def spin_for(seconds: float, period: float | None = None) -> None:
        end = time.monotonic() + seconds
        next_frame = time.monotonic()
        while time.monotonic() < end:
            if period is not None and time.monotonic() >= next_frame:
                publish()
                next_frame += period
            rclpy.spin_once(node, timeout_sec=max(0.0, min(0.002, next_frame -
                                                            time.monotonic())))

    try:
        deadline = time.monotonic() + 120.0
        while (camera.get_subscription_count() == 0 or node.count_publishers(
                OUT_TOPICS[kind]) == 0) and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        period = 1.0 / args.rate
        spin_for(3.0, period)  # warm-up: the vocabulary is encoded, caches are filled
        counting[0] = True
        cpu_start, wall_start = cpu_seconds(child.pid), time.monotonic()
        spin_for(args.frames * period, period)
        cpu_used = cpu_seconds(child.pid) - cpu_start
        wall = time.monotonic() - wall_start
        spin_for(1.0)  # the last frames' outputs
        counting[0] = False
    finally:
        node.destroy_node()
        child.send_signal(signal.SIGINT)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    received = len(latencies)
    result = {"kind": kind, "sent": args.frames, "received": received,
              "latency_median_ms": percentile(latencies, 50),
              "latency_p95_ms": percentile(latencies, 95),
              "cpu_ms_per_frame": cpu_used * 1000.0 / max(received, 1),
              "cpu_load": cpu_used / wall}
    for stage in ("decode", "publish", "total"):
        values = [float(d[f"latency {stage} (ms)"]) for d in diagnostics
                  if f"latency {stage} (ms)" in d]
        if values:
            result[f"node_{stage}_ms"] = statistics.median(values)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each kind (alternating)")
    parser.add_argument("--frames", type=int, default=150, help="timed frames per run")
    parser.add_argument("--rate", type=float, default=15.0, help="camera frames per second")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--target-ms", type=float, default=5.0,
                        help="node overhead target per frame (ms)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=sorted(OUT_TOPICS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        run_child(args.child, args.instances)
        return 0

    import rclpy

    rclpy.init()
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in OUT_TOPICS}
    try:
        for run in range(args.runs):
            for kind in ("relay", "ovseg"):
                result = measure(kind, args)
                runs[kind].append(result)
                print(f"run {run + 1} {kind:5s}: " + ", ".join(
                    f"{key} {value:.2f}" if isinstance(value, float) else f"{key} {value}"
                    for key, value in result.items() if key != "kind"), flush=True)
    finally:
        rclpy.try_shutdown()
    summary = {kind: {key: statistics.median(r[key] for r in results)
                      for key in results[0] if key != "kind"
                      and all(key in r for r in results)}
               for kind, results in runs.items()}
    overhead = summary["ovseg"]["latency_median_ms"] - summary["relay"]["latency_median_ms"]
    summary["overhead_ms"] = {
        "latency_median": overhead,
        "latency_p95": summary["ovseg"]["latency_p95_ms"] - summary["relay"]["latency_p95_ms"],
        "cpu_per_frame": summary["ovseg"]["cpu_ms_per_frame"]
        - summary["relay"]["cpu_ms_per_frame"],
        "target": args.target_ms, "met": overhead <= args.target_ms}
    print(f"\n{args.width}x{args.height} rgb8 at {args.rate:g} Hz, {args.instances} "
          f"instances, median of {args.runs} runs of {args.frames} frames")
    print(f"{'':8s}{'median ms':>10s}{'p95 ms':>9s}{'CPU ms/frame':>14s}{'received':>10s}"
          f"{'node decode':>13s}{'node publish':>14s}{'node total':>12s}")
    for kind in ("relay", "ovseg"):
        s = summary[kind]
        print(f"{kind:8s}{s['latency_median_ms']:10.2f}{s['latency_p95_ms']:9.2f}"
              f"{s['cpu_ms_per_frame']:14.2f}{s['received']:10.0f}"
              + "".join(f"{s.get(f'node_{k}_ms', float('nan')):{w}.2f}"
                        for k, w in (("decode", 13), ("publish", 14), ("total", 12))))
    o = summary["overhead_ms"]
    print(f"node overhead (ovseg - relay): median {o['latency_median']:.2f} ms, p95 "
          f"{o['latency_p95']:.2f} ms, CPU {o['cpu_per_frame']:.2f} ms/frame; target "
          f"<= {args.target_ms:g} ms: {'met' if o['met'] else 'NOT met'}")
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
