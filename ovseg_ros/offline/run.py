"""ovseg-segment's frame loop: each frame segmented, placed in 3D and tracked when asked,
written, and counted (skipped, failed, without 3D) for the summary."""

import argparse
import dataclasses
import logging
import statistics
from collections.abc import Callable, Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path

import numpy as np

from ..scene.geometry import DepthError, DepthSettings, depth_settings
from ..scene.placement import Unlocated, place
from ..scene.tracking import Tracker, TrackingSettings, tracking_settings
from ..settings.config import Settings
from .depth_files import DEPTH_SUFFIXES, find_depth, read_camera_info, read_depth
from .inputs import VIDEO_SUFFIXES, Frame, InputError, is_bag, renamed_inputs
from .writing import WriteError, write_outputs

log = logging.getLogger("ovseg_segment")


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
            raise DepthError(
                f"no depth file {self.depth_dir}/{name}{{{','.join(DEPTH_SUFFIXES)}}}",
                cause="no depth file",
            )
        return read_depth(path, self.depth_settings), self.k


def scene_options(
    args: argparse.Namespace, settings: Settings, paths: Sequence[Path]
) -> SceneOptions:
    """Check the 3D and tracking flags against each other and the inputs, before any model
    loads."""
    if args.depth_topic:
        if args.depth or args.camera_info:
            raise InputError(
                "--depth-topic reads depth and CameraInfo from the bags: not with "
                "--depth or --camera-info (those are for image files and videos)"
            )
        if not all(is_bag(path) for path in paths):
            raise InputError(
                "--depth-topic reads depth from rosbag2 bags: every input must be "
                "a bag (images and videos take --depth DIR and --camera-info)"
            )
    elif args.camera_info_topic:
        raise InputError("--camera-info-topic goes with --depth-topic")
    if bool(args.depth) != bool(args.camera_info):
        raise InputError(
            "--depth and --camera-info go together: depth is back-projected "
            "with the colour camera's K"
        )
    if args.depth and args.bag_out:
        raise InputError(
            "--bag-out reads depth from the bags (--depth-topic), not from --depth DIR"
        )
    if args.ray:
        refuse_over_ray(args, settings, paths)
    depth = k = None
    if args.depth:
        depth = Path(args.depth)
        if not depth.is_dir():
            raise InputError(f"--depth {depth} is not a folder")
        k = read_camera_info(Path(args.camera_info))
    return SceneOptions(
        depth, k, depth_settings(settings), tracking_settings(settings) if settings.track else None
    )


def refuse_over_ray(args: argparse.Namespace, settings: Settings, paths: Sequence[Path]) -> None:
    """InputError for what --ray cannot do as one process does: a worker sees one input
    (each image file is one), so it cannot track from image to image, nor know that its
    frames' names will be renamed, which --depth DIR files are looked up by."""
    images = [
        str(path)
        for path in paths
        if not is_bag(path) and path.suffix.lower() not in VIDEO_SUFFIXES
    ]
    if settings.track and images:
        raise InputError(
            "--track with --ray follows objects within each video or bag (one shard each), "
            "but every image file is a shard of its own, so ids could not follow objects from "
            f"image to image ({images[0]}): run without --ray"
        )
    renamed = renamed_inputs(paths)
    if args.depth and renamed:
        raise InputError(
            "--depth files are found by output name, and with --ray a worker cannot know that "
            f"a frame's name will get a _2 suffix (inputs {', '.join(map(str, renamed))} have "
            "names in common): rename them or run without --ray"
        )


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


def segment_frames(
    segmenter, encoded, frames: Iterable[Frame], out: Path, scene: SceneOptions | None = None
) -> Iterator[FrameOutcome]:
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
            problem = place(result, scene.depth(frame), scene.depth_settings, tracker, frame.stamp)
            if problem is not None:
                unlocated = (problem.cause, str(problem))
        try:
            write_outputs(out, frame, result)
        except WriteError as err:
            yield FrameOutcome(frame.name, frame.source, "failed", str(err))
            continue
        yield FrameOutcome(
            frame.name, frame.source, "written", timings_ms=result.timings_ms, unlocated=unlocated
        )


def tally(outcomes: Iterable[FrameOutcome]) -> tuple[list[dict[str, float]], int, int, Unlocated]:
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
                    log.warning(
                        "%s: no 3D geometry: %s (more frames for the same reason are "
                        "counted in the summary)",
                        outcome.source,
                        reason,
                    )
    return timings, skipped, failed, unlocated


def summary(
    timings: list[dict[str, float]], skipped: int, failed: int, unlocated: Unlocated | None = None
) -> str:
    lines = [
        f"{len(timings)} frame(s) segmented, {skipped} skipped"
        + (f", {failed} not written (see the errors above)" if failed else "")
    ]
    if unlocated is not None and unlocated.counts:
        lines.append(unlocated.summary())
    if timings:
        for stage in timings[0]:
            values = [t[stage] for t in timings]
            lines.append(
                f"  {stage:<10} median {statistics.median(values):8.1f} ms   "
                f"max {max(values):8.1f} ms"
            )
        median_total = statistics.median(t["total"] for t in timings)
        lines.append(f"  {1000.0 / max(median_total, 1e-6):.2f} frames/s (from the median total)")
    return "\n".join(lines)
