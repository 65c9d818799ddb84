"""ovseg-segment's inputs: image files, folders and globs, videos, and rosbag2 bags read with
rosbags (no ROS needed: the frames of one sensor_msgs/Image or CompressedImage topic, with
depth and CameraInfo topics paired to them, bag_depth.py), as Frames with unique output
names."""

import argparse
import dataclasses
import glob
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from ..messages.convert import FrameError, opencv_frame_error
from ..settings.config import Settings
from .bag_depth import BagDepth, Partners, bag_depth, check_depth_topic, colour_messages, stamp_ns

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v"}
BAG_SUFFIXES = {".db3", ".mcap"}  # a rosbag2 bag's storage files, read through their folder
IMAGE_MSGTYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")

log = logging.getLogger("ovseg_segment")


class InputError(ValueError):
    """An input path cannot be used."""


@dataclasses.dataclass
class Frame:
    name: str  # output file stem
    source: str  # where it came from, for messages and the JSON
    image: np.ndarray | None  # RGB uint8, None when it could not be read
    problem: str = ""
    stream: str = ""  # frames of one stream are tracked together: a bag's or video's path
    partners: Partners | None = None  # the depth and CameraInfo of a bag frame
    stamp: float | None = None  # seconds: a bag frame's header stamp, a video frame's time


def is_bag(path: Path) -> bool:
    """A rosbag2 bag: a folder with the metadata.yaml that ros2 bag record writes."""
    return path.is_dir() and (path / "metadata.yaml").is_file()


def bag_folder(path: Path) -> Path:
    """A bag's storage file (.mcap, .db3) stands for its bag folder; other paths for
    themselves."""
    if path.is_file() and path.suffix.lower() in BAG_SUFFIXES and is_bag(path.parent):
        return path.parent
    return path


def expand_inputs(inputs: Sequence[str]) -> list[Path]:
    """Files, bags, folders (their images, sorted) and globs -> paths; refuse what matches
    nothing."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item)
        if is_bag(path):
            paths.append(path)
        elif path.is_dir():
            found = sorted(
                p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES
            )
            if not found:
                raise InputError(f"folder {path} has no images or videos")
            paths.extend(found)
        elif path.is_file():
            paths.append(path)
        elif glob.has_magic(item):
            found = sorted(Path(p) for p in glob.glob(item, recursive=True) if Path(p).is_file())
            if not found:
                raise InputError(f"pattern {item!r} matches no file")
            paths.extend(found)
        else:
            raise InputError(f"input {item} does not exist")
    paths = list(dict.fromkeys(bag_folder(path) for path in paths))
    for path in paths:
        if path.suffix.lower() in BAG_SUFFIXES and not is_bag(path):
            raise InputError(
                f"{path}: a rosbag2 bag is read through its folder (the one with "
                "metadata.yaml), and there is none beside this file"
            )
        if not is_bag(path) and path.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            raise InputError(
                f"{path}: unsupported file type {path.suffix!r}; images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}) or videos "
                f"({', '.join(sorted(VIDEO_SUFFIXES))})"
            )
    return paths


def _open_bag(path: Path):
    """rosbags' reader for a bag; message types the bag does not define come from Humble's."""
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise InputError(
            f"{path} is a rosbag2 bag; reading bags needs the rosbags package (pip install rosbags)"
        ) from None
    return AnyReader([path], default_typestore=get_typestore(Stores.ROS2_HUMBLE))


def bag_connections(path: Path) -> dict[str, tuple[str, int]]:
    """A bag's topics: topic -> (message type, message count); InputError when unreadable."""
    try:
        with _open_bag(path) as reader:
            topics: dict[str, tuple[str, int]] = {}
            for connection in reader.connections:
                count = topics.get(connection.topic, ("", 0))[1]
                topics[connection.topic] = (connection.msgtype, count + connection.msgcount)
    except InputError:
        raise
    except Exception as err:  # rosbags' errors for unreadable bags have no common base
        raise InputError(f"{path}: cannot read the rosbag2 bag: {err}") from None
    return topics


def bag_image_topic(
    path: Path,
    topics: dict[str, tuple[str, int]],
    topic: str | None,
    depth_topic: str | None = None,
) -> tuple[str, int]:
    """(topic, message count) of the image topic to read from a bag (``topics`` from
    bag_connections; without --topic the only image topic other than the depth topic);
    InputError when there is no such topic, or no --topic and more than one image topic."""
    images = {
        name: count
        for name, (msgtype, count) in topics.items()
        if msgtype in IMAGE_MSGTYPES and (topic or name != depth_topic)
    }
    listed = ", ".join(sorted(images)) or "none"
    if topic is None:
        if len(images) != 1:
            raise InputError(
                f"{path}: choose the image topic with --topic; the bag's "
                f"sensor_msgs/Image and CompressedImage topics: {listed}"
            )
        topic = next(iter(images))
    elif topic not in images:
        raise InputError(
            f"{path} has no sensor_msgs/Image or CompressedImage topic "
            f"{topic!r}; its image topics: {listed}"
        )
    return topic, images[topic]


def bag_inputs(
    args: argparse.Namespace, settings: Settings, paths: Sequence[Path]
) -> tuple[dict[Path, tuple[str, int]], dict[Path, BagDepth]]:
    """Each bag's image topic (topic, message count) and, with --depth-topic, its depth
    pairing; InputError or DepthError (before any model loads) when a topic is missing."""
    bags = [path for path in paths if is_bag(path)]
    if args.topic and not bags:
        raise InputError(
            "--topic selects the image topic of rosbag2 bags, and no input "
            "is a bag (a folder with metadata.yaml)"
        )
    if args.bag_out and len(bags) != len(paths):
        raise InputError(
            "--bag-out writes bags from bags: every input must be a rosbag2 "
            "bag (a folder with metadata.yaml)"
        )
    topics = {bag: bag_connections(bag) for bag in bags}
    if args.depth_topic:  # checked first: without --topic, it is not the colour topic
        for bag in bags:
            check_depth_topic(str(bag), topics[bag], args.depth_topic)
    bag_topics = {
        bag: bag_image_topic(bag, topics[bag], args.topic, args.depth_topic) for bag in bags
    }
    if not args.depth_topic:
        return bag_topics, {}
    return bag_topics, {
        bag: bag_depth(
            str(bag),
            topics[bag],
            bag_topics[bag][0],
            args.depth_topic,
            args.camera_info_topic,
            settings.sync_slop,
        )
        for bag in bags
    }


def count_frames(paths: Sequence[Path], bag_topics: dict[Path, tuple[str, int]]) -> int:
    """Frames in all inputs; bag_topics: each bag's (topic, count) from bag_image_topic."""
    total = 0
    for path in paths:
        if is_bag(path):
            total += bag_topics[path][1]
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            capture = cv2.VideoCapture(str(path))
            total += max(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
            capture.release()
        else:
            total += 1
    return total


def bag_frames(
    path: Path, topic: str, stem: str, pairing: BagDepth | None = None
) -> Iterator[Frame]:
    """The bag's image messages on the topic, in time order, named <stem>_<index:06d>; with
    their depth partners when ``pairing`` is given."""
    with _open_bag(path) as reader:
        for index, colour in enumerate(colour_messages(reader, topic, pairing)):
            name, source = f"{stem}_{index:06d}", f"{path}:{topic}@{colour.log_time}"
            if colour.message is None:
                yield Frame(name, source, None, colour.problem, stream=str(path))
                continue
            try:
                yield Frame(
                    name,
                    source,
                    colour.rgb(),
                    stream=str(path),
                    partners=colour.partners,
                    stamp=stamp_ns(colour.message.header) / 1e9,
                )
            except FrameError as err:
                yield Frame(name, source, None, str(err), stream=str(path))


class OutputNames:
    """Unique output stems for one run: a wanted stem that an earlier frame of the run holds
    (compared case-insensitively, for case-insensitive file systems) gets the first free
    ``_2``, ``_3``, ... suffix. So a/x.png, a/x_2.png, b/x.png give x, x_2, x_3."""

    def __init__(self) -> None:
        self._taken: set[str] = set()

    def claim(self, wanted: str) -> str:
        name, number = wanted, 1
        while name.casefold() in self._taken:
            number += 1
            name = f"{wanted}_{number}"
        self._taken.add(name.casefold())
        return name

    def claim_logged(self, wanted: str, source: str) -> str:
        """``claim``, saying so in the log when the name had to change."""
        name = self.claim(wanted)
        if name != wanted:
            log.info("%s is written as %s (%s is taken by an earlier input)", source, name, wanted)
        return name


def read_frames(
    paths: Sequence[Path],
    bag_topics: dict[Path, tuple[str, int]],
    pairings: dict[Path, BagDepth] | None = None,
) -> Iterator[Frame]:
    """Every frame of every input in order, as RGB, with a unique name (OutputNames);
    unreadable ones carry a problem. bag_topics: each bag's (topic, count) from
    bag_image_topic; pairings: each bag's depth pairing, if any."""
    names = OutputNames()
    for frame in frames_of(paths, bag_topics, pairings):
        yield dataclasses.replace(frame, name=names.claim_logged(frame.name, frame.source))


def frames_of(
    paths: Sequence[Path],
    bag_topics: dict[Path, tuple[str, int]],
    pairings: dict[Path, BagDepth] | None = None,
) -> Iterator[Frame]:
    """Every frame of every input, named <stem> (images) or <stem>_<index:06d> (videos, bags;
    a bag's stem is its folder name)."""
    for path in paths:
        if is_bag(path):
            yield from bag_frames(path, bag_topics[path][0], path.name, (pairings or {}).get(path))
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            yield from video_frames(path, path.stem)
        else:
            try:
                yield Frame(path.stem, str(path), read_image(path))
            except FrameError as err:
                yield Frame(path.stem, str(path), None, str(err))


def read_image(path: Path) -> np.ndarray:
    """An image file -> [H, W, 3] uint8 RGB; FrameError when OpenCV cannot read it."""
    try:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FrameError("decode", "not a readable image (corrupt or not an image file)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    except cv2.error as err:
        raise opencv_frame_error(err, "the image") from None


def video_frames(path: Path, stem: str) -> Iterator[Frame]:
    """A video's frames named <stem>_<index:06d>; an OpenCV failure ends the video with a
    problem frame (what was read before is kept)."""
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    index = 0
    try:
        if not capture.isOpened():
            yield Frame(stem, str(path), None, "cannot open the video")
            return
        while True:
            try:
                ok, bgr = capture.read()
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None
            except cv2.error as err:
                yield Frame(
                    f"{stem}_{index:06d}",
                    f"{path}#{index}",
                    None,
                    str(opencv_frame_error(err, f"frame {index}")),
                )
                return
            if rgb is None:
                break
            yield Frame(
                f"{stem}_{index:06d}",
                f"{path}#{index}",
                rgb,
                stream=str(path),
                stamp=index / fps if fps > 0 else None,
            )
            index += 1
        if index == 0:
            yield Frame(stem, str(path), None, "the video has no readable frame")
    finally:
        capture.release()


def renamed_inputs(paths: Sequence[Path]) -> list[Path]:
    """Inputs whose frames a run may write under another name than their own: image files
    that share a stem (compared case-insensitively) with another image or with a video or
    bag, or have a video or bag frame's name (<stem>_<index:06d>), and videos and bags that
    share a stem."""
    images: dict[str, list[Path]] = {}
    sequences: dict[str, list[Path]] = {}
    for path in paths:
        if is_bag(path):
            sequences.setdefault(path.name.casefold(), []).append(path)
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            sequences.setdefault(path.stem.casefold(), []).append(path)
        else:
            images.setdefault(path.stem.casefold(), []).append(path)
    renamed = [path for group in sequences.values() if len(group) > 1 for path in group]
    for stem, group in images.items():
        base, _, index = stem.rpartition("_")
        if (
            len(group) > 1
            or stem in sequences
            or (len(index) >= 6 and index.isdigit() and base in sequences)
        ):
            renamed.extend(group)
    return renamed
