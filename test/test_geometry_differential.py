"""The vectorised measure_instances against the per-instance oracle it replaced
(reference/scene_geometry.py) on random scenes: overlapping instances of 1 to 200, holes, NaN,
flying pixels, thin slivers and instances touching the image border.

measure_instances sorts 16-bit steps of each instance's range (geometry.QUANTUM_STEPS), so
it agrees to half a step: 0.1 mm for the up to 8 m ranges of these scenes (flying pixels
included), hence the 0.1 mm tolerance."""

import math

import numpy as np
import pytest

from ovseg_ros.scene.geometry import DepthSettings, back_project, measure_instances
from reference.scene_geometry import reference_measure_instances

K = [300.0, 0.0, 160.0, 0.0, 300.0, 120.0, 0.0, 0.0, 1.0]


def random_scene(seed: int, instances: int, height: int = 240, width: int = 320):
    """An instance image of ``instances`` overlapping boxes and ellipses (later ones on top,
    some hidden completely) and a depth image: a slanted floor, a surface per instance, noise,
    holes, NaN and flying pixels."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[:height, :width]
    instance_map = np.zeros((height, width), np.uint16)
    depth = (1.5 + 3.0 * rows / height).astype(np.float32)  # the floor
    for index in range(1, instances + 1):
        cy, cx = rng.uniform(-10, height + 10), rng.uniform(-10, width + 10)
        ry, rx = rng.uniform(1, height / 3), rng.uniform(1, width / 3)
        if rng.random() < 0.2:
            ry = rng.uniform(0.5, 3)  # a sliver at most a few px tall
        inside = (
            ((rows - cy) / ry) ** 2 + ((cols - cx) / rx) ** 2 <= 1
            if rng.random() < 0.5
            else (abs(rows - cy) <= ry) & (abs(cols - cx) <= rx)
        )
        instance_map[inside] = index
        surface = rng.uniform(0.5, 4.0) + rng.uniform(-1e-3, 1e-3) * (cols - cx)
        depth[inside] = surface[inside]
    depth += rng.normal(0, 0.004, depth.shape).astype(np.float32)
    flying = rng.random(depth.shape) < 0.03
    depth[flying] = rng.uniform(0.3, 8.0, flying.sum())
    depth[rng.random(depth.shape) < 0.05] = np.nan
    depth[rng.integers(0, height, 3)[:, None], :] = np.nan  # dead rows
    return back_project(depth, K), instance_map


def assert_same(fast, oracle, atol, points=0):
    """Equal geometry to ``atol`` metres and inlier counts to ``points``."""
    assert len(fast) == len(oracle)
    for got, want in zip(fast, oracle):
        assert abs(got.valid_points - want.valid_points) <= points
        if want.valid_points == 0:
            assert all(math.isnan(v) for v in got.centroid + got.extent)
            continue
        np.testing.assert_allclose(got.centroid, want.centroid, rtol=0, atol=atol)
        np.testing.assert_allclose(got.extent, want.extent, rtol=0, atol=atol)


@pytest.mark.parametrize("seed, instances", [(0, 1), (1, 7), (2, 40), (3, 120), (4, 200)])
def test_it_equals_the_per_instance_oracle_to_float_rounding(seed, instances):
    points, instance_map = random_scene(seed, instances)
    settings = DepthSettings()
    count = instances + 2  # and two ids with no pixels at the end
    assert_same(
        measure_instances(points, instance_map, count, settings),
        reference_measure_instances(points, instance_map, count, settings),
        1e-4,
    )


@pytest.mark.parametrize(
    "erode_px, percentile, sigmas, min_spread",
    [(0, 2.0, 2.0, 0.05), (1, 0.0, 3.0, 0.0), (3, 10.0, 1.0, 0.0)],
)
def test_the_other_settings_are_followed_as_the_oracle_follows_them(
    erode_px, percentile, sigmas, min_spread
):
    """With no least spread the outlier limit is the MAD's alone, so the points near it
    check the median absolute deviation (one within a micrometre of it may count either
    way: the limit is exact to half a step of a window a few MADs wide)."""
    points, instance_map = random_scene(5, 60)
    settings = DepthSettings(
        erode_px=erode_px,
        extent_percentile=percentile,
        outlier_sigmas=sigmas,
        min_spread_m=min_spread,
    )
    assert_same(
        measure_instances(points, instance_map, 60, settings),
        reference_measure_instances(points, instance_map, 60, settings),
        1e-4,
        1,
    )
