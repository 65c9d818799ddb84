"""Depth images to metres, pinhole back-projection, and robust 3D per-instance geometry.

Frames and units: points are in the colour camera's optical frame (x right, y down, z forward),
in metres. Back-projection uses the pinhole model of CameraInfo's K with no distortion, so the
colour and depth images must be rectified and the depth registered (aligned) to the colour
image, pixel for pixel, as RealSense's ``aligned_depth_to_color`` and ZED's depth are.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..segmentation.panoptic import NO_GEOMETRY, InstanceGeometry

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


def decode_depth(
    depth: np.ndarray, encoding: str, settings: DepthSettings = DepthSettings()
) -> np.ndarray:
    """A depth image as sent by a camera -> [H, W] float32 metres, NaN where invalid.

    16UC1 (and mono16) hold units of ``depth_scale`` metres, 0 meaning no reading; 32FC1 holds
    metres, NaN, inf and values <= 0 meaning no reading. Depths outside the range are invalid.
    """
    if depth.ndim != 2:
        raise DepthError(f"depth must be one channel, got shape {depth.shape}", cause="encoding")
    if encoding in ("16UC1", "mono16"):
        if depth.dtype != np.uint16:
            raise DepthError(
                f"{encoding} depth must be uint16, got {depth.dtype}", cause="encoding"
            )
        metres = depth.astype(np.float32) * np.float32(settings.depth_scale)
        metres[depth == 0] = np.nan
    elif encoding == "32FC1":
        if depth.dtype != np.float32:
            raise DepthError(f"32FC1 depth must be float32, got {depth.dtype}", cause="encoding")
        metres = depth.astype(np.float32, copy=True)
        metres[~np.isfinite(metres) | (metres <= 0)] = np.nan
    else:
        raise DepthError(
            f"depth encoding {encoding!r} is not supported: use 16UC1 "
            "(millimetres, or units of depth_scale) or 32FC1 (metres)",
            cause="encoding",
        )
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
        raise DepthError(
            f"camera matrix K needs positive focal lengths fx, fy; got "
            f"fx={k[0, 0]}, fy={k[1, 1]} (is the camera calibrated?)",
            cause="camera_info",
        )
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
            "image, e.g. a RealSense's aligned_depth_to_color topic",
            cause="size",
        )


def measure(
    points: np.ndarray, mask: np.ndarray, settings: DepthSettings = DepthSettings()
) -> InstanceGeometry:
    """[h, w, 3] points and an [h, w] bool mask of one instance -> its robust geometry
    (measure_instances with one instance)."""
    return measure_instances(points, mask.astype(np.uint16), 1, settings)[0]


def eroded_instances(instance_map: np.ndarray, count: int, erode_px: int) -> np.ndarray:
    """[H, W] instance image -> the same with each instance eroded by ``erode_px`` (a pixel
    stays when every pixel of its (2 erode_px + 1)^2 square inside the image is of its
    instance); an instance that erosion would empty is kept whole."""
    if erode_px <= 0:
        return instance_map
    kernel = np.ones((2 * erode_px + 1,) * 2, np.uint8)
    # OpenCV pads erosion with the largest value and dilation with the smallest, so pixels
    # outside the image never erode an instance (as eroding each mask on its own does).
    low, high = cv2.erode(instance_map, kernel), cv2.dilate(instance_map, kernel)
    eroded = np.where(low == high, instance_map, 0).astype(instance_map.dtype, copy=False)
    # OpenCV's histogram of a 16-bit image is several times faster than np.bincount; a
    # float32 count of 0 is exact.
    emptied = cv2.calcHist([eroded], [0], None, [count + 1], [0, count + 1]).ravel() == 0
    emptied[0] = False
    if emptied.any():
        restore = np.zeros(max(int(instance_map.max()), count) + 1, bool)
        restore[: count + 1] = emptied
        eroded = np.where(restore[instance_map], instance_map, eroded)
    return eroded


# Values are sorted as 16-bit steps of each instance's range (a radix sort, several times
# faster than sorting floats): statistics are exact to about half a step, range / 131068.
QUANTUM_STEPS = 65534
PADDING = 65535  # sorts after every step


@dataclass(frozen=True)
class _Sorted:
    """Rows of values as ascending uint16 steps (PADDING after a row's values): value =
    low + step * steps."""

    steps: np.ndarray  # [G, N] uint16
    low: np.ndarray  # [G]
    step: np.ndarray  # [G]

    @classmethod
    def of(
        cls,
        values: np.ndarray,
        valid: np.ndarray,
        low: np.ndarray | None = None,
        high: np.ndarray | None = None,
    ) -> _Sorted:
        """[G, N] float32 values where ``valid``, in steps of each row's range, or of
        [low, high] (values outside count as the ends: their ranks stay right)."""
        if low is None:
            low = np.where(valid, values, np.inf).min(axis=1)
            high = np.where(valid, values, -np.inf).max(axis=1)
        low = np.where(np.isfinite(low), low, 0.0).astype(np.float32)
        spread = np.maximum(high - low, 0.0)
        step = np.where(spread > 0, spread / QUANTUM_STEPS, 1.0).astype(np.float32)
        steps = (values - low[:, None]) * (1.0 / step)[:, None] + np.float32(0.5)
        np.clip(steps, 0, QUANTUM_STEPS, out=steps)
        steps[~valid] = PADDING
        return cls(
            np.sort(steps.astype(np.uint16), axis=1, kind="stable"),
            low.astype(np.float64),
            step.astype(np.float64),
        )

    def at(self, index: np.ndarray) -> np.ndarray:
        """Row g's value at sorted position index[g]."""
        return self.low + self.step * self.steps[np.arange(len(index)), index]

    def percentile(self, q: float, counts: np.ndarray, first: np.ndarray | int = 0) -> np.ndarray:
        """The q-th percentile of the counts[g] values from position first[g] of each row,
        as np.percentile's default (linear) method computes it."""
        position = np.maximum(counts - 1, 0) * (q / 100.0)
        below = np.floor(position).astype(np.intp)
        above = np.minimum(below + 1, np.maximum(counts - 1, 0))
        lower, upper = self.at(first + below), self.at(first + above)
        return lower + (upper - lower) * (position - below)


def _kth_deviation(
    ordered: _Sorted, counts: np.ndarray, centre: np.ndarray, split: np.ndarray, k: np.ndarray
) -> np.ndarray:
    """The k[g]-th smallest (0-based) |value - centre[g]| of each row's counts[g] sorted
    values, of which the first split[g] lie below centre[g]: a binary search over how many
    of the k + 1 smallest come from the left run (centre - values, ascending away from the
    centre) and how many from the right run (values - centre)."""
    left_size, right_size = split, counts - split

    def left(j: np.ndarray) -> np.ndarray:  # j-th smallest deviation on the left, j >= 0
        return np.where(j < left_size, centre - ordered.at(np.clip(split - 1 - j, 0, None)), np.inf)

    def right(j: np.ndarray) -> np.ndarray:
        return np.where(
            j < right_size,
            ordered.at(np.clip(split + j, 0, ordered.steps.shape[1] - 1)) - centre,
            np.inf,
        )

    # Find the number i of left values among the k + 1 smallest: the largest i in
    # [max(0, k + 1 - right_size), min(k + 1, left_size)] with left(i - 1) <= right(k - i).
    low = np.maximum(0, k + 1 - right_size)
    high = np.minimum(k + 1, left_size)
    while np.any(low < high):
        middle = (low + high + 1) // 2
        take = left(middle - 1) <= right(k + 1 - middle)
        low, high = (
            np.where(take & (low < high), middle, low),
            np.where(~take & (low < high), middle - 1, high),
        )
    return np.maximum(
        np.where(low > 0, left(low - 1), -np.inf),
        np.where(k + 1 - low > 0, right(k - low), -np.inf),
    )


def _median_and_mad(depth: _Sorted, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's median and median absolute deviation from it."""
    median = depth.percentile(50.0, counts)
    # Values below the median: sorted steps below its step (the median is a value or halfway
    # between two neighbours, so no value lies strictly between them).
    split = np.sum(depth.steps < ((median - depth.low) / depth.step)[:, None], axis=1)
    position = (counts - 1) * 0.5
    below = np.floor(position).astype(np.intp)
    lower = _kth_deviation(depth, counts, median, split, below)
    upper = _kth_deviation(depth, counts, median, split, np.minimum(below + 1, counts - 1))
    return median, lower + (upper - lower) * (position - below)


def _limit(mad: np.ndarray, settings: DepthSettings) -> np.ndarray:
    """The largest distance from the median depth an inlier may have."""
    return settings.outlier_sigmas * np.maximum(MAD_TO_SIGMA * mad, settings.min_spread_m)


def _robust_statistics(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, counts: np.ndarray, settings: DepthSettings
) -> tuple[np.ndarray, np.ndarray]:
    """[G, N] coordinates of G instances' points, the first counts[g] of row g valid ->
    ([3, G, 3] low percentile, median and high percentile of each instance's inliers per
    axis, [G] inlier counts)."""
    valid = np.arange(z.shape[1])[None, :] < counts[:, None]
    # The median and MAD decide which points are inliers: first in steps of the whole depth
    # range, then again in steps of a window around the median that holds every inlier, so
    # that a step is far below the depth noise (the window's outside only counts for ranks).
    coarse = _Sorted.of(z, valid)
    median, mad = _median_and_mad(coarse, counts)
    reach = 2.0 * np.maximum(_limit(mad, settings), 3.0 * mad) + 2.0 * coarse.step
    fine = _Sorted.of(z, valid, median - reach, median + reach)
    median, mad = _median_and_mad(fine, counts)
    limit = _limit(mad, settings)
    inlier = valid & (np.abs(z - median[:, None]) <= limit[:, None])
    kept = np.sum(inlier, axis=1)
    # The inlier depths are one run of the fine sort, all inside its window.
    first = np.sum(fine.steps < ((median - limit - fine.low) / fine.step)[:, None], axis=1)
    run = np.sum(fine.steps <= ((median + limit - fine.low) / fine.step)[:, None], axis=1) - first
    quantiles = (settings.extent_percentile, 50.0, 100.0 - settings.extent_percentile)
    stats = np.empty((3, len(counts), 3))
    for axis, values in enumerate((x, y)):
        ordered = _Sorted.of(values, inlier)
        for row, q in enumerate(quantiles):
            stats[row, :, axis] = ordered.percentile(q, kept)
    for row, q in enumerate(quantiles):
        stats[row, :, 2] = fine.percentile(q, run, first)
    return stats, kept


def measure_instances(
    points: np.ndarray,
    instance_map: np.ndarray,
    count: int,
    settings: DepthSettings = DepthSettings(),
) -> list[InstanceGeometry]:
    """[H, W, 3] points and the [H, W] instance image (1..count, 0 none) -> the geometry of
    instances 1..count, in order, vectorised over instances.

    Per instance: its mask eroded by ``erode_px`` (kept whole when erosion would empty it);
    of its points with depth, those further than ``outlier_sigmas`` robust standard
    deviations (1.4826 x the median absolute deviation, at least ``min_spread_m``) from the
    median depth are rejected (flying pixels, background through holes); the centroid is the
    per-axis median of the rest, the extent their ``extent_percentile`` to 100 -
    ``extent_percentile`` range, ``valid_points`` their number.
    """
    if points.shape[:2] != instance_map.shape:
        check_sizes(instance_map.shape, points.shape)
    geometries = [NO_GEOMETRY] * count
    if count == 0:
        return geometries
    labels = eroded_instances(instance_map, count, settings.erode_px).ravel()
    flat_points = points.reshape(-1, 3)
    selected = np.flatnonzero((labels > 0) & (labels <= count) & np.isfinite(flat_points[:, 2]))
    if selected.size == 0:
        return geometries
    # Group the points by instance: a stable sort of 16-bit labels is a radix sort.
    selected = selected[np.argsort(labels[selected], kind="stable")]
    sizes = np.bincount(labels[selected], minlength=count + 1)
    starts = np.concatenate(([0], np.cumsum(sizes)))
    present = np.flatnonzero(sizes)
    # Instances of similar size (within 2x) share [G, width] rows, so padding stays below
    # the points themselves however unequal the sizes.
    size_class = np.ceil(np.log2(sizes[present])).astype(int)
    for level in np.unique(size_class):
        ids = present[size_class == level]
        counts = sizes[ids]
        width = int(counts.max())
        column = np.minimum(np.arange(width)[None, :], counts[:, None] - 1)
        rows = np.take(flat_points, selected[starts[ids][:, None] + column], axis=0)
        stats, kept = _robust_statistics(rows[..., 0], rows[..., 1], rows[..., 2], counts, settings)
        for g, instance_id in enumerate(ids):
            (cx, cy, cz), (ex, ey, ez) = stats[1, g], stats[2, g] - stats[0, g]
            geometries[instance_id - 1] = InstanceGeometry(
                (float(cx), float(cy), float(cz)), (float(ex), float(ey), float(ez)), int(kept[g])
            )
    return geometries


def depth_settings(settings) -> DepthSettings:
    """The depth part of a config.Settings."""
    return DepthSettings(
        depth_scale=settings.depth_scale,
        min_range=settings.depth_min_range,
        max_range=settings.depth_max_range,
    )
