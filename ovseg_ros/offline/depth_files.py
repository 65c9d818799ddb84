"""Depth images and camera calibration from files, for the command line.

A depth file belongs to the colour frame of the same stem: ``<stem>.png`` (16-bit, units of
depth_scale metres; what RealSense and most datasets write), ``<stem>.tiff``/``.tif``
(32-bit float metres) or ``<stem>.npy`` (float32 metres, or uint16 units). The calibration is
the YAML that camera_calibration and camera_info_manager write (``camera_matrix: {rows: 3,
cols: 3, data: [...]}``), or a CameraInfo message as ``ros2 topic echo --once`` prints it
(``k: [...]``).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import yaml

from ..messages.depth_messages import intrinsics
from ..scene.geometry import DepthError, DepthSettings, decode_depth

DEPTH_SUFFIXES = (".png", ".tiff", ".tif", ".npy")


def read_camera_info(path: Path) -> np.ndarray:
    """The 3x3 matrix to back-project with from a calibration YAML: the projection matrix's
    fx, fy, cx, cy where the file has one that is not all zeros (``projection_matrix``, or a
    CameraInfo's ``p``), as image_geometry takes them, else the camera matrix (K);
    DepthError says what is missing."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as err:
        raise DepthError(f"cannot read --camera-info {path}: {err}") from None
    if isinstance(data, dict) and isinstance(data.get("camera_matrix"), dict):
        values = data["camera_matrix"].get("data")
        projection = (data.get("projection_matrix") or {}).get("data")
    elif isinstance(data, dict):
        values = data.get("k", data.get("K"))
        projection = data.get("p", data.get("P"))
    else:
        values = projection = None
    if not isinstance(values, list) or len(values) != 9:
        raise DepthError(
            f"--camera-info {path} has no 3x3 camera matrix: expected "
            "camera_matrix: {rows: 3, cols: 3, data: [9 numbers]} "
            "(camera_calibration's file) or k: [9 numbers] (a CameraInfo)"
        )
    if projection is not None and (not isinstance(projection, list) or len(projection) != 12):
        raise DepthError(
            f"--camera-info {path} has a projection matrix that is not 3x4: "
            "expected projection_matrix: {rows: 3, cols: 4, data: [12 numbers]} "
            "or p: [12 numbers]"
        )
    return intrinsics(values, projection or [])[0]


def find_depth(folder: Path, stem: str) -> Path | None:
    """The depth file for a colour frame's stem, or None."""
    for suffix in DEPTH_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def read_depth(path: Path, settings: DepthSettings = DepthSettings()) -> np.ndarray:
    """A depth file -> [H, W] float32 metres, NaN invalid; DepthError when unusable."""
    if path.suffix == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise DepthError(
                f"{path} is not a readable .npy array ({err})", cause="unreadable depth file"
            ) from None
    else:
        depth = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
        if depth is None:
            raise DepthError(f"{path} is not a readable depth image", cause="unreadable depth file")
    if depth.dtype == np.uint16:
        return decode_depth(depth, "16UC1", settings)
    if depth.dtype == np.float32:
        return decode_depth(depth, "32FC1", settings)
    raise DepthError(
        f"{path} holds {depth.dtype} values: depth must be 16-bit (units of "
        "depth_scale metres) or 32-bit float (metres)"
    )
