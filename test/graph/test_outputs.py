"""The real node's outputs and parameters over DDS: types, QoS, headers, latched label_info,
both camera QoS kinds, and parameter sets as `ros2 param set` sends them.

One node process serves the whole module (the tests do not interfere: each uses its own
stamps and restores the vocabulary it changed).
"""

from __future__ import annotations

import numpy as np
import pytest
from graph_support import STARTUP_TIMEOUT_S, spin_until  # skips without ROS 2

# isort: split
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import DescribeParameters, SetParameters
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from ovseg_ros.msg import PanopticSegmentation

NODE = "graph_out"
CAMERA = "/graph_out/camera"
HEIGHT, WIDTH = 48, 64
FRAME_ID = "graph_camera"
OUTPUTS = {  # topic: (type, type name, reliability, durability, depth) as in the README
    "semantic": (Image, "sensor_msgs/msg/Image", "reliable", "volatile", 5),
    "instances": (Image, "sensor_msgs/msg/Image", "reliable", "volatile", 5),
    "panoptic": (
        PanopticSegmentation,
        "ovseg_ros/msg/PanopticSegmentation",
        "reliable",
        "volatile",
        5,
    ),
    "detections": (Detection2DArray, "vision_msgs/msg/Detection2DArray", "reliable", "volatile", 5),
    "overlay": (Image, "sensor_msgs/msg/Image", "reliable", "volatile", 5),
    "label_info": (LabelInfo, "vision_msgs/msg/LabelInfo", "reliable", "transient_local", 1),
}
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)


def camera_image(sec: int, nanosec: int = 7) -> Image:
    image = np.full((HEIGHT, WIDTH, 3), 20, dtype=np.uint8)
    image[5:25, 5:30] = (0, 0, 220)
    msg = Image(height=HEIGHT, width=WIDTH, encoding="bgr8", is_bigendian=0, step=WIDTH * 3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    msg.header.frame_id = FRAME_ID
    msg.data.frombytes(image.tobytes())
    return msg


@pytest.fixture(scope="module")
def graph(start_node, ros):
    """The node, a subscription to every output, and both kinds of camera publisher."""
    node = start_node(NODE, CAMERA)
    received: dict[str, list] = {}
    for topic, (msg_type, *_rest) in OUTPUTS.items():
        received[topic] = []
        ros.create_subscription(
            msg_type,
            f"/{NODE}/{topic}",
            received[topic].append,
            LATCHED if topic == "label_info" else 10,
        )
    received["diagnostics"] = []
    ros.create_subscription(DiagnosticArray, "/diagnostics", received["diagnostics"].append, 10)
    cameras = {
        "best_effort": ros.create_publisher(Image, CAMERA, qos_profile_sensor_data),
        "reliable": ros.create_publisher(Image, CAMERA, 10),
    }
    assert spin_until(
        ros, lambda: all(c.get_subscription_count() for c in cameras.values()), STARTUP_TIMEOUT_S
    ), "the node never subscribed to the camera:\n" + node.log()[-3000:]
    assert spin_until(
        ros,
        lambda: (
            received["label_info"]
            and [c.class_name for c in received["label_info"][-1].class_map]
            == ["mug", "kettle", "unlabelled"]
        ),
        STARTUP_TIMEOUT_S,
    ), "the start vocabulary was never in use:\n" + node.log()[-3000:]
    yield node, received, cameras


def stamped(messages: list, sec: int) -> list:
    return [m for m in messages if m.header.stamp.sec == sec]


def stream_until(ros, camera, received, sec: int, topics, timeout_s: float) -> bool:
    return spin_until(
        ros,
        lambda: all(stamped(received[t], sec) for t in topics),
        timeout_s,
        every=lambda: camera.publish(camera_image(sec)),
        every_s=1.0,
    )


def set_parameters(ros, *parameters: ParameterMsg):
    client = ros.create_client(SetParameters, f"/{NODE}/set_parameters")
    try:
        assert client.wait_for_service(timeout_sec=STARTUP_TIMEOUT_S)
        future = client.call_async(SetParameters.Request(parameters=list(parameters)))
        rclpy.spin_until_future_complete(ros, future, timeout_sec=30.0)
        return future.result().results
    finally:
        ros.destroy_client(client)


def strings(name: str, values: list[str]) -> ParameterMsg:
    return ParameterMsg(
        name=name,
        value=ParameterValue(type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=values),
    )


def bools(name: str, values: list[bool]) -> ParameterMsg:
    """As `ros2 param set NODE NAME "[]"` sends an empty list (a bool array)."""
    return ParameterMsg(
        name=name,
        value=ParameterValue(type=ParameterType.PARAMETER_BOOL_ARRAY, bool_array_value=values),
    )


def test_every_output_has_the_readme_type_qos_and_the_frame_header(graph, ros):
    node, received, cameras = graph
    assert stream_until(
        ros,
        cameras["best_effort"],
        received,
        42,
        ("semantic", "instances", "panoptic", "detections", "overlay"),
        STARTUP_TIMEOUT_S,
    ), node.log()[-3000:]
    for topic, (_type, type_name, reliability, durability, depth) in OUTPUTS.items():
        infos = ros.get_publishers_info_by_topic(f"/{NODE}/{topic}")
        assert len(infos) == 1, (topic, infos)
        info = infos[0]
        assert info.topic_type == type_name, topic
        qos = info.qos_profile
        assert qos.reliability.name.lower() == reliability, (topic, qos.reliability)
        assert qos.durability.name.lower() == durability, (topic, qos.durability)
        assert qos.depth == depth or depth == 0, (topic, qos.depth)
        if topic == "label_info":
            continue
        msg = stamped(received[topic], 42)[0]
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (42, 7), topic
        assert msg.header.frame_id == FRAME_ID, topic
    for topic in ("semantic", "instances"):
        msg = stamped(received[topic], 42)[0]
        assert (msg.encoding, msg.height, msg.width) == ("16UC1", HEIGHT, WIDTH)
    assert stamped(received["overlay"], 42)[0].encoding == "rgb8"
    assert list(stamped(received["panoptic"], 42)[0].vocabulary) == ["mug", "kettle"]
    assert (
        ros.get_publishers_info_by_topic("/diagnostics")[0].topic_type
        == "diagnostic_msgs/msg/DiagnosticArray"
    )


def test_reliable_camera_is_received_too(graph, ros):
    node, received, cameras = graph
    assert stream_until(ros, cameras["reliable"], received, 43, ("panoptic",), STARTUP_TIMEOUT_S), (
        node.log()[-3000:]
    )


def test_late_joiner_gets_label_info_and_it_follows_the_vocabulary(graph, ros):
    node, received, cameras = graph
    late: list[LabelInfo] = []
    subscription = ros.create_subscription(LabelInfo, f"/{NODE}/label_info", late.append, LATCHED)
    try:
        assert spin_until(ros, lambda: late, 30.0), "a late joiner got no latched label_info"
        assert [c.class_name for c in late[-1].class_map][-1] == "unlabelled"
        results = set_parameters(ros, strings("vocabulary", ["chair", "lamp", "sofa"]))
        assert results[0].successful, results[0].reason
        assert stream_until(
            ros, cameras["best_effort"], received, 44, ("panoptic",), STARTUP_TIMEOUT_S
        )
        assert spin_until(
            ros,
            lambda: any(
                list(m.vocabulary) == ["chair", "lamp", "sofa"] for m in received["panoptic"]
            ),
            STARTUP_TIMEOUT_S,
            every=lambda: cameras["best_effort"].publish(camera_image(45)),
            every_s=1.0,
        )
    finally:
        ros.destroy_subscription(subscription)
    later: list[LabelInfo] = []
    ros.create_subscription(LabelInfo, f"/{NODE}/label_info", later.append, LATCHED)
    assert spin_until(ros, lambda: later, 30.0)
    assert [c.class_name for c in later[-1].class_map] == ["chair", "lamp", "sofa", "unlabelled"]
    assert set_parameters(ros, strings("vocabulary", ["mug", "kettle"]))[0].successful


@pytest.mark.parametrize(
    "parameter, reason",
    [
        (bools("vocabulary", []), "empty"),
        (strings("vocabulary", ["mug", "Mug"]), "twice"),
        (strings("vocabulary", [f"c{i}" for i in range(257)]), "max_classes"),
        (strings("vocabulary", ["mug", "ket\ntle"]), "control"),
        (strings("vocabulary", ["x" * 10_000]), "200"),
        (
            ParameterMsg(
                name="granularity",
                value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=1),
            ),
            "type",
        ),
        (
            ParameterMsg(
                name="device",
                value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value="cuda"),
            ),
            "read-only",
        ),
        (
            ParameterMsg(
                name="points_per_side",
                value=ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=-3),
            ),
            "",
        ),
    ],
)
def test_refused_parameter_says_why_and_a_valid_one_then_applies(graph, ros, parameter, reason):
    results = set_parameters(ros, parameter)
    assert not results[0].successful
    assert reason.lower() in results[0].reason.lower(), results[0].reason
    results = set_parameters(
        ros,
        ParameterMsg(
            name="granularity",
            value=ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=0.75),
        ),
    )
    assert results[0].successful, results[0].reason


def test_describe_shows_descriptions_and_ranges(graph, ros):
    client = ros.create_client(DescribeParameters, f"/{NODE}/describe_parameters")
    assert client.wait_for_service(timeout_sec=STARTUP_TIMEOUT_S)
    future = client.call_async(
        DescribeParameters.Request(names=["granularity", "points_per_side", "device", "vocabulary"])
    )
    rclpy.spin_until_future_complete(ros, future, timeout_sec=30.0)
    granularity, points, device, vocabulary = future.result().descriptors
    for descriptor in (granularity, points, device, vocabulary):
        assert descriptor.description, descriptor.name
    assert granularity.floating_point_range and granularity.floating_point_range[0].to_value >= 1.0
    assert points.integer_range
    assert device.read_only and not vocabulary.read_only
