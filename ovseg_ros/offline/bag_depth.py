"""Depth images and CameraInfo of a rosbag2 bag paired with its colour messages.

Each colour message takes the depth message whose header stamp is nearest its own, if within
sync_slop seconds (message_filters' approximate synchroniser in spirit; a depth message may
serve two colour messages), and the CameraInfo logged last at or before it, or the bag's
first one when none came before. The bag is read once, in log-time order, keeping only the
colour messages that may still get a nearer depth message and the depth messages near them
(at most QUEUE_SIZE of each, as a synchroniser's queues), so a long bag is never held in
memory. Stamps are assumed to grow with log time, as a camera driver's do.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..messages.convert import compressed_to_rgb, image_to_rgb
from ..messages.depth_messages import camera_info_topic, registered_depth
from ..scene.geometry import DepthError, DepthSettings

DEPTH_TYPE = "sensor_msgs/msg/Image"
CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
QUEUE_SIZE = 30  # messages of each topic waiting to be paired, at most

log = logging.getLogger("ovseg_segment")


@dataclass(frozen=True)
class BagDepth:
    """What pairs depth with a bag's colour messages: the depth topic (sensor_msgs/Image,
    registered to colour), the colour camera's CameraInfo topic, and the most seconds between
    the stamps of a colour and a depth message paired."""

    depth_topic: str
    camera_info_topic: str
    slop_s: float


def _listed(topics: dict[str, tuple[str, int]], msgtype: str) -> str:
    return ", ".join(sorted(t for t, (kind, _) in topics.items() if kind == msgtype)) or "none"


def check_depth_topic(bag: str, topics: dict[str, tuple[str, int]], depth_topic: str) -> None:
    """DepthError (cause 'topic') listing the bag's Image topics when ``depth_topic`` is not
    one of them (``topics``: topic -> (type, message count))."""
    if topics.get(depth_topic, ("",))[0] != DEPTH_TYPE:
        raise DepthError(
            f"{bag} has no {DEPTH_TYPE} topic {depth_topic!r} for --depth-topic; "
            f"its Image topics: {_listed(topics, DEPTH_TYPE)}",
            cause="topic",
        )


def bag_depth(
    bag: str,
    topics: dict[str, tuple[str, int]],
    colour_topic: str,
    depth_topic: str,
    info_topic: str | None,
    slop_s: float,
) -> BagDepth:
    """The pairing of a bag whose depth topic check_depth_topic accepted; ``info_topic``
    None: the colour topic's sibling. DepthError (cause 'topic') names what is wrong and
    lists the bag's CameraInfo topics when that topic is missing."""
    if depth_topic == colour_topic:
        raise DepthError(f"{bag}: --depth-topic {depth_topic} is the colour topic", cause="topic")
    info = info_topic or camera_info_topic(colour_topic)
    if topics.get(info, ("",))[0] != CAMERA_INFO_TYPE:
        how = (
            ""
            if info_topic
            else f" (the sibling of {colour_topic}; choose another with --camera-info-topic)"
        )
        raise DepthError(
            f"{bag} has no {CAMERA_INFO_TYPE} topic {info!r}{how}; its CameraInfo "
            f"topics: {_listed(topics, CAMERA_INFO_TYPE)}",
            cause="topic",
        )
    return BagDepth(depth_topic, info, slop_s)


def stamp_ns(header: Any) -> int:
    """A std_msgs/Header's stamp in nanoseconds."""
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


@dataclass
class Partners:
    """What was paired with one colour message: the depth message (None: none within the
    slop) and the CameraInfo (None: the bag has none)."""

    pairing: BagDepth
    header: Any  # the colour message's
    depth: Any | None = None
    info: Any | None = None

    def registered(
        self, width: int, height: int, settings: DepthSettings
    ) -> tuple[np.ndarray, np.ndarray]:
        """([H, W] float32 metres, NaN invalid; 3x3 K) for the width x height colour image;
        DepthError with the reason (depth_messages.registered_depth's checks, or no partner)."""
        if self.depth is None:
            raise DepthError(
                f"no depth message on {self.pairing.depth_topic} within sync_slop "
                f"({self.pairing.slop_s:g} s) of the colour stamp",
                cause="no depth within sync_slop",
            )
        if self.info is None:
            raise DepthError(
                f"no CameraInfo message on {self.pairing.camera_info_topic}", cause="no camera_info"
            )
        return registered_depth(self.header, width, height, self.depth, self.info, settings)


@dataclass
class ColourMessage:
    """A message of the colour topic: log time, type and CDR bytes; ``message`` deserialized
    (None when it cannot be, ``problem`` says why); ``partners`` when depth is paired."""

    log_time: int
    msgtype: str
    raw: bytes
    message: Any | None
    problem: str = ""
    partners: Partners | None = None

    def rgb(self) -> np.ndarray:
        """[H, W, 3] uint8 RGB of an Image or CompressedImage; convert.FrameError if not."""
        if self.msgtype.endswith("CompressedImage"):
            return compressed_to_rgb(self.message)
        return image_to_rgb(self.message)


def _deserialized(reader: Any, connection: Any, raw: bytes) -> tuple[Any | None, str]:
    try:
        return reader.deserialize(raw, connection.msgtype), ""
    except Exception as err:  # malformed CDR: rosbags' errors have no common base
        return None, f"cannot deserialize the message: {err}"


def colour_messages(
    reader: Any, topic: str, pairing: BagDepth | None = None
) -> Iterator[ColourMessage]:
    """The colour topic's messages of an open rosbags reader, in log-time order, each with
    its Partners when ``pairing`` is given."""
    colour = [c for c in reader.connections if c.topic == topic]
    if pairing is None:
        for connection, log_time, raw in reader.messages(connections=colour):
            yield ColourMessage(
                log_time, connection.msgtype, raw, *_deserialized(reader, connection, raw)
            )
        return
    info_connections = [c for c in reader.connections if c.topic == pairing.camera_info_topic]
    first_info = None
    for connection, _, raw in reader.messages(connections=info_connections):
        first_info = _deserialized(reader, connection, raw)[0]
        if first_info is not None:
            break
    queues = _Queues(pairing, first_info)
    wanted = (
        colour
        + info_connections
        + [c for c in reader.connections if c.topic == pairing.depth_topic]
    )
    for connection, log_time, raw in reader.messages(connections=wanted):
        if connection.topic == topic:
            queues.add_colour(
                ColourMessage(
                    log_time, connection.msgtype, raw, *_deserialized(reader, connection, raw)
                )
            )
        else:
            message, problem = _deserialized(reader, connection, raw)
            if message is None:
                log.warning("%s@%d is not used: %s", connection.topic, log_time, problem)
            elif connection.topic == pairing.depth_topic:
                queues.add_depth(message)
            else:
                queues.info = message
        yield from queues.ready()
    yield from queues.ready(end=True)


class _Queues:
    """Colour messages waiting for the depth message nearest their stamp, and the depth
    messages that may still be it."""

    def __init__(self, pairing: BagDepth, first_info: Any | None):
        self.pairing = pairing
        self.slop_ns = round(pairing.slop_s * 1e9)
        self.info = None  # the CameraInfo logged last
        self.first_info = first_info
        self.colour: deque[tuple[int | None, ColourMessage]] = deque()
        self.depth: deque[tuple[int, Any]] = deque(maxlen=QUEUE_SIZE)
        self.newest_depth: int | None = None

    def add_colour(self, colour: ColourMessage) -> None:
        if colour.message is None:
            self.colour.append((None, colour))
            return
        info = self.info if self.info is not None else self.first_info
        colour.partners = Partners(self.pairing, colour.message.header, info=info)
        self.colour.append((stamp_ns(colour.message.header), colour))

    def add_depth(self, message: Any) -> None:
        stamp = stamp_ns(message.header)
        self.depth.append((stamp, message))
        self.newest_depth = stamp if self.newest_depth is None else max(self.newest_depth, stamp)

    def ready(self, end: bool = False) -> Iterator[ColourMessage]:
        """The oldest colour messages that no later depth message can pair better: a depth
        message beyond their slop arrived, the queue is full, or the bag ended."""
        while self.colour:
            stamp, colour = self.colour[0]
            if not (
                end
                or stamp is None
                or len(self.colour) > QUEUE_SIZE
                or (self.newest_depth is not None and self.newest_depth > stamp + self.slop_ns)
            ):
                return
            self.colour.popleft()
            if stamp is not None:
                near = [
                    (abs(s - stamp), s, m) for s, m in self.depth if abs(s - stamp) <= self.slop_ns
                ]
                colour.partners.depth = min(near, key=lambda n: n[:2])[2] if near else None
                while self.depth and self.depth[0][0] < stamp - self.slop_ns:
                    self.depth.popleft()  # too old for this colour stamp and later ones
            yield colour
