"""A bag written by BagWriter, checked the way users would: the real `ros2 bag info`, and
`ros2 bag play` into a real rclpy subscriber that decodes every message of every topic,
/ovseg/panoptic included. Needs a sourced ROS 2 (rclpy, vision_msgs, ros2 on PATH) and
ovseg_ros's messages built by colcon (test/graph/run.sh); skips, with the reason, otherwise."""

import os
import shutil
import subprocess
import time

import numpy as np
import pytest
from graph_support import rclpy  # skips without ROS 2 or without the built messages

# isort: split

pytest.importorskip("vision_msgs.msg", reason="needs vision_msgs")
if shutil.which("ros2") is None:
    pytest.skip("needs the ros2 command", allow_module_level=True)

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from ovseg_ros.msg import PanopticSegmentation
from ovseg_ros.offline.bag_writer import BagWriter
from ovseg_ros.segmentation.panoptic import Instance, SegmentationResult
from ovseg_ros.segmentation.vocabulary import Vocabulary

FRAMES = 3


def write_bag(path):
    vocabulary = Vocabulary.parse("mug, chair")
    semantic = np.full((20, 28), 65535, np.uint16)
    semantic[2:6, 3:9] = 1
    instances = np.zeros((20, 28), np.uint16)
    instances[2:6, 3:9] = 1
    result = SegmentationResult(
        semantic, instances, [Instance(1, 1, "chair", 0.9, 0.8, True, (3, 2, 6, 4), 24)], vocabulary
    )
    with BagWriter(path) as writer:
        writer.write_label_info(vocabulary, 0.0, 1)
        for k in range(FRAMES):
            writer.write_result(
                writer.header(k * 10**8 + 3, "cam"),
                10**8 * (k + 1),
                np.zeros((20, 28, 3), np.uint8),
                result,
            )


def test_ros2_bag_info_and_play(tmp_path):
    bag = tmp_path / "seg"
    write_bag(bag)
    info = subprocess.run(
        ["ros2", "bag", "info", str(bag)], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0, info.stderr
    assert (
        "Topic: /ovseg/panoptic | Type: ovseg_ros/msg/PanopticSegmentation | Count: 3"
        in info.stdout
    )
    topics = [
        "/ovseg/semantic",
        "/ovseg/instances",
        "/ovseg/detections",
        "/ovseg/label_info",
        "/ovseg/panoptic",
    ]

    rclpy.init()
    node = rclpy.create_node("bag_play_check")
    got: dict[str, list] = {t: [] for t in topics}
    reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
    )
    types = {
        "/ovseg/semantic": Image,
        "/ovseg/instances": Image,
        "/ovseg/detections": Detection2DArray,
        "/ovseg/label_info": LabelInfo,
        "/ovseg/panoptic": PanopticSegmentation,
    }
    for topic in topics:
        node.create_subscription(
            types[topic],
            topic,
            got[topic].append,
            latched if topic.endswith("label_info") else reliable,
        )
    try:
        time.sleep(1.0)
        player = subprocess.Popen(
            ["ros2", "bag", "play", str(bag), "--topics", *topics],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=dict(os.environ),
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (
            any(len(got[t]) < FRAMES for t in topics if not t.endswith("label_info"))
            or not got["/ovseg/label_info"]
        ):
            rclpy.spin_once(node, timeout_sec=0.2)
        player.wait(timeout=60)
    finally:
        node.destroy_node()
        rclpy.shutdown()
    assert [len(got[t]) for t in topics] == [
        1 if t.endswith("label_info") else FRAMES for t in topics
    ]
    stamps = [(m.header.stamp.sec, m.header.stamp.nanosec) for m in got["/ovseg/semantic"]]
    assert stamps == [(0, k * 10**8 + 3) for k in range(FRAMES)]
    semantic = got["/ovseg/semantic"][0]
    assert (semantic.encoding, semantic.width, semantic.height) == ("16UC1", 28, 20)
    values = np.frombuffer(bytes(semantic.data), "<u2").reshape(20, 28)
    assert values[3, 4] == 1 and values[0, 0] == 65535
    detection = got["/ovseg/detections"][0].detections[0]
    assert detection.results[0].hypothesis.class_id == "chair"
    assert detection.bbox.center.position.x == pytest.approx(6.0)
    assert [c.class_name for c in got["/ovseg/label_info"][0].class_map] == [
        "mug",
        "chair",
        "unlabelled",
    ]
    for k, panoptic in enumerate(got["/ovseg/panoptic"]):  # every one, decoded by rclpy
        assert isinstance(panoptic, PanopticSegmentation)
        assert (panoptic.header.stamp.nanosec, panoptic.header.frame_id) == (k * 10**8 + 3, "cam")
        assert list(panoptic.vocabulary) == ["mug", "chair"]
        assert [(i.id, i.class_index, i.label, i.area) for i in panoptic.instances] == [
            (1, 1, "chair", 24)
        ]
        bbox = panoptic.instances[0].bbox
        assert (bbox.x_offset, bbox.y_offset, bbox.width, bbox.height) == (3, 2, 6, 4)
        for image in (panoptic.semantic, panoptic.instance):
            assert (image.encoding, image.width, image.height) == ("16UC1", 28, 20)
        pixels = np.frombuffer(bytes(panoptic.instance.data), "<u2").reshape(20, 28)
        assert int((pixels == 1).sum()) == 24 and pixels[3, 4] == 1
