"""The managed node on the real graph, driven as a user drives it, with `ros2 lifecycle set`:
configure -> activate -> frames flow -> deactivate -> nothing published for the frames sent
meanwhile -> activate -> frames flow -> deactivate -> cleanup (its publishers gone) ->
configure -> activate -> shutdown; and a configure that fails on a missing checkpoint, then
succeeds once the file is there."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="ROS 2 is not sourced: run bash test/graph/run.sh")

from graph_process import (
    STARTUP_TIMEOUT_S,
    camera_image,
    graph,  # noqa: F401 (a fixture)
    ros_context,  # noqa: F401 (a fixture)
    start_node,  # noqa: F401 (a fixture)
    wait_for_log,
)
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ovseg_ros.msg import PanopticSegmentation

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
QUIET_S = 4.0  # how long frames are sent to an inactive node (it answers in well under 1 s)


def lifecycle(node: str, *verb: str) -> str:
    """`ros2 lifecycle get|set NODE [transition]`, as a user types it; its output."""
    done = subprocess.run(
        ["ros2", "lifecycle", *verb[:1], node, *verb[1:]],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ,
    )
    return done.stdout + done.stderr


def state(node: str) -> str:
    return lifecycle(node, "get").split()[0]


def transition(node: str, name: str) -> None:
    said = lifecycle(node, "set", name)
    assert "Transitioning successful" in said, said


def test_the_managed_node_through_every_state(start_node, graph):
    node = start_node(
        {"vocabulary": "[mug, kettle]"},
        name="ovseg_lc",
        lifecycle=True,
        remaps={"image": "/graph/lc/image"},
    )
    panoptic = graph.collect(PanopticSegmentation, "/ovseg_lc/panoptic", RELIABLE)
    camera = graph.node.create_publisher(Image, "/graph/lc/image", RELIABLE)
    graph.spin_until(
        lambda: "unconfigured" in lifecycle("/ovseg_lc", "get"),
        STARTUP_TIMEOUT_S,
        what="the node's lifecycle services",
    )
    assert graph.node.count_publishers("/ovseg_lc/panoptic") == 0  # nothing before configure
    transition("/ovseg_lc", "configure")
    assert state("/ovseg_lc") == "inactive"
    stamp = [100]

    def send() -> None:
        stamp[0] += 1
        camera.publish(camera_image(stamp[0]))

    def stream_until_answered(what: str) -> int:
        first = stamp[0] + 1
        graph.spin_until(
            lambda: any(m.header.stamp.sec >= first for m in panoptic),
            STARTUP_TIMEOUT_S,
            every=send,
            every_s=0.3,
            what=what,
        )
        return first

    def stream_unanswered(what: str) -> None:
        first = stamp[0] + 1
        graph.spin_until(
            lambda: False if stamp[0] < first + int(QUIET_S / 0.2) else True,
            QUIET_S * 3,
            every=send,
            every_s=0.2,
            what=what,
        )
        graph.spin_for(1.0)
        answered = [m.header.stamp.sec for m in panoptic if m.header.stamp.sec >= first]
        assert answered == [], f"{what}: frames {answered} were answered"

    stream_unanswered("frames sent while inactive after configure")
    transition("/ovseg_lc", "activate")
    assert state("/ovseg_lc") == "active"
    stream_until_answered("frames while active")
    transition("/ovseg_lc", "deactivate")
    stream_unanswered("frames sent while deactivated")
    transition("/ovseg_lc", "activate")
    stream_until_answered("frames after activating again")
    transition("/ovseg_lc", "deactivate")
    transition("/ovseg_lc", "cleanup")
    assert state("/ovseg_lc") == "unconfigured"
    graph.spin_until(
        lambda: graph.node.count_publishers("/ovseg_lc/panoptic") == 0,
        30.0,
        what="the outputs to go away at cleanup",
    )
    transition("/ovseg_lc", "configure")
    transition("/ovseg_lc", "activate")
    stream_until_answered("frames after cleanup and configure")
    transition("/ovseg_lc", "shutdown")
    assert state("/ovseg_lc") == "finalized"
    assert node.alive()  # finalized, not crashed
    assert "Traceback" not in node.log(), node.log()[-3000:]


def test_a_configure_that_cannot_find_the_checkpoint_fails_then_succeeds(
    start_node, graph, tiny_setup, tmp_path
):
    config_dir, base = tiny_setup
    checkpoint = tmp_path / "sam_vit_b_01ec64.pth"
    node = start_node(
        {"sam_checkpoint": str(checkpoint)},
        name="ovseg_lc_missing",
        lifecycle=True,
        remaps={"image": "/graph/lc_missing/image"},
    )
    graph.spin_until(
        lambda: "unconfigured" in lifecycle("/ovseg_lc_missing", "get"),
        STARTUP_TIMEOUT_S,
        what="the node's lifecycle services",
    )
    said = lifecycle("/ovseg_lc_missing", "set", "configure")
    assert "Transitioning failed" in said, said
    assert state("/ovseg_lc_missing") == "unconfigured"
    line = wait_for_log(node, graph, "cannot configure", 30.0)
    assert str(checkpoint) in line, line
    shutil.copy(Path(base["cache_dir"]) / "sam_vit_b_01ec64.pth", checkpoint)
    transition("/ovseg_lc_missing", "configure")
    assert state("/ovseg_lc_missing") == "inactive"
