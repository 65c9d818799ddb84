"""A SegmentationResult placed in 3D and tracked: fills each instance's ``geometry`` from a
registered depth image and its ``track_id`` from a Tracker. Used by the CLI and the node."""

from __future__ import annotations

import numpy as np

from .geometry import DepthSettings, back_project, check_sizes, measure_instances
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
