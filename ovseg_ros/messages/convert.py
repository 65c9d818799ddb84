"""Conversions between ROS messages and the pipeline's numpy arrays and SegmentationResult.

Nothing from ROS is imported at module level: message classes come in through a
``MessageTypes`` namespace (the node's ``ros_message_types()`` holds rclpy's generated classes, or
whatever stand-ins are installed under the same module names in tests). The converters rely
only on what rclpy's classes guarantee: keyword construction with defaults for missing fields,
and assignments checked by type. rclpy refuses numpy scalars in integer and float fields and
wants ``array.array('B')`` (or bytes) for ``uint8[]``, so everything is converted to plain
Python values here.
"""

from __future__ import annotations

import array
import math
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..segmentation.panoptic import UNLABELLED, Instance, SegmentationResult
from ..segmentation.visualize import class_colours
from ..segmentation.vocabulary import Vocabulary

UNLABELLED_NAME = "unlabelled"  # LabelInfo entry for the semantic image's UNLABELLED value

# sensor_msgs/Image encodings read as camera frames: channels, bytes per channel, and the
# OpenCV conversion to RGB (None: already RGB).
FRAME_ENCODINGS: dict[str, tuple[int, int, int | None]] = {
    "rgb8": (3, 1, None),
    "bgr8": (3, 1, cv2.COLOR_BGR2RGB),
    "rgba8": (4, 1, cv2.COLOR_RGBA2RGB),
    "bgra8": (4, 1, cv2.COLOR_BGRA2RGB),
    "mono8": (1, 1, cv2.COLOR_GRAY2RGB),
    "mono16": (1, 2, cv2.COLOR_GRAY2RGB),  # the high byte is kept
    "yuv422_yuy2": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "yuyv": (2, 1, cv2.COLOR_YUV2RGB_YUY2),
    "yuv422": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    "uyvy": (2, 1, cv2.COLOR_YUV2RGB_UYVY),
    # OpenCV names a Bayer pattern by the second row's 2x2 start, ROS by the first row's:
    # ROS rggb is OpenCV's BG (the table cv_bridge uses).
    "bayer_rggb8": (1, 1, cv2.COLOR_BayerBG2RGB),
    "bayer_bggr8": (1, 1, cv2.COLOR_BayerRG2RGB),
    "bayer_gbrg8": (1, 1, cv2.COLOR_BayerGR2RGB),
    "bayer_grbg8": (1, 1, cv2.COLOR_BayerGB2RGB),
}

# Encodings written by image_message: numpy dtype and channels of the array.
OUTPUT_ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "16UC1": (np.dtype(np.uint16), 1),
    "rgb8": (np.dtype(np.uint8), 3),
}


# visualization_msgs/Marker constants (types and actions), as numbered in Marker.msg.
MARKER_CUBE, MARKER_TEXT = 1, 9
MARKER_ADD, MARKER_DELETEALL = 0, 3
MIN_MARKER_SIZE_M = 0.01  # rviz warns about, and hides, a box with a zero size
LABEL_HEIGHT_M = 0.05


class FrameError(ValueError):
    """A camera frame cannot be used. ``cause`` names the kind of problem (encoding, size,
    step, truncated, decode) so that a node can log each kind once; the message says what
    exactly is wrong with this frame."""

    def __init__(self, cause: str, message: str):
        super().__init__(message)
        self.cause = cause


def opencv_frame_error(err: cv2.error, what: str) -> FrameError:
    """FrameError for an OpenCV failure while decoding or converting ``what`` (e.g. "the
    compressed image"). Images over OpenCV's pixel limit get the limit and how to raise it."""
    text = str(err)
    if "CV_IO_MAX_IMAGE_PIXELS" in text:
        return FrameError(
            "size",
            f"{what} is larger than OpenCV's pixel limit (2^30 "
            "unless the environment variable CV_IO_MAX_IMAGE_PIXELS raises it)",
        )
    detail = text.strip().splitlines()[-1] if text.strip() else type(err).__name__
    return FrameError("decode", f"OpenCV cannot read {what}: {detail}")


class MessagePool:
    """Per-instance messages kept from one frame to the next and filled in again.

    rclpy's generated constructors build every default sub-message (a Marker builds a Pose,
    a Vector3, a ColorRGBA, a CompressedImage, ...) and type-check every field, so building
    a few hundred messages per frame costs milliseconds; the converters fill
    default-constructed messages in place, and with a pool they refill last frame's. Use one
    pool per thread that builds and publishes, and publish a frame's messages before building
    the next frame's (publishing serializes them; the objects are overwritten next time).
    """

    def __init__(self) -> None:
        self._kept: dict[str, list[Any]] = {}

    def take(self, kind: str, count: int, make: Any) -> list[Any]:
        """``count`` messages of ``kind``: kept ones first, new ones from ``make()``."""
        kept = self._kept.setdefault(kind, [])
        kept.extend(make() for _ in range(count - len(kept)))
        return kept[:count]


def _pool(pool: MessagePool | None) -> MessagePool:
    return MessagePool() if pool is None else pool


@dataclass(frozen=True)
class MessageTypes:
    """The message classes the converters build."""

    Image: Any
    RegionOfInterest: Any
    Point: Any
    Vector3: Any
    PanopticSegmentation: Any
    SegmentedInstance: Any
    Detection2DArray: Any
    Detection2D: Any
    ObjectHypothesisWithPose: Any
    ObjectHypothesis: Any
    BoundingBox2D: Any
    Pose2D: Any
    Point2D: Any
    LabelInfo: Any
    VisionClass: Any
    Pose: Any
    Quaternion: Any
    PoseWithCovariance: Any
    ColorRGBA: Any
    Marker: Any
    MarkerArray: Any
    Detection3DArray: Any
    Detection3D: Any
    BoundingBox3D: Any


def byte_view(data: Any) -> np.ndarray:
    """[N] uint8 view of a message's byte data (array.array, bytes, numpy array or list)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8)


def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image -> [H, W, 3] uint8 RGB. Raises FrameError with the reason.

    Rows may be padded (step larger than width x bytes per pixel); data longer than
    step x height is accepted, shorter is refused as truncated.
    """
    encoding = msg.encoding
    if encoding not in FRAME_ENCODINGS:
        raise FrameError(
            "encoding",
            f"unsupported encoding {encoding!r}; supported: {', '.join(FRAME_ENCODINGS)}",
        )
    channels, depth, conversion = FRAME_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise FrameError("size", f"image has zero size ({width}x{height})")
    if channels == 2 and width % 2:
        raise FrameError("size", f"{encoding} images need an even width, got {width}")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise FrameError(
            "step",
            f"step {step} is smaller than a row of {width} {encoding} pixels ({row_bytes} bytes)",
        )
    data = byte_view(msg.data)
    if data.size < step * height:
        raise FrameError(
            "truncated",
            f"data has {data.size} bytes but a {width}x{height} "
            f"{encoding} image with step {step} needs {step * height}",
        )
    rows = np.ascontiguousarray(data[: step * height].reshape(height, step)[:, :row_bytes])
    if depth == 2:
        pixels = rows.view(">u2" if msg.is_bigendian else "<u2").reshape(height, width)
        pixels = (pixels >> 8).astype(np.uint8)
    elif channels == 1:
        pixels = rows.reshape(height, width)
    else:
        pixels = rows.reshape(height, width, channels)
    if conversion is None:
        return pixels
    try:
        return cv2.cvtColor(pixels, conversion)
    except cv2.error as err:
        raise opencv_frame_error(err, f"the {width}x{height} {encoding} image") from None


def compressed_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/CompressedImage (JPEG, PNG, ...) -> [H, W, 3] uint8 RGB, or FrameError."""
    if "compresseddepth" in msg.format.lower():
        raise FrameError(
            "encoding", f"format {msg.format!r} is a compressed depth image, not a colour image"
        )
    data = byte_view(msg.data)
    if data.size == 0:
        raise FrameError("size", "compressed image has no data")
    what = f"the compressed image (format {msg.format!r}, {data.size} bytes)"
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if bgr is None:
            raise FrameError("decode", f"could not decode {what}")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    except cv2.error as err:
        raise opencv_frame_error(err, what) from None


def image_message(types: MessageTypes, header: Any, pixels: np.ndarray, encoding: str) -> Any:
    """sensor_msgs/Image of [H, W] (16UC1) or [H, W, 3] (rgb8) pixels, little endian."""
    dtype, channels = OUTPUT_ENCODINGS[encoding]
    expected_ndim = 2 if channels == 1 else 3
    if (
        pixels.dtype != dtype
        or pixels.ndim != expected_ndim
        or (channels > 1 and pixels.shape[2] != channels)
    ):
        raise ValueError(
            f"{encoding} needs a {dtype} array of {expected_ndim} dimensions, got "
            f"{pixels.dtype} {pixels.shape}"
        )
    pixels = np.ascontiguousarray(pixels, dtype=dtype.newbyteorder("<"))
    height, width = pixels.shape[:2]
    data = array.array("B")
    data.frombytes(pixels.reshape(-1).view(np.uint8).data)
    return types.Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels * dtype.itemsize,
        data=data,
    )


def fill_instance(msg: Any, instance: Instance) -> Any:
    """Fill an ovseg_ros/SegmentedInstance in place, with the instance's 3D geometry (NaN
    without depth); returns it."""
    x, y, w, h = (int(v) for v in instance.bbox) if instance.area else (0, 0, 0, 0)
    (cx, cy, cz), (ex, ey, ez) = instance.geometry.centroid, instance.geometry.extent
    msg.id, msg.track_id = int(instance.id), int(instance.track_id)
    msg.class_index, msg.label = int(instance.class_index), instance.label
    msg.score, msg.mask_quality = float(instance.score), float(instance.mask_quality)
    msg.is_thing = bool(instance.is_thing)
    bbox = msg.bbox
    bbox.x_offset, bbox.y_offset, bbox.width, bbox.height = x, y, w, h
    bbox.do_rectify = False
    msg.area = int(instance.area)
    msg.centroid.x, msg.centroid.y, msg.centroid.z = float(cx), float(cy), float(cz)
    msg.extent.x, msg.extent.y, msg.extent.z = float(ex), float(ey), float(ez)
    msg.valid_depth_points = int(instance.geometry.valid_points)
    return msg


def instance_message(types: MessageTypes, instance: Instance) -> Any:
    """ovseg_ros/SegmentedInstance, with the instance's 3D geometry (NaN without depth)."""
    return fill_instance(types.SegmentedInstance(), instance)


def panoptic_message(
    types: MessageTypes,
    header: Any,
    result: SegmentationResult,
    semantic: Any = None,
    instance: Any = None,
    pool: MessagePool | None = None,
) -> Any:
    """ovseg_ros/PanopticSegmentation: both label images (``semantic`` and ``instance``
    when already built), the vocabulary and the instances."""
    instances = _pool(pool).take("instance", len(result.instances), types.SegmentedInstance)
    return types.PanopticSegmentation(
        header=header,
        vocabulary=list(result.vocabulary.names),
        vocabulary_version=int(result.vocabulary_version),
        semantic=semantic
        if semantic is not None
        else image_message(types, header, result.semantic, "16UC1"),
        instance=instance
        if instance is not None
        else image_message(types, header, result.instance_map, "16UC1"),
        instances=[fill_instance(msg, item) for msg, item in zip(instances, result.instances)],
    )


def _hypothesis(types: MessageTypes) -> Any:
    return types.ObjectHypothesisWithPose(hypothesis=types.ObjectHypothesis())


def _detection_2d(types: MessageTypes) -> Any:
    return types.Detection2D(results=[_hypothesis(types)])


def detections_message(
    types: MessageTypes, header: Any, result: SegmentationResult, pool: MessagePool | None = None
) -> Any:
    """vision_msgs/Detection2DArray: one detection per instance with pixels.

    class_id is the class name, score the classification probability, id object_id() (the
    track id when tracking is on, else the instance id: its value in the instance image).
    Box centres are in pixel-edge coordinates: a box covering columns x .. x+w-1 has centre
    x + w/2.
    """
    shown = [instance for instance in result.instances if instance.area]
    detections = _pool(pool).take("detection_2d", len(shown), lambda: _detection_2d(types))
    for detection, instance in zip(detections, shown):
        x, y, w, h = (int(v) for v in instance.bbox)
        detection.header = header
        hypothesis = detection.results[0].hypothesis
        hypothesis.class_id, hypothesis.score = instance.label, float(instance.score)
        box = detection.bbox
        box.center.position.x, box.center.position.y = x + w / 2.0, y + h / 2.0
        box.center.theta = 0.0
        box.size_x, box.size_y = float(w), float(h)
        detection.id = str(object_id(instance))
    return types.Detection2DArray(header=header, detections=detections)


def label_info_message(
    types: MessageTypes, header: Any, vocabulary: Vocabulary, threshold: float
) -> Any:
    """vision_msgs/LabelInfo: class index -> name, plus UNLABELLED (65535) -> 'unlabelled'."""
    class_map = [
        types.VisionClass(class_id=index, class_name=name)
        for index, name in enumerate(vocabulary.names)
    ]
    class_map.append(types.VisionClass(class_id=UNLABELLED, class_name=UNLABELLED_NAME))
    return types.LabelInfo(header=header, class_map=class_map, threshold=float(threshold))


def _located(result: SegmentationResult) -> list[Instance]:
    """The instances with a 3D centroid."""
    return [
        instance
        for instance in result.instances
        if all(math.isfinite(c) for c in instance.geometry.centroid)
    ]


def _set_pose(pose: Any, x: float, y: float, z: float) -> None:
    """A pose at (x, y, z) with the identity orientation, in place."""
    pose.position.x, pose.position.y, pose.position.z = float(x), float(y), float(z)
    orientation = pose.orientation
    orientation.x, orientation.y, orientation.z, orientation.w = 0.0, 0.0, 0.0, 1.0


def object_id(instance: Instance) -> int:
    """The id downstream users see: the track id when tracking is on, else the instance id."""
    return int(instance.track_id or instance.id)


def markers_message(
    types: MessageTypes, header: Any, result: SegmentationResult, pool: MessagePool | None = None
) -> Any:
    """visualization_msgs/MarkerArray for rviz: first a DELETEALL (instances of the previous
    frame do not linger), then per instance with a 3D centroid a box (namespace 'boxes': a
    CUBE at the centroid, the extent as its size, at least MIN_MARKER_SIZE_M, in the class
    colour) and its label above it (namespace 'labels'). Marker ids are object_id()."""
    pool = _pool(pool)
    (delete_all,) = pool.take("marker_delete_all", 1, types.Marker)
    delete_all.header, delete_all.action = header, MARKER_DELETEALL
    located = _located(result)
    boxes = pool.take("marker_box", len(located), types.Marker)
    labels = pool.take("marker_label", len(located), types.Marker)
    colours = class_colours(max(len(result.vocabulary), 1)) / 255.0
    for box, label, instance in zip(boxes, labels, located):
        (x, y, z), extent = instance.geometry.centroid, instance.geometry.extent
        sizes = [max(float(e), MIN_MARKER_SIZE_M) for e in extent]
        r, g, b = (float(c) for c in colours[instance.class_index])
        box.header, box.ns, box.id = header, "boxes", object_id(instance)
        box.type, box.action = MARKER_CUBE, MARKER_ADD
        _set_pose(box.pose, x, y, z)
        box.scale.x, box.scale.y, box.scale.z = sizes
        box.color.r, box.color.g, box.color.b, box.color.a = r, g, b, 0.5
        label.header, label.ns, label.id = header, "labels", object_id(instance)
        label.type, label.action = MARKER_TEXT, MARKER_ADD
        _set_pose(label.pose, x, y - sizes[1] / 2 - LABEL_HEIGHT_M, z)
        label.scale.x, label.scale.y, label.scale.z = 0.0, 0.0, LABEL_HEIGHT_M
        label.color.r, label.color.g, label.color.b, label.color.a = 1.0, 1.0, 1.0, 1.0
        label.text = f"{instance.label} {object_id(instance)} ({instance.score:.2f})"
    markers = [delete_all]
    for box, label in zip(boxes, labels):
        markers += (box, label)
    return types.MarkerArray(markers=markers)


def _detection_3d(types: MessageTypes) -> Any:
    return types.Detection3D(results=[_hypothesis(types)])


def detections_3d_message(
    types: MessageTypes, header: Any, result: SegmentationResult, pool: MessagePool | None = None
) -> Any:
    """vision_msgs/Detection3DArray: one detection per instance with a 3D centroid, in the
    colour camera's optical frame: the box is centred on the centroid with the extent as its
    size (axis-aligned, identity orientation); class_id is the class name, score the
    classification probability, id object_id(), and the hypothesis pose the centroid."""
    located = _located(result)
    detections = _pool(pool).take("detection_3d", len(located), lambda: _detection_3d(types))
    for detection, instance in zip(detections, located):
        (x, y, z), (ex, ey, ez) = instance.geometry.centroid, instance.geometry.extent
        detection.header = header
        result_ = detection.results[0]
        result_.hypothesis.class_id = instance.label
        result_.hypothesis.score = float(instance.score)
        _set_pose(result_.pose.pose, x, y, z)
        _set_pose(detection.bbox.center, x, y, z)
        size = detection.bbox.size
        size.x, size.y, size.z = float(ex), float(ey), float(ez)
        detection.id = str(object_id(instance))
    return types.Detection3DArray(header=header, detections=detections)
