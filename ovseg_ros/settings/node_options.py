"""The node's own options: how its inputs arrive and what its 3D outputs hold.

They are ROS parameters of the node, read at start, but not pipeline settings (config.py):
the command line tool has no camera topics. Kept free of ROS so that params_file.py can
tell them from unknown names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import SettingsError


@dataclass(frozen=True)
class NodeOption:
    """A read-only node parameter: its default (whose type is the parameter's), what it
    means, and the values it may take (choices, or an integer range)."""

    name: str
    default: Any
    description: str
    choices: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None

    def check(self, value: Any) -> Any:
        """The value, or SettingsError saying why it cannot be used."""
        if self.choices and value not in self.choices:
            raise SettingsError(
                f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
            )
        if self.minimum is not None and not self.minimum <= value <= self.maximum:
            raise SettingsError(
                f"{self.name} must be from {self.minimum} to {self.maximum}, got {value!r}"
            )
        return value


NODE_OPTIONS = (
    NodeOption(
        "image_transport",
        "raw",
        "'raw': sensor_msgs/Image on 'image'; 'compressed': sensor_msgs/CompressedImage "
        "on 'image/compressed' (JPEG or PNG).",
        choices=("raw", "compressed"),
    ),
    NodeOption(
        "image_reliability",
        "best_effort",
        "QoS reliability of the image, depth and camera_info subscriptions: "
        "'best_effort' (SensorDataQoS, matches every publisher) or 'reliable' "
        "(matches reliable publishers only).",
        choices=("best_effort", "reliable"),
    ),
    NodeOption(
        "use_depth",
        False,
        "Also subscribe to 'depth' (sensor_msgs/Image, 16UC1 or 32FC1, registered to "
        "the colour image) and to the colour camera's CameraInfo, paired with the "
        "colour frames by time: 3D per instance, ~/points, ~/markers, "
        "~/detections_3d.",
    ),
    NodeOption(
        "camera_info_topic",
        "",
        "The colour camera's CameraInfo topic. Empty: 'camera_info' next to the colour "
        "image topic, as image_transport does (/camera/color/image_raw -> "
        "/camera/color/camera_info).",
    ),
    NodeOption(
        "sync_queue_size",
        10,
        "Colour and depth messages kept per input while waiting for a partner.",
        minimum=1,
        maximum=1000,
    ),
    NodeOption(
        "pipeline_depth",
        2,
        "Frames in flight: 2 segments a frame while the previous one is tracked, "
        "placed in 3D and published (each hand-off keeps only the newest); 1 does "
        "it all in one thread, one frame at a time (for debugging and comparison).",
        minimum=1,
        maximum=2,
    ),
    NodeOption(
        "points_stride",
        4,
        "~/points holds every n-th pixel in each direction (1: every pixel with depth).",
        minimum=1,
        maximum=64,
    ),
)

NODE_OPTION_NAMES = tuple(option.name for option in NODE_OPTIONS)
