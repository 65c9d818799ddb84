"""Depth images to metres, pinhole back-projection, and robust 3D per-instance geometry.

Frames and units: points are in the colour camera's optical frame (x right, y down, z forward),
in metres. Back-projection uses the pinhole model of CameraInfo's K with no distortion, so the
colour and depth images must be rectified and the depth registered (aligned) to the colour
image, pixel for pixel, as RealSense's ``aligned_depth_to_color`` and ZED's depth are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from scipy import ndimage

# 1.4826 * MAD estimates the standard deviation of normally distributed depths.
MAD_TO_SIGMA = 1.4826


class DepthError(ValueError):
    """The depth image or camera model cannot be used; the message says why. ``cause`` names
    the kind of problem (encoding, size, frame_id, camera_info, ...) so that a node can log
    each kind once."""

    def __init__(self, message: str, cause: str = "depth"):
        super().__init__(message)
        self.cause = cause


@dataclass(frozen=True)
class DepthSettings:
    """depth_scale: metres per unit of a 16-bit depth image (0.001: millimetres).
    min_range/max_range: depths outside are invalid (metres; max_range 0 means no limit).
    erode_px: pixels taken off each mask's border before measuring (edges mix foreground and
    background depth). outlier_sigmas: depths further than this many robust standard
    deviations (at least min_spread_m) from the instance's median depth are outliers (flying
    pixels, background seen through holes). extent_percentile: the extent spans this
    percentile to its complement of the inliers on each axis."""

    depth_scale: float = 0.001
    min_range: float = 0.0
    max_range: float = 0.0
    erode_px: int = 2
    outlier_sigmas: float = 3.0
    min_spread_m: float = 0.02
    extent_percentile: float = 2.0


@dataclass(frozen=True)
class InstanceGeometry:
    """centroid: (x, y, z) median of the inlier points; extent: (dx, dy, dz) size of the
    axis-aligned box around them; both NaN without valid depth. valid_points: the number of
    inlier points behind the two (0 when NaN)."""

    centroid: tuple[float, float, float]
    extent: tuple[float, float, float]
    valid_points: int


NO_GEOMETRY = InstanceGeometry((math.nan,) * 3, (math.nan,) * 3, 0)


def decode_depth(depth: np.ndarray, encoding: str,
                 settings: DepthSettings = DepthSettings()) -> np.ndarray:
    """A depth image as sent by a camera -> [H, W] float32 metres, NaN where invalid.

    16UC1 (and mono16) hold units of ``depth_scale`` metres, 0 meaning no reading; 32FC1 holds
    metres, NaN, inf and values <= 0 meaning no reading. Depths outside the range are invalid.
    """
    if depth.ndim != 2:
        raise DepthError(f"depth must be one channel, got shape {depth.shape}", cause="encoding")
    if encoding in ("16UC1", "mono16"):
        if depth.dtype != np.uint16:
            raise DepthError(f"{encoding} depth must be uint16, got {depth.dtype}",
                             cause="encoding")
        metres = depth.astype(np.float32) * np.float32(settings.depth_scale)
        metres[depth == 0] = np.nan
    elif encoding == "32FC1":
        if depth.dtype != np.float32:
            raise DepthError(f"32FC1 depth must be float32, got {depth.dtype}", cause="encoding")
        metres = depth.astype(np.float32, copy=True)
        metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    else:
        raise DepthError(f"depth encoding {encoding!r} is not supported: use 16UC1 "
                         "(millimetres, or units of depth_scale) or 32FC1 (metres)",
                         cause="encoding")
    with np.errstate(invalid="ignore"):
        if settings.min_range > 0:
            metres[metres < settings.min_range] = np.nan
        if settings.max_range > 0:
            metres[metres > settings.max_range] = np.nan
    return metres


def camera_matrix(k: np.ndarray | list[float]) -> np.ndarray:
    """CameraInfo's K (9 numbers, row major, or 3x3) -> checked 3x3 float64."""
    k = np.asarray(k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(k)) or k[0, 0] <= 0 or k[1, 1] <= 0:
        raise DepthError(f"camera matrix K needs positive focal lengths fx, fy; got "
                         f"fx={k[0, 0]}, fy={k[1, 1]} (is the camera calibrated?)",
                         cause="camera_info")
    return k


def back_project(depth_m: np.ndarray, k: np.ndarray) -> np.ndarray:
    """[H, W] metres (NaN invalid) and 3x3 K -> [H, W, 3] float32 points (x, y, z), NaN where
    the depth is invalid: x = (u - cx) z / fx, y = (v - cy) z / fy."""
    k = camera_matrix(k)
    height, width = depth_m.shape
    u = (np.arange(width, dtype=np.float32) - np.float32(k[0, 2])) / np.float32(k[0, 0])
    v = (np.arange(height, dtype=np.float32) - np.float32(k[1, 2])) / np.float32(k[1, 1])
    points = np.empty((height, width, 3), dtype=np.float32)
    points[..., 0] = depth_m * u[None, :]
    points[..., 1] = depth_m * v[:, None]
    points[..., 2] = depth_m
    return points


def check_sizes(colour_shape: tuple[int, ...], depth_shape: tuple[int, ...]) -> None:
    """Refuse depth that is not registered pixel for pixel to the colour image."""
    if tuple(colour_shape[:2]) != tuple(depth_shape[:2]):
        raise DepthError(
            f"depth is {depth_shape[1]}x{depth_shape[0]} but colour is "
            f"{colour_shape[1]}x{colour_shape[0]}: give depth registered (aligned) to the colour "
            "image, e.g. a RealSense's aligned_depth_to_color topic", cause="size")


def measure(points: np.ndarray, mask: np.ndarray,
            settings: DepthSettings = DepthSettings()) -> InstanceGeometry:
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
        inliers, [settings.extent_percentile, 50.0, 100.0 - settings.extent_percentile], axis=0)
    return InstanceGeometry(tuple(float(c) for c in centroid),
                            tuple(float(e) for e in high - low), int(len(inliers)))


def measure_instances(points: np.ndarray, instance_map: np.ndarray, count: int,
                      settings: DepthSettings = DepthSettings()) -> list[InstanceGeometry]:
    """[H, W, 3] points and the [H, W] instance image (1..count, 0 none) -> the geometry of
    instances 1..count, in order. Each instance is measured inside its bounding box only."""
    if points.shape[:2] != instance_map.shape:
        check_sizes(instance_map.shape, points.shape)
    pad = max(settings.erode_px, 0)
    height, width = instance_map.shape
    geometries = []
    for instance_id, box in enumerate(ndimage.find_objects(instance_map, max_label=count),
                                      start=1):
        if box is None:
            geometries.append(NO_GEOMETRY)
            continue
        rows = slice(max(box[0].start - pad, 0), min(box[0].stop + pad, height))
        cols = slice(max(box[1].start - pad, 0), min(box[1].stop + pad, width))
        geometries.append(measure(points[rows, cols], instance_map[rows, cols] == instance_id,
                                  settings))
    return geometries


def depth_settings(settings) -> DepthSettings:
    """The depth part of a config.Settings."""
    return DepthSettings(depth_scale=settings.depth_scale, min_range=settings.depth_min_range,
                         max_range=settings.depth_max_range)
