"""ovseg-segment on bags with --depth-topic (3D per instance from depth paired by stamp),
with the tiny models; the flag combinations refused before the models load."""

import cv2
import numpy as np
import pytest

pytest.importorskip("rosbags")

from ovseg_ros.cli import main  # noqa: E402
from test_bag_depth import COLOUR, DEPTH, camera_bag  # noqa: E402
from test_cli import EXAMPLE, settings_flags  # noqa: E402
from test_cli_scene import check_at_2_m, records  # noqa: E402

UNPAIRED, OTHER_FRAME, OTHER_SIZE = 2, 3, 4  # camera_bag's frames whose depth is unusable


def example(width: int = 160, height: int = 120) -> np.ndarray:
    return cv2.cvtColor(cv2.resize(cv2.imread(str(EXAMPLE)), (width, height)),
                        cv2.COLOR_BGR2RGB)


def test_depth_topic_gives_each_instance_its_3d_centroid_in_metres(tiny_settings, tmp_path,
                                                                    capsys, caplog):
    """No --topic (the only image topic besides the depth topic) and no
    --camera-info-topic (the colour topic's sibling)."""
    bag = tmp_path / "run1"
    camera_bag(bag, example())
    out = tmp_path / "out"
    code = main([str(bag), "--depth-topic", DEPTH, "--vocab", "mug, book, table", "--out",
                 str(out), "--quiet", *settings_flags(tiny_settings)])
    assert code == 0
    for k in (0, 1):  # depth logged after, and before, its colour message
        check_at_2_m(records(out, f"run1_{k:06d}"))
    for k in (UNPAIRED, OTHER_FRAME, OTHER_SIZE):  # still written, with null geometry
        frame = records(out, f"run1_{k:06d}")
        assert frame and all(r["centroid"] is None and r["extent"] is None
                             and r["valid_depth_points"] == 0 for r in frame)
    assert f"@{100_205_000_000}: no 3D geometry: no depth message on {DEPTH} within " \
        "sync_slop (0.05 s) of the colour stamp" in caplog.text
    assert "depth frame_id 'other' is not the colour image's 'cam'" in caplog.text
    assert "depth is 80x60 but colour is 160x120" in caplog.text
    err = capsys.readouterr().err
    assert "5 frame(s) segmented, 0 skipped" in err
    assert "3 frame(s) without 3D geometry (null centroids):\n  - 1 no depth within " \
        "sync_slop, first: " in err


@pytest.mark.parametrize("flags, words", [
    (["IMAGE", "--depth-topic", DEPTH],
     "--depth-topic reads depth from rosbag2 bags: every input must be a bag"),
    (["BAG", "--depth-topic", "/nope"],
     f"has no sensor_msgs/msg/Image topic '/nope' for --depth-topic; its Image topics: {DEPTH}, "
     f"{COLOUR}"),
    (["BAG", "--depth-topic", DEPTH, "--depth", "DIR", "--camera-info", "IMAGE"],
     "--depth-topic reads depth and CameraInfo from the bags: not with --depth"),
    (["BAG", "--camera-info-topic", "/camera/color/camera_info"],
     "--camera-info-topic goes with --depth-topic"),
    (["BAG", "--depth-topic", DEPTH, "--camera-info-topic", "/nope"],
     "has no sensor_msgs/msg/CameraInfo topic '/nope'; its CameraInfo topics: "
     "/camera/color/camera_info"),
    (["NO_INFO", "--depth-topic", DEPTH],
     "has no sensor_msgs/msg/CameraInfo topic '/camera/color/camera_info' (the sibling of "
     f"{COLOUR}; choose another with --camera-info-topic); its CameraInfo topics: none"),
])
def test_bad_3d_flags_for_bags_are_refused_before_models_load(tmp_path, capsys, flags, words):
    camera_bag(tmp_path / "bag", np.zeros((12, 16, 3), np.uint8))
    camera_bag(tmp_path / "no_info", np.zeros((12, 16, 3), np.uint8), info=False)
    for folder in ("images", "other"):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / "a.png"), np.zeros((12, 16, 3), np.uint8))
    (tmp_path / "depth").mkdir()
    swap = {"BAG": tmp_path / "bag", "NO_INFO": tmp_path / "no_info", "DIR": tmp_path / "depth",
            "IMAGE": tmp_path / "images/a.png", "OTHER/a.png": tmp_path / "other/a.png",
            "OUT": tmp_path / "out"}
    # weights that are missing would be refused after the flags: the message tells which
    assert main([str(swap.get(f, f)) for f in flags] + [
        "--vocab", "mug", "--offline", "--cache-dir", str(tmp_path / "empty")]) == 2
    assert words in capsys.readouterr().err

