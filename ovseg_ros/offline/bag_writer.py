"""Segmentation results as a rosbag2 bag that plays back like the live node.

Topics, types and offered QoS are the node's (``<namespace>/panoptic``, ``/semantic``,
``/instances``, ``/detections`` reliable depth 5; ``/label_info`` reliable transient-local
depth 1; ``/overlay`` on request; ``/markers`` and ``/detections_3d`` reliable depth 5 when
depth is paired), messages are built by the node's converters and every output carries the
input frame's header; the log time is the input message's. Results are tracked (one Tracker
per input bag) when the track setting is on. The input topic can be passed through
unchanged. Written with rosbags (mcap or sqlite3, bag format 8: ROS 2 Jazzy and newer read
it). The node's ~/points are not written: building a PointCloud2 needs sensor_msgs_py (ROS).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import (
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer

from ..messages import convert
from ..scene.geometry import depth_settings
from ..scene.placement import Unlocated, place
from ..scene.tracking import Tracker, tracking_settings
from ..segmentation.panoptic import SegmentationResult
from ..segmentation.visualize import overlay
from ..segmentation.vocabulary import Vocabulary
from . import bag_types
from .bag_depth import BagDepth, colour_messages, stamp_ns

STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
OUTPUT_DEPTH = 5  # the node's reliable output depth

log = logging.getLogger("ovseg_segment")


def qos(depth: int, latched: bool = False) -> Qos:
    """A reliable offered QoS profile as rosbag2 records it (transient local if latched)."""
    zero = QosTime(0, 0)
    return Qos(
        QosHistory.KEEP_LAST,
        depth,
        QosReliability.RELIABLE,
        QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
        zero,
        zero,
        QosLiveliness.AUTOMATIC,
        zero,
        False,
    )


@dataclass
class BagStats:
    """What a run wrote: frames per topic, the input messages skipped with why, and the
    frames written without 3D geometry though depth was paired."""

    path: Path
    frames: int = 0
    messages: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    complete: bool = False
    unlocated: Unlocated = field(default_factory=Unlocated)

    def summary(self) -> str:
        """One line per bag (frames written, interrupted or not), then the skipped inputs and
        the frames without 3D geometry."""
        state = "" if self.complete else " (interrupted: the bag holds the frames so far)"
        text = f"{self.path}: {self.frames} frame(s) written{state}"
        if self.skipped:
            text += f", {len(self.skipped)} input message(s) skipped:\n" + "\n".join(
                f"  - {reason}" for reason in self.skipped
            )
        if self.unlocated.counts:
            text += "\n" + self.unlocated.summary()
        return text


class BagWriter:
    """Use as a context manager: the bag is closed (and readable) however the block ends."""

    def __init__(
        self,
        path: str | Path,
        *,
        storage: str = "mcap",
        namespace: str = "/ovseg",
        write_overlay: bool = False,
        write_3d: bool = False,
    ):
        if storage not in STORAGES:
            raise ValueError(f"unknown bag storage {storage!r}: use {' or '.join(STORAGES)}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(
                f"{self.path} exists; rosbag2 writes a new folder: remove "
                "it or choose another --bag-out"
            )
        self.store = bag_types.typestore()
        self.types = bag_types.message_types(self.store)
        self.stats = BagStats(self.path)
        self._writer = Writer(self.path, version=8, storage_plugin=STORAGES[storage])
        self._namespace = namespace.rstrip("/")
        self._overlay = write_overlay
        self._3d = write_3d
        self._connections: dict[str, Any] = {}
        self._writer.open()
        reliable = qos(OUTPUT_DEPTH)
        for name, msgtype in (
            ("panoptic", "ovseg_ros/msg/PanopticSegmentation"),
            ("semantic", "sensor_msgs/msg/Image"),
            ("instances", "sensor_msgs/msg/Image"),
            ("detections", "vision_msgs/msg/Detection2DArray"),
            *((("overlay", "sensor_msgs/msg/Image"),) if write_overlay else ()),
            *(
                (
                    ("markers", "visualization_msgs/msg/MarkerArray"),
                    ("detections_3d", "vision_msgs/msg/Detection3DArray"),
                )
                if write_3d
                else ()
            ),
        ):
            self._add(f"{self._namespace}/{name}", msgtype, reliable)
        self._add(f"{self._namespace}/label_info", "vision_msgs/msg/LabelInfo", qos(1, True))

    def _add(self, topic: str, msgtype: str, profile: Qos) -> None:
        self._connections[topic] = self._writer.add_connection(
            topic, msgtype, typestore=self.store, offered_qos_profiles=[profile]
        )
        self.stats.messages[topic] = 0

    def _write(self, topic: str, message: Any, log_time_ns: int) -> None:
        connection = self._connections[topic]
        self._writer.write(
            connection, log_time_ns, bytes(self.store.serialize_cdr(message, connection.msgtype))
        )
        self.stats.messages[topic] += 1

    def header(self, stamp_ns: int, frame_id: str = "") -> Any:
        """A std_msgs/Header of this bag's type store, stamped stamp_ns."""
        return bag_types.header(self.store, stamp_ns, frame_id)

    def write_label_info(self, vocabulary: Vocabulary, threshold: float, log_time_ns: int) -> None:
        """The vocabulary on ~/label_info (write it before the first frame, and on changes)."""
        self._write(
            f"{self._namespace}/label_info",
            convert.label_info_message(self.types, self.header(log_time_ns), vocabulary, threshold),
            log_time_ns,
        )

    def write_result(
        self, header: Any, log_time_ns: int, rgb: np.ndarray, result: SegmentationResult
    ) -> None:
        """One frame's outputs, as the node publishes them."""
        ns = self._namespace
        panoptic = convert.panoptic_message(self.types, header, result)
        self._write(f"{ns}/semantic", panoptic.semantic, log_time_ns)
        self._write(f"{ns}/instances", panoptic.instance, log_time_ns)
        self._write(f"{ns}/panoptic", panoptic, log_time_ns)
        self._write(
            f"{ns}/detections", convert.detections_message(self.types, header, result), log_time_ns
        )
        if self._overlay:
            self._write(
                f"{ns}/overlay",
                convert.image_message(self.types, header, overlay(rgb, result), "rgb8"),
                log_time_ns,
            )
        if self._3d:
            self._write(
                f"{ns}/markers", convert.markers_message(self.types, header, result), log_time_ns
            )
            self._write(
                f"{ns}/detections_3d",
                convert.detections_3d_message(self.types, header, result),
                log_time_ns,
            )
        self.stats.frames += 1

    def write_raw(
        self, topic: str, msgtype: str, raw: bytes, log_time_ns: int, profile: Qos | None = None
    ) -> None:
        """An input message passed through as it was (CDR bytes)."""
        if topic not in self._connections:
            self._add(topic, msgtype, profile or qos(OUTPUT_DEPTH))
        self._writer.write(self._connections[topic], log_time_ns, bytes(raw))
        self.stats.messages[topic] += 1

    def skip(self, reason: str) -> None:
        """Count an input message that gave no frame, with why (for ``summary``)."""
        self.stats.skipped.append(reason)

    def unlocated(self, cause: str, reason: str) -> None:
        """Count a frame written without 3D geometry (for ``summary``; the first of each
        cause is logged)."""
        if self.stats.unlocated.add(cause, reason):
            log.warning(
                "no 3D geometry: %s (more frames for the same reason are counted in the summary)",
                reason,
            )

    def close(self, complete: bool = True) -> BagStats:
        """Finish the bag (its metadata.yaml); ``complete`` False marks it interrupted."""
        self.stats.complete = complete
        self._writer.close()
        return self.stats

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.close(complete=kind is None)


def segment_bag(
    segmenter,
    encoded,
    in_bag: Path,
    topic: str,
    writer: BagWriter,
    passthrough: bool = False,
    pairing: BagDepth | None = None,
) -> BagStats:
    """Segment every image message on ``topic`` of ``in_bag`` into ``writer``, tracked when
    the segmenter's track setting is on (a Tracker of its own: ids start at 1 in each bag)
    and placed in 3D with the depth ``pairing`` gives, if any.

    Messages that cannot be deserialized or converted are skipped and recorded in the
    writer's stats, as are frames without 3D geometry (written with NaN geometry); everything
    else is written. Headers and log times are the input's.
    """
    from rosbags.highlevel import AnyReader

    from ..segmentation.pipeline import ImageError

    settings = segmenter.settings
    tracker = Tracker(tracking_settings(settings)) if settings.track else None
    geometry = depth_settings(settings)
    writer.write_label_info(encoded.vocabulary, settings.unknown_thresh, 0)
    with AnyReader([in_bag], default_typestore=writer.store) as reader:
        for colour in colour_messages(reader, topic, pairing):
            where = f"{in_bag}:{topic}@{colour.log_time}"
            if passthrough:
                writer.write_raw(topic, colour.msgtype, colour.raw, colour.log_time)
            if colour.message is None:
                writer.skip(f"{where}: {colour.problem}")
                continue
            try:
                rgb = colour.rgb()
                result = segmenter.segment(rgb, encoded)
            except (convert.FrameError, ImageError) as err:
                writer.skip(f"{where}: {err}")
                continue
            depth = (
                None
                if colour.partners is None
                else partial(colour.partners.registered, rgb.shape[1], rgb.shape[0], geometry)
            )
            header = colour.message.header
            problem = place(result, depth, geometry, tracker, stamp_ns(header) / 1e9)
            if problem is not None:
                writer.unlocated(problem.cause, f"{where}: {problem}")
            writer.write_result(
                writer.header(stamp_ns(header), header.frame_id), colour.log_time, rgb, result
            )
    return writer.stats


def bag_out_paths(bags: list[Path], out: Path) -> list[Path]:
    """One input bag: ``out`` is the output bag; several: ``out/<input name>`` each."""
    return [out] if len(bags) == 1 else [out / bag.name for bag in bags]


def write_bags(
    segmenter,
    encoded,
    bag_topics: dict[Path, str],
    out: Path,
    *,
    storage: str = "mcap",
    write_overlay: bool = False,
    passthrough: bool = False,
    pairings: dict[Path, BagDepth] | None = None,
) -> list[BagStats]:
    """Segment each input bag's image topic into its own output bag, with the bag's depth
    pairing if it has one; report each on stderr. On an interrupt the current bag is closed,
    reported as interrupted, and the interrupt goes on."""
    import sys

    done = []
    bags = list(bag_topics)
    for bag, path in zip(bags, bag_out_paths(bags, out)):
        path.parent.mkdir(parents=True, exist_ok=True)
        pairing = (pairings or {}).get(bag)
        writer = BagWriter(
            path, storage=storage, write_overlay=write_overlay, write_3d=pairing is not None
        )
        try:
            with writer:
                segment_bag(segmenter, encoded, bag, bag_topics[bag], writer, passthrough, pairing)
        finally:
            print(writer.stats.summary(), file=sys.stderr)
        done.append(writer.stats)
    return done
