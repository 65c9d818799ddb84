"""Every output of the node: its publishers, and what goes on each for a frame, a label map
and a diagnostics report (the FrameRunner's Outputs).

A new output is one entry in OutputPublishers: a publisher in ``__init__`` and its message
in ``prepare_result``. A frame's outputs are built only for publishers someone subscribes to
(``~/label_info`` and ``/diagnostics`` always go out), and the per-instance messages are
refilled from one frame to the next (convert.MessagePool): prepare_result and the publish
it returns run in one thread, one frame after the other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header
from vision_msgs.msg import Detection2DArray, Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from ovseg_ros.msg import PanopticSegmentation

from ..messages import convert
from ..runner.interfaces import Health, Level
from ..scene.placement import POINT_DTYPE, labelled_points
from ..segmentation.panoptic import SegmentationResult
from ..segmentation.visualize import overlay
from ..segmentation.vocabulary import Vocabulary
from .message_types import ros_message_types

OUTPUT_DEPTH = 5  # reliable outputs; a slow subscriber holds at most this many frames
DIAGNOSTIC_LEVELS = {
    Level.OK: DiagnosticStatus.OK,
    Level.WARN: DiagnosticStatus.WARN,
    Level.ERROR: DiagnosticStatus.ERROR,
}
POINT_FIELD_TYPES = {
    np.dtype("<f4"): PointField.FLOAT32,
    np.dtype("<u2"): PointField.UINT16,
    np.dtype("<u4"): PointField.UINT32,
}


def point_fields() -> list[PointField]:
    """PointCloud2 fields of scene.POINT_DTYPE, in its order and at its offsets."""
    return [
        PointField(name=name, offset=offset, datatype=POINT_FIELD_TYPES[dtype], count=1)
        for name, (dtype, offset) in POINT_DTYPE.fields.items()
    ]


def points_message(header: Any, cloud: np.ndarray) -> PointCloud2:
    """sensor_msgs/PointCloud2 (unorganised, dense) of [N] scene.POINT_DTYPE points, built by
    sensor_msgs_py so that its reader reads it back field by field."""
    from sensor_msgs_py import point_cloud2

    message = point_cloud2.create_cloud(header, point_fields(), cloud)
    message.is_dense = True  # only points with depth are kept
    return message


class OutputPublishers:
    """The node's publishers. With ``scene`` (depth input on) also ``~/points``,
    ``~/markers`` and ``~/detections_3d``; ``points_stride`` decimates ~/points."""

    def __init__(self, node: Node, *, scene: bool = False, points_stride: int = 1):
        self._node = node
        self._types = ros_message_types()
        self._points_stride = points_stride
        reliable = QoSProfile(depth=OUTPUT_DEPTH, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self._semantic = node.create_publisher(Image, "~/semantic", reliable)
        self._instances = node.create_publisher(Image, "~/instances", reliable)
        self._panoptic = node.create_publisher(PanopticSegmentation, "~/panoptic", reliable)
        self._detections = node.create_publisher(Detection2DArray, "~/detections", reliable)
        self._overlay = node.create_publisher(Image, "~/overlay", reliable)
        self._label_info = node.create_publisher(LabelInfo, "~/label_info", latched)
        self._diagnostics = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._frame_outputs = [
            self._semantic,
            self._instances,
            self._panoptic,
            self._detections,
            self._overlay,
        ]
        self._scene = scene
        if scene:
            self._points = node.create_publisher(PointCloud2, "~/points", reliable)
            self._markers = node.create_publisher(MarkerArray, "~/markers", reliable)
            self._detections_3d = node.create_publisher(
                Detection3DArray, "~/detections_3d", reliable
            )
            self._frame_outputs += [self._points, self._markers, self._detections_3d]
        self._pool = convert.MessagePool()

    def prepare_result(
        self, frame: Any, rgb: np.ndarray, result: SegmentationResult, points: np.ndarray | None
    ) -> Callable[[], None]:
        """A frame's messages, each with the frame's header, for the outputs someone
        subscribes to; returns what publishes them."""
        types, header, pool = self._types, frame.header, self._pool
        wanted = {publisher for publisher in self._frame_outputs if _subscribed(publisher)}
        messages = []
        semantic = instances = None
        if wanted & {self._semantic, self._panoptic}:
            semantic = convert.image_message(types, header, result.semantic, "16UC1")
            if self._semantic in wanted:
                messages.append((self._semantic, semantic))
        if wanted & {self._instances, self._panoptic}:
            instances = convert.image_message(types, header, result.instance_map, "16UC1")
            if self._instances in wanted:
                messages.append((self._instances, instances))
        if self._panoptic in wanted:
            messages.append(
                (
                    self._panoptic,
                    convert.panoptic_message(types, header, result, semantic, instances, pool),
                )
            )
        if self._detections in wanted:
            messages.append(
                (self._detections, convert.detections_message(types, header, result, pool))
            )
        if self._overlay in wanted:
            messages.append(
                (self._overlay, convert.image_message(types, header, overlay(rgb, result), "rgb8"))
            )
        if self._scene:
            # Markers go out for a frame without depth too: its DELETEALL clears the last boxes.
            if self._markers in wanted:
                messages.append(
                    (self._markers, convert.markers_message(types, header, result, pool))
                )
            if self._detections_3d in wanted:
                messages.append(
                    (
                        self._detections_3d,
                        convert.detections_3d_message(types, header, result, pool),
                    )
                )
            if points is not None and self._points in wanted:
                messages.append(
                    (
                        self._points,
                        points_message(
                            header, labelled_points(points, rgb, result, self._points_stride)
                        ),
                    )
                )

        def publish() -> None:
            for publisher, msg in messages:
                publisher.publish(msg)

        return publish

    def destroy(self) -> None:
        """Destroy every publisher (a lifecycle node's cleanup)."""
        for publisher in [*self._frame_outputs, self._label_info, self._diagnostics]:
            self._node.destroy_publisher(publisher)

    def closing(self) -> bool:
        return not self._node.context.ok()

    def publish_label_info(self, vocabulary: Vocabulary, unknown_thresh: float) -> None:
        self._label_info.publish(
            convert.label_info_message(self._types, self._stamped(), vocabulary, unknown_thresh)
        )

    def publish_diagnostics(self, health: Health) -> None:
        device = health.values.get("device", "")
        status = DiagnosticStatus(
            level=DIAGNOSTIC_LEVELS[health.level],
            name=f"{self._node.get_name()}: segmentation",
            message=health.message,
            hardware_id=device,
            values=[KeyValue(key=key, value=value) for key, value in health.values.items()],
        )
        self._diagnostics.publish(DiagnosticArray(header=self._stamped(), status=[status]))

    def _stamped(self) -> Header:
        return Header(stamp=self._node.get_clock().now().to_msg())


def _subscribed(publisher: Any) -> bool:
    return publisher.get_subscription_count() > 0
