"""Depth decoding, back-projection and robust per-instance geometry, against hand-computed
values."""

import math

import numpy as np
import pytest

from ovseg_ros.scene.geometry import (
    DepthError,
    DepthSettings,
    back_project,
    camera_matrix,
    decode_depth,
    measure,
    measure_instances,
)

K = [500.0, 0.0, 2.0, 0.0, 400.0, 1.0, 0.0, 0.0, 1.0]  # fx 500, fy 400, cx 2, cy 1


def test_millimetres_and_metres_give_the_same_metres():
    mm = np.array([[0, 1000, 2500]], dtype=np.uint16)
    m = np.array([[0.0, 1.0, 2.5]], dtype=np.float32)
    np.testing.assert_array_equal(decode_depth(mm, "16UC1"), [[np.nan, 1.0, 2.5]])
    np.testing.assert_array_equal(decode_depth(m, "32FC1"), [[np.nan, 1.0, 2.5]])
    # another scale: units of 0.1 mm
    np.testing.assert_allclose(
        decode_depth(mm, "16UC1", DepthSettings(depth_scale=1e-4)), [[np.nan, 0.1, 0.25]]
    )


def test_invalid_depths_and_the_range_limit_become_nan():
    m = np.array([[np.nan, np.inf, -np.inf, -1.0, 0.0, 0.2, 3.0, 9.0]], dtype=np.float32)
    out = decode_depth(m, "32FC1", DepthSettings(min_range=0.3, max_range=5.0))
    assert np.isnan(out[0, :6]).all() and out[0, 6] == 3.0 and np.isnan(out[0, 7])


@pytest.mark.parametrize(
    "depth, encoding, words",
    [
        (np.zeros((2, 2), np.uint8), "8UC1", "not supported"),
        (np.zeros((2, 2), np.float32), "16UC1", "must be uint16"),
        (np.zeros((2, 2), np.float64), "32FC1", "must be float32"),
        (np.zeros((2, 2, 3), np.uint16), "16UC1", "one channel"),
    ],
)
def test_unusable_depth_is_refused_with_the_reason(depth, encoding, words):
    with pytest.raises(DepthError, match=words):
        decode_depth(depth, encoding)


def test_back_projection_matches_hand_computed_points():
    depth = np.full((3, 5), 2.0, dtype=np.float32)
    depth[0, 0] = np.nan
    points = back_project(depth, K)
    # pixel (u=4, v=2): x = (4-2)*2/500 = 0.008, y = (2-1)*2/400 = 0.005
    np.testing.assert_allclose(points[2, 4], [0.008, 0.005, 2.0], rtol=1e-6)
    # pixel (u=0, v=1): x = (0-2)*2/500 = -0.008, y = 0
    np.testing.assert_allclose(points[1, 0], [-0.008, 0.0, 2.0], rtol=1e-6)
    np.testing.assert_allclose(points[1, 2], [0.0, 0.0, 2.0])
    assert np.isnan(points[0, 0]).all()


def test_an_uncalibrated_camera_is_refused():
    with pytest.raises(DepthError, match="positive focal lengths"):
        camera_matrix([0.0] * 9)


def box_scene(size=(120, 160), box=(40, 80, 50, 110), z=1.5, background=4.0):
    """A flat box at depth z in front of a wall; its mask covers it exactly."""
    depth = np.full(size, background, dtype=np.float32)
    top, bottom, left, right = box
    depth[top:bottom, left:right] = z
    mask = np.zeros(size, dtype=bool)
    mask[top:bottom, left:right] = True
    return depth, mask


def test_centroid_and_extent_of_a_box_hand_computed():
    depth, mask = box_scene()
    k = [100.0, 0, 80.0, 0, 100.0, 60.0, 0, 0, 1]
    geometry = measure(
        back_project(depth, k), mask, DepthSettings(erode_px=0, extent_percentile=0.0)
    )
    # columns 50..109 -> x = (u-80)*1.5/100 from -0.45 to 0.435; rows 40..79 -> y -0.3..0.285
    assert geometry.centroid[2] == pytest.approx(1.5)
    assert geometry.centroid[0] == pytest.approx((-0.45 + 0.435) / 2, abs=0.008)
    assert geometry.extent[0] == pytest.approx(0.885, abs=1e-5)
    assert geometry.extent[1] == pytest.approx(0.585, abs=1e-5)
    assert geometry.extent[2] == pytest.approx(0.0, abs=1e-6)
    assert geometry.valid_points == 40 * 60


def test_holes_edges_and_flying_pixels_do_not_move_the_centroid():
    depth, mask = box_scene()
    k = [100.0, 0, 80.0, 0, 100.0, 60.0, 0, 0, 1]
    rng = np.random.default_rng(0)
    depth[40:80, 50:110] += rng.normal(0, 0.005, (40, 60)).astype(np.float32)
    clean = measure(back_project(depth, k), mask)
    noisy = depth.copy()
    noisy[55:65, 70:90] = np.nan  # a hole (no reading)
    noisy[40:80, 50] = 4.0  # mask edge bleeding onto the wall
    flying = rng.random((40, 60)) < 0.05  # 5% flying pixels between the two
    noisy[40:80, 50:110][flying] = rng.uniform(2.0, 3.8, flying.sum())
    wide_mask = mask.copy()
    wide_mask[38:82, 48:112] = True  # the mask spills 2 px onto the wall
    robust = measure(back_project(noisy, k), wide_mask)
    for axis in range(3):
        assert robust.centroid[axis] == pytest.approx(clean.centroid[axis], abs=0.01)
        # within the 2 px the mask spills over (0.03 m each side at 1.5 m)
        assert robust.extent[axis] == pytest.approx(clean.extent[axis], abs=0.065)
    # the hole and the flying pixels are not counted
    assert 0.9 * (2400 - 200 - flying.sum()) <= robust.valid_points <= 2400 - 200 - flying.sum()
    # without the robust steps the wall and the flying pixels pull z away
    naive = back_project(noisy, k)[wide_mask]
    assert np.nanmean(naive[:, 2]) - clean.centroid[2] > 0.1


def test_no_valid_depth_gives_nan_and_zero_points():
    depth, mask = box_scene()
    depth[mask] = np.nan
    geometry = measure(back_project(depth, camera_matrix(K)), mask)
    assert all(math.isnan(v) for v in geometry.centroid + geometry.extent)
    assert geometry.valid_points == 0


def test_measure_instances_in_order_with_missing_ones():
    depth = np.full((60, 80), 2.0, dtype=np.float32)
    depth[:, 40:] = 3.0
    instances = np.zeros((60, 80), dtype=np.uint16)
    instances[10:50, 5:35] = 1
    instances[10:50, 45:75] = 3  # instance 2 has no pixels
    k = [50.0, 0, 40.0, 0, 50.0, 30.0, 0, 0, 1]
    first, second, third = measure_instances(back_project(depth, k), instances, 3)
    assert first.centroid[2] == pytest.approx(2.0) and third.centroid[2] == pytest.approx(3.0)
    assert second.valid_points == 0 and math.isnan(second.centroid[0])
    assert first.centroid[0] < 0 < third.centroid[0]


def test_depth_of_another_size_is_refused():
    with pytest.raises(DepthError, match="registered"):
        measure_instances(np.zeros((10, 10, 3), np.float32), np.zeros((20, 10), np.uint16), 1)


def test_the_mask_border_is_eroded_away_before_measuring():
    depth, mask = box_scene()
    inner = np.zeros_like(mask)
    inner[41:79, 51:109] = True
    ring = mask & ~inner
    depth[ring] = 1.54  # mixed pixels on the border, close enough to pass outlier rejection
    k = [100.0, 0, 80.0, 0, 100.0, 60.0, 0, 0, 1]
    assert measure(back_project(depth, k), mask).extent[2] == pytest.approx(0.0, abs=1e-6)
    uneroded = measure(back_project(depth, k), mask, DepthSettings(erode_px=0))
    assert uneroded.extent[2] == pytest.approx(0.04, abs=1e-3)


def test_an_instance_too_thin_for_the_erosion_is_measured_on_its_whole_mask():
    """A 4 px wide pole at 2 m beside a wide box at 1.5 m: the 2 px erosion would empty the
    pole, so it is measured un-eroded (its 4 columns x 40 rows), not left without 3D."""
    depth, _ = box_scene()
    depth[40:80, 20:24] = 2.0
    instances = np.zeros(depth.shape, dtype=np.uint16)
    instances[40:80, 50:110] = 1
    instances[40:80, 20:24] = 2
    k = [100.0, 0, 80.0, 0, 100.0, 60.0, 0, 0, 1]
    box, pole = measure_instances(back_project(depth, k), instances, 2)
    assert pole.valid_points == 4 * 40
    assert pole.centroid[2] == pytest.approx(2.0)
    assert pole.centroid[0] == pytest.approx((21.5 - 80) * 2.0 / 100, abs=0.011)
    assert box.valid_points == 36 * 56  # the wide one is eroded


def test_a_few_stray_points_within_the_inlier_band_do_not_stretch_the_extent():
    """1 % of a flat box's pixels 5 cm behind it (inliers: within 3 x 2 cm): the default
    extent runs from the 2nd to the 98th percentile, so its depth extent stays 0; the full
    range would be 5 cm."""
    depth, mask = box_scene()
    rng = np.random.default_rng(3)
    inner = np.argwhere(mask)
    inner = inner[
        (inner[:, 0] >= 43) & (inner[:, 0] < 77) & (inner[:, 1] >= 53) & (inner[:, 1] < 107)
    ]
    stray = inner[rng.choice(len(inner), 20, replace=False)]
    depth[stray[:, 0], stray[:, 1]] = 1.55
    k = [100.0, 0, 80.0, 0, 100.0, 60.0, 0, 0, 1]
    points = back_project(depth, k)
    assert measure(points, mask).extent[2] == pytest.approx(0.0, abs=1e-6)
    assert measure(points, mask, DepthSettings(extent_percentile=0.0)).extent[2] == pytest.approx(
        0.05, abs=1e-6
    )


def test_an_instance_inside_another_ones_box_is_not_measured_with_it():
    """A mug at 1 m in front of a book at 1.5 m, inside the book's box (the book's mask has
    the mug's hole): each centroid and extent comes only from its own pixels."""
    depth, book = box_scene()
    depth[50:70, 70:90] = 1.0
    instances = np.zeros(depth.shape, dtype=np.uint16)
    instances[book] = 1
    instances[50:70, 70:90] = 2
    k = [100.0, 0, 80.0, 0, 100.0, 60.0, 0, 0, 1]
    book_geometry, mug = measure_instances(back_project(depth, k), instances, 2)
    assert book_geometry.centroid[2] == pytest.approx(1.5)
    assert book_geometry.extent[2] == pytest.approx(0.0, abs=1e-6)
    assert mug.centroid[2] == pytest.approx(1.0)
    assert mug.extent[2] == pytest.approx(0.0, abs=1e-6)
    assert mug.valid_points == 16 * 16
    assert book_geometry.valid_points == 36 * 56 - 24 * 24
