"""A SegmentationResult placed in 3D and tracked: fills each instance's ``geometry`` from a
registered depth image and its ``track_id`` from a Tracker. Used by the CLI and the node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..segmentation.panoptic import SegmentationResult
from .geometry import DepthError, DepthSettings, back_project, check_sizes, measure_instances
from .tracking import Tracker


def locate(
    result: SegmentationResult,
    depth_m: np.ndarray,
    k: np.ndarray,
    settings: DepthSettings = DepthSettings(),
) -> np.ndarray:
    """Set every instance's geometry from [H, W] metres (NaN invalid) registered to the colour
    image and its 3x3 K; returns the [H, W, 3] points (for a point cloud)."""
    check_sizes(result.instance_map.shape, depth_m.shape)
    points = back_project(depth_m, k)
    geometries = measure_instances(points, result.instance_map, len(result.instances), settings)
    for instance, geometry in zip(result.instances, geometries):
        instance.geometry = geometry
    return points


def track(result: SegmentationResult, tracker: Tracker, stamp: float | None = None) -> None:
    """Set every instance's track_id (the tracker keeps the state between frames) from its
    mask, box, CLIP embedding and 3D centroid (where located: locate first); ``stamp``: the
    frame's time in seconds (None: unknown, no 3D speed gate)."""
    instances = result.instances
    looks = [instance.embedding for instance in instances]
    embeddings = None
    if any(look is not None for look in looks):
        shape = next(look.shape for look in looks if look is not None)
        present = [look for look in looks if look is not None and look.shape == shape]
        if len(present) == len(looks):
            embeddings = np.stack(present)
        else:  # rows of NaN: no appearance
            embeddings = np.full((len(looks), *shape), np.nan, dtype=np.float32)
            for row, look in enumerate(looks):
                if look is not None and look.shape == shape:
                    embeddings[row] = look
    ids = tracker.update(
        result.instance_map,
        [instance.label for instance in instances],
        boxes=np.array([instance.bbox for instance in instances], dtype=np.float64),
        embeddings=embeddings,
        centroids=np.array(
            [instance.geometry.centroid for instance in instances], dtype=np.float64
        ).reshape(len(instances), 3),
        stamp=stamp,
    )
    for instance, track_id in zip(instances, ids):
        instance.track_id = track_id


def place(
    result: SegmentationResult,
    depth: Callable[[], tuple[np.ndarray, np.ndarray]] | None,
    settings: DepthSettings,
    tracker: Tracker | None,
    stamp: float | None = None,
) -> DepthError | None:
    """Locate the result with the (depth in metres, K) that ``depth()`` returns, when depth is
    given, then track it, when a tracker is (``stamp``: the frame's time in seconds, or
    None); the DepthError that left it without geometry."""
    problem = None
    if depth is not None:
        try:
            locate(result, *depth(), settings)
        except DepthError as err:
            problem = err
    if tracker is not None:
        track(result, tracker, stamp)
    return problem


@dataclass
class Unlocated:
    """Frames left without 3D geometry although depth was given: how many per cause, and the
    first reason of each cause."""

    counts: dict[str, int] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)

    def add(self, cause: str, reason: str) -> bool:
        """Count one frame; True when it is the first of its cause (the one to log)."""
        first = cause not in self.counts
        self.counts[cause] = self.counts.get(cause, 0) + 1
        self.reasons.setdefault(cause, reason)
        return first

    def summary(self) -> str:
        """How many frames, then a line per cause with its count and first reason."""
        return (
            f"{sum(self.counts.values())} frame(s) without 3D geometry (null centroids):\n"
            + "\n".join(
                f"  - {count} {cause}, first: {self.reasons[cause]}"
                for cause, count in self.counts.items()
            )
        )


# One point of a labelled cloud: position (metres, camera optical frame), colour packed as
# PCL does (0x00RRGGBB in the bytes of a float32), class index into the vocabulary
# (UNLABELLED: none), instance id (1 + index into the instances, 0: none) and track id (0:
# untracked).
POINT_DTYPE = np.dtype(
    [
        ("x", "<f4"),
        ("y", "<f4"),
        ("z", "<f4"),
        ("rgb", "<f4"),
        ("class_index", "<u2"),
        ("instance_id", "<u2"),
        ("track_id", "<u4"),
    ]
)


def labelled_points(
    points: np.ndarray, rgb: np.ndarray, result: SegmentationResult, stride: int = 1
) -> np.ndarray:
    """[H, W, 3] points (NaN: no depth), the [H, W, 3] uint8 RGB frame and its result -> [N]
    POINT_DTYPE of every ``stride``-th pixel in each direction that has depth, row by row."""
    rows = slice(None, None, stride)
    xyz = points[rows, rows]
    valid = np.isfinite(xyz[..., 2])
    colour = rgb[rows, rows][valid].astype(np.uint32)
    instance_ids = result.instance_map[rows, rows][valid]
    track_of_instance = np.zeros(len(result.instances) + 1, dtype=np.uint32)
    track_of_instance[1:] = [instance.track_id for instance in result.instances]
    cloud = np.empty(int(valid.sum()), dtype=POINT_DTYPE)
    for axis, name in enumerate("xyz"):
        cloud[name] = xyz[..., axis][valid]
    cloud["rgb"] = ((colour[:, 0] << 16) | (colour[:, 1] << 8) | colour[:, 2]).view(np.float32)
    cloud["class_index"] = result.semantic[rows, rows][valid]
    cloud["instance_id"] = instance_ids
    cloud["track_id"] = track_of_instance[instance_ids]
    return cloud
