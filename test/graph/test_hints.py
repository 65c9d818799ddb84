"""Why no frame arrives, as the real node says it: a reliable subscription with a best-effort
camera (nothing arrives), a topic of the other type, and a topic nobody publishes.
The three nodes start in parallel and share the module."""

from __future__ import annotations

import time

import pytest
from graph_support import STARTUP_TIMEOUT_S, spin_until  # skips without ROS 2

from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image

HINT_TIMEOUT_S = STARTUP_TIMEOUT_S + 30.0  # start-up, then the node's 5 s without a frame


@pytest.fixture(scope="module")
def nodes(start_node, ros):
    started = {
        "qos": start_node("graph_hint_qos", "/graph_hint/qos", image_reliability="reliable"),
        "type": start_node("graph_hint_type", "/graph_hint/type"),
        "none": start_node("graph_hint_none", "/graph_hint/none"),
    }
    publishers = {
        "qos": ros.create_publisher(Image, "/graph_hint/qos", qos_profile_sensor_data),
        "type": ros.create_publisher(CompressedImage, "/graph_hint/type", 10),
    }
    received: list = []
    ros.create_subscription(Image, "/graph_hint_qos/semantic", received.append, 10)
    yield started, publishers, received


def wait_for_log(ros, node, text: str, publish=None) -> bool:
    return spin_until(ros, lambda: text in node.log(), HINT_TIMEOUT_S, every=publish,
                      every_s=0.5)


def test_reliable_subscription_and_best_effort_camera(nodes, ros):
    started, publishers, received = nodes
    image = Image(height=4, width=4, encoding="mono8", step=4)
    image.data.frombytes(bytes(16))
    node = started["qos"]
    assert wait_for_log(ros, node, "image_reliability:=best_effort",
                        lambda: publishers["qos"].publish(image)), node.log()[-3000:]
    assert "reliability:=best_effort" in node.log()
    assert not received, "a reliable subscription received best-effort frames"


def test_topic_of_the_other_type(nodes, ros):
    node = nodes[0]["type"]
    assert wait_for_log(ros, node, "image_transport:=compressed"), node.log()[-3000:]
    assert "CompressedImage" in node.log()


def test_nobody_publishes(nodes, ros):
    node = nodes[0]["none"]
    assert wait_for_log(ros, node, "nothing publishes"), node.log()[-3000:]
