"""launch/segment.launch.py as a user runs it: two `ros2 launch` processes at once, each with
its own namespace, node_name, camera, vocabulary and params_file. Their topics are where the
README's topic table says (`<namespace>/<node_name>/...`), each node's outputs carry only its
own camera's frames, the one launched with depth:= pairs its camera with that depth topic and
the CameraInfo next to the camera topic and has the 3D outputs, and a bag of one node's live
outputs recorded by the real
`ros2 bag record` is listed by `ros2 bag info` with our message types.

The launches get the tiny models through their params_file argument; the launch prefix
(tiny_clip_prefix.py) only registers the tiny CLIP architecture in the node's process.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from graph_support import STARTUP_TIMEOUT_S, spin_until  # skips without ROS 2

# isort: split
import yaml
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from ovseg_ros.msg import PanopticSegmentation

HERE = Path(__file__).resolve().parent
STOP_TIMEOUT_S = 20.0
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
# Two cameras that differ in everything a frame carries: topic, frame_id, size, stamp.
NODES = {
    "left": dict(
        namespace="left",
        node_name="seg_a",
        image="/left/camera",
        vocabulary=["mug", "kettle"],
        frame_id="left_cam",
        size=(48, 64),
        sec=100,
        depth="",
    ),
    "right": dict(
        namespace="/right/arm",
        node_name="seg_b",
        image="/right/arm/camera",
        vocabulary=["chair", "lamp", "sofa"],
        frame_id="right_cam",
        size=(40, 56),
        sec=200,
        depth="/right/arm/aligned_depth/image",
    ),
}
SCENE_OUTPUTS = ("points", "markers", "detections_3d")
OUTPUTS = {
    "semantic": Image,
    "instances": Image,
    "panoptic": PanopticSegmentation,
    "detections": Detection2DArray,
    "overlay": Image,
    "label_info": LabelInfo,
}
RECORDED = {  # topic of the left node: type name ros2 bag info must list
    "panoptic": "ovseg_ros/msg/PanopticSegmentation",
    "detections": "vision_msgs/msg/Detection2DArray",
    "label_info": "vision_msgs/msg/LabelInfo",
    "semantic": "sensor_msgs/msg/Image",
    "instances": "sensor_msgs/msg/Image",
}


def node_path(spec: dict) -> str:
    return "/" + "/".join(p for p in (spec["namespace"].strip("/"), spec["node_name"]) if p)


def params_file(folder: Path, parameters: dict[str, str]) -> Path:
    """The tiny models' settings as a ROS 2 params file (typed as YAML reads them)."""
    values = {
        key: yaml.safe_load(value)
        for key, value in parameters.items()
        if key not in ("vocabulary", "device")
    }
    path = folder / "tiny_params.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    return path


def start(command: list[str], log: Path) -> subprocess.Popen:
    """A child with default SIGINT handling (so kill -INT stops it as Ctrl-C does)."""
    return subprocess.Popen(
        command,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(os.environ, PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0"),
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def interrupt(process: subprocess.Popen) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def camera_image(spec: dict, nanosec: int) -> Image:
    height, width = spec["size"]
    msg = Image(height=height, width=width, encoding="bgr8", is_bigendian=0, step=width * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = spec["sec"], nanosec
    msg.header.frame_id = spec["frame_id"]
    pixels = np.full((height, width, 3), 30, np.uint8)
    pixels[4:20, 6:30] = (0, 200, 0)
    msg.data.frombytes(pixels.tobytes())
    return msg


@pytest.fixture(scope="module")
def launched(tiny_setup, tmp_path_factory, ros):
    config_dir, parameters = tiny_setup
    folder = tmp_path_factory.mktemp("launch_file")
    params = params_file(folder, parameters)
    prefix = f"{sys.executable} {HERE / 'tiny_clip_prefix.py'} {config_dir}"
    launches, logs = {}, {}
    for key, spec in NODES.items():
        logs[key] = folder / f"{key}.log"
        launches[key] = start(
            [
                "ros2",
                "launch",
                "--launch-prefix",
                prefix,
                "ovseg_ros",
                "segment.launch.py",
                f"namespace:={spec['namespace']}",
                f"node_name:={spec['node_name']}",
                f"image:={spec['image']}",
                f"vocabulary:=[{', '.join(spec['vocabulary'])}]",
                f"params_file:={params}",
                "device:=cpu",
                *([f"depth:={spec['depth']}"] if spec["depth"] else []),
            ],
            logs[key],
        )
    received = {key: {topic: [] for topic in OUTPUTS} for key in NODES}
    for key, spec in NODES.items():
        for topic, msg_type in OUTPUTS.items():
            ros.create_subscription(
                msg_type,
                f"{node_path(spec)}/{topic}",
                received[key][topic].append,
                LATCHED if topic == "label_info" else 10,
            )
    cameras = {
        key: ros.create_publisher(Image, spec["image"], qos_profile_sensor_data)
        for key, spec in NODES.items()
    }
    depths = {
        key: ros.create_publisher(Image, spec["depth"], qos_profile_sensor_data)
        for key, spec in NODES.items()
        if spec["depth"]
    }

    def log(key: str) -> str:
        return logs[key].read_text(errors="replace")[-3000:]

    try:  # a launch that fails to start must not leave the other one running
        for key, camera in cameras.items():
            assert (
                spin_until(
                    ros,
                    lambda: camera.get_subscription_count() > 0 or launches[key].poll() is not None,
                    STARTUP_TIMEOUT_S,
                )
                and launches[key].poll() is None
            ), f"the {key} launch never subscribed:\n{log(key)}"
        yield launches, received, (cameras, depths), log, folder
    finally:
        for process in launches.values():
            interrupt(process)


def depth_image(spec: dict, nanosec: int) -> Image:
    """A registered 16UC1 depth image of the camera's frame (same stamp, frame_id, size)."""
    height, width = spec["size"]
    msg = Image(height=height, width=width, encoding="16UC1", is_bigendian=0, step=width * 2)
    msg.header.stamp.sec, msg.header.stamp.nanosec = spec["sec"], nanosec
    msg.header.frame_id = spec["frame_id"]
    msg.data.frombytes(np.full((height, width), 1200, np.uint16).tobytes())
    return msg


def stream(ros, publishers, until, timeout_s: float) -> bool:
    cameras, depths = publishers
    counter = [0]

    def publish():
        counter[0] += 1
        for key, camera in cameras.items():
            camera.publish(camera_image(NODES[key], counter[0]))
        for key, depth in depths.items():
            depth.publish(depth_image(NODES[key], counter[0]))

    return spin_until(ros, until, timeout_s, every=publish, every_s=0.5)


def test_two_launched_nodes_use_their_namespaces_and_do_not_cross_talk(launched, ros):
    launches, received, cameras, log, _folder = launched

    def labelled(key: str, count: int) -> bool:
        return len([m for m in received[key]["panoptic"] if list(m.vocabulary)]) >= count

    assert stream(
        ros,
        cameras,
        lambda: all(labelled(key, 2) and received[key]["overlay"] for key in NODES),
        STARTUP_TIMEOUT_S,
    ), "\n".join(log(key) for key in NODES)
    names = set(ros.get_node_names_and_namespaces())
    for key, spec in NODES.items():
        path = node_path(spec)
        namespace = path.rsplit("/", 1)[0] or "/"
        assert (spec["node_name"], namespace) in names, names
        published = {
            topic
            for topic, _types in ros.get_publisher_names_and_types_by_node(
                spec["node_name"], namespace
            )
        }
        assert {f"{path}/{topic}" for topic in OUTPUTS} | {"/diagnostics"} <= published, published
        assert not {t for t in published if t.startswith("/ovseg/")}, published
        subscribed = {
            topic
            for topic, _types in ros.get_subscriber_names_and_types_by_node(
                spec["node_name"], namespace
            )
        }
        assert {spec["image"], f"{path}/vocabulary"} <= subscribed, subscribed
        scene = {f"{path}/{topic}" for topic in SCENE_OUTPUTS}
        depth_inputs = {spec["depth"], spec["image"].rsplit("/", 1)[0] + "/camera_info"}
        if spec["depth"]:
            assert scene <= published and depth_inputs <= subscribed, (published, subscribed)
        else:
            assert not scene & published and not depth_inputs & subscribed, subscribed

        height, width = spec["size"]
        for topic in ("semantic", "instances", "panoptic", "detections", "overlay"):
            messages = received[key][topic]
            assert messages, topic
            for msg in messages:  # only this node's camera: its frame_id and its stamps
                assert (msg.header.frame_id, msg.header.stamp.sec) == (
                    spec["frame_id"],
                    spec["sec"],
                ), (key, topic)
        for msg in received[key]["semantic"] + received[key]["overlay"]:
            assert (msg.height, msg.width) == (height, width), key
        for msg in received[key]["panoptic"]:
            assert list(msg.vocabulary) in ([], spec["vocabulary"]), key
            assert (msg.semantic.height, msg.semantic.width) == (height, width), key
        assert [c.class_name for c in received[key]["label_info"][-1].class_map] == [
            *spec["vocabulary"],
            "unlabelled",
        ]


def bag_info(path: Path) -> str:
    info = subprocess.run(
        ["ros2", "bag", "info", str(path)], capture_output=True, text=True, timeout=60
    )
    assert info.returncode == 0, info.stdout + info.stderr
    return info.stdout


def test_ros2_bag_record_of_the_live_outputs_lists_our_types(launched, ros):
    launches, received, cameras, log, folder = launched
    path = node_path(NODES["left"])
    topics = [f"{path}/{topic}" for topic in RECORDED]
    bag = folder / "live_outputs"
    recorder = start(
        ["ros2", "bag", "record", "-s", "mcap", "-o", str(bag), *topics], folder / "record.log"
    )
    try:
        # Our subscription plus the recorder's on each topic: it records from then on.
        assert (
            spin_until(
                ros,
                lambda: (
                    all(ros.count_subscribers(t) >= 2 for t in topics)
                    or recorder.poll() is not None
                ),
                60.0,
            )
            and recorder.poll() is None
        ), (folder / "record.log").read_text()
        # Our subscriber matching does not prove the recorder's has matched the node's
        # publishers yet: stream a few frames more than the bag must hold.
        start_count = len(received["left"]["panoptic"])
        assert stream(
            ros,
            cameras,
            lambda: len(received["left"]["panoptic"]) >= start_count + 6,
            STARTUP_TIMEOUT_S,
        ), log("left")
    finally:
        assert interrupt(recorder) == 0, (folder / "record.log").read_text()
    info = bag_info(bag)
    for topic, type_name in RECORDED.items():
        match = re.search(
            rf"Topic: {re.escape(path)}/{topic} \| Type: {re.escape(type_name)}"
            r" \| Count: (\d+)",
            info,
        )
        assert match, (topic, info)
        assert int(match.group(1)) >= 1, (topic, info)


def test_both_launches_stop_cleanly_on_ctrl_c(launched):
    launches, _received, _cameras, log, _folder = launched
    for key, process in launches.items():
        assert interrupt(process) == 0, log(key)
        assert "Traceback" not in log(key), log(key)


@pytest.mark.parametrize("autostart", [True, False])
def test_a_managed_node_from_the_launch_file(tiny_setup, tmp_path, ros, autostart):
    """lifecycle:=true starts the managed node unconfigured; autostart:=true configures and
    activates it, so frames are answered without anyone calling ros2 lifecycle."""
    config_dir, parameters = tiny_setup
    prefix = f"{sys.executable} {HERE / 'tiny_clip_prefix.py'} {config_dir}"
    spec = dict(
        namespace="managed",
        node_name="seg_lc",
        image="/managed/camera",
        frame_id="managed_cam",
        size=(48, 64),
        sec=300,
    )
    log = tmp_path / "managed.log"
    launch = start(
        [
            "ros2",
            "launch",
            "--launch-prefix",
            prefix,
            "ovseg_ros",
            "segment.launch.py",
            "namespace:=managed",
            "node_name:=seg_lc",
            f"image:={spec['image']}",
            "vocabulary:=[mug, kettle]",
            f"params_file:={params_file(tmp_path, parameters)}",
            "device:=cpu",
            "lifecycle:=true",
            f"autostart:={'true' if autostart else 'false'}",
        ],
        log,
    )
    try:
        answered: list = []
        ros.create_subscription(
            PanopticSegmentation, "/managed/seg_lc/panoptic", answered.append, 10
        )
        camera = ros.create_publisher(Image, spec["image"], qos_profile_sensor_data)

        def lifecycle_state() -> str:
            done = subprocess.run(
                ["ros2", "lifecycle", "get", "/managed/seg_lc"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            return (done.stdout + done.stderr).strip()

        expected = "active" if autostart else "unconfigured"
        assert spin_until(
            ros,
            lambda: lifecycle_state().startswith(expected) or launch.poll() is not None,
            STARTUP_TIMEOUT_S,
        ), f"never {expected}: {lifecycle_state()}\n{log.read_text()[-3000:]}"
        if autostart:
            assert spin_until(
                ros,
                lambda: bool(answered),
                STARTUP_TIMEOUT_S,
                every=lambda: camera.publish(camera_image(spec, 1)),
            ), log.read_text()[-3000:]
            assert answered[0].header.frame_id == "managed_cam"
        else:
            assert ros.count_publishers("/managed/seg_lc/panoptic") == 0
    finally:
        interrupt(launch)
