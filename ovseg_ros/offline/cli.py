"""ovseg-segment: the pipeline without ROS, on images, folders, globs, videos and rosbag2 bags.

A rosbag2 bag (a folder with metadata.yaml, sqlite3 or mcap) is read with rosbags, no ROS
needed: the frames of one sensor_msgs/Image or CompressedImage topic (``--topic``, or the
bag's only image topic), with depth and CameraInfo topics paired to them (``--depth-topic``,
bag_depth.py). Per frame it writes ``<name>_overlay.png`` (RGB, labelled colours),
``<name>_labels.png`` (16-bit class index, 65535 unlabelled), ``<name>_instances.png``
(16-bit, 1 + index into the JSON's instance list, 0 none) and ``<name>.json`` (instances with
COCO RLE masks).
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import math
import statistics
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from .bag_depth import (BagDepth, Partners, bag_depth, check_depth_topic, colour_messages, stamp_ns)
from ..settings.config import Settings, SettingsError, settings_fields
from ..settings.params_file import settings_from_yaml
from ..messages.convert import FrameError, opencv_frame_error
from .depth_files import DEPTH_SUFFIXES, find_depth, read_camera_info, read_depth
from ..scene.geometry import DepthError, DepthSettings, depth_settings
from ..segmentation.panoptic import SegmentationResult
from ..scene.placement import Unlocated, place
from ..scene.tracking import Tracker, TrackingSettings, tracking_settings
from ..segmentation.vocabulary import Vocabulary, VocabularyError
from ..segmentation.vocabulary_text import decode_names_file, parse_names

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ovseg-segment",
        description="Open-vocabulary segmentation (SAM proposals + mask-adapted CLIP) of "
                    "images, folders, globs, videos and rosbag2 bags.")
    parser.add_argument("inputs", nargs="+",
                        help="image files, folders, globs, videos or rosbag2 bag folders")
    parser.add_argument("--topic", help="image topic to read from rosbag2 bags (default: "
                        "the bag's only sensor_msgs/Image or CompressedImage topic)")
    vocab = parser.add_mutually_exclusive_group(required=True)
    vocab.add_argument("--vocab", help="comma separated classes, e.g. 'mug, kettle, person'")
    vocab.add_argument("--vocab-file", help="file with one class per line (or commas)")
    parser.add_argument("--out", default="out", help="output folder (default: out)")
    parser.add_argument("--config", help="YAML settings: a flat mapping, or a ROS 2 params "
                        "file such as config/params.yaml (the sections for --node-name)")
    parser.add_argument("--node-name", default="ovseg", help="whose sections of a ROS 2 "
                        "params file --config reads (default: ovseg, the node's name)")
    parser.add_argument("--stuff", help="comma separated classes that are stuff (regions)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--ray", metavar="auto|ADDRESS", help="process the inputs (one per "
                        "shard) over a Ray cluster, one model replica per GPU ('auto': a "
                        "running cluster or a local one); --out / --bag-out must be a folder "
                        "every Ray node can write")
    bag = parser.add_argument_group("bag out (inputs must be bags)")
    bag.add_argument("--bag-out", metavar="DIR", help="write a rosbag2 bag with the node's "
                     "output topics instead of files (several input bags: DIR/<name> each)")
    bag.add_argument("--bag-storage", choices=["mcap", "sqlite3"], default="mcap")
    bag.add_argument("--bag-overlay", action="store_true", help="also write /ovseg/overlay")
    bag.add_argument("--bag-passthrough", action="store_true",
                     help="also copy the input image topic into the bag")
    scene = parser.add_argument_group("3D (--depth: image files, folders and videos; "
                                      "--depth-topic: bags; tracking: --track below)")
    scene.add_argument("--depth", metavar="DIR", help="depth images registered to the colour "
                       "frames: DIR/<output name>.png (16-bit, units of --depth-scale), .tiff "
                       "or .npy (float metres); needs --camera-info")
    scene.add_argument("--camera-info", metavar="FILE", help="calibration YAML of the colour "
                       "camera (camera_calibration's file, or a CameraInfo with k: [...])")
    scene.add_argument("--depth-topic", metavar="TOPIC", help="the bags' sensor_msgs/Image "
                       "depth topic registered to the colour topic (16UC1 in units of "
                       "--depth-scale, or 32FC1 metres), paired by nearest stamp within "
                       "--sync-slop")
    scene.add_argument("--camera-info-topic", metavar="TOPIC", help="the colour camera's "
                       "CameraInfo topic (default: the colour topic's sibling camera_info)")
    settings = parser.add_argument_group("settings (defaults from config/params.yaml "
                                         "values; see the README)")
    for f in settings_fields():
        if f.name in ("vocabulary", "stuff_classes"):
            continue
        flag = "--" + f.name.replace("_", "-")
        kwargs = dict(dest=f.name, default=argparse.SUPPRESS, help=f.metadata["description"])
        if f.type == "bool":
            settings.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        else:
            settings.add_argument(flag, type={"int": int, "float": float}.get(f.type, str),
                                  choices=f.metadata.get("choices"), **kwargs)
    return parser


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
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
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
            raise InputError(f"{path}: a rosbag2 bag is read through its folder (the one with "
                             "metadata.yaml), and there is none beside this file")
        if not is_bag(path) and path.suffix.lower() not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
            raise InputError(f"{path}: unsupported file type {path.suffix!r}; images "
                             f"({', '.join(sorted(IMAGE_SUFFIXES))}) or videos "
                             f"({', '.join(sorted(VIDEO_SUFFIXES))})")
    return paths


def _open_bag(path: Path):
    """rosbags' reader for a bag; message types the bag does not define come from Humble's."""
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise InputError(f"{path} is a rosbag2 bag; reading bags needs the rosbags package "
                         "(pip install rosbags)") from None
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


def bag_image_topic(path: Path, topics: dict[str, tuple[str, int]], topic: str | None,
                    depth_topic: str | None = None) -> tuple[str, int]:
    """(topic, message count) of the image topic to read from a bag (``topics`` from
    bag_connections; without --topic the only image topic other than the depth topic);
    InputError when there is no such topic, or no --topic and more than one image topic."""
    images = {name: count for name, (msgtype, count) in topics.items()
              if msgtype in IMAGE_MSGTYPES and (topic or name != depth_topic)}
    listed = ", ".join(sorted(images)) or "none"
    if topic is None:
        if len(images) != 1:
            raise InputError(f"{path}: choose the image topic with --topic; the bag's "
                             f"sensor_msgs/Image and CompressedImage topics: {listed}")
        topic = next(iter(images))
    elif topic not in images:
        raise InputError(f"{path} has no sensor_msgs/Image or CompressedImage topic "
                         f"{topic!r}; its image topics: {listed}")
    return topic, images[topic]


def bag_inputs(args: argparse.Namespace, settings: Settings, paths: Sequence[Path]
               ) -> tuple[dict[Path, tuple[str, int]], dict[Path, BagDepth]]:
    """Each bag's image topic (topic, message count) and, with --depth-topic, its depth
    pairing; InputError or DepthError (before any model loads) when a topic is missing."""
    bags = [path for path in paths if is_bag(path)]
    if args.topic and not bags:
        raise InputError("--topic selects the image topic of rosbag2 bags, and no input "
                         "is a bag (a folder with metadata.yaml)")
    if args.bag_out and len(bags) != len(paths):
        raise InputError("--bag-out writes bags from bags: every input must be a rosbag2 "
                         "bag (a folder with metadata.yaml)")
    topics = {bag: bag_connections(bag) for bag in bags}
    if args.depth_topic:  # checked first: without --topic, it is not the colour topic
        for bag in bags:
            check_depth_topic(str(bag), topics[bag], args.depth_topic)
    bag_topics = {bag: bag_image_topic(bag, topics[bag], args.topic, args.depth_topic)
                  for bag in bags}
    if not args.depth_topic:
        return bag_topics, {}
    return bag_topics, {bag: bag_depth(str(bag), topics[bag], bag_topics[bag][0],
                                       args.depth_topic, args.camera_info_topic,
                                       settings.sync_slop) for bag in bags}


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


def bag_frames(path: Path, topic: str, stem: str, pairing: BagDepth | None = None
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
                yield Frame(name, source, colour.rgb(), stream=str(path),
                            partners=colour.partners,
                            stamp=stamp_ns(colour.message.header) / 1e9)
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
            log.info("%s is written as %s (%s is taken by an earlier input)", source, name,
                     wanted)
        return name


def read_frames(paths: Sequence[Path], bag_topics: dict[Path, tuple[str, int]],
                pairings: dict[Path, BagDepth] | None = None) -> Iterator[Frame]:
    """Every frame of every input in order, as RGB, with a unique name (OutputNames);
    unreadable ones carry a problem. bag_topics: each bag's (topic, count) from
    bag_image_topic; pairings: each bag's depth pairing, if any."""
    names = OutputNames()
    for frame in _frames(paths, bag_topics, pairings):
        yield dataclasses.replace(frame, name=names.claim_logged(frame.name, frame.source))


def _frames(paths: Sequence[Path], bag_topics: dict[Path, tuple[str, int]],
            pairings: dict[Path, BagDepth] | None = None) -> Iterator[Frame]:
    """Every frame of every input, named <stem> (images) or <stem>_<index:06d> (videos, bags;
    a bag's stem is its folder name)."""
    for path in paths:
        if is_bag(path):
            yield from bag_frames(path, bag_topics[path][0], path.name,
                                  (pairings or {}).get(path))
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
                yield Frame(f"{stem}_{index:06d}", f"{path}#{index}", None,
                            str(opencv_frame_error(err, f"frame {index}")))
                return
            if rgb is None:
                break
            yield Frame(f"{stem}_{index:06d}", f"{path}#{index}", rgb, stream=str(path),
                        stamp=index / fps if fps > 0 else None)
            index += 1
        if index == 0:
            yield Frame(stem, str(path), None, "the video has no readable frame")
    finally:
        capture.release()


def finite_or_none(values: Sequence[float]) -> list[float] | None:
    """A 3-vector for JSON: None when unknown (NaN is not JSON)."""
    return [float(v) for v in values] if all(math.isfinite(v) for v in values) else None


def instances_json(frame: Frame, result: SegmentationResult) -> dict:
    from pycocotools import mask as coco_mask

    records = []
    for index, instance in enumerate(result.instances):
        rle = coco_mask.encode(np.asfortranarray(result.instance_mask(index).astype(np.uint8)))
        records.append({
            "id": instance.id, "class_index": instance.class_index, "label": instance.label,
            "score": instance.score, "mask_quality": instance.mask_quality,
            "is_thing": instance.is_thing, "bbox": list(instance.bbox), "area": instance.area,
            "track_id": instance.track_id,
            "centroid": finite_or_none(instance.geometry.centroid),
            "extent": finite_or_none(instance.geometry.extent),
            "valid_depth_points": instance.geometry.valid_points,
            "mask": {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")},
        })
    return {"source": frame.source, "height": int(result.semantic.shape[0]),
            "width": int(result.semantic.shape[1]),
            "vocabulary": list(result.vocabulary.names), "instances": records,
            "timings_ms": result.timings_ms}


class WriteError(OSError):
    """An output file could not be written; the message names the file and the reason."""


def _write(path: Path, data: bytes) -> None:
    try:
        path.write_bytes(data)
    except OSError as err:
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from None


def _png(path: Path, pixels: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", pixels)
    if not ok:
        raise WriteError(f"cannot encode {path.name} as PNG")
    return encoded.tobytes()


OUTPUT_SUFFIXES = ("_overlay.png", "_labels.png", "_instances.png", ".json")


def output_paths(out: Path, name: str) -> list[Path]:
    """A frame's four output files, in OUTPUT_SUFFIXES order."""
    return [out / f"{name}{suffix}" for suffix in OUTPUT_SUFFIXES]


def write_outputs(out: Path, frame: Frame, result: SegmentationResult) -> None:
    """The frame's four files; WriteError (with none of them left behind) when one fails."""
    from ..segmentation.visualize import overlay

    overlay_path, labels_path, instances_path, json_path = output_paths(out, frame.name)
    files = {
        overlay_path: cv2.cvtColor(overlay(frame.image, result), cv2.COLOR_RGB2BGR),
        labels_path: result.semantic,
        instances_path: result.instance_map,
    }
    contents = {path: _png(path, pixels) for path, pixels in files.items()}
    contents[json_path] = json.dumps(instances_json(frame, result), indent=1).encode()
    written: list[Path] = []
    try:
        for path, data in contents.items():
            _write(path, data)
            written.append(path)
    except WriteError:
        for path in written:
            path.unlink(missing_ok=True)
        raise


def prepare_out_dir(out: Path) -> None:
    """Create the output folder and prove a file can be created in it; InputError if not."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is an existing file, not a folder: choose a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise InputError(f"--out {out} is not a writable folder: "
                         f"{err.strerror or err}") from None


def load_settings(args: argparse.Namespace) -> Settings:
    overrides = {f.name: getattr(args, f.name) for f in settings_fields() if hasattr(args, f.name)}
    if args.stuff:
        overrides["stuff_classes"] = [name for name in parse_names(args.stuff, "--stuff ")
                                      if name]
    if args.config:
        return settings_from_yaml(args.config, node_name=args.node_name, **overrides)
    return Settings().replace(**overrides)


def read_vocabulary(args: argparse.Namespace, settings: Settings) -> Vocabulary:
    text = args.vocab
    if args.vocab_file:
        try:
            data = Path(args.vocab_file).read_bytes()
        except OSError as err:
            raise VocabularyError(f"cannot read --vocab-file {args.vocab_file}: "
                                  f"{err.strerror}") from None
        text = decode_names_file(data, f"--vocab-file {args.vocab_file}")
    return Vocabulary.from_settings(text, settings)


@dataclasses.dataclass(frozen=True, eq=False)
class SceneOptions:
    """How each result is placed in 3D and tracked before it is written: depth from files
    (``depth_dir`` and the colour camera's ``k``; --depth/--camera-info) or from a bag frame's
    partners (--depth-topic), and a new Tracker at each stream (``tracking`` None: off)."""

    depth_dir: Path | None
    k: np.ndarray | None
    depth_settings: DepthSettings
    tracking: TrackingSettings | None

    def depth(self, frame: Frame) -> Callable[[], tuple[np.ndarray, np.ndarray]] | None:
        """What gives the frame's (depth in metres, K), raising DepthError when it cannot;
        None when no depth is given."""
        if frame.partners is not None:
            height, width = frame.image.shape[:2]
            return partial(frame.partners.registered, width, height, self.depth_settings)
        if self.depth_dir is not None:
            return partial(self._depth_file, frame.name)
        return None

    def _depth_file(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        path = find_depth(self.depth_dir, name)
        if path is None:
            raise DepthError(f"no depth file {self.depth_dir}/{name}"
                             f"{{{','.join(DEPTH_SUFFIXES)}}}", cause="no depth file")
        return read_depth(path, self.depth_settings), self.k


def scene_options(args: argparse.Namespace, settings: Settings, paths: Sequence[Path]
                  ) -> SceneOptions:
    """Check the 3D and tracking flags against each other and the inputs, before any model
    loads."""
    if args.depth_topic:
        if args.depth or args.camera_info:
            raise InputError("--depth-topic reads depth and CameraInfo from the bags: not with "
                             "--depth or --camera-info (those are for image files and videos)")
        if not all(is_bag(path) for path in paths):
            raise InputError("--depth-topic reads depth from rosbag2 bags: every input must be "
                             "a bag (images and videos take --depth DIR and --camera-info)")
    elif args.camera_info_topic:
        raise InputError("--camera-info-topic goes with --depth-topic")
    if bool(args.depth) != bool(args.camera_info):
        raise InputError("--depth and --camera-info go together: depth is back-projected "
                         "with the colour camera's K")
    if args.depth and args.bag_out:
        raise InputError("--bag-out reads depth from the bags (--depth-topic), not from "
                         "--depth DIR")
    if args.ray:
        from .cli_ray import refuse_over_ray

        refuse_over_ray(args, settings, paths)
    depth = k = None
    if args.depth:
        depth = Path(args.depth)
        if not depth.is_dir():
            raise InputError(f"--depth {depth} is not a folder")
        k = read_camera_info(Path(args.camera_info))
    return SceneOptions(depth, k, depth_settings(settings),
                        tracking_settings(settings) if settings.track else None)


@dataclasses.dataclass
class FrameOutcome:
    """What became of one frame: ``status`` 'written' (with the stage timings), 'skipped'
    (unreadable or unusable input) or 'failed' (an output could not be written); ``detail``
    says why. ``unlocated``: (cause, reason) when depth was given but the frame has no 3D
    geometry."""

    name: str
    source: str
    status: str
    detail: str = ""
    timings_ms: dict[str, float] | None = None
    unlocated: tuple[str, str] | None = None


def segment_frames(segmenter, encoded, frames: Iterable[Frame], out: Path,
                   scene: SceneOptions | None = None) -> Iterator[FrameOutcome]:
    """Segment each frame (placed in 3D and tracked when ``scene`` says so) and write its
    files into ``out``; a bad frame or a failed write is an outcome, never an exception."""
    from ..segmentation.pipeline import ImageError

    tracker, stream = None, None
    for frame in frames:
        if frame.image is None:
            yield FrameOutcome(frame.name, frame.source, "skipped", frame.problem)
            continue
        try:
            result = segmenter.segment(frame.image, encoded)
        except ImageError as err:
            yield FrameOutcome(frame.name, frame.source, "skipped", str(err))
            continue
        unlocated = None
        if scene is not None:
            if scene.tracking is not None and (tracker is None or frame.stream != stream):
                tracker, stream = Tracker(scene.tracking), frame.stream  # ids from 1 again
            problem = place(result, scene.depth(frame), scene.depth_settings, tracker,
                            frame.stamp)
            if problem is not None:
                unlocated = (problem.cause, str(problem))
        try:
            write_outputs(out, frame, result)
        except WriteError as err:
            yield FrameOutcome(frame.name, frame.source, "failed", str(err))
            continue
        yield FrameOutcome(frame.name, frame.source, "written", timings_ms=result.timings_ms,
                           unlocated=unlocated)


def tally(outcomes: Iterable[FrameOutcome]
          ) -> tuple[list[dict[str, float]], int, int, Unlocated]:
    """Log each skipped or failed frame, and the first frame without 3D geometry of each
    cause; (timings of the written ones, skipped, failed, those without geometry)."""
    timings: list[dict[str, float]] = []
    skipped = failed = 0
    unlocated = Unlocated()
    for outcome in outcomes:
        if outcome.status == "skipped":
            log.warning("skipped %s: %s", outcome.source, outcome.detail)
            skipped += 1
        elif outcome.status == "failed":
            log.error("%s not written: %s", outcome.source, outcome.detail)
            failed += 1
        else:
            timings.append(outcome.timings_ms)
            if outcome.unlocated is not None:
                cause, reason = outcome.unlocated
                if unlocated.add(cause, f"{outcome.source}: {reason}"):
                    log.warning("%s: no 3D geometry: %s (more frames for the same reason are "
                                "counted in the summary)", outcome.source, reason)
    return timings, skipped, failed, unlocated


def summary(timings: list[dict[str, float]], skipped: int, failed: int,
            unlocated: Unlocated | None = None) -> str:
    lines = [f"{len(timings)} frame(s) segmented, {skipped} skipped"
             + (f", {failed} not written (see the errors above)" if failed else "")]
    if unlocated is not None and unlocated.counts:
        lines.append(unlocated.summary())
    if timings:
        for stage in timings[0]:
            values = [t[stage] for t in timings]
            lines.append(f"  {stage:<10} median {statistics.median(values):8.1f} ms   "
                         f"max {max(values):8.1f} ms")
        median_total = statistics.median(t["total"] for t in timings)
        lines.append(f"  {1000.0 / max(median_total, 1e-6):.2f} frames/s (from the median "
                     "total)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(args)
        vocabulary = read_vocabulary(args, settings)
        paths = expand_inputs(args.inputs)
        scene = scene_options(args, settings, paths)
        bag_topics, pairings = bag_inputs(args, settings, paths)
        if args.bag_out:
            from .bag_writer import bag_out_paths

            taken = [str(p) for p in bag_out_paths(paths, Path(args.bag_out)) if p.exists()]
            if taken:
                raise InputError(f"{', '.join(taken)} exists; rosbag2 writes a new folder: "
                                 "remove it or choose another --bag-out")
        total = count_frames(paths, bag_topics)
        out = Path(args.out)
        if not args.bag_out:
            prepare_out_dir(out)
    except (SettingsError, VocabularyError, InputError, DepthError) as err:
        print(f"ovseg-segment: error: {err}", file=sys.stderr)
        return 2

    from ..segmentation.pipeline import Segmenter
    from ..models.weights import WeightsError, missing_weights

    missing = missing_weights(settings)
    if missing:
        print("ovseg-segment: error: weights are missing:\n" +
              "\n".join(f"  - {line}" for line in missing), file=sys.stderr)
        return 2
    if args.ray:
        from .cli_ray import segment_over_ray

        return segment_over_ray(args, settings, vocabulary, paths, bag_topics, pairings,
                                scene)
    try:
        segmenter = Segmenter(settings)
    except WeightsError as err:
        print(f"ovseg-segment: error: {err}", file=sys.stderr)
        return 2
    encoded = segmenter.encode_vocabulary(vocabulary)
    if args.bag_out:
        from .bag_writer import write_bags

        stats = write_bags(segmenter, encoded, {p: t for p, (t, _) in bag_topics.items()},
                           Path(args.bag_out), storage=args.bag_storage,
                           write_overlay=args.bag_overlay, passthrough=args.bag_passthrough,
                           pairings=pairings)
        return 0 if all(s.frames for s in stats) else 1

    frames = read_frames(paths, bag_topics, pairings)
    if total > 1 and not args.quiet:
        from tqdm import tqdm

        frames = tqdm(frames, total=total, unit="frame")
    timings, skipped, failed, unlocated = tally(segment_frames(segmenter, encoded, frames, out,
                                                               scene))
    print(summary(timings, skipped, failed, unlocated), file=sys.stderr)
    print(f"outputs in {out}/", file=sys.stderr)
    return 0 if timings and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
