"""ovseg-segment --ray on a real local Ray cluster (2 CPUs, conftest's ray_cluster): the
same files and bags as the single-process run, names kept unique across shards; an input
that keeps failing is retried once and named while the others are written; without --ray,
Ray is never imported."""

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ray_faults import attempts
from test_cli import EXAMPLE, settings_flags

from ovseg_ros.cli import main

TEST_DIR = Path(__file__).resolve().parent


def small_image(path: Path, shift: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.roll(cv2.resize(cv2.imread(str(EXAMPLE)), (96, 72)), shift, 1))
    return path


def outputs(out: Path) -> dict[str, object]:
    """Every file under out: PNG bytes, JSON without the timings."""
    files = {}
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        if path.suffix == ".json":
            record = json.loads(path.read_text())
            record.pop("timings_ms")
            files[str(path.relative_to(out))] = record
        else:
            files[str(path.relative_to(out))] = path.read_bytes()
    return files


def test_without_ray_flag_neither_cli_imports_ray(tmp_path, tiny_settings):
    """A whole ovseg-segment run, and ovseg-eval up to its dataset check."""
    image = small_image(tmp_path / "x.png")
    segment = [str(image), "--vocab", "mug", "--out", str(tmp_path / "out"),
               *settings_flags(tiny_settings)]
    code = (f"import sys; sys.path.insert(0, {str(TEST_DIR)!r}); import tiny_models; "
            f"tiny_models.register_tiny_clip(__import__('pathlib').Path({str(tmp_path)!r})); "
            "from ovseg_ros.cli import main; from ovseg_ros.evaluation import cli; "
            f"assert main({segment!r}) == 0; "
            f"assert cli.main(['--dataset', 'ade20k-150', '--root', {str(tmp_path)!r}]) == 2; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out/x_labels.png").is_file()


def test_files_over_ray_equal_the_single_process_run(tmp_path, tiny_settings, ray_cluster,
                                                     capsys):
    """Three inputs, three shards: a folder with x.png, another x.png (x_2 in both runs,
    though no shard sees the other's x), a two-frame video."""
    small_image(tmp_path / "a/x.png")
    other = small_image(tmp_path / "b/x.png", shift=20)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 72))
    for shift in (0, 30):
        writer.write(cv2.imread(str(small_image(tmp_path / f"frame{shift}.png", shift))))
    writer.release()
    inputs = [str(tmp_path / "a"), str(other), str(video), "--vocab", "mug, book", "--quiet",
              *settings_flags(tiny_settings), "--templates", "single"]
    assert main([*inputs, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert main([*inputs, "--out", str(tmp_path / "ray"), "--ray", "auto"]) == 0
    assert "4 frame(s) segmented, 0 skipped" in capsys.readouterr().err
    plain, remote = outputs(tmp_path / "plain"), outputs(tmp_path / "ray")
    assert {Path(name).stem.split(".")[0] for name in plain if name.endswith(".json")} == {
        "x", "x_2", "clip_000000", "clip_000001"}
    assert plain["x_2.json"]["source"] == str(other)
    assert list(remote) == list(plain)  # same names, nothing staged left behind
    assert remote == plain


def test_an_input_that_keeps_failing_is_named_and_the_others_are_written(
        tmp_path, tiny_settings, ray_cluster, capsys):
    """poison.png fails on every read in a worker, flaky.png on its first only."""
    for name in ("ok", "poison", "flaky"):
        small_image(tmp_path / "in" / f"{name}.png")
    out = tmp_path / "out"
    code = main([str(tmp_path / "in" / n) for n in ("ok.png", "poison.png", "flaky.png")]
                + ["--vocab", "mug", "--out", str(out), "--quiet", "--ray", "auto",
                   *settings_flags(tiny_settings), "--templates", "single"])
    assert code == 1
    err = capsys.readouterr().err
    assert "2 frame(s) segmented, 0 skipped" in err
    assert (f"1 shard(s) failed 2 time(s), their outputs are missing:\n  - "
            f"{tmp_path / 'in/poison.png'}: InjectedFailure: injected failure reading "
            "poison.png (try 2)") in err
    assert attempts(tmp_path / "in/poison.png") == 2
    assert attempts(tmp_path / "in/flaky.png") == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{suffix}" for stem in ("ok", "flaky")
        for suffix in ("_overlay.png", "_labels.png", "_instances.png", ".json"))


def test_a_unique_name_too_long_to_write_fails_as_in_the_single_process_run(
        tmp_path, tiny_settings, ray_cluster, capsys, caplog):
    """A 241-character stem fits every output name (NAME_MAX 255); the second input's
    claimed name (stem + '_2') does not fit '_instances.png': no file of it is kept."""
    stem = "n" * 241
    inputs = [str(small_image(tmp_path / f"{folder}/{stem}.png")) for folder in "ab"]
    inputs += ["--vocab", "mug", "--quiet", *settings_flags(tiny_settings),
               "--templates", "single"]
    assert main([*inputs, "--out", str(tmp_path / "plain")]) == 1
    capsys.readouterr()
    assert main([*inputs, "--out", str(tmp_path / "ray"), "--ray", "auto"]) == 1
    assert "1 frame(s) segmented, 0 skipped, 1 not written" in capsys.readouterr().err
    assert f"{inputs[1]} not written: cannot write" in caplog.text
    assert "File name too long" in caplog.text
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(
        p.name for p in (tmp_path / "plain").iterdir())
    assert len(list((tmp_path / "ray").iterdir())) == 4


def test_bags_over_ray_equal_the_single_process_run(tmp_path, tiny_settings, ray_cluster,
                                                    capsys):
    """Two bags as in the plain run; a third that fails after it was segmented leaves no
    partial bag and is named."""
    pytest.importorskip("rosbags")
    from rosbags.highlevel import AnyReader
    from test_bag_writer import camera_bag

    from ovseg_ros import bag_types

    for name in ("run1", "run2", "run3_poison"):
        camera_bag(tmp_path / "in" / name, frames=2)
    flags = ["--vocab", "mug, chair", "--quiet", *settings_flags(tiny_settings),
             "--templates", "single"]
    bags = [str(tmp_path / "in" / name) for name in ("run1", "run2")]
    assert main([*bags, "--bag-out", str(tmp_path / "plain"), *flags]) == 0
    capsys.readouterr()
    code = main([*bags, str(tmp_path / "in/run3_poison"), "--bag-out", str(tmp_path / "ray"),
                 "--ray", "auto", *flags])
    assert code == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'in/run3_poison'}: InjectedFailure: injected failure after " \
        "segmenting run3_poison" in err
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["run1", "run2"]

    def messages(bag: Path) -> list:
        with AnyReader([bag], default_typestore=bag_types.typestore()) as reader:
            return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]

    for name in ("run1", "run2"):
        assert f"{tmp_path / 'ray' / name}: 2 frame(s) written" in err
        plain = messages(tmp_path / "plain" / name)
        assert len(plain) > 8 and messages(tmp_path / "ray" / name) == plain


def test_ray_missing_is_one_clear_error(tmp_path, tiny_settings, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = main([str(small_image(tmp_path / "x.png")), "--vocab", "mug", "--out",
                 str(tmp_path / "out"), "--ray", "auto", *settings_flags(tiny_settings)])
    assert code == 2
    assert "--ray needs Ray: pip install 'ovseg_ros[ray]'" in capsys.readouterr().err
