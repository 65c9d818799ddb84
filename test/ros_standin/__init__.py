"""Test stand-ins for ROS 2: rclpy's node API and message classes from the real definitions.

``install(monkeypatch, distro)`` puts ``rclpy``, ``rclpy.*`` and the ``<package>.msg``
modules (std_msgs, sensor_msgs, vision_msgs, diagnostic_msgs, rcl_interfaces, ovseg_ros.msg
...) into sys.modules for one test, so ``ovseg_ros.node.node`` imports and runs as it would on a
ROS 2 Humble or Jazzy machine. See rclpy_standin.py for the rclpy facts reproduced and
messages.py for the message rules.
"""

from __future__ import annotations

import sys

from . import messages, rclpy_standin
from .rclpy_standin import GRAPH, LOG, Parameter, QoSProfile, ReliabilityPolicy, ros2_param_set

# The package's modules that import ROS at module level: imported afresh with each distro.
ROS_MODULES = (
    "ovseg_ros.node.node",
    "ovseg_ros.node.lifecycle_node",
    "ovseg_ros.node.outputs",
    "ovseg_ros.node.depth_input",
    "ovseg_ros.node.publishers",
)

__all__ = [
    "GRAPH",
    "LOG",
    "Parameter",
    "QoSProfile",
    "ReliabilityPolicy",
    "install",
    "messages",
    "ros2_param_set",
]


def install(monkeypatch, distro: str = "humble") -> None:
    """Make ROS imports resolve to the stand-ins until the test ends (monkeypatch undoes it).

    Modules imported while the stand-ins are in place (ROS_MODULES) are dropped at the end
    too, so a later test with another distro imports them afresh.
    """
    rclpy_standin.reset()
    for name, module in rclpy_standin.modules(distro).items():
        monkeypatch.setitem(sys.modules, name, module)
    for name in ROS_MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
