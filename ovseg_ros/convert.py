"""Conversions between ROS messages and the pipeline's numpy arrays and SegmentationResult.

Nothing from ROS is imported at module level: message classes come in through a
``MessageTypes`` namespace (``MessageTypes.from_ros()`` imports rclpy's generated classes, or
whatever stand-ins are installed under the same module names in tests). The converters rely
only on what rclpy's classes guarantee: keyword construction with defaults for missing fields,
and assignments checked by type. rclpy refuses numpy scalars in integer and float fields and
wants ``array.array('B')`` (or bytes) for ``uint8[]``, so everything is converted to plain
Python values here.
"""

from __future__ import annotations

import array
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from .panoptic import UNLABELLED, Instance, SegmentationResult
from .vocabulary import Vocabulary

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
        return FrameError("size", f"{what} is larger than OpenCV's pixel limit (2^30 "
                          "unless the environment variable CV_IO_MAX_IMAGE_PIXELS raises it)")
    detail = text.strip().splitlines()[-1] if text.strip() else type(err).__name__
    return FrameError("decode", f"OpenCV cannot read {what}: {detail}")


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

    @classmethod
    def from_ros(cls) -> "MessageTypes":
        """The classes of the ROS installation (or of the stand-in modules in tests)."""
        from geometry_msgs.msg import Point, Vector3
        from sensor_msgs.msg import Image, RegionOfInterest
        from vision_msgs.msg import (BoundingBox2D, Detection2D, Detection2DArray, LabelInfo,
                                     ObjectHypothesis, ObjectHypothesisWithPose, Point2D,
                                     Pose2D, VisionClass)

        from ovseg_ros.msg import PanopticSegmentation, SegmentedInstance

        return cls(Image=Image, RegionOfInterest=RegionOfInterest, Point=Point, Vector3=Vector3,
                   PanopticSegmentation=PanopticSegmentation,
                   SegmentedInstance=SegmentedInstance, Detection2DArray=Detection2DArray,
                   Detection2D=Detection2D, ObjectHypothesisWithPose=ObjectHypothesisWithPose,
                   ObjectHypothesis=ObjectHypothesis, BoundingBox2D=BoundingBox2D,
                   Pose2D=Pose2D, Point2D=Point2D, LabelInfo=LabelInfo,
                   VisionClass=VisionClass)


def _byte_view(data: Any) -> np.ndarray:
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
        raise FrameError("encoding", f"unsupported encoding {encoding!r}; supported: "
                         f"{', '.join(FRAME_ENCODINGS)}")
    channels, depth, conversion = FRAME_ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise FrameError("size", f"image has zero size ({width}x{height})")
    if channels == 2 and width % 2:
        raise FrameError("size", f"{encoding} images need an even width, got {width}")
    row_bytes = width * channels * depth
    if step < row_bytes:
        raise FrameError("step", f"step {step} is smaller than a row of {width} {encoding} "
                         f"pixels ({row_bytes} bytes)")
    data = _byte_view(msg.data)
    if data.size < step * height:
        raise FrameError("truncated", f"data has {data.size} bytes but a {width}x{height} "
                         f"{encoding} image with step {step} needs {step * height}")
    rows = np.ascontiguousarray(data[:step * height].reshape(height, step)[:, :row_bytes])
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
        raise FrameError("encoding", f"format {msg.format!r} is a compressed depth image, "
                         "not a colour image")
    data = _byte_view(msg.data)
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


def image_message(types: MessageTypes, header: Any, pixels: np.ndarray,
                  encoding: str) -> Any:
    """sensor_msgs/Image of [H, W] (16UC1) or [H, W, 3] (rgb8) pixels, little endian."""
    dtype, channels = OUTPUT_ENCODINGS[encoding]
    expected_ndim = 2 if channels == 1 else 3
    if pixels.dtype != dtype or pixels.ndim != expected_ndim or (
            channels > 1 and pixels.shape[2] != channels):
        raise ValueError(f"{encoding} needs a {dtype} array of {expected_ndim} dimensions, got "
                         f"{pixels.dtype} {pixels.shape}")
    pixels = np.ascontiguousarray(pixels, dtype=dtype.newbyteorder("<"))
    height, width = pixels.shape[:2]
    data = array.array("B")
    data.frombytes(pixels.reshape(-1).view(np.uint8))
    return types.Image(header=header, height=height, width=width, encoding=encoding,
                       is_bigendian=0, step=width * channels * dtype.itemsize, data=data)


def instance_message(types: MessageTypes, instance: Instance) -> Any:
    """ovseg_ros/SegmentedInstance, with the instance's 3D geometry (NaN without depth)."""
    x, y, w, h = (int(v) for v in instance.bbox) if instance.area else (0, 0, 0, 0)
    (cx, cy, cz), (ex, ey, ez) = instance.geometry.centroid, instance.geometry.extent
    return types.SegmentedInstance(
        id=int(instance.id), track_id=int(instance.track_id),
        class_index=int(instance.class_index), label=instance.label,
        score=float(instance.score), mask_quality=float(instance.mask_quality),
        is_thing=bool(instance.is_thing),
        bbox=types.RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h,
                                    do_rectify=False),
        area=int(instance.area),
        centroid=types.Point(x=cx, y=cy, z=cz), extent=types.Vector3(x=ex, y=ey, z=ez),
        valid_depth_points=int(instance.geometry.valid_points))


def panoptic_message(types: MessageTypes, header: Any, result: SegmentationResult) -> Any:
    """ovseg_ros/PanopticSegmentation: both label images, the vocabulary and the instances."""
    return types.PanopticSegmentation(
        header=header,
        vocabulary=list(result.vocabulary.names),
        vocabulary_version=int(result.vocabulary_version),
        semantic=image_message(types, header, result.semantic, "16UC1"),
        instance=image_message(types, header, result.instance_map, "16UC1"),
        instances=[instance_message(types, instance) for instance in result.instances])


def detections_message(types: MessageTypes, header: Any, result: SegmentationResult) -> Any:
    """vision_msgs/Detection2DArray: one detection per instance with pixels.

    class_id is the class name, score the classification probability, id the track id when
    tracking is on, else the instance id (its value in the instance image). Box centres are in pixel-edge coordinates: a box
    covering columns x .. x+w-1 has centre x + w/2.
    """
    detections = []
    for instance in result.instances:
        if instance.area == 0:
            continue
        x, y, w, h = (int(v) for v in instance.bbox)
        hypothesis = types.ObjectHypothesis(class_id=instance.label,
                                            score=float(instance.score))
        detections.append(types.Detection2D(
            header=header,
            results=[types.ObjectHypothesisWithPose(hypothesis=hypothesis)],
            bbox=types.BoundingBox2D(
                center=types.Pose2D(position=types.Point2D(x=x + w / 2.0, y=y + h / 2.0),
                                    theta=0.0),
                size_x=float(w), size_y=float(h)),
            id=str(instance.track_id or instance.id)))
    return types.Detection2DArray(header=header, detections=detections)


def label_info_message(types: MessageTypes, header: Any, vocabulary: Vocabulary,
                       threshold: float) -> Any:
    """vision_msgs/LabelInfo: class index -> name, plus UNLABELLED (65535) -> 'unlabelled'."""
    class_map = [types.VisionClass(class_id=index, class_name=name)
                 for index, name in enumerate(vocabulary.names)]
    class_map.append(types.VisionClass(class_id=UNLABELLED, class_name=UNLABELLED_NAME))
    return types.LabelInfo(header=header, class_map=class_map, threshold=float(threshold))
