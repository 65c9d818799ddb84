"""ovseg-segment on bags with --depth-topic (3D per instance from depth paired by stamp) and
--track, to files and with --bag-out, with the tiny models; the flag combinations refused
before the models load."""

import math

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags")

from rosbags.highlevel import AnyReader
from rosbags.interfaces import QosReliability
from test_bag_depth import COLOUR, DEPTH, camera_bag
from test_cli import EXAMPLE, settings_flags
from test_cli_scene import check_at_2_m, records

from ovseg_ros.messages.convert import MARKER_ADD, MARKER_DELETEALL
from ovseg_ros.offline import bag_types
from ovseg_ros.offline.cli import main
from ovseg_ros.offline.inputs import renamed_inputs

UNPAIRED, OTHER_FRAME, OTHER_SIZE = 2, 3, 4  # camera_bag's frames whose depth is unusable


def example(width: int = 160, height: int = 120) -> np.ndarray:
    return cv2.cvtColor(cv2.resize(cv2.imread(str(EXAMPLE)), (width, height)), cv2.COLOR_BGR2RGB)


def test_depth_topic_gives_each_instance_its_3d_centroid_in_metres(
    tiny_settings, tmp_path, capsys, caplog
):
    """No --topic (the only image topic besides the depth topic) and no
    --camera-info-topic (the colour topic's sibling)."""
    bag = tmp_path / "run1"
    camera_bag(bag, example())
    out = tmp_path / "out"
    code = main(
        [
            str(bag),
            "--depth-topic",
            DEPTH,
            "--vocab",
            "mug, book, table",
            "--out",
            str(out),
            "--quiet",
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 0
    for k in (0, 1):  # depth logged after, and before, its colour message
        check_at_2_m(records(out, f"run1_{k:06d}"))
    for k in (UNPAIRED, OTHER_FRAME, OTHER_SIZE):  # still written, with null geometry
        frame = records(out, f"run1_{k:06d}")
        assert frame and all(
            r["centroid"] is None and r["extent"] is None and r["valid_depth_points"] == 0
            for r in frame
        )
    assert (
        f"@{100_205_000_000}: no 3D geometry: no depth message on {DEPTH} within "
        "sync_slop (0.05 s) of the colour stamp" in caplog.text
    )
    assert "depth frame_id 'other' is not the colour image's 'cam'" in caplog.text
    assert "depth is 80x60 but colour is 160x120" in caplog.text
    err = capsys.readouterr().err
    assert "5 frame(s) segmented, 0 skipped" in err
    assert (
        "3 frame(s) without 3D geometry (null centroids):\n  - 1 no depth within "
        "sync_slop, first: " in err
    )


def read_bag(path) -> tuple[dict, dict]:
    """(topic -> offered QoS, topic -> [message, ...]) of a bag."""
    with AnyReader([path], default_typestore=bag_types.typestore()) as reader:
        qos = {c.topic: c.ext.offered_qos_profiles[0] for c in reader.connections}
        messages: dict[str, list] = {}
        for connection, _, raw in reader.messages():
            messages.setdefault(connection.topic, []).append(
                reader.deserialize(raw, connection.msgtype)
            )
    return qos, messages


def test_bag_out_with_depth_and_track_writes_markers_and_3d_detections(
    tiny_settings, tmp_path, capsys
):
    """Two bags: ids follow the objects through the frames of each and start at 1 in each
    (the second's pictures are another size, so they would not otherwise)."""
    camera_bag(tmp_path / "in/run1", example())
    camera_bag(tmp_path / "in/run2", example(96, 72))
    out = tmp_path / "out"
    code = main(
        [
            str(tmp_path / "in/run1"),
            str(tmp_path / "in/run2"),
            "--depth-topic",
            DEPTH,
            "--track",
            "--vocab",
            "mug, book, table",
            "--bag-out",
            str(out),
            "--quiet",
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 0
    err = capsys.readouterr().err
    assert f"{out / 'run1'}: 5 frame(s) written" in err
    assert "3 frame(s) without 3D geometry" in err

    qos, messages = read_bag(out / "run1")
    for topic in ("/ovseg/markers", "/ovseg/detections_3d"):
        assert qos[topic].reliability == QosReliability.RELIABLE and qos[topic].depth == 5
        assert len(messages[topic]) == 5
    panoptic = messages["/ovseg/panoptic"]
    ids = [[i.track_id for i in frame.instances] for frame in panoptic]
    assert ids[0] and ids[0] == list(range(1, len(ids[0]) + 1))
    assert ids[1] == ids[0]  # the same picture: the same objects
    assert [[d.id for d in frame.detections] for frame in messages["/ovseg/detections"]][:2] == [
        [str(i) for i in ids[0]]
    ] * 2
    for k, (frame, markers, boxes) in enumerate(
        zip(panoptic, messages["/ovseg/markers"], messages["/ovseg/detections_3d"])
    ):
        assert markers.markers[0].action == MARKER_DELETEALL
        if k >= UNPAIRED:
            assert all(math.isnan(i.centroid.z) for i in frame.instances)
            assert len(markers.markers) == 1 and not boxes.detections
            continue
        assert all(i.centroid.z == pytest.approx(2.0) for i in frame.instances)
        assert all(
            math.isfinite(v)
            for i in frame.instances
            for v in (i.centroid.x, i.centroid.y, i.extent.x, i.extent.y)
        )
        for ns in ("boxes", "labels"):
            assert [m.id for m in markers.markers if m.ns == ns] == ids[k]
        assert all(m.action == MARKER_ADD for m in markers.markers[1:])
        assert [d.id for d in boxes.detections] == [str(i) for i in ids[k]]
        assert all(d.bbox.center.position.z == pytest.approx(2.0) for d in boxes.detections)
        assert all(d.header.frame_id == "cam" for d in boxes.detections)

    second = [
        [i.track_id for i in frame.instances]
        for frame in read_bag(out / "run2")[1]["/ovseg/panoptic"]
    ]
    assert second[0] and second[0] == list(range(1, len(second[0]) + 1))


@pytest.mark.parametrize(
    "flags, words",
    [
        (
            ["IMAGE", "--depth-topic", DEPTH],
            "--depth-topic reads depth from rosbag2 bags: every input must be a bag",
        ),
        (
            ["BAG", "IMAGE", "--depth-topic", DEPTH],
            "--depth-topic reads depth from rosbag2 bags: every input must be a bag",
        ),
        (
            ["BAG", "VIDEO", "--depth-topic", DEPTH],
            "--depth-topic reads depth from rosbag2 bags: every input must be a bag",
        ),
        (
            ["BAG", "--depth-topic", "/nope"],
            "has no sensor_msgs/msg/Image topic '/nope' for --depth-topic; its Image topics: "
            f"{DEPTH}, {COLOUR}",
        ),
        (
            ["BAG", "--depth-topic", DEPTH, "--depth", "DIR", "--camera-info", "IMAGE"],
            "--depth-topic reads depth and CameraInfo from the bags: not with --depth",
        ),
        (
            ["BAG", "--camera-info-topic", "/camera/color/camera_info"],
            "--camera-info-topic goes with --depth-topic",
        ),
        (
            ["BAG", "--depth-topic", DEPTH, "--camera-info-topic", "/nope"],
            "has no sensor_msgs/msg/CameraInfo topic '/nope'; its CameraInfo topics: "
            "/camera/color/camera_info",
        ),
        (
            ["NO_INFO", "--depth-topic", DEPTH],
            "has no sensor_msgs/msg/CameraInfo topic '/camera/color/camera_info' (the sibling of "
            f"{COLOUR}; choose another with --camera-info-topic); its CameraInfo topics: none",
        ),
        (
            ["BAG", "--depth", "DIR", "--camera-info", "IMAGE", "--bag-out", "OUT"],
            "--bag-out reads depth from the bags (--depth-topic), not from --depth DIR",
        ),
        (
            ["IMAGE", "--track", "--ray", "auto"],
            "--track with --ray follows objects within each video or bag",
        ),
        (
            ["IMAGE", "OTHER/a.png", "--depth", "DIR", "--camera-info", "IMAGE", "--ray", "auto"],
            "with --ray a worker cannot know that a frame's name will get a _2 suffix",
        ),
    ],
)
def test_bad_3d_flags_for_bags_are_refused_before_models_load(tmp_path, capsys, flags, words):
    camera_bag(tmp_path / "bag", np.zeros((12, 16, 3), np.uint8))
    camera_bag(tmp_path / "no_info", np.zeros((12, 16, 3), np.uint8), info=False)
    for folder in ("images", "other"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), np.zeros((12, 16, 3), np.uint8))
    (tmp_path / "depth").mkdir()
    video = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (16, 12))
    video.write(np.zeros((12, 16, 3), np.uint8))
    video.release()
    swap = {
        "VIDEO": tmp_path / "v.avi",
        "BAG": tmp_path / "bag",
        "NO_INFO": tmp_path / "no_info",
        "DIR": tmp_path / "depth",
        "IMAGE": tmp_path / "images/a.png",
        "OTHER/a.png": tmp_path / "other/a.png",
        "OUT": tmp_path / "out",
    }
    # weights that are missing would be refused after the flags: the message tells which
    assert (
        main(
            [str(swap.get(f, f)) for f in flags]
            + ["--vocab", "mug", "--offline", "--cache-dir", str(tmp_path / "empty")]
        )
        == 2
    )
    assert words in capsys.readouterr().err


def test_renamed_inputs_are_those_whose_names_an_earlier_input_may_take(tmp_path):
    paths = [
        tmp_path / name
        for name in (
            "a/x.png",
            "b/X.jpg",
            "clip.avi",
            "clip_000003.png",
            "clip.png",
            "y.png",
            "v.mp4",
            "w/v.avi",
            "z.mkv",
        )
    ]
    assert renamed_inputs(paths) == [
        tmp_path / name
        for name in ("v.mp4", "w/v.avi", "a/x.png", "b/X.jpg", "clip_000003.png", "clip.png")
    ]
