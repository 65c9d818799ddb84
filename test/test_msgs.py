"""The package's messages: they parse with rosbags' msg parser, document every field, and
agree with the pipeline's sentinels; the kept vision_msgs 4.1 definitions have the layout the
converters use."""

from pathlib import Path

import pytest

pytest.importorskip("rosbags", reason="the message checks parse definitions with rosbags")

from ros_standin import messages
from rosbags.interfaces import Nodetype
from rosbags.typesys import get_types_from_msg

from ovseg_ros.segmentation import panoptic

MSG_DIR = Path(__file__).resolve().parent.parent / "msg"
OUR_MESSAGES = sorted(MSG_DIR.glob("*.msg"))


def field_names(typename, distro="humble"):
    return [name for name, _ in messages.typestore(distro).fielddefs[typename][1]]


def test_the_package_has_both_messages():
    assert [p.stem for p in OUR_MESSAGES] == ["PanopticSegmentation", "SegmentedInstance"]


@pytest.mark.parametrize("path", OUR_MESSAGES, ids=lambda p: p.stem)
def test_message_parses_with_rosbags(path):
    parsed = get_types_from_msg(path.read_text(), f"ovseg_ros/msg/{path.stem}")
    assert list(parsed) == [f"ovseg_ros/msg/{path.stem}"]


@pytest.mark.parametrize("distro", ["humble", "jazzy"])
def test_messages_resolve_against_each_distro(distro):
    store = messages.typestore(distro)
    for typename in ("ovseg_ros/msg/PanopticSegmentation", "ovseg_ros/msg/SegmentedInstance"):
        for _, (kind, spec) in store.fielddefs[typename][1]:
            if kind == Nodetype.NAME:
                assert spec in store.fielddefs, f"{typename} refers to unknown {spec}"
    # Serialisable means every nested type is known to the store.
    assert store.get_msgdef("ovseg_ros/msg/PanopticSegmentation").cls is not None


@pytest.mark.parametrize("path", OUR_MESSAGES, ids=lambda p: p.stem)
def test_every_field_and_constant_has_a_comment_above_it(path):
    lines = path.read_text().splitlines()
    for number, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert number > 0 and lines[number - 1].lstrip().startswith("#"), (
            f"{path.name}:{number + 1} '{line}' has no comment above it"
        )


def test_sentinels_match_the_pipeline():
    store = messages.typestore()
    constants = {
        name: value for name, _, value in store.fielddefs["ovseg_ros/msg/PanopticSegmentation"][0]
    }
    assert constants == {"UNLABELLED": panoptic.UNLABELLED, "NO_INSTANCE": panoptic.NO_INSTANCE}


def test_panoptic_message_layout():
    assert field_names("ovseg_ros/msg/PanopticSegmentation") == [
        "header",
        "vocabulary",
        "vocabulary_version",
        "semantic",
        "instance",
        "instances",
    ]
    assert field_names("ovseg_ros/msg/SegmentedInstance") == [
        "id",
        "track_id",
        "class_index",
        "label",
        "score",
        "mask_quality",
        "is_thing",
        "bbox",
        "area",
        "centroid",
        "extent",
        "valid_depth_points",
    ]
    fields = dict(messages.typestore().fielddefs["ovseg_ros/msg/SegmentedInstance"][1])
    assert fields["bbox"] == (Nodetype.NAME, "sensor_msgs/msg/RegionOfInterest")
    assert fields["centroid"] == (Nodetype.NAME, "geometry_msgs/msg/Point")
    assert fields["extent"] == (Nodetype.NAME, "geometry_msgs/msg/Vector3")
    assert fields["track_id"] == (Nodetype.BASE, ("uint32", 0))
    assert fields["id"] == (Nodetype.BASE, ("uint16", 0))  # as the 16UC1 instance image


def test_vision_msgs_4_1_layout():
    """The fields of vision_msgs 4.1 (Humble and Jazzy), as the converters fill them."""
    assert field_names("vision_msgs/msg/Detection2DArray") == ["header", "detections"]
    assert field_names("vision_msgs/msg/Detection2D") == ["header", "results", "bbox", "id"]
    assert field_names("vision_msgs/msg/ObjectHypothesisWithPose") == ["hypothesis", "pose"]
    assert field_names("vision_msgs/msg/ObjectHypothesis") == ["class_id", "score"]
    assert field_names("vision_msgs/msg/BoundingBox2D") == ["center", "size_x", "size_y"]
    assert field_names("vision_msgs/msg/Pose2D") == ["position", "theta"]
    assert field_names("vision_msgs/msg/Point2D") == ["x", "y"]
    assert field_names("vision_msgs/msg/LabelInfo") == ["header", "class_map", "threshold"]
    assert field_names("vision_msgs/msg/VisionClass") == ["class_id", "class_name"]
