"""Depth images and CameraInfo messages in: metres, and the camera model to back-project with.

Like convert.py, it imports nothing from ROS: it reads the fields that rclpy's and rosbags'
message classes both have. Used by the node's depth input and the command line's bags.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..scene.geometry import DepthError, DepthSettings, camera_matrix, check_sizes, decode_depth
from .convert import byte_view

# sensor_msgs/Image encodings read as depth, and their pixel type.
DEPTH_ENCODINGS: dict[str, np.dtype] = {
    "16UC1": np.dtype(np.uint16),
    "mono16": np.dtype(np.uint16),
    "32FC1": np.dtype(np.float32),
}


def camera_info_topic(image_topic: str) -> str:
    """The CameraInfo topic that image_transport pairs with an image topic: its sibling
    ``camera_info`` (/camera/color/image_raw -> /camera/color/camera_info), that of the base
    topic for a ``/compressed`` one."""
    base = image_topic.rstrip("/").removesuffix("/compressed")
    return f"{base.rpartition('/')[0]}/camera_info"


def depth_image(msg: Any) -> tuple[np.ndarray, str]:
    """sensor_msgs/Image of depth (16UC1, mono16 or 32FC1) -> ([H, W] array in the message's
    units, its encoding); DepthError with the reason (``cause``: encoding, size, step,
    truncated). Rows may be padded; big-endian data is byte-swapped."""
    dtype = DEPTH_ENCODINGS.get(msg.encoding)
    if dtype is None:
        raise DepthError(
            f"depth encoding {msg.encoding!r} is not supported: use 16UC1 "
            "(units of depth_scale metres, usually millimetres) or 32FC1 (metres); "
            "compressed depth is not read",
            cause="encoding",
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise DepthError(f"depth image has zero size ({width}x{height})", cause="size")
    row_bytes = width * dtype.itemsize
    if step < row_bytes:
        raise DepthError(
            f"depth step {step} is smaller than a row of {width} {msg.encoding} "
            f"pixels ({row_bytes} bytes)",
            cause="step",
        )
    data = byte_view(msg.data)
    if data.size < step * height:
        raise DepthError(
            f"depth data has {data.size} bytes but a {width}x{height} "
            f"{msg.encoding} image with step {step} needs {step * height}",
            cause="truncated",
        )
    rows = np.ascontiguousarray(data[: step * height].reshape(height, step)[:, :row_bytes])
    stored = dtype.newbyteorder(">") if msg.is_bigendian else dtype.newbyteorder("<")
    depth = rows.view(stored).reshape(height, width)
    return depth.astype(dtype, copy=False), msg.encoding


def intrinsics(k: Any, p: Any) -> tuple[np.ndarray, str]:
    """CameraInfo's K (9 numbers) and P (12) -> (the 3x3 matrix to back-project with, 'P' or
    'K'), as image_geometry's PinholeCameraModel (and so depth_image_proc) takes fx, fy, cx,
    cy: from P, the projection of the rectified image, and from K only where P is all zeros.
    P's Tx, Ty (a stereo pair's baseline) are not used: points are in this camera's own
    optical frame, as depth_image_proc puts them."""
    projection = np.asarray(list(p), dtype=np.float64)
    if projection.size == 12 and np.any(projection != 0):
        projection = projection.reshape(3, 4)
        return camera_matrix(
            [
                projection[0, 0],
                0.0,
                projection[0, 2],
                0.0,
                projection[1, 1],
                projection[1, 2],
                0.0,
                0.0,
                1.0,
            ]
        ), "P"
    return camera_matrix(list(k)), "K"


def camera_matrix_of(
    info: Any, width: int, height: int, note: Callable[[str, str], None] | None = None
) -> np.ndarray:
    """sensor_msgs/CameraInfo -> the 3x3 matrix to back-project with (``intrinsics``),
    checked against the colour image's size (a size of 0x0 in the CameraInfo is not
    checked); DepthError (cause camera_info) otherwise. Binning and a region of interest,
    which change what a pixel of the image is, are refused. ``note(kind, message)`` hears
    that K stood in for an all-zero P."""
    info_size = (int(info.width), int(info.height))
    if info_size != (0, 0) and info_size != (width, height):
        raise DepthError(
            f"CameraInfo is for {info_size[0]}x{info_size[1]} images but colour is "
            f"{width}x{height}: give the colour camera's CameraInfo (the "
            "camera_info topic next to the colour image)",
            cause="camera_info",
        )
    binning = (int(info.binning_x), int(info.binning_y))
    roi = info.roi
    roi_values = (int(roi.x_offset), int(roi.y_offset), int(roi.width), int(roi.height))
    if any(b > 1 for b in binning) or (any(roi_values) and roi_values != (0, 0, width, height)):
        raise DepthError(
            f"CameraInfo sets binning {binning[0]}x{binning[1]} or a region of "
            f"interest {roi_values}: not supported; give depth and colour at the "
            "calibrated resolution, without binning or a region of interest",
            cause="camera_info",
        )
    try:
        matrix, source = intrinsics(info.k, info.p)
    except DepthError as err:
        raise DepthError(f"CameraInfo: {err}", cause="camera_info") from None
    if source == "K" and note is not None:
        note(
            "K",
            "the CameraInfo's P is all zeros: back-projecting with its K (right for "
            "an image that is not rectified and has no distortion)",
        )
    return matrix


def distortion_note(info: Any, image_topic: str) -> str | None:
    """Why 3D is only approximate when CameraInfo has distortion coefficients but the image
    topic is not a rectified one (its name has no 'rect'), else None: back-projection uses
    the pinhole model and ignores D."""
    if "rect" in image_topic or not any(float(d) for d in info.d):
        return None
    return (
        f"the CameraInfo has distortion coefficients (D = {[float(d) for d in info.d]}) "
        f"but {image_topic} is not a rectified image: 3D assumes no distortion, so it is "
        "only approximate toward the image edges; give rectified colour and depth "
        "(image_rect) for exact 3D"
    )


def registered_depth(
    colour_header: Any,
    width: int,
    height: int,
    depth_msg: Any,
    info_msg: Any,
    settings: DepthSettings,
    note: Callable[[str, str], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The depth image of a colour frame, checked to be registered to it, and the colour
    camera's intrinsics (camera_matrix_of: P's, or K's where P is all zeros): ([H, W] float32
    metres with NaN invalid, 3x3 matrix); DepthError with the reason.

    Registered means the same size and, where both name one, the same frame_id (depth in the
    depth camera's own frame has the same size on many cameras but other pixels).
    """
    depth_frame, colour_frame = depth_msg.header.frame_id, colour_header.frame_id
    if depth_frame and colour_frame and depth_frame != colour_frame:
        raise DepthError(
            f"depth frame_id {depth_frame!r} is not the colour image's {colour_frame!r}: depth "
            "must be registered (aligned) to the colour image, pixel for pixel, e.g. a "
            "RealSense's aligned_depth_to_color topic",
            cause="frame_id",
        )
    depth, encoding = depth_image(depth_msg)
    check_sizes((height, width), depth.shape)
    return decode_depth(depth, encoding, settings), camera_matrix_of(info_msg, width, height, note)
