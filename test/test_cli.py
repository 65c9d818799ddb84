"""ovseg-segment end to end with tiny weights where the real ones would be, plus its errors."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np
import pytest
from image_files import oversized_png
from pycocotools import mask as coco_mask

from ovseg_ros.offline.cli import build_parser, load_settings, main
from ovseg_ros.offline.inputs import InputError, bag_frames, expand_inputs, read_frames
from ovseg_ros.segmentation.panoptic import UNLABELLED

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "desk.jpg"


def settings_flags(tiny_settings):
    s = tiny_settings
    return [
        "--cache-dir",
        s.cache_dir,
        "--clip-model",
        s.clip_model,
        "--clip-pretrained",
        s.clip_pretrained,
        "--offline",
        "--device",
        "cpu",
        "--points-per-side",
        str(s.points_per_side),
        "--pred-iou-thresh",
        str(s.pred_iou_thresh),
        "--stability-score-thresh",
        str(s.stability_score_thresh),
        "--max-image-side",
        "320",
    ]


def check_frame_outputs(out: Path, name: str, vocabulary: list[str]):
    overlay = cv2.imread(str(out / f"{name}_overlay.png"), cv2.IMREAD_UNCHANGED)
    labels = cv2.imread(str(out / f"{name}_labels.png"), cv2.IMREAD_UNCHANGED)
    instances = cv2.imread(str(out / f"{name}_instances.png"), cv2.IMREAD_UNCHANGED)
    record = json.loads((out / f"{name}.json").read_text())
    height, width = record["height"], record["width"]
    assert overlay.shape == (height, width, 3) and overlay.dtype == np.uint8
    assert labels.shape == instances.shape == (height, width)
    assert labels.dtype == instances.dtype == np.uint16
    assert record["vocabulary"] == vocabulary
    assert set(np.unique(labels)) <= set(range(len(vocabulary))) | {UNLABELLED}
    assert set(np.unique(instances)) <= set(range(len(record["instances"]) + 1))
    for index, instance in enumerate(record["instances"]):
        assert instance["id"] == index + 1
        assert instance["label"] == vocabulary[instance["class_index"]]
        rle = dict(instance["mask"], counts=instance["mask"]["counts"].encode())
        decoded = coco_mask.decode(rle).astype(bool)
        assert np.array_equal(decoded, instances == instance["id"])
        assert decoded.sum() == instance["area"] > 0
        assert np.all(labels[decoded] == instance["class_index"])
        assert 0.0 <= instance["score"] <= 1.0
    return record


def test_image_end_to_end_with_weights_in_the_cache(tiny_settings, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            str(EXAMPLE),
            "--vocab",
            "mug, book, table, wall",
            "--out",
            str(out),
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 0
    record = check_frame_outputs(out, "desk", ["mug", "book", "table", "wall"])
    assert (record["height"], record["width"]) == (480, 640)
    assert set(record["timings_ms"]) >= {"proposals", "classify", "fuse", "total"}
    assert "1 frame(s) segmented, 0 skipped" in capsys.readouterr().err


def test_folder_with_a_bad_image_and_a_video(tiny_settings, tmp_path, capsys, caplog):
    frames = tmp_path / "frames"
    frames.mkdir()
    image = cv2.resize(cv2.imread(str(EXAMPLE)), (160, 120))
    cv2.imwrite(str(frames / "a.png"), image)
    (frames / "broken.png").write_bytes(b"\x89PNG not really")
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (160, 120))
    for shift in range(3):
        writer.write(np.roll(image, shift * 10, axis=1))
    writer.release()
    vocab_file = tmp_path / "classes.txt"
    vocab_file.write_text("mug\nbook\n")
    out = tmp_path / "out"
    code = main(
        [
            str(frames),
            str(video),
            "--vocab-file",
            str(vocab_file),
            "--out",
            str(out),
            "--quiet",
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 0
    assert "broken.png: not a readable image" in caplog.text
    assert "4 frame(s) segmented, 1 skipped" in capsys.readouterr().err
    for name in ("a", "clip_000000", "clip_000001", "clip_000002"):
        check_frame_outputs(out, name, ["mug", "book"])


def test_image_over_opencvs_pixel_limit_is_skipped_and_the_rest_is_segmented(
    tiny_settings, tmp_path, capsys, caplog
):
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "a_huge.png").write_bytes(oversized_png())
    cv2.imwrite(str(frames / "b.png"), cv2.resize(cv2.imread(str(EXAMPLE)), (160, 120)))
    code = main(
        [
            str(frames),
            "--vocab",
            "mug",
            "--out",
            str(tmp_path / "out"),
            "--quiet",
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 0
    assert "a_huge.png: the image is larger than OpenCV's pixel limit" in caplog.text
    assert "1 frame(s) segmented, 1 skipped" in capsys.readouterr().err
    check_frame_outputs(tmp_path / "out", "b", ["mug"])


def test_a_failed_write_is_an_error_and_the_exit_code_says_so(
    tiny_settings, tmp_path, capsys, caplog
):
    """A 245-character input name gives output names over NAME_MAX (255 bytes)."""
    frames = tmp_path / "frames"
    frames.mkdir()
    small = cv2.resize(cv2.imread(str(EXAMPLE)), (160, 120))
    cv2.imwrite(str(frames / ("n" * 245 + ".png")), small)
    cv2.imwrite(str(frames / "ok.png"), small)
    out = tmp_path / "out"
    code = main(
        [
            str(frames),
            "--vocab",
            "mug",
            "--out",
            str(out),
            "--quiet",
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 1
    assert "not written: cannot write" in caplog.text and "File name too long" in caplog.text
    assert "1 frame(s) segmented, 0 skipped, 1 not written" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [
        "ok.json",
        "ok_instances.png",
        "ok_labels.png",
        "ok_overlay.png",
    ]


def small_example(folder: Path) -> Path:
    """desk.jpg at 160 x 120, for tests where the picture's size does not matter."""
    path = folder / "desk.png"
    cv2.imwrite(str(path), cv2.resize(cv2.imread(str(EXAMPLE)), (160, 120)))
    return path


def test_a_full_disk_leaves_no_partial_outputs(
    tiny_settings, tmp_path, capsys, caplog, monkeypatch
):
    import errno

    image = small_example(tmp_path)

    real_write = Path.write_bytes

    def full_for_json(self, data):
        if self.suffix == ".json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full_for_json)
    out = tmp_path / "out"
    code = main([str(image), "--vocab", "mug", "--out", str(out), *settings_flags(tiny_settings)])
    assert code == 1
    assert "desk.json: No space left on device" in caplog.text
    assert "0 frame(s) segmented, 0 skipped, 1 not written" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def can_create_a_file_in(folder: str) -> bool:
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def test_an_unusable_out_is_refused_before_the_models_load(tmp_path, capsys):
    """The cache is empty and offline: had the models been looked for, the error would name
    the missing weights instead."""
    a_file = tmp_path / "taken"
    a_file.write_text("")
    common = [str(EXAMPLE), "--vocab", "mug", "--cache-dir", str(tmp_path / "empty"), "--offline"]
    assert main([*common, "--out", str(a_file)]) == 2
    assert f"--out {a_file} is an existing file, not a folder" in capsys.readouterr().err
    assert main([*common, "--out", str(a_file / "sub")]) == 2
    assert "is not a writable folder: Not a directory" in capsys.readouterr().err
    if Path("/sys").is_dir() and not can_create_a_file_in("/sys"):  # even as root
        assert main([*common, "--out", "/sys"]) == 2
        assert "--out /sys is not a writable folder" in capsys.readouterr().err


def test_output_names_never_collide(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
    image = np.zeros((8, 8, 3), np.uint8)
    for name in ("a/x.png", "a/x_2.png", "b/x.png", "b/X.png", "clip_000000.png"):
        cv2.imwrite(str(tmp_path / name), image)
    writer = cv2.VideoWriter(str(tmp_path / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (8, 8))
    for _ in range(2):
        writer.write(image)
    writer.release()
    inputs = [str(tmp_path / p) for p in ("a", "b", "clip.avi", "clip_000000.png")]
    named = [
        (Path(f.source.split("#")[0]).relative_to(tmp_path).as_posix(), f.name)
        for f in read_frames(expand_inputs(inputs), {})
    ]
    assert named == [
        ("a/x.png", "x"),
        ("a/x_2.png", "x_2"),
        ("b/X.png", "X_3"),
        ("b/x.png", "x_4"),
        ("clip.avi", "clip_000000"),
        ("clip.avi", "clip_000001"),
        ("clip_000000.png", "clip_000000_2"),
    ]


def test_exit_1_when_nothing_could_be_segmented(tiny_settings, tmp_path, capsys):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    code = main(
        [
            str(broken),
            "--vocab",
            "mug",
            "--out",
            str(tmp_path / "out"),
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 1
    assert "0 frame(s) segmented, 1 skipped" in capsys.readouterr().err


def test_stuff_classes_are_marked_in_the_json(tiny_settings, tmp_path):
    """One class, so every instance has it: stuff with --stuff, a thing without."""
    image = small_example(tmp_path)
    for stuff, is_thing in ((["--stuff", "wall"], False), ([], True)):
        out = tmp_path / f"out_{is_thing}"
        assert (
            main(
                [
                    str(image),
                    "--vocab",
                    "wall",
                    "--out",
                    str(out),
                    *stuff,
                    *settings_flags(tiny_settings),
                ]
            )
            == 0
        )
        instances = check_frame_outputs(out, "desk", ["wall"])["instances"]
        assert instances and all(i["is_thing"] is is_thing for i in instances)


def test_flags_override_the_config_file(tmp_path):
    config = tmp_path / "params.yaml"
    config.write_text(
        "/robot:\n  cam_seg:\n    ros__parameters:\n      use_sim_time: true\n"
        "      granularity: 0.3\n      points_per_side: 4\n"
        "      stuff_classes: [floor]\n"
    )
    args = build_parser().parse_args(
        [
            str(EXAMPLE),
            "--vocab",
            "mug",
            "--config",
            str(config),
            "--node-name",
            "cam_seg",
            "--granularity",
            "0.9",
            "--stuff",
            "wall, sky",
        ]
    )
    settings = load_settings(args)
    assert settings.granularity == 0.9 and settings.stuff_classes == ["wall", "sky"]
    assert settings.points_per_side == 4  # from the file, no flag


def test_config_errors_are_reported_before_the_models_load(tmp_path, capsys):
    config = tmp_path / "params.yaml"
    config.write_text("/**:\n  ros__parameters:\n    granularty: 0.3\n")
    assert main([str(EXAMPLE), "--vocab", "mug", "--config", str(config)]) == 2
    assert "did you mean 'granularity'?" in capsys.readouterr().err


def write_bag(path: Path, image: np.ndarray, storage: str = "SQLITE3") -> None:
    """A rosbag2 bag as ros2 bag record writes it: two frames and a truncated one on
    /camera/image_raw (rgb8, bgr8), one JPEG on /camera/image/compressed, and a String."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types = store.types
    header = types["std_msgs/msg/Header"](
        stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="camera"
    )

    def raw(pixels, encoding, data=None):
        height, width = pixels.shape[:2]
        data = pixels.reshape(-1) if data is None else data
        return types["sensor_msgs/msg/Image"](
            header=header,
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=0,
            step=width * 3,
            data=data,
        )

    messages = [
        ("/camera/image_raw", "sensor_msgs/msg/Image", raw(image, "rgb8")),
        ("/camera/image_raw", "sensor_msgs/msg/Image", raw(image[..., ::-1].copy(), "bgr8")),
        ("/camera/image_raw", "sensor_msgs/msg/Image", raw(image, "rgb8", image.reshape(-1)[:100])),
        (
            "/camera/image/compressed",
            "sensor_msgs/msg/CompressedImage",
            types["sensor_msgs/msg/CompressedImage"](
                header=header,
                format="jpeg",
                data=np.frombuffer(cv2.imencode(".jpg", image[..., ::-1])[1], np.uint8),
            ),
        ),
        ("/chatter", "std_msgs/msg/String", types["std_msgs/msg/String"](data="hello")),
    ]
    with Writer(path, version=8, storage_plugin=StoragePlugin[storage]) as writer:
        connections = {}
        for stamp, (topic, msgtype, message) in enumerate(messages, start=1):
            if topic not in connections:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            writer.write(
                connections[topic], stamp * 1_000_000, store.serialize_cdr(message, msgtype)
            )


def test_rosbag2_bag_frames_of_one_topic(tiny_settings, tmp_path, capsys, caplog):
    pytest.importorskip("rosbags")
    image = cv2.cvtColor(cv2.resize(cv2.imread(str(EXAMPLE)), (160, 120)), cv2.COLOR_BGR2RGB)
    bag = tmp_path / "run1"
    write_bag(bag, image)
    out = tmp_path / "out"
    code = main(
        [
            str(bag),
            "--topic",
            "/camera/image_raw",
            "--vocab",
            "mug, book",
            "--out",
            str(out),
            "--quiet",
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 0
    assert "2 frame(s) segmented, 1 skipped" in capsys.readouterr().err
    assert "run1_000002" not in {p.stem for p in out.iterdir()}
    assert "data has 100 bytes but a 160x120 rgb8 image" in caplog.text
    first = check_frame_outputs(out, "run1_000000", ["mug", "book"])
    second = check_frame_outputs(out, "run1_000001", ["mug", "book"])
    assert first["source"] == f"{bag}:/camera/image_raw@1000000"
    # The bgr8 frame is the same picture: the same segmentation.
    assert first["instances"] == second["instances"]
    assert np.array_equal(
        cv2.imread(str(out / "run1_000000_labels.png"), cv2.IMREAD_UNCHANGED),
        cv2.imread(str(out / "run1_000001_labels.png"), cv2.IMREAD_UNCHANGED),
    )

    compressed = tmp_path / "out_compressed"
    code = main(
        [
            str(bag),
            "--topic",
            "/camera/image/compressed",
            "--vocab",
            "mug",
            "--out",
            str(compressed),
            "--quiet",
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 0
    check_frame_outputs(compressed, "run1_000000", ["mug"])


def test_rosbag2_mcap_and_sqlite3_bags_give_the_same_frames(tmp_path):
    pytest.importorskip("rosbags")
    image = np.random.default_rng(0).integers(0, 256, (12, 16, 3), dtype=np.uint8)
    frames = {}
    for storage in ("SQLITE3", "MCAP"):
        write_bag(tmp_path / storage, image, storage)
        frames[storage] = list(bag_frames(tmp_path / storage, "/camera/image_raw", "b"))
    for sqlite, mcap in zip(frames["SQLITE3"], frames["MCAP"], strict=True):
        assert sqlite.name == mcap.name and sqlite.problem == mcap.problem
        if sqlite.image is not None:
            assert np.array_equal(sqlite.image, image) and np.array_equal(mcap.image, image)
    assert [f.image is None for f in frames["MCAP"]] == [False, False, True]


@pytest.mark.parametrize(
    "topic, words",
    [
        (
            None,
            "choose the image topic with --topic; the bag's sensor_msgs/Image and "
            "CompressedImage topics: /camera/image/compressed, /camera/image_raw",
        ),
        ("/chatter", "has no sensor_msgs/Image or CompressedImage topic '/chatter'"),
    ],
)
def test_rosbag2_topic_is_checked_before_the_models_load(tmp_path, capsys, topic, words):
    pytest.importorskip("rosbags")
    bag = tmp_path / "run1"
    write_bag(bag, np.zeros((8, 8, 3), np.uint8))
    args = [str(bag), "--vocab", "mug", "--cache-dir", str(tmp_path / "empty"), "--offline"]
    assert main(args + (["--topic", topic] if topic else [])) == 2
    assert words in capsys.readouterr().err


def test_a_bags_storage_file_stands_for_its_folder_and_a_folder_may_be_named_mcap(tmp_path):
    pytest.importorskip("rosbags")
    bag = tmp_path / "run1"
    write_bag(bag, np.zeros((8, 8, 3), np.uint8))
    storage = next(bag.glob("*.db3"))
    assert expand_inputs([str(storage), str(bag)]) == [bag]  # once, through its folder
    named = tmp_path / "drive.mcap"
    write_bag(named, np.zeros((8, 8, 3), np.uint8), "MCAP")
    assert expand_inputs([str(named)]) == [named]
    lone = tmp_path / "lone.mcap"
    lone.write_bytes(next(named.glob("*.mcap")).read_bytes())
    with pytest.raises(InputError, match="there is none beside this file"):
        expand_inputs([str(lone)])


@pytest.mark.parametrize(
    "args, words",
    [
        (["--vocab", "mug,,book"], "entry 2 is blank"),
        (["--vocab", "mug", "--granularity", "2"], "granularity must be <= 1.0"),
        (["--vocab", "mug", "--config", "/nonexistent.yaml"], "config file not found"),
        (["--vocab", "mug", "--topic", "/camera/image_raw"], "--topic selects the image topic"),
    ],
)
def test_bad_arguments_exit_2_with_the_reason(args, words, capsys):
    assert main([str(EXAMPLE), *args]) == 2
    assert words in capsys.readouterr().err


def test_missing_input_is_named(capsys):
    assert main(["/no/such/image.png", "--vocab", "mug"]) == 2
    assert "input /no/such/image.png does not exist" in capsys.readouterr().err


def test_missing_weights_give_one_clear_message_and_no_traceback(tmp_path):
    """The README's main command on a machine without weights (offline so nothing is tried)."""
    empty_cache = tmp_path / "cache"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ovseg_ros.offline.cli",
            str(EXAMPLE),
            "--vocab",
            "mug, book",
            "--out",
            str(tmp_path / "out"),
            "--cache-dir",
            str(empty_cache),
            "--offline",
            "--device",
            "cpu",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "sam_vit_b_01ec64.pth" in run.stderr and str(empty_cache) in run.stderr
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in run.stderr
