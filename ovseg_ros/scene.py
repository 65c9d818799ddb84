"""A SegmentationResult placed in 3D and tracked: fills each instance's ``geometry`` from a
registered depth image and its ``track_id`` from a Tracker. Used by the CLI and the node."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .geometry import DepthError, DepthSettings, back_project, check_sizes, measure_instances
from .panoptic import SegmentationResult
from .tracking import Tracker


def locate(result: SegmentationResult, depth_m: np.ndarray, k: np.ndarray,
           settings: DepthSettings = DepthSettings()) -> np.ndarray:
    """Set every instance's geometry from [H, W] metres (NaN invalid) registered to the colour
    image and its 3x3 K; returns the [H, W, 3] points (for a point cloud)."""
    check_sizes(result.instance_map.shape, depth_m.shape)
    points = back_project(depth_m, k)
    geometries = measure_instances(points, result.instance_map, len(result.instances), settings)
    for instance, geometry in zip(result.instances, geometries):
        instance.geometry = geometry
    return points


def track(result: SegmentationResult, tracker: Tracker) -> None:
    """Set every instance's track_id (the tracker keeps the state between frames)."""
    ids = tracker.update(result.instance_map, [instance.label for instance in result.instances])
    for instance, track_id in zip(result.instances, ids):
        instance.track_id = track_id


def place(result: SegmentationResult, depth: Callable[[], tuple[np.ndarray, np.ndarray]] | None,
          settings: DepthSettings, tracker: Tracker | None) -> DepthError | None:
    """Locate the result with the (depth in metres, K) that ``depth()`` returns, when depth is
    given, then track it, when a tracker is; the DepthError that left it without geometry."""
    problem = None
    if depth is not None:
        try:
            locate(result, *depth(), settings)
        except DepthError as err:
            problem = err
    if tracker is not None:
        track(result, tracker)
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
        return f"{sum(self.counts.values())} frame(s) without 3D geometry (null centroids):\n" \
            + "\n".join(f"  - {count} {cause}, first: {self.reasons[cause]}"
                        for cause, count in self.counts.items())
