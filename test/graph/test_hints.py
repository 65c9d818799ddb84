"""Why no frame arrives, as the real node says it: a reliable subscription with a best-effort
camera (nothing arrives), a topic of the other type (raw and compressed mode), and a topic
nobody publishes; and compressed mode receiving JPEG frames. The nodes start in parallel and
share the module."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from graph_support import STARTUP_TIMEOUT_S, spin_until  # skips without ROS 2

# isort: split
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

HINT_TIMEOUT_S = STARTUP_TIMEOUT_S + 30.0  # start-up, then the node's 5 s without a frame


@pytest.fixture(scope="module")
def nodes(start_node, ros):
    started = {
        "qos": start_node("graph_hint_qos", "/graph_hint/qos", image_reliability="reliable"),
        "type": start_node("graph_hint_type", "/graph_hint/type"),
        "none": start_node("graph_hint_none", "/graph_hint/none"),
        "jpeg": start_node("graph_jpeg", "/graph_jpeg/compressed", image_transport="compressed"),
        "raw_in_compressed": start_node(
            "graph_hint_raw", "/graph_hint/raw/compressed", image_transport="compressed"
        ),
    }
    publishers = {
        "qos": ros.create_publisher(Image, "/graph_hint/qos", qos_profile_sensor_data),
        "type": ros.create_publisher(CompressedImage, "/graph_hint/type", 10),
        "jpeg": ros.create_publisher(
            CompressedImage, "/graph_jpeg/compressed", qos_profile_sensor_data
        ),
        "raw_in_compressed": ros.create_publisher(Image, "/graph_hint/raw/compressed", 10),
    }
    received: list = []
    ros.create_subscription(Image, "/graph_hint_qos/semantic", received.append, 10)
    jpeg_out: list = []
    ros.create_subscription(Image, "/graph_jpeg/semantic", jpeg_out.append, 10)
    yield started, publishers, received, jpeg_out


def wait_for_log(ros, node, text: str, publish=None) -> bool:
    return spin_until(ros, lambda: text in node.log(), HINT_TIMEOUT_S, every=publish, every_s=0.5)


def test_reliable_subscription_and_best_effort_camera(nodes, ros):
    started, publishers, received, _jpeg_out = nodes
    image = Image(height=4, width=4, encoding="mono8", step=4)
    image.data.frombytes(bytes(16))
    node = started["qos"]
    assert wait_for_log(
        ros, node, "image_reliability:=best_effort", lambda: publishers["qos"].publish(image)
    ), node.log()[-3000:]
    assert "reliability:=best_effort" in node.log()
    assert not received, "a reliable subscription received best-effort frames"


def test_topic_of_the_other_type(nodes, ros):
    node = nodes[0]["type"]
    assert wait_for_log(ros, node, "image_transport:=compressed"), node.log()[-3000:]
    assert "CompressedImage" in node.log()


def test_nobody_publishes(nodes, ros):
    node = nodes[0]["none"]
    assert wait_for_log(ros, node, "nothing publishes"), node.log()[-3000:]


def test_compressed_mode_wrong_type(nodes, ros):
    node = nodes[0]["raw_in_compressed"]
    assert wait_for_log(ros, node, "image_transport:=raw"), node.log()[-3000:]


def test_compressed_mode_reads_jpeg(nodes, ros):
    started, publishers, _received, jpeg_out = nodes
    image = np.full((48, 64, 3), 30, np.uint8)
    image[5:25, 5:30] = (0, 0, 220)
    msg = CompressedImage(format="jpeg")
    msg.header.stamp.sec, msg.header.frame_id = 77, "jpeg_camera"
    msg.data.frombytes(cv2.imencode(".jpg", image)[1].tobytes())
    assert spin_until(
        ros,
        lambda: any(m.header.stamp.sec == 77 for m in jpeg_out),
        STARTUP_TIMEOUT_S,
        every=lambda: publishers["jpeg"].publish(msg),
        every_s=1.0,
    ), started["jpeg"].log()[-3000:]
    out = next(m for m in jpeg_out if m.header.stamp.sec == 77)
    assert (out.header.frame_id, out.height, out.width) == ("jpeg_camera", 48, 64)
