"""The node's depth input: colour frames paired by time with registered depth images, plus the
colour camera's CameraInfo, and the hint that says why no pair forms.

Colour and depth go through message_filters' ApproximateTimeSynchronizer (``sync_queue_size``
messages per input, stamps at most ``sync_slop`` apart). CameraInfo is not synchronised: the
latest one received is used with each pair, because the calibration of a camera mode does not
change from frame to frame and many drivers publish it at a lower rate (a change of resolution
is still caught: the CameraInfo's size must be the colour image's). Its topic is the colour
image's sibling ``camera_info`` unless given, as image_transport's CameraSubscriber does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from message_filters import ApproximateTimeSynchronizer, Subscriber
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image

from ..messages import depth_messages
from ..scene.geometry import DepthError, DepthSettings
from .publishers import publishers_of

IMAGE_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


@dataclass(frozen=True)
class SyncedFrame:
    """A colour frame with its depth image and the CameraInfo in use (None: none yet)."""

    colour: Any
    depth: Any
    info: Any

    @property
    def header(self) -> Any:
        """The colour frame's header: every output carries it."""
        return self.colour.header


def stamp_seconds(header: Any) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class InputTally:
    """What arrived on one input: how many messages, the last stamp and frame_id."""

    def __init__(self) -> None:
        self.count = 0
        self.last: Any = None

    def seen(self, msg: Any) -> None:
        self.count += 1
        self.last = msg


class DepthInput:
    """Subscribes to the colour frames (raw or compressed), 'depth' and the CameraInfo, and
    gives each time-matched pair to ``on_frame`` as a SyncedFrame. Runs in the executor."""

    def __init__(
        self,
        node: Node,
        colour_type: Any,
        colour_topic: str,
        qos: QoSProfile,
        *,
        camera_info_topic: str,
        queue_size: int,
        slop: float,
        on_frame: Callable[[SyncedFrame], None],
    ):
        self._node = node
        self._qos = qos
        self._slop = slop
        self._on_frame = on_frame
        self.colour = Subscriber(node, colour_type, colour_topic, qos_profile=qos)
        self.depth = Subscriber(node, Image, "depth", qos_profile=qos)
        resolved = self.colour.sub.topic_name
        self.camera_info_topic = camera_info_topic or depth_messages.camera_info_topic(resolved)
        self._info_sub = node.create_subscription(
            CameraInfo, self.camera_info_topic, self._on_info, qos
        )
        self.tallies = {"colour": InputTally(), "depth": InputTally(), "camera_info": InputTally()}
        self.pairs = 0
        self.colour.registerCallback(self.tallies["colour"].seen)
        self.depth.registerCallback(self.tallies["depth"].seen)
        self._sync = ApproximateTimeSynchronizer([self.colour, self.depth], queue_size, slop)
        self._sync.registerCallback(self._on_pair)
        self._noted: set[str] = set()  # kinds of note logged (depth_of, one thread)

    def destroy(self) -> None:
        """Destroy the subscriptions (a lifecycle node's cleanup)."""
        for subscription in (self.colour.sub, self.depth.sub, self._info_sub):
            self._node.destroy_subscription(subscription)

    @property
    def colour_topic(self) -> str:
        return self.colour.sub.topic_name

    @property
    def depth_topic(self) -> str:
        return self.depth.sub.topic_name

    def _on_info(self, msg: CameraInfo) -> None:
        self.tallies["camera_info"].seen(msg)

    def depth_of(
        self, frame: SyncedFrame, width: int, height: int, settings: DepthSettings
    ) -> tuple[np.ndarray, np.ndarray]:
        """The FrameRunner's DepthOf for a SyncedFrame: its metres and the colour camera's
        intrinsics, or DepthError. Logs once each that K stands in for an all-zero P and
        that the CameraInfo has distortion for an image that is not rectified."""
        if frame.info is None:
            raise DepthError(
                "no CameraInfo has arrived yet, so depth cannot be "
                "back-projected; check the camera_info topic (parameter "
                "camera_info_topic, launch argument camera_info:=)",
                cause="camera_info",
            )
        distortion = depth_messages.distortion_note(frame.info, self.colour_topic)
        if distortion:
            self._note_once("distortion", distortion)
        return depth_messages.registered_depth(
            frame.colour.header, width, height, frame.depth, frame.info, settings, self._note_once
        )

    def _note_once(self, kind: str, message: str) -> None:
        if kind not in self._noted:
            self._noted.add(kind)
            self._node.get_logger().warning(message)

    def _on_pair(self, colour: Any, depth: Any) -> None:
        self.pairs += 1
        self._on_frame(SyncedFrame(colour, depth, self.tallies["camera_info"].last))

    def hint(self, waited: str) -> str | None:
        """Why colour frames arrive but no pair forms (None while no colour frame arrived:
        the image hint covers that, or once pairs form). ``waited`` starts the message."""
        colour, depth = self.tallies["colour"], self.tallies["depth"]
        if self.pairs or not colour.count:
            return None
        if not depth.count:
            return (
                f"{waited}: {colour.count} colour frame(s) arrived on {self.colour_topic} "
                f"but no depth image on {self.depth_topic}: "
                + self.why_nothing_arrives(
                    self.depth_topic,
                    IMAGE_TYPE,
                    "launch argument depth:=/your/depth/topic, or remap 'depth'",
                )
            )
        apart = stamp_seconds(colour.last.header) - stamp_seconds(depth.last.header)
        text = (
            f"{waited}: {colour.count} colour and {depth.count} depth frame(s) arrived but "
            f"none paired: the latest stamps are {apart:+.3f} s apart (colour - depth) "
            f"and sync_slop is {self._slop} s. "
        )
        if abs(apart) > max(10 * self._slop, 1.0):
            text += (
                "The stamps come from different clocks: check use_sim_time on every "
                "node (a bag played without --clock, or one driver on sim time)"
            )
        else:
            text += (
                "Depth lags or leads colour by more than the slop: raise sync_slop, or "
                "use a depth topic stamped like the colour frames"
            )
        frames = (colour.last.header.frame_id, depth.last.header.frame_id)
        if all(frames) and frames[0] != frames[1]:
            text += (
                f". Also, depth frame_id {frames[1]!r} is not colour's {frames[0]!r}: "
                "depth must be registered (aligned) to the colour image"
            )
        return text

    def camera_info_hint(self, waited: str) -> str | None:
        """Why no CameraInfo arrives while pairs do (None otherwise)."""
        if not self.pairs or self.tallies["camera_info"].count:
            return None
        return (
            f"{waited}: no CameraInfo on {self.camera_info_topic}, so nothing is placed "
            "in 3D: "
            + self.why_nothing_arrives(
                self.camera_info_topic,
                CAMERA_INFO_TYPE,
                "launch argument camera_info:=/your/camera_info, or parameter camera_info_topic",
            )
        )

    def why_nothing_arrives(self, topic: str, wanted: str, how_to_change: str) -> str:
        """The likely cause for an input topic that delivers nothing: no publisher, another
        type, or best-effort publishers for a reliable subscription."""
        publishers = publishers_of(self._node, topic, wanted)
        if not publishers.count:
            return f"nothing publishes it ({how_to_change})"
        if publishers.other_types:
            return f"it carries {', '.join(publishers.other_types)}, not {wanted} ({how_to_change})"
        if self._qos.reliability == ReliabilityPolicy.RELIABLE and publishers.best_effort:
            return (
                f"{publishers.best_effort} publisher(s) offer best-effort QoS, which a "
                "reliable subscription does not accept: use the launch argument "
                "reliability:=best_effort (parameter image_reliability:=best_effort)"
            )
        return f"{publishers.count} publisher(s) exist: is it streaming? (ros2 topic hz {topic})"
