"""ovseg-segment end to end with tiny weights where the real ones would be, plus its errors."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from ovseg_ros.cli import main
from ovseg_ros.panoptic import UNLABELLED

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "desk.jpg"


def settings_flags(tiny_settings):
    s = tiny_settings
    return ["--cache-dir", s.cache_dir, "--clip-model", s.clip_model, "--clip-pretrained",
            s.clip_pretrained, "--offline", "--device", "cpu", "--points-per-side",
            str(s.points_per_side), "--pred-iou-thresh", str(s.pred_iou_thresh),
            "--stability-score-thresh", str(s.stability_score_thresh), "--max-image-side", "320"]


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
    code = main([str(EXAMPLE), "--vocab", "mug, book, table, wall", "--out", str(out),
                 *settings_flags(tiny_settings)])
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
    code = main([str(frames), str(video), "--vocab-file", str(vocab_file), "--out", str(out),
                 "--quiet", *settings_flags(tiny_settings)])
    assert code == 0
    assert "broken.png: not a readable image" in caplog.text
    assert "4 frame(s) segmented, 1 skipped" in capsys.readouterr().err
    for name in ("a", "clip_000000", "clip_000001", "clip_000002"):
        check_frame_outputs(out, name, ["mug", "book"])


@pytest.mark.parametrize("args, words", [
    (["--vocab", "mug,,book"], "entry 2 is blank"),
    (["--vocab", "mug", "--granularity", "2"], "granularity must be <= 1.0"),
    (["--vocab", "mug", "--config", "/nonexistent.yaml"], "config file not found"),
])
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
        [sys.executable, "-m", "ovseg_ros.cli", str(EXAMPLE), "--vocab", "mug, book",
         "--out", str(tmp_path / "out"), "--cache-dir", str(empty_cache), "--offline",
         "--device", "cpu"],
        capture_output=True, text=True, cwd=REPO, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert "sam_vit_b_01ec64.pth" in run.stderr and str(empty_cache) in run.stderr
    assert "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth" in run.stderr
