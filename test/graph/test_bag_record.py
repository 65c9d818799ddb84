"""Bags from the real `ros2 bag record` (sqlite3 and mcap) of a camera topic, read by
`ovseg-segment BAG --topic ... --out DIR` and `--bag-out DIR`: one output per recorded
frame, in the recorded order. The CLI runs in this process with the tiny models (their CLIP
architecture is registered here by the tiny_setup fixture)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from graph_support import spin_until  # skips without ROS 2 or the built package

# isort: split
from rclpy.duration import Duration
from sensor_msgs.msg import Image

from ovseg_ros.offline.cli import main

TOPIC = "/bag_record/camera/image_raw"
SIZES = [(24, 32), (30, 40), (36, 48), (42, 56)]  # (height, width) of frame k: tells them apart
STORAGES = ("sqlite3", "mcap")
STOP_TIMEOUT_S = 20.0


def frame(k: int) -> Image:
    height, width = SIZES[k]
    msg = Image(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 300 + k, 11
    msg.header.frame_id = "bag_camera"
    pixels = np.full((height, width, 3), 40 * k, np.uint8)
    pixels[2:12, 3:20] = (220, 30, 30)
    msg.data.frombytes(pixels.tobytes())
    return msg


def cli_flags(parameters: dict[str, str]) -> list[str]:
    """The tiny models' node parameters as ovseg-segment flags."""
    return [
        "--cache-dir",
        parameters["cache_dir"],
        "--clip-model",
        parameters["clip_model"],
        "--clip-pretrained",
        parameters["clip_pretrained"],
        "--offline",
        "--device",
        "cpu",
        "--points-per-side",
        parameters["points_per_side"],
        "--pred-iou-thresh",
        "0.0",
        "--stability-score-thresh",
        "0.0",
        "--templates",
        "single",
    ]


def bag_counts(path: Path) -> dict[str, tuple[str, int]]:
    info = subprocess.run(
        ["ros2", "bag", "info", str(path)], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0, info.stdout + info.stderr
    return {
        topic: (msgtype, int(count))
        for topic, msgtype, count in re.findall(
            r"Topic: (\S+) \| Type: (\S+) \| Count: (\d+)", info.stdout
        )
    }


@pytest.fixture(scope="module")
def recorded(ros, tmp_path_factory) -> dict[str, Path]:
    """The same frames recorded at once by `ros2 bag record -s sqlite3` and `-s mcap`."""
    folder = tmp_path_factory.mktemp("recorded")
    camera = ros.create_publisher(Image, TOPIC, 10)  # reliable: every frame is acknowledged
    bags = {storage: folder / f"cam_{storage}" for storage in STORAGES}
    recorders = {
        storage: subprocess.Popen(
            ["ros2", "bag", "record", "-s", storage, "-o", str(bag), TOPIC],
            stdout=open(folder / f"{storage}.log", "wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(os.environ),
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        for storage, bag in bags.items()
    }
    try:
        assert spin_until(ros, lambda: camera.get_subscription_count() == len(STORAGES), 60.0)
        for k in range(len(SIZES)):
            # One at a time: an acknowledged frame is in the recorder's reader queue, and the
            # pause lets the recorder take it before the next (a burst can overwrite its
            # queue before it writes).
            camera.publish(frame(k))
            assert camera.wait_for_all_acked(Duration(seconds=10)), (
                f"a recorder did not acknowledge frame {k}"
            )
            spin_until(ros, lambda: False, 0.3)
    finally:
        for recorder in recorders.values():
            recorder.send_signal(signal.SIGINT)
            try:
                recorder.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                recorder.kill()
                recorder.wait()
    for storage, recorder in recorders.items():
        assert recorder.returncode == 0, (folder / f"{storage}.log").read_text()
        assert bag_counts(bags[storage])[TOPIC] == ("sensor_msgs/msg/Image", len(SIZES))
    return bags


def test_ovseg_segment_reads_real_recorded_bags_one_output_per_frame(
    recorded, tiny_setup, tmp_path
):
    _config_dir, parameters = tiny_setup
    out = tmp_path / "out"
    code = main(
        [
            *map(str, recorded.values()),
            "--topic",
            TOPIC,
            "--vocab",
            "mug, book",
            "--out",
            str(out),
            "--quiet",
            *cli_flags(parameters),
        ]
    )
    assert code == 0
    for storage, bag in recorded.items():
        records = sorted(out.glob(f"{bag.name}_*.json"))
        assert [p.stem for p in records] == [f"{bag.name}_{k:06d}" for k in range(len(SIZES))]
        stamps = []
        for k, path in enumerate(records):
            record = json.loads(path.read_text())
            assert (record["height"], record["width"]) == SIZES[k], (storage, k)
            assert record["vocabulary"] == ["mug", "book"]
            source, stamp = record["source"].rsplit("@", 1)
            assert source == f"{bag}:{TOPIC}"
            stamps.append(int(stamp))
            for suffix in ("overlay", "labels", "instances"):
                assert (out / f"{path.stem}_{suffix}.png").is_file()
        assert stamps == sorted(stamps), storage  # the recording's time order


def test_ovseg_segment_bag_out_of_real_recorded_bags(recorded, tiny_setup, tmp_path):
    _config_dir, parameters = tiny_setup
    out = tmp_path / "bags"
    code = main(
        [
            *map(str, recorded.values()),
            "--topic",
            TOPIC,
            "--vocab",
            "mug, book",
            "--bag-out",
            str(out),
            "--quiet",
            *cli_flags(parameters),
        ]
    )
    assert code == 0
    for bag in recorded.values():
        counts = bag_counts(out / bag.name)
        for topic in (
            "/ovseg/panoptic",
            "/ovseg/semantic",
            "/ovseg/instances",
            "/ovseg/detections",
        ):
            assert counts[topic][1] == len(SIZES), (bag.name, topic, counts)
        assert counts["/ovseg/panoptic"][0] == "ovseg_ros/msg/PanopticSegmentation"
        assert counts["/ovseg/label_info"][1] >= 1
