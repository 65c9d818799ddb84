"""Converters: camera messages -> RGB arrays (with precise refusals), and SegmentationResult
-> ROS messages, built with message classes generated from the real definitions (the rclpy
stand-in's) and encoded with rosbags' CDR serializer."""

import math

import cv2
import numpy as np
import pytest
import torch

pytest.importorskip("rosbags", reason="the ROS stand-in builds its message classes with rosbags")

import ros_standin
from image_files import oversized_png

from ovseg_ros.messages import convert
from ovseg_ros.segmentation.panoptic import NO_INSTANCE, UNLABELLED, fuse
from ovseg_ros.segmentation.vocabulary import Vocabulary


@pytest.fixture
def types(monkeypatch):
    ros_standin.install(monkeypatch)
    from ovseg_ros.node.message_types import ros_message_types

    return ros_message_types()


@pytest.fixture
def registry():
    return ros_standin.messages.registry("humble")


def header(sec=12, nanosec=345, frame_id="camera_color_optical_frame"):
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)


def raw_image(pixels, encoding, step=None, bigendian=0, data=None):
    """sensor_msgs/Image of pixels as given (rows padded to step)."""
    import array

    from sensor_msgs.msg import Image

    height, width = pixels.shape[:2]
    row = pixels.reshape(height, -1).view(np.uint8)
    step = step or row.shape[1]
    padded = np.zeros((height, step), dtype=np.uint8)
    padded[:, : row.shape[1]] = row
    payload = array.array("B", padded.tobytes() if data is None else data)
    return Image(
        header=header(),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=bigendian,
        step=step,
        data=payload,
    )


def rgb_test_image(height=6, width=8):
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------ camera frames -> RGB
@pytest.mark.parametrize(
    "encoding, convert_from_rgb",
    [
        ("rgb8", None),
        ("bgr8", cv2.COLOR_RGB2BGR),
        ("rgba8", cv2.COLOR_RGB2RGBA),
        ("bgra8", cv2.COLOR_RGB2BGRA),
    ],
)
def test_colour_encodings_become_rgb(types, encoding, convert_from_rgb):
    rgb = rgb_test_image()
    pixels = rgb if convert_from_rgb is None else cv2.cvtColor(rgb, convert_from_rgb)
    decoded = convert.image_to_rgb(raw_image(pixels, encoding))
    assert decoded.dtype == np.uint8 and decoded.shape == (6, 8, 3)
    np.testing.assert_array_equal(decoded, rgb)


def test_padded_rows_are_cropped(types):
    rgb = rgb_test_image()
    decoded = convert.image_to_rgb(raw_image(rgb, "rgb8", step=8 * 3 + 8))
    np.testing.assert_array_equal(decoded, rgb)


def test_mono_images_become_grey_rgb(types):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    decoded = convert.image_to_rgb(raw_image(grey, "mono8"))
    np.testing.assert_array_equal(decoded, np.repeat(grey[..., None], 3, axis=2))


@pytest.mark.parametrize("bigendian", [0, 1])
def test_mono16_keeps_the_high_byte_in_either_byte_order(types, bigendian):
    values = np.arange(48, dtype=np.uint16).reshape(6, 8) * 1361
    stored = values.astype(">u2" if bigendian else "<u2")
    decoded = convert.image_to_rgb(raw_image(stored, "mono16", bigendian=bigendian))
    np.testing.assert_array_equal(decoded[..., 0], (values >> 8).astype(np.uint8))


def test_yuv422_byte_orders_are_converted(types):
    """YUYV (yuv422_yuy2) and UYVY (yuv422) carry the same pixels in swapped byte order."""
    y = np.array([[16, 235, 126, 126]] * 2, dtype=np.uint8)  # black, white, two greys
    chroma = np.array([[128, 128, 128, 128]] * 2, dtype=np.uint8)  # U, V alternating
    yuyv = np.stack([y, chroma], axis=2)
    uyvy = np.stack([chroma, y], axis=2)
    from_yuyv = convert.image_to_rgb(raw_image(yuyv, "yuv422_yuy2"))
    from_uyvy = convert.image_to_rgb(raw_image(uyvy, "yuv422"))
    np.testing.assert_array_equal(from_yuyv, from_uyvy)
    assert from_yuyv.shape == (2, 4, 3)
    assert from_yuyv[0, 0].max() <= 2 and from_yuyv[0, 1].min() >= 253  # black and white
    assert np.all(np.abs(from_yuyv[0, 2].astype(int) - 128) <= 2)


@pytest.mark.parametrize("pattern", ["rggb", "bggr", "gbrg", "grbg"])
def test_bayer_mosaics_become_their_colour(types, pattern):
    """A mosaic built by hand from the pattern's name (its first row, then its second, from
    the top-left pixel) of a flat colour demosaics to that colour."""
    colour = {"r": 200, "g": 100, "b": 30}
    tile = np.array(
        [[colour[pattern[0]], colour[pattern[1]]], [colour[pattern[2]], colour[pattern[3]]]],
        dtype=np.uint8,
    )
    mosaic = np.tile(tile, (4, 5))  # 8 x 10
    decoded = convert.image_to_rgb(raw_image(mosaic, f"bayer_{pattern}8"))
    assert decoded.shape == (8, 10, 3)
    np.testing.assert_array_equal(decoded[1:-1, 1:-1], np.full((6, 8, 3), (200, 100, 30)))


@pytest.mark.parametrize(
    "change, cause, words",
    [
        (dict(encoding="32FC1"), "encoding", "unsupported encoding '32FC1'"),
        (dict(width=0), "size", "zero size"),
        (dict(step=8 * 3 - 1), "step", "step 23 is smaller than a row"),
        (dict(data=bytes(8 * 3 * 5)), "truncated", "needs 144"),
    ],
)
def test_bad_frames_are_refused_with_the_cause(types, change, cause, words):
    msg = raw_image(rgb_test_image(), "rgb8")
    for name, value in change.items():
        setattr(msg, name, value if name != "data" else __import__("array").array("B", value))
    with pytest.raises(convert.FrameError) as refused:
        convert.image_to_rgb(msg)
    assert refused.value.cause == cause
    assert words in str(refused.value)


def test_odd_width_yuv_is_refused(types):
    msg = raw_image(np.zeros((2, 3, 2), dtype=np.uint8), "yuv422")
    with pytest.raises(convert.FrameError, match="even width"):
        convert.image_to_rgb(msg)


def compressed(data, fmt):
    import array

    from sensor_msgs.msg import CompressedImage

    return CompressedImage(header=header(), format=fmt, data=array.array("B", data))


def test_compressed_png_decodes_exactly(types):
    rgb = rgb_test_image(10, 12)
    ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    np.testing.assert_array_equal(convert.compressed_to_rgb(compressed(png.tobytes(), "png")), rgb)


def test_compressed_jpeg_decodes(types):
    rgb = np.full((16, 16, 3), (10, 200, 30), dtype=np.uint8)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    decoded = convert.compressed_to_rgb(compressed(jpeg.tobytes(), "rgb8; jpeg compressed bgr8"))
    assert decoded.shape == (16, 16, 3)
    assert np.abs(decoded.astype(int) - rgb.astype(int)).max() < 10


@pytest.mark.parametrize(
    "data, fmt, cause",
    [
        (b"not an image at all", "jpeg", "decode"),
        (b"", "jpeg", "size"),
        (b"\x89PNG", "16UC1; compressedDepth png", "encoding"),
    ],
)
def test_bad_compressed_frames_are_refused(types, data, fmt, cause):
    with pytest.raises(convert.FrameError) as refused:
        convert.compressed_to_rgb(compressed(data, fmt))
    assert refused.value.cause == cause


def test_compressed_image_over_opencvs_pixel_limit_is_a_frame_error(types):
    with pytest.raises(convert.FrameError) as refused:
        convert.compressed_to_rgb(compressed(oversized_png(), "png"))
    assert refused.value.cause == "size"
    assert "larger than OpenCV's pixel limit" in str(refused.value)
    assert "CV_IO_MAX_IMAGE_PIXELS" in str(refused.value)


def test_opencv_failures_in_raw_conversions_are_frame_errors(types, monkeypatch):
    def failing(*args):
        raise cv2.error("OpenCV(4.11.0) color.cpp:1: error: (-215:Assertion failed) scn")

    monkeypatch.setattr(convert.cv2, "cvtColor", failing)
    with pytest.raises(convert.FrameError) as refused:
        convert.image_to_rgb(raw_image(rgb_test_image(), "bgr8"))
    assert refused.value.cause == "decode"
    assert "OpenCV cannot read the 8x6 bgr8 image" in str(refused.value)
    with pytest.raises(convert.FrameError, match="OpenCV cannot read the compressed image"):
        ok, png = cv2.imencode(".png", rgb_test_image())
        convert.compressed_to_rgb(compressed(png.tobytes(), "png"))


# ------------------------------------------------------------ results -> ROS messages
def two_object_result(height=20, width=30):
    """A real fused result: a mug (thing) top-left, floor (stuff) from two masks below."""
    vocabulary = Vocabulary.parse(["mug", "floor", "kettle"], stuff=["floor"])
    masks = torch.zeros(3, height, width, dtype=torch.bool)
    masks[0, 2:8, 3:12] = True
    masks[1, 12:20, 0:15] = True
    masks[2, 12:20, 15:30] = True
    probs = torch.tensor([[0.90, 0.05, 0.05], [0.05, 0.90, 0.05], [0.04, 0.92, 0.04]])
    return fuse(masks, probs, torch.tensor([0.97, 0.91, 0.88]), vocabulary, vocabulary_version=7)


def test_label_images_are_16uc1_little_endian_with_the_values(types, registry):
    result = two_object_result()
    msg = convert.image_message(types, header(), result.semantic, "16UC1")
    assert (msg.height, msg.width, msg.encoding, msg.step) == (20, 30, "16UC1", 60)
    assert msg.is_bigendian == 0
    values = np.frombuffer(msg.data, dtype="<u2").reshape(20, 30)
    np.testing.assert_array_equal(values, result.semantic)
    registry.serialize(msg)


def test_image_message_refuses_the_wrong_array(types):
    with pytest.raises(ValueError, match="16UC1"):
        convert.image_message(types, header(), np.zeros((4, 4), dtype=np.int32), "16UC1")
    with pytest.raises(ValueError, match="rgb8"):
        convert.image_message(types, header(), np.zeros((4, 4), dtype=np.uint8), "rgb8")


def test_panoptic_message_is_consistent_and_serialises(types, registry):
    result = two_object_result()
    stamp = header()
    msg = convert.panoptic_message(types, stamp, result)
    assert msg.header is stamp and msg.semantic.header is stamp and msg.instance.header is stamp
    assert list(msg.vocabulary) == ["mug", "floor", "kettle"] and msg.vocabulary_version == 7
    instance_image = np.frombuffer(msg.instance.data, dtype="<u2").reshape(20, 30)
    semantic_image = np.frombuffer(msg.semantic.data, dtype="<u2").reshape(20, 30)
    assert len(msg.instances) == 2  # the two floor masks merged into one stuff region
    assert set(np.unique(instance_image)) == {NO_INSTANCE, 1, 2}
    for index, instance in enumerate(msg.instances):
        assert instance.id == index + 1
        pixels = instance_image == instance.id
        assert instance.area == int(pixels.sum())
        assert np.all(semantic_image[pixels] == instance.class_index)
        assert instance.label == msg.vocabulary[instance.class_index]
        ys, xs = np.nonzero(pixels)
        assert (
            instance.bbox.x_offset,
            instance.bbox.y_offset,
            instance.bbox.width,
            instance.bbox.height,
        ) == (xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1)
        assert all(
            math.isnan(v) for v in (instance.centroid.x, instance.centroid.y, instance.centroid.z)
        )
    mug, floor = msg.instances
    assert (mug.label, mug.is_thing, floor.label, floor.is_thing) == ("mug", True, "floor", False)
    assert floor.mask_quality == pytest.approx(0.91)
    assert set(np.unique(semantic_image)) == {0, 1, UNLABELLED}
    raw = registry.serialize(msg)
    decoded = registry.store.deserialize_cdr(raw, "ovseg_ros/msg/PanopticSegmentation")
    assert decoded.instances[1].label == "floor" and decoded.semantic.encoding == "16UC1"


def test_detections_carry_class_names_scores_and_boxes(types, registry):
    result = two_object_result()
    msg = convert.detections_message(types, header(), result)
    assert len(msg.detections) == 2
    for detection, instance in zip(msg.detections, result.instances):
        (hypothesis,) = detection.results
        assert hypothesis.hypothesis.class_id == instance.label
        assert hypothesis.hypothesis.score == pytest.approx(instance.score)
        x, y, w, h = instance.bbox
        assert (detection.bbox.center.position.x, detection.bbox.center.position.y) == (
            x + w / 2,
            y + h / 2,
        )
        assert (detection.bbox.size_x, detection.bbox.size_y) == (w, h)
        assert detection.id == str(instance.id)
        assert detection.header == msg.header
    registry.serialize(msg)


def test_instances_without_pixels_get_no_detection_and_a_zero_box(types):
    result = two_object_result()
    result.instances[0].area = 0  # as after resizing a tiny instance away
    detections = convert.detections_message(types, header(), result)
    assert [d.id for d in detections.detections] == ["2"]
    panoptic_msg = convert.panoptic_message(types, header(), result)
    bbox = panoptic_msg.instances[0].bbox
    assert (bbox.x_offset, bbox.y_offset, bbox.width, bbox.height) == (0, 0, 0, 0)


def test_label_info_maps_indices_to_names_and_unlabelled(types, registry):
    msg = convert.label_info_message(types, header(), Vocabulary.parse("mug, kettle"), 0.25)
    assert [(c.class_id, c.class_name) for c in msg.class_map] == [
        (0, "mug"),
        (1, "kettle"),
        (UNLABELLED, "unlabelled"),
    ]
    assert msg.threshold == pytest.approx(0.25)
    registry.serialize(msg)


# -------------------------------------------------- the stand-in refuses what rclpy refuses
def test_standin_messages_check_fields_like_rclpy(types):
    from diagnostic_msgs.msg import DiagnosticStatus
    from sensor_msgs.msg import Image, RegionOfInterest

    with pytest.raises(AssertionError, match="Invalid arguments"):
        Image(heigth=3)
    with pytest.raises(AssertionError, match="'width' field must be of type 'int'"):
        Image(width=np.int64(3))
    with pytest.raises(AssertionError, match="integer in"):
        RegionOfInterest(x_offset=-1)
    with pytest.raises(AssertionError, match="'bytes'"):
        DiagnosticStatus(level=1)
    assert DiagnosticStatus(level=DiagnosticStatus.WARN).level == b"\x01"
    with pytest.raises(AttributeError):
        Image().colour = 3
    with pytest.raises(AssertionError, match="sub message"):
        Image(header=RegionOfInterest())
    assert isinstance(Image().data, __import__("array").array)
    with pytest.raises(AssertionError, match="set or sequence"):
        Image(data=np.zeros(3, dtype=np.uint8))  # rclpy wants array.array('B') or bytes
    assert list(Image(data=b"\x01\x02").data) == [1, 2]


def test_3d_geometry_and_track_ids_reach_the_panoptic_and_detection_messages(types, registry):
    from ovseg_ros.scene.placement import locate, track
    from ovseg_ros.scene.tracking import Tracker

    result = two_object_result()
    depth = np.full((20, 30), np.nan, dtype=np.float32)
    depth[2:8, 3:12] = 1.25  # the mug at 1.25 m; the floor has no depth
    locate(result, depth, np.array([[10.0, 0, 15], [0, 10.0, 10], [0, 0, 1]]))
    tracker = Tracker()
    earlier = np.zeros((20, 30), np.uint16)
    earlier[0:2, 25:30] = 1
    tracker.update(earlier, ["kettle"])  # track 1: ids here start at 2
    track(result, tracker)
    msg = convert.panoptic_message(types, header(), result)
    mug, floor = msg.instances
    assert (mug.id, mug.track_id, floor.id, floor.track_id) == (1, 2, 2, 3)
    assert mug.centroid.z == pytest.approx(1.25) and mug.extent.z == pytest.approx(0.0)
    # columns 3..11, rows 2..7 eroded by 2: columns 5..9, rows 4..5 ->
    # x = (7 - 15) * 1.25 / 10 = -1.0, y = (4.5 - 10) * 1.25 / 10 = -0.6875
    assert mug.centroid.x == pytest.approx(-1.0) and mug.centroid.y == pytest.approx(-0.6875)
    assert mug.valid_depth_points == 2 * 5  # rows 4..5 x columns 5..9
    assert math.isnan(floor.centroid.x) and math.isnan(floor.extent.z)
    assert floor.valid_depth_points == 0
    registry.serialize(msg)
    detections = convert.detections_message(types, header(), result)
    assert [d.id for d in detections.detections] == ["2", "3"]  # the track ids
