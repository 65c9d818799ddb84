"""ovseg-segment --depth/--camera-info (3D per instance) and --track (ids across frames) with
the tiny models."""

import json

import cv2
import numpy as np
import pytest
import yaml
from test_cli import EXAMPLE, settings_flags

from ovseg_ros.offline.cli import main

FX, FY, CX, CY = 200.0, 180.0, 80.0, 60.0


def write_inputs(tmp_path, names=("a", "b")):
    frames = tmp_path / "frames"
    frames.mkdir()
    image = cv2.resize(cv2.imread(str(EXAMPLE)), (160, 120))
    for name in names:
        cv2.imwrite(str(frames / f"{name}.png"), image)
    info = tmp_path / "K.yaml"
    info.write_text(
        yaml.safe_dump(
            {
                "image_width": 160,
                "image_height": 120,
                "camera_matrix": {
                    "rows": 3,
                    "cols": 3,
                    "data": [FX, 0.0, CX, 0.0, FY, CY, 0.0, 0.0, 1.0],
                },
            }
        )
    )
    return frames, info


def records(out, name):
    return json.loads((out / f"{name}.json").read_text())["instances"]


def check_at_2_m(located: list[dict]) -> None:
    """Instances in front of a flat depth of 2 m, seen through FX, FY, CX, CY."""
    assert located, "the tiny models found no instance in the test image"
    for instance in located:
        x, y, w, h = instance["bbox"]
        cx, cy, cz = instance["centroid"]
        assert cz == pytest.approx(2.0) and instance["extent"][2] == pytest.approx(0.0)
        # the centroid lies inside the instance's box, back-projected at 2 m
        assert (x - CX) * 2 / FX - 1e-6 <= cx <= (x + w - 1 - CX) * 2 / FX + 1e-6
        assert (y - CY) * 2 / FY - 1e-6 <= cy <= (y + h - 1 - CY) * 2 / FY + 1e-6
        assert 0 < instance["valid_depth_points"] <= instance["area"]


def test_depth_gives_each_instance_its_3d_centroid_in_metres(tiny_settings, tmp_path, caplog):
    frames, info = write_inputs(tmp_path)
    depth = tmp_path / "depth"
    depth.mkdir()
    cv2.imwrite(str(depth / "a.png"), np.full((120, 160), 2000, np.uint16))  # 2 m, in mm
    out = tmp_path / "out"
    code = main(
        [
            str(frames),
            "--vocab",
            "mug, book, table",
            "--out",
            str(out),
            "--quiet",
            "--depth",
            str(depth),
            "--camera-info",
            str(info),
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 0
    check_at_2_m(records(out, "a"))
    # b has no depth file: NaN geometry (null in JSON), logged, still written
    assert all(r["centroid"] is None and r["valid_depth_points"] == 0 for r in records(out, "b"))
    assert "b.png: no 3D geometry: no depth file" in caplog.text


def test_track_keeps_the_ids_of_the_same_objects_in_the_next_frame(tiny_settings, tmp_path):
    frames, _ = write_inputs(tmp_path)
    out = tmp_path / "out"
    assert (
        main(
            [
                str(frames),
                "--vocab",
                "mug, book, table",
                "--out",
                str(out),
                "--quiet",
                "--track",
                *settings_flags(tiny_settings),
            ]
        )
        == 0
    )
    first, second = records(out, "a"), records(out, "b")
    assert first and [r["track_id"] for r in first] == list(range(1, len(first) + 1))
    assert [r["track_id"] for r in second] == [r["track_id"] for r in first]
    plain = tmp_path / "plain"
    assert (
        main(
            [
                str(frames),
                "--vocab",
                "mug, book, table",
                "--out",
                str(plain),
                "--quiet",
                *settings_flags(tiny_settings),
            ]
        )
        == 0
    )
    assert all(r["track_id"] == 0 for r in records(plain, "b"))


@pytest.mark.parametrize(
    "flags, words",
    [
        (["--depth", "DEPTH"], "--depth and --camera-info go together"),
        (["--depth", "nowhere", "--camera-info", "K"], "is not a folder"),
        (["--depth", "DEPTH", "--camera-info", "BAD"], "has no 3x3 camera matrix"),
        (["--depth", "DEPTH", "--camera-info", "TEN"], "has no 3x3 camera matrix"),
    ],
)
def test_bad_3d_flags_are_refused_before_models_load(tmp_path, capsys, flags, words):
    frames, info = write_inputs(tmp_path, names=("a",))
    (tmp_path / "depth").mkdir()
    (tmp_path / "bad.yaml").write_text("camera_matrix: {data: [1, 2]}\n")
    (tmp_path / "ten.yaml").write_text("k: [600, 0, 320, 0, 600, 240, 0, 0, 1, 5]\n")
    swap = {
        "DEPTH": str(tmp_path / "depth"),
        "K": str(info),
        "BAD": str(tmp_path / "bad.yaml"),
        "TEN": str(tmp_path / "ten.yaml"),
    }
    assert (
        main(
            [
                str(frames),
                "--vocab",
                "mug",
                "--out",
                str(tmp_path / "o"),
                *[swap.get(f, f) for f in flags],
            ]
        )
        == 2
    )
    assert words in capsys.readouterr().err


def test_track_ids_start_again_at_each_video(tiny_settings, tmp_path):
    """Each video is its own stream: the second one's ids start at 1 (its pictures are
    another size, so they would continue after the first video's ids otherwise)."""
    image = cv2.imread(str(EXAMPLE))
    for name, size in (("first", (160, 120)), ("second", (96, 72))):
        writer = cv2.VideoWriter(
            str(tmp_path / f"{name}.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, size
        )
        writer.write(cv2.resize(image, size))
        writer.release()
    out = tmp_path / "out"
    assert (
        main(
            [
                str(tmp_path / "first.avi"),
                str(tmp_path / "second.avi"),
                "--vocab",
                "mug, book, table",
                "--out",
                str(out),
                "--quiet",
                "--track",
                *settings_flags(tiny_settings),
            ]
        )
        == 0
    )
    for name in ("first_000000", "second_000000"):
        ids = [r["track_id"] for r in records(out, name)]
        assert ids and ids == list(range(1, len(ids) + 1)), name


@pytest.mark.parametrize(
    "text, first_row",
    [
        # camera_calibration's file: the projection matrix wins over the camera matrix
        (
            "camera_matrix: {rows: 3, cols: 3, data: [600, 0, 320, 0, 600, 240, 0, 0, 1]}\n"
            "projection_matrix: {rows: 3, cols: 4, "
            "data: [540, 0, 331, 0, 0, 540, 236, 0, 0, 0, 1, 0]}\n",
            [540.0, 0.0, 331.0],
        ),
        # ... unless it is all zeros (no rectification)
        (
            "camera_matrix: {rows: 3, cols: 3, data: [600, 0, 320, 0, 600, 240, 0, 0, 1]}\n"
            "projection_matrix: {rows: 3, cols: 4, data: [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}\n",
            [600.0, 0.0, 320.0],
        ),
        # a CameraInfo as ros2 topic echo prints it: lowercase k and p
        (
            "k: [600, 0, 320, 0, 600, 240, 0, 0, 1]\n"
            "p: [540, 0, 331, 0, 0, 540, 236, 0, 0, 0, 1, 0]\n",
            [540.0, 0.0, 331.0],
        ),
        ("k: [600, 0, 320, 0, 600, 240, 0, 0, 1]\n", [600.0, 0.0, 320.0]),
    ],
)
def test_the_calibration_file_gives_p_as_image_geometry_takes_it(tmp_path, text, first_row):
    from ovseg_ros.offline.depth_files import read_camera_info

    (tmp_path / "info.yaml").write_text(text)
    assert read_camera_info(tmp_path / "info.yaml")[0].tolist() == first_row


def test_a_projection_matrix_that_is_not_3x4_is_refused(tmp_path):
    from ovseg_ros.offline.depth_files import read_camera_info
    from ovseg_ros.scene.geometry import DepthError

    (tmp_path / "info.yaml").write_text("k: [600, 0, 320, 0, 600, 240, 0, 0, 1]\np: [1, 2, 3]\n")
    with pytest.raises(DepthError, match="projection matrix that is not 3x4"):
        read_camera_info(tmp_path / "info.yaml")


def test_frames_without_3d_are_logged_once_per_cause_and_counted(
    tiny_settings, tmp_path, caplog, capsys
):
    """a: depth at 2 m; b, c: no depth file; d: a truncated (undecodable) depth PNG; e: a
    truncated .npy. All five are segmented and written; b and d are logged (the first of
    each cause), c and e are only counted in the summary; their instances have null 3D; the
    run does not fail."""
    frames, info = write_inputs(tmp_path, names=("a", "b", "c", "d", "e"))
    depth = tmp_path / "depth"
    depth.mkdir()
    cv2.imwrite(str(depth / "a.png"), np.full((120, 160), 2000, np.uint16))
    whole = cv2.imencode(".png", np.full((120, 160), 2000, np.uint16))[1].tobytes()
    (depth / "d.png").write_bytes(whole[: len(whole) // 2])
    np.save(depth / "e.npy", np.full((120, 160), 2.0, np.float32))
    (depth / "e.npy").write_bytes((depth / "e.npy").read_bytes()[:200])
    out = tmp_path / "out"
    code = main(
        [
            str(frames),
            "--vocab",
            "mug, book, table",
            "--out",
            str(out),
            "--quiet",
            "--depth",
            str(depth),
            "--camera-info",
            str(info),
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 0
    check_at_2_m(records(out, "a"))
    for name in ("b", "c", "d", "e"):
        assert records(out, name), name
        assert all(
            r["centroid"] is None and r["valid_depth_points"] == 0 for r in records(out, name)
        ), name
    logged = [r.getMessage() for r in caplog.records if "no 3D geometry" in r.getMessage()]
    assert len(logged) == 2, logged
    assert logged[0].startswith(f"{frames / 'b.png'}: no 3D geometry: no depth file")
    assert logged[1].startswith(
        f"{frames / 'd.png'}: no 3D geometry: {depth / 'd.png'} is not a readable depth image"
    )
    summary = capsys.readouterr().err
    assert "4 frame(s) without 3D geometry" in summary
    assert f"2 no depth file, first: {frames / 'b.png'}" in summary
    assert f"2 unreadable depth file, first: {frames / 'd.png'}" in summary
