"""Depth and CameraInfo of a bag paired with its colour messages (bag_depth.py), no models:
the nearest depth stamp within the slop, the CameraInfo logged last (else the first), the
image_transport sibling, and colour messages never held back without bound."""

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")

from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from test_cli_scene import CX, CY, FX, FY

from ovseg_ros.messages.depth_messages import camera_info_topic
from ovseg_ros.offline import bag_types
from ovseg_ros.offline.bag_depth import QUEUE_SIZE, BagDepth, colour_messages, stamp_ns

COLOUR = "/camera/color/image_raw"
DEPTH = "/camera/aligned_depth_to_color/image_raw"
INFO = "/camera/color/camera_info"
T0 = 100 * 10**9  # the first colour stamp, ns
MS = 10**6


def colour_image(store, stamp: int, rgb: np.ndarray, frame_id: str = "cam") -> tuple:
    height, width = rgb.shape[:2]
    return (
        COLOUR,
        "sensor_msgs/msg/Image",
        bag_types.message_types(store).Image(
            header=bag_types.header(store, stamp, frame_id),
            height=height,
            width=width,
            encoding="rgb8",
            step=width * 3,
            data=rgb.tobytes(),
        ),
    )


def depth_image(
    store,
    stamp: int,
    size: tuple[int, int] = (120, 160),
    millimetres: int = 2000,
    frame_id: str = "cam",
) -> tuple:
    """A 16UC1 depth image of one value, size (height, width)."""
    height, width = size
    pixels = np.full(size, millimetres, "<u2")
    return (
        DEPTH,
        "sensor_msgs/msg/Image",
        bag_types.message_types(store).Image(
            header=bag_types.header(store, stamp, frame_id),
            height=height,
            width=width,
            encoding="16UC1",
            step=width * 2,
            data=pixels.tobytes(),
        ),
    )


def camera_info(
    store, stamp: int, fx: float = FX, size: tuple[int, int] = (120, 160), topic: str = INFO
) -> tuple:
    height, width = size
    make = bag_types.constructor(store, "sensor_msgs/msg/CameraInfo")
    return (
        topic,
        "sensor_msgs/msg/CameraInfo",
        make(
            header=bag_types.header(store, stamp, "cam"),
            height=height,
            width=width,
            distortion_model="plumb_bob",
            k=[fx, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0],
        ),
    )


def write_bag(path: Path, logged: list[tuple[int, tuple]]) -> None:
    """A bag of (log time, (topic, type, message)), written in log-time order."""
    store = bag_types.typestore()
    with Writer(path, version=8, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {}
        for log_time, (topic, msgtype, message) in sorted(logged, key=lambda m: m[0]):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(connections[topic], log_time, bytes(store.serialize_cdr(message, msgtype)))


def camera_bag(path: Path, rgb: np.ndarray, info: bool = True) -> None:
    """Five colour frames at 10 Hz (stamp T0 + k 100 ms, logged 5 ms later) with depth of
    2000 mm registered to them: frame 0's depth stamped 3 ms after it and logged after it,
    frame 1's 4 ms before and logged before it, frame 2 without depth (its neighbours' are
    100 ms away), frame 3's in another frame_id, frame 4's of another size. One CameraInfo
    (unless ``info`` is False), logged after frame 0."""
    store = bag_types.typestore()
    size = rgb.shape[:2]
    stamps = [T0 + k * 100 * MS for k in range(5)]
    logged = [(t + 5 * MS, colour_image(store, t, rgb)) for t in stamps]
    logged += [
        (stamps[0] + 9 * MS, depth_image(store, stamps[0] + 3 * MS, size)),
        (stamps[1] + 1 * MS, depth_image(store, stamps[1] - 4 * MS, size)),
        (stamps[3] + 6 * MS, depth_image(store, stamps[3] + 2 * MS, size, frame_id="other")),
        (stamps[4] + 6 * MS, depth_image(store, stamps[4] + 1 * MS, (size[0] // 2, size[1] // 2))),
    ]
    if info:
        logged.append((stamps[0] + 50 * MS, camera_info(store, stamps[0], size=size)))
    write_bag(path, logged)


@pytest.mark.parametrize(
    "image, info",
    [
        ("/camera/color/image_raw", "/camera/color/camera_info"),
        ("/camera/color/image_raw/compressed", "/camera/color/camera_info"),
        ("/image", "/camera_info"),
    ],
)
def test_camera_info_topic_is_the_image_topics_sibling(image, info):
    assert camera_info_topic(image) == info


def paired(bag: Path, slop_s: float = 0.05) -> list:
    with AnyReader([bag], default_typestore=bag_types.typestore()) as reader:
        return list(colour_messages(reader, COLOUR, BagDepth(DEPTH, INFO, slop_s)))


def test_each_colour_message_gets_the_nearest_depth_within_the_slop_and_the_last_camera_info(
    tmp_path,
):
    """Depth logged before its colour message (frame 0); a farther one within the slop
    logged first and a nearer one logged after the colour message (frame 1); none within
    the slop (frame 2); one at the slop's edge (frame 3). A second CameraInfo replaces the
    first from its log time on, and the first serves the colour message logged before any."""
    store = bag_types.typestore()
    rgb = np.zeros((12, 16, 3), np.uint8)
    stamps = [T0 + k * 100 * MS for k in range(4)]
    logged = [(t + 5 * MS, colour_image(store, t, rgb)) for t in stamps]
    logged += [
        (t + log * MS, depth_image(store, t + offset * MS, (12, 16)))
        for t, offset, log in (
            (stamps[0], -4, 1),
            (stamps[1], -35, -30),
            (stamps[1], 4, 10),
            (stamps[3], 45, 47),
        )
    ]
    logged += [
        (stamps[0] + 50 * MS, camera_info(store, stamps[0], fx=200.0, size=(12, 16))),
        (stamps[2] + 1 * MS, camera_info(store, stamps[2], fx=300.0, size=(12, 16))),
    ]
    write_bag(tmp_path / "bag", logged)

    colour = paired(tmp_path / "bag")
    assert [stamp_ns(c.message.header) for c in colour] == stamps
    depth = [
        None if c.partners.depth is None else stamp_ns(c.partners.depth.header) - t
        for c, t in zip(colour, stamps)
    ]
    assert depth == [-4 * MS, 4 * MS, None, 45 * MS]
    assert [c.partners.info.k[0] for c in colour] == [200.0, 200.0, 300.0, 300.0]
    assert [c.log_time for c in colour] == [t + 5 * MS for t in stamps]
    # a narrower slop leaves frame 3 (45 ms away) without depth
    assert [c.partners.depth is None for c in paired(tmp_path / "bag", 0.04)] == [
        False,
        False,
        True,
        True,
    ]


def test_colour_messages_are_not_held_back_without_bound(tmp_path):
    """Depth that only starts after many colour messages: the first colour message comes
    out once QUEUE_SIZE wait, not at the end of the bag."""
    store = bag_types.typestore()
    rgb = np.zeros((4, 4, 3), np.uint8)
    count = QUEUE_SIZE + 10
    logged = [(T0 + k * MS, colour_image(store, T0 + k * MS, rgb)) for k in range(count)]
    logged.append((T0 + count * MS, depth_image(store, T0, (4, 4))))
    logged.append((T0, camera_info(store, T0, size=(4, 4))))
    write_bag(tmp_path / "bag", logged)

    read = []
    with AnyReader([tmp_path / "bag"], default_typestore=bag_types.typestore()) as reader:
        messages = reader.messages

        def counted(*args, **kwargs):
            for item in messages(*args, **kwargs):
                read.append(item[0].topic)
                yield item

        reader.messages = counted
        first = next(colour_messages(reader, COLOUR, BagDepth(DEPTH, INFO, 0.05)))
        assert read.count(COLOUR) == QUEUE_SIZE + 1 and DEPTH not in read
    assert stamp_ns(first.message.header) == T0 and first.partners.depth is None


def test_depth_logged_out_of_stamp_order_still_gives_the_nearest_depth(tmp_path):
    """A depth message stamped 30 ms after the colour frame is logged first, one stamped
    2 ms after it is logged 35 ms later: the frame waits for it and pairs with the nearer."""
    store = bag_types.typestore()
    rgb = np.zeros((4, 4, 3), np.uint8)
    logged = [
        (T0 + 5 * MS, colour_image(store, T0, rgb)),
        (T0 + 6 * MS, depth_image(store, T0 + 30 * MS, (4, 4))),
        (T0 + 40 * MS, depth_image(store, T0 + 2 * MS, (4, 4))),
        (T0, camera_info(store, T0, size=(4, 4))),
    ]
    write_bag(tmp_path / "bag", logged)
    (colour,) = paired(tmp_path / "bag")
    assert stamp_ns(colour.partners.depth.header) - T0 == 2 * MS


def test_one_depth_message_serves_two_colour_messages_when_depth_is_slower(tmp_path):
    """Depth at 0 and 100 ms, colour at 5 and 20 ms, slop 50 ms: both colour frames pair with
    the depth at 0, which is stamped before either of them."""
    store = bag_types.typestore()
    rgb = np.zeros((4, 4, 3), np.uint8)
    logged = [
        (T0 + 1 * MS, depth_image(store, T0, (4, 4))),
        (T0 + 6 * MS, colour_image(store, T0 + 5 * MS, rgb)),
        (T0 + 21 * MS, colour_image(store, T0 + 20 * MS, rgb)),
        (T0 + 101 * MS, depth_image(store, T0 + 100 * MS, (4, 4))),
        (T0, camera_info(store, T0, size=(4, 4))),
    ]
    write_bag(tmp_path / "bag", logged)
    first, second = paired(tmp_path / "bag")
    assert stamp_ns(first.partners.depth.header) == T0
    assert stamp_ns(second.partners.depth.header) == T0
