"""3D in and out of messages: depth images and CameraInfo -> metres and K (with the refusals a
node logs), and a located result -> MarkerArray, Detection3DArray and labelled points, built
with the stand-in's message classes (from the real definitions) and CDR-encoded."""

import math

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="the ROS stand-in builds its message classes with rosbags")

from test_convert import header, raw_image, registry, two_object_result, types  # noqa: F401

from ovseg_ros.messages import convert, depth_messages
from ovseg_ros.scene.geometry import DepthError, DepthSettings
from ovseg_ros.scene.placement import POINT_DTYPE, labelled_points, locate
from ovseg_ros.segmentation.panoptic import UNLABELLED

K = [10.0, 0.0, 15.0, 0.0, 10.0, 10.0, 0.0, 0.0, 1.0]


def camera_info(width=30, height=20, k=K):
    from sensor_msgs.msg import CameraInfo

    return CameraInfo(header=header(), width=width, height=height, k=[float(v) for v in k])


# --------------------------------------------------------------------- depth messages in
def test_16uc1_depth_is_read_in_its_units_through_padding_and_byte_order(types):
    millimetres = np.arange(12, dtype=np.uint16).reshape(3, 4) * 250
    padded = raw_image(millimetres, "16UC1", step=12)
    depth, encoding = depth_messages.depth_image(padded)
    np.testing.assert_array_equal(depth, millimetres)
    assert encoding == "16UC1" and depth.dtype == np.uint16
    big = raw_image(millimetres.byteswap(), "16UC1", bigendian=1)
    np.testing.assert_array_equal(depth_messages.depth_image(big)[0], millimetres)


def test_32fc1_depth_keeps_metres_and_nan(types):
    metres = np.array([[0.5, np.nan], [np.inf, 2.25]], dtype=np.float32)
    depth, encoding = depth_messages.depth_image(raw_image(metres, "32FC1"))
    assert encoding == "32FC1"
    np.testing.assert_array_equal(depth, metres)


@pytest.mark.parametrize(
    "change, cause, words",
    [
        (dict(encoding="rgb8"), "encoding", "depth encoding 'rgb8' is not supported"),
        (dict(height=0), "size", "zero size"),
        (dict(step=7), "step", "step 7 is smaller than a row"),
        (dict(data=b"\x00" * 10), "truncated", "needs 24"),
    ],
)
def test_bad_depth_messages_are_refused_with_the_cause(types, change, cause, words):
    msg = raw_image(np.zeros((3, 4), np.uint16), "16UC1")
    for name, value in change.items():
        setattr(msg, name, value if name != "data" else __import__("array").array("B", value))
    with pytest.raises(DepthError, match=words) as refused:
        depth_messages.depth_image(msg)
    assert refused.value.cause == cause


def test_camera_info_gives_k_for_its_own_image_size_only(types):
    np.testing.assert_array_equal(
        depth_messages.camera_matrix_of(camera_info(), 30, 20), np.reshape(K, (3, 3))
    )
    np.testing.assert_array_equal(
        depth_messages.camera_matrix_of(camera_info(0, 0), 30, 20), np.reshape(K, (3, 3))
    )  # size not given: not checked
    with pytest.raises(DepthError, match="CameraInfo is for 60x40 images but colour is 30x20"):
        depth_messages.camera_matrix_of(camera_info(60, 40), 30, 20)
    with pytest.raises(DepthError, match="positive focal lengths") as uncalibrated:
        depth_messages.camera_matrix_of(camera_info(k=[0.0] * 9), 30, 20)
    assert uncalibrated.value.cause == "camera_info"


def test_registered_depth_is_metres_with_k(types):
    depth_msg = raw_image(np.full((20, 30), 1500, np.uint16), "16UC1")
    metres, k = depth_messages.registered_depth(
        header(), 30, 20, depth_msg, camera_info(), DepthSettings(max_range=1.0)
    )
    assert np.isnan(metres).all()  # 1.5 m is beyond max_range
    metres, k = depth_messages.registered_depth(
        header(), 30, 20, depth_msg, camera_info(), DepthSettings()
    )
    np.testing.assert_allclose(metres, 1.5)
    assert k[0, 2] == 15.0


def test_depth_in_another_frame_or_size_is_refused(types):
    depth_msg = raw_image(np.full((20, 30), 1500, np.uint16), "16UC1")
    depth_msg.header.frame_id = "camera_depth_optical_frame"
    with pytest.raises(DepthError, match="is not the colour image's") as other_frame:
        depth_messages.registered_depth(header(), 30, 20, depth_msg, camera_info(), DepthSettings())
    assert other_frame.value.cause == "frame_id"
    small = raw_image(np.full((10, 15), 1500, np.uint16), "16UC1")
    with pytest.raises(DepthError, match="depth is 15x10 but colour is 30x20") as other_size:
        depth_messages.registered_depth(header(), 30, 20, small, camera_info(), DepthSettings())
    assert other_size.value.cause == "size"


# ------------------------------------------------------------------------ 3D messages out
def located_result(mug_depth=1.25):
    """two_object_result with the mug at mug_depth metres and no depth on the floor."""
    result = two_object_result()
    depth = np.full((20, 30), np.nan, dtype=np.float32)
    depth[2:8, 3:12] = mug_depth
    points = locate(result, depth, np.reshape(K, (3, 3)))
    return result, points


def test_markers_clear_the_last_frame_then_box_and_label_each_located_instance(types, registry):
    result, _ = located_result()
    result.instances[0].track_id = 41
    msg = convert.markers_message(types, header(), result)
    delete_all, box, label = msg.markers  # the floor has no depth: no marker
    assert delete_all.action == convert.MARKER_DELETEALL
    assert (box.ns, box.id, box.type, box.action) == (
        "boxes",
        41,
        convert.MARKER_CUBE,
        convert.MARKER_ADD,
    )
    mug = result.instances[0].geometry
    assert (box.pose.position.x, box.pose.position.y, box.pose.position.z) == pytest.approx(
        mug.centroid
    )
    assert box.pose.orientation.w == 1.0
    assert box.scale.x == pytest.approx(mug.extent[0])
    assert box.scale.z == convert.MIN_MARKER_SIZE_M  # a flat depth has no z extent
    assert (label.ns, label.id, label.type) == ("labels", 41, convert.MARKER_TEXT)
    assert label.text.startswith("mug 41")
    assert label.pose.position.y < box.pose.position.y  # above the box (y points down)
    assert all(m.header.frame_id == "camera_color_optical_frame" for m in msg.markers)
    registry.serialize(msg)


def test_markers_of_a_frame_without_the_object_delete_it(types):
    result, _ = located_result()
    first = convert.markers_message(types, header(), result)
    assert {m.id for m in first.markers[1:]} == {1}
    gone, _ = located_result(mug_depth=np.nan)  # the mug is no longer located
    second = convert.markers_message(types, header(), gone)
    assert [m.action for m in second.markers] == [convert.MARKER_DELETEALL]


def test_detections_3d_hold_the_centroid_and_extent_of_located_instances(types, registry):
    result, _ = located_result()
    msg = convert.detections_3d_message(types, header(), result)
    (mug,) = msg.detections
    geometry = result.instances[0].geometry
    assert mug.id == "1" and mug.results[0].hypothesis.class_id == "mug"
    assert mug.results[0].hypothesis.score == pytest.approx(result.instances[0].score)
    assert mug.bbox.center.position.z == pytest.approx(1.25)
    assert (mug.bbox.size.x, mug.bbox.size.y, mug.bbox.size.z) == pytest.approx(geometry.extent)
    assert mug.results[0].pose.pose.position.x == pytest.approx(geometry.centroid[0])
    registry.serialize(msg)


def test_labelled_points_hold_position_colour_class_instance_and_track(types):
    result, points = located_result()
    result.instances[0].track_id = 9
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    cloud = labelled_points(points, rgb, result)
    assert cloud.dtype == POINT_DTYPE and len(cloud) == 6 * 9  # the mug's pixels have depth
    # pixel (row 2, column 3), back-projected by hand: x = (3 - 15) * 1.25 / 10
    first = cloud[0]
    assert (first["x"], first["y"], first["z"]) == pytest.approx((-1.5, -1.0, 1.25))
    assert first["rgb"].view(np.uint32) == (200 << 16) | (100 << 8) | 50
    assert set(cloud["class_index"]) == {0} and set(cloud["instance_id"]) == {1}
    assert set(cloud["track_id"]) == {9}
    every_other = labelled_points(points, rgb, result, stride=2)
    assert len(every_other) == 3 * 4  # rows 2, 4, 6 x columns 4, 6, 8, 10 of the mug
    columns = every_other["x"] * 10 / 1.25 + 15
    rows = every_other["y"] * 10 / 1.25 + 10
    np.testing.assert_allclose(columns, np.tile([4, 6, 8, 10], 3), atol=1e-4)
    np.testing.assert_allclose(rows, np.repeat([2, 4, 6], 4), atol=1e-4)


def test_labelled_points_of_unlabelled_pixels_say_so(types):
    result, _ = located_result()
    depth = np.full((20, 30), 2.0, dtype=np.float32)
    points = locate(result, depth, np.reshape(K, (3, 3)))
    cloud = labelled_points(points, np.zeros((20, 30, 3), np.uint8), result)
    assert len(cloud) == 20 * 30
    outside = cloud[cloud["instance_id"] == 0]
    assert len(outside) and set(outside["class_index"]) == {UNLABELLED}
    assert set(outside["track_id"]) == {0}
    assert not math.isnan(float(cloud["z"].min()))


# --------------------------------------------------------------------- refilled messages
def test_messages_refilled_from_a_pool_equal_freshly_built_ones(types):
    """Per-instance messages built into a pool that held a larger frame's (other labels,
    track ids, geometry) are field for field what a fresh build gives."""
    from ovseg_ros.scene.geometry import InstanceGeometry

    def located(result, shift, tracked):
        for index, instance in enumerate(result.instances):
            instance.geometry = InstanceGeometry(
                (0.1 * index + shift, 0.2, 1.5 + shift), (0.3, 0.2 + shift, 0.1), 100 + index
            )
            instance.track_id = 40 + index if tracked else 0
        return result

    big = located(two_object_result(), 0.0, True)
    small = located(two_object_result(), 0.5, False)
    small.instances = small.instances[:1]
    small.instances[0].label, small.instances[0].score = "kettle", 0.5
    builders = (
        convert.markers_message,
        convert.detections_3d_message,
        convert.detections_message,
        lambda types, header, result, pool=None: convert.panoptic_message(
            types, header, result, pool=pool
        ),
    )
    for build in builders:
        pool = convert.MessagePool()
        build(types, header(sec=1), big, pool=pool)
        refilled = build(types, header(sec=2), small, pool=pool)
        assert refilled == build(types, header(sec=2), small), build
        assert refilled != build(types, header(sec=2), big), build


# ------------------------------------------------------------------ the camera model
def rectified_info(width=640, height=480, binning=(0, 0), roi=(0, 0, 0, 0)):
    """K = (fx 600, cx 320), P = (fx 540, cx 331): usual after rectification with alpha 0."""
    from sensor_msgs.msg import CameraInfo, RegionOfInterest

    info = CameraInfo(
        header=header(),
        width=width,
        height=height,
        k=[600.0, 0.0, 320.0, 0.0, 600.0, 240.0, 0.0, 0.0, 1.0],
        p=[540.0, 0.0, 331.0, 0.0, 0.0, 540.0, 236.0, 0.0, 0.0, 0.0, 1.0, 0.0],
    )
    info.binning_x, info.binning_y = binning
    info.roi = RegionOfInterest(x_offset=roi[0], y_offset=roi[1], width=roi[2], height=roi[3])
    return info


def test_depth_is_back_projected_with_p_as_image_geometry_does(types):
    """A point 3 m away at pixel (500, 240): x = (500 - 331) * 3 / 540 = 0.93889 m with P,
    where K would give (500 - 320) * 3 / 600 = 0.9 m; y = (240 - 236) * 3 / 540."""
    from ovseg_ros.scene.geometry import back_project

    notes = []
    matrix = depth_messages.camera_matrix_of(
        rectified_info(), 640, 480, lambda kind, text: notes.append(kind)
    )
    points = back_project(np.full((480, 640), 3.0, np.float32), matrix)
    assert points[240, 500].tolist() == pytest.approx([169 * 3 / 540, 4 * 3 / 540, 3.0])
    assert notes == []


def test_k_stands_in_only_for_an_all_zero_p_and_says_so(types):
    info = rectified_info()
    info.p = [0.0] * 12
    notes = []
    matrix = depth_messages.camera_matrix_of(info, 640, 480, lambda kind, text: notes.append(text))
    assert matrix[0].tolist() == [600.0, 0.0, 320.0]
    assert len(notes) == 1 and "P is all zeros" in notes[0] and "K" in notes[0]


@pytest.mark.parametrize("binning, roi", [((2, 2), (0, 0, 0, 0)), ((0, 1), (10, 20, 320, 240))])
def test_binning_or_a_region_of_interest_is_refused_with_the_reason(types, binning, roi):
    with pytest.raises(DepthError, match="binning .* or a region of interest") as refused:
        depth_messages.camera_matrix_of(rectified_info(binning=binning, roi=roi), 640, 480)
    assert refused.value.cause == "camera_info"
    # a region of interest that is the whole image is no region of interest
    depth_messages.camera_matrix_of(rectified_info(roi=(0, 0, 640, 480)), 640, 480)


def test_distortion_on_an_image_that_is_not_rectified_is_told(types):
    info = rectified_info()
    assert depth_messages.distortion_note(info, "/camera/color/image_raw") is None  # no D
    info.d = [0.1, -0.05, 0.0, 0.0, 0.0]
    note = depth_messages.distortion_note(info, "/camera/color/image_raw")
    assert "distortion" in note and "/camera/color/image_raw" in note and "approximate" in note
    assert depth_messages.distortion_note(info, "/camera/color/image_rect_color") is None
