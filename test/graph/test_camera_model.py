"""3D as image_geometry's PinholeCameraModel (the model depth_image_proc and most ROS
consumers use) places it: the same point for random K and P (P != K), pixels and depths, to
float rounding. Needs the ROS 2 Python packages (run by test/graph/run.sh)."""

from __future__ import annotations

import numpy as np
import pytest

image_geometry = pytest.importorskip(
    "image_geometry",
    reason="image_geometry is not importable: ROS 2 is not sourced (test/graph/run.sh runs this)",
)

from sensor_msgs.msg import CameraInfo  # noqa: E402

from ovseg_ros.messages import depth_messages  # noqa: E402
from ovseg_ros.scene.geometry import back_project  # noqa: E402

WIDTH, HEIGHT = 64, 48


def random_info(rng: np.random.Generator) -> CameraInfo:
    """A calibrated camera and its rectified projection, as camera_calibration writes them."""
    fx, fy = rng.uniform(40, 90, 2)
    cx, cy = WIDTH / 2 + rng.uniform(-6, 6), HEIGHT / 2 + rng.uniform(-6, 6)
    scale = rng.uniform(0.8, 1.1)  # rectification with alpha 0 scales and shifts
    info = CameraInfo(width=WIDTH, height=HEIGHT, distortion_model="plumb_bob")
    info.k = [float(v) for v in (fx, 0, cx, 0, fy, cy, 0, 0, 1)]
    info.d = [float(v) for v in rng.normal(0, 0.05, 5)]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [
        float(v)
        for v in (
            fx * scale,
            0,
            cx + rng.uniform(-5, 5),
            0,
            0,
            fy * scale,
            cy + rng.uniform(-5, 5),
            0,
            0,
            0,
            1,
            0,
        )
    ]
    return info


@pytest.mark.parametrize("seed", range(5))
def test_back_projection_equals_image_geometry(seed):
    rng = np.random.default_rng(seed)
    info = random_info(rng)
    model = image_geometry.PinholeCameraModel()
    model.fromCameraInfo(info)
    depth = rng.uniform(0.3, 8.0, (HEIGHT, WIDTH)).astype(np.float32)
    points = back_project(depth, depth_messages.camera_matrix_of(info, WIDTH, HEIGHT))
    for v, u in zip(rng.integers(0, HEIGHT, 50), rng.integers(0, WIDTH, 50)):
        ray = np.asarray(model.projectPixelTo3dRay((float(u), float(v))))
        expected = ray / ray[2] * depth[v, u]
        np.testing.assert_allclose(points[v, u], expected, rtol=1e-5, atol=1e-6)
