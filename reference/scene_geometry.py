"""Per-instance 3D geometry one instance at a time (erode its mask, median and MAD, then
percentiles with NumPy): the exact oracle that the tests and benchmarks/bench_scene.py hold
ovseg_ros.scene.geometry's vectorised measure_instances against. Not part of the package.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from ovseg_ros.scene.geometry import (
    MAD_TO_SIGMA,
    NO_GEOMETRY,
    DepthSettings,
    InstanceGeometry,
    check_sizes,
)


def reference_measure(
    points: np.ndarray, mask: np.ndarray, settings: DepthSettings = DepthSettings()
) -> InstanceGeometry:
    """[h, w, 3] points and an [h, w] bool mask of one instance -> its robust geometry.

    The mask is eroded by ``erode_px`` first (kept as is when erosion would empty it), depths
    far from the median (flying pixels, background through holes) are rejected, and the
    centroid is the per-axis median of the rest.
    """
    if settings.erode_px > 0:
        size = 2 * settings.erode_px + 1
        eroded = cv2.erode(mask.astype(np.uint8), np.ones((size, size), np.uint8)).astype(bool)
        if eroded.any():
            mask = eroded
    selected = points[mask]
    selected = selected[np.isfinite(selected[:, 2])]
    if len(selected) == 0:
        return NO_GEOMETRY
    z = selected[:, 2]
    median = np.median(z)
    spread = max(MAD_TO_SIGMA * float(np.median(np.abs(z - median))), settings.min_spread_m)
    inliers = selected[np.abs(z - median) <= settings.outlier_sigmas * spread]
    low, centroid, high = np.percentile(
        inliers, [settings.extent_percentile, 50.0, 100.0 - settings.extent_percentile], axis=0
    )
    return InstanceGeometry(
        tuple(float(c) for c in centroid), tuple(float(e) for e in high - low), int(len(inliers))
    )


def reference_measure_instances(
    points: np.ndarray,
    instance_map: np.ndarray,
    count: int,
    settings: DepthSettings = DepthSettings(),
) -> list[InstanceGeometry]:
    """[H, W, 3] points and the [H, W] instance image (1..count, 0 none) -> the geometry of
    instances 1..count, in order. Each instance is measured inside its bounding box only."""
    if points.shape[:2] != instance_map.shape:
        check_sizes(instance_map.shape, points.shape)
    pad = max(settings.erode_px, 0)
    height, width = instance_map.shape
    geometries = []
    for instance_id, box in enumerate(ndimage.find_objects(instance_map, max_label=count), start=1):
        if box is None:
            geometries.append(NO_GEOMETRY)
            continue
        rows = slice(max(box[0].start - pad, 0), min(box[0].stop + pad, height))
        cols = slice(max(box[1].start - pad, 0), min(box[1].stop + pad, width))
        geometries.append(
            reference_measure(points[rows, cols], instance_map[rows, cols] == instance_id, settings)
        )
    return geometries
