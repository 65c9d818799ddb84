"""Message classes without ROS: rosbags' type store with vision_msgs and our msg/ registered.

The converters in convert.py take a ``MessageTypes`` namespace; ``message_types`` builds one
whose classes are rosbags dataclasses, constructed by keyword like rclpy's (fields left out
get their defaults; byte arrays may be given as array.array or bytes), so the bag writer
goes through the same converter code as the node. Definitions ship as package data in
``msgdefs/`` (vision_msgs 4.1, and a copy of this package's msg/).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from rosbags.interfaces import Nodetype
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from ..messages.convert import MessageTypes

MSGDEFS_DIR = Path(__file__).resolve().parent / "msgdefs"

_NUMPY = {
    "int8": np.int8,
    "uint8": np.uint8,
    "byte": np.uint8,
    "char": np.uint8,
    "int16": np.int16,
    "uint16": np.uint16,
    "int32": np.int32,
    "uint32": np.uint32,
    "int64": np.int64,
    "uint64": np.uint64,
    "float32": np.float32,
    "float64": np.float64,
    "bool": np.bool_,
}


def definitions() -> dict[str, str]:
    """Type name ('vision_msgs/msg/LabelInfo') -> .msg text of every shipped definition."""
    return {
        f"{path.parent.name}/msg/{path.stem}": path.read_text()
        for path in sorted(MSGDEFS_DIR.glob("*/*.msg"))
    }


@cache
def typestore(store: Stores = Stores.ROS2_JAZZY):
    """rosbags type store of a ROS 2 distro plus vision_msgs and ovseg_ros messages."""
    types = get_typestore(store)
    found: dict = {}
    for name, text in definitions().items():
        found.update(get_types_from_msg(text, name))
    types.register(found)
    return types


def _default(store, kind: Nodetype, spec: Any) -> Any:
    if kind == Nodetype.BASE:
        base = spec[0]
        return (
            ""
            if base == "string"
            else False
            if base == "bool"
            else 0.0
            if base.startswith("float")
            else 0
        )
    if kind == Nodetype.NAME:
        return constructor(store, spec)()
    (element_kind, element_spec), size = spec
    numeric = element_kind == Nodetype.BASE and element_spec[0] in _NUMPY
    if kind == Nodetype.ARRAY:
        if numeric:
            return np.zeros(size, dtype=_NUMPY[element_spec[0]])
        return [_default(store, element_kind, element_spec) for _ in range(size)]
    return np.zeros(0, dtype=_NUMPY[element_spec[0]]) if numeric else []


def _value(kind: Nodetype, spec: Any, value: Any) -> Any:
    """Numeric arrays as the numpy arrays rosbags' serializer wants."""
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        (element_kind, element_spec), _ = spec
        if element_kind == Nodetype.BASE and element_spec[0] in _NUMPY:
            dtype = _NUMPY[element_spec[0]]
            if isinstance(value, (bytes, bytearray, memoryview)):
                return np.frombuffer(bytes(value), dtype=dtype)
            return np.asarray(value, dtype=dtype)
    return value


def constructor(store, typename: str) -> Callable[..., Any]:
    """A keyword-only constructor of the rosbags class ``typename`` with rclpy defaults."""
    cls = store.types[typename]
    fields = store.fielddefs[typename][1]
    names = {name for name, _ in fields}

    def make(**values: Any) -> Any:
        unknown = set(values) - names
        if unknown:
            raise TypeError(f"{typename} has no field(s) {', '.join(sorted(unknown))}")
        return cls(
            **{
                name: _value(kind, spec, values[name])
                if name in values
                else _default(store, kind, spec)
                for name, (kind, spec) in fields
            }
        )

    make.__name__ = typename.rsplit("/", 1)[-1]
    return make


def message_types(store=None) -> MessageTypes:
    """The converters' namespace with rosbags classes."""
    store = store or typestore()
    names = {
        "Image": "sensor_msgs/msg/Image",
        "RegionOfInterest": "sensor_msgs/msg/RegionOfInterest",
        "Point": "geometry_msgs/msg/Point",
        "Vector3": "geometry_msgs/msg/Vector3",
        "PanopticSegmentation": "ovseg_ros/msg/PanopticSegmentation",
        "SegmentedInstance": "ovseg_ros/msg/SegmentedInstance",
        "Pose": "geometry_msgs/msg/Pose",
        "Quaternion": "geometry_msgs/msg/Quaternion",
        "PoseWithCovariance": "geometry_msgs/msg/PoseWithCovariance",
        "ColorRGBA": "std_msgs/msg/ColorRGBA",
        "Marker": "visualization_msgs/msg/Marker",
        "MarkerArray": "visualization_msgs/msg/MarkerArray",
    }
    names.update(
        {
            name: f"vision_msgs/msg/{name}"
            for name in (
                "Detection2DArray",
                "Detection2D",
                "ObjectHypothesisWithPose",
                "ObjectHypothesis",
                "BoundingBox2D",
                "Pose2D",
                "Point2D",
                "LabelInfo",
                "VisionClass",
                "Detection3DArray",
                "Detection3D",
                "BoundingBox3D",
            )
        }
    )
    return MessageTypes(
        **{field: constructor(store, typename) for field, typename in names.items()}
    )


def header(store, stamp_ns: int, frame_id: str = "") -> Any:
    """std_msgs/Header at a time in nanoseconds."""
    time = constructor(store, "builtin_interfaces/msg/Time")(
        sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000
    )
    return constructor(store, "std_msgs/msg/Header")(stamp=time, frame_id=frame_id)
