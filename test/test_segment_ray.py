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

from ovseg_ros.offline.cli import main

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
    segment = [
        str(image),
        "--vocab",
        "mug",
        "--out",
        str(tmp_path / "out"),
        *settings_flags(tiny_settings),
    ]
    code = (
        f"import sys; sys.path.insert(0, {str(TEST_DIR)!r}); import tiny_models; "
        f"tiny_models.register_tiny_clip(__import__('pathlib').Path({str(tmp_path)!r})); "
        "from ovseg_ros.offline.cli import main; from ovseg_ros.evaluation import cli; "
        f"assert main({segment!r}) == 0; "
        f"assert cli.main(['--dataset', 'ade20k-150', '--root', {str(tmp_path)!r}]) == 2; "
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out/x_labels.png").is_file()


def test_files_over_ray_equal_the_single_process_run(tmp_path, tiny_settings, ray_cluster, capsys):
    """Three inputs, three shards: a folder with x.png, another x.png (x_2 in both runs,
    though no shard sees the other's x), a two-frame video."""
    small_image(tmp_path / "a/x.png")
    other = small_image(tmp_path / "b/x.png", shift=20)
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (96, 72))
    for shift in (0, 30):
        writer.write(cv2.imread(str(small_image(tmp_path / f"frame{shift}.png", shift))))
    writer.release()
    inputs = [
        str(tmp_path / "a"),
        str(other),
        str(video),
        "--vocab",
        "mug, book",
        "--quiet",
        *settings_flags(tiny_settings),
        "--templates",
        "single",
    ]
    assert main([*inputs, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    assert main([*inputs, "--out", str(tmp_path / "ray"), "--ray", "auto"]) == 0
    assert "4 frame(s) segmented, 0 skipped" in capsys.readouterr().err
    plain, remote = outputs(tmp_path / "plain"), outputs(tmp_path / "ray")
    assert {Path(name).stem.split(".")[0] for name in plain if name.endswith(".json")} == {
        "x",
        "x_2",
        "clip_000000",
        "clip_000001",
    }
    assert plain["x_2.json"]["source"] == str(other)
    assert list(remote) == list(plain)  # same names, nothing staged left behind
    assert remote == plain


def test_an_input_that_keeps_failing_is_named_and_the_others_are_written(
    tmp_path, tiny_settings, ray_cluster, capsys
):
    """poison.png fails on every read in a worker, flaky.png on its first only."""
    for name in ("ok", "poison", "flaky"):
        small_image(tmp_path / "in" / f"{name}.png")
    out = tmp_path / "out"
    code = main(
        [str(tmp_path / "in" / n) for n in ("ok.png", "poison.png", "flaky.png")]
        + [
            "--vocab",
            "mug",
            "--out",
            str(out),
            "--quiet",
            "--ray",
            "auto",
            *settings_flags(tiny_settings),
            "--templates",
            "single",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "2 frame(s) segmented, 0 skipped" in err
    assert (
        f"1 shard(s) failed 2 time(s), their outputs are missing:\n  - "
        f"{tmp_path / 'in/poison.png'}: InjectedFailure: injected failure reading "
        "poison.png (try 2)"
    ) in err
    assert attempts(tmp_path / "in/poison.png") == 2
    assert attempts(tmp_path / "in/flaky.png") == 2
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{stem}{suffix}"
        for stem in ("ok", "flaky")
        for suffix in ("_overlay.png", "_labels.png", "_instances.png", ".json")
    )


def test_a_unique_name_too_long_to_write_fails_as_in_the_single_process_run(
    tmp_path, tiny_settings, ray_cluster, capsys, caplog
):
    """A 241-character stem fits every output name (NAME_MAX 255); the second input's
    claimed name (stem + '_2') does not fit '_instances.png': no file of it is kept."""
    stem = "n" * 241
    inputs = [str(small_image(tmp_path / f"{folder}/{stem}.png")) for folder in "ab"]
    inputs += ["--vocab", "mug", "--quiet", *settings_flags(tiny_settings), "--templates", "single"]
    assert main([*inputs, "--out", str(tmp_path / "plain")]) == 1
    capsys.readouterr()
    assert main([*inputs, "--out", str(tmp_path / "ray"), "--ray", "auto"]) == 1
    assert "1 frame(s) segmented, 0 skipped, 1 not written" in capsys.readouterr().err
    assert f"{inputs[1]} not written: cannot write" in caplog.text
    assert "File name too long" in caplog.text
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(
        p.name for p in (tmp_path / "plain").iterdir()
    )
    assert len(list((tmp_path / "ray").iterdir())) == 4


def test_bags_over_ray_equal_the_single_process_run(tmp_path, tiny_settings, ray_cluster, capsys):
    """Two bags as in the plain run; a third that fails after it was segmented leaves no
    partial bag and is named."""
    pytest.importorskip("rosbags")
    from test_bag_writer import camera_bag

    for name in ("run1", "run2", "run3_poison"):
        camera_bag(tmp_path / "in" / name, frames=2)
    flags = [
        "--vocab",
        "mug, chair",
        "--quiet",
        *settings_flags(tiny_settings),
        "--templates",
        "single",
    ]
    bags = [str(tmp_path / "in" / name) for name in ("run1", "run2")]
    assert main([*bags, "--bag-out", str(tmp_path / "plain"), *flags]) == 0
    capsys.readouterr()
    code = main(
        [
            *bags,
            str(tmp_path / "in/run3_poison"),
            "--bag-out",
            str(tmp_path / "ray"),
            "--ray",
            "auto",
            *flags,
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert (
        f"{tmp_path / 'in/run3_poison'}: InjectedFailure: injected failure after "
        "segmenting run3_poison" in err
    )
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == ["run1", "run2"]

    for name in ("run1", "run2"):
        assert f"{tmp_path / 'ray' / name}: 2 frame(s) written" in err
        plain = bag_messages(tmp_path / "plain" / name)
        assert len(plain) > 8 and bag_messages(tmp_path / "ray" / name) == plain


def bag_messages(bag: Path) -> list:
    """(topic, log time, CDR bytes) of every message of a bag."""
    from rosbags.highlevel import AnyReader

    from ovseg_ros.offline import bag_types

    with AnyReader([bag], default_typestore=bag_types.typestore()) as reader:
        return [(c.topic, t, bytes(raw)) for c, t, raw in reader.messages()]


def test_bags_with_depth_and_track_over_ray_equal_the_single_process_run(
    tmp_path, tiny_settings, ray_cluster, capsys
):
    """A bag is one shard that pairs its depth and tracks its frames, written as a bag
    (markers and 3D detections too) and as files."""
    pytest.importorskip("rosbags")
    from test_bag_depth import DEPTH, camera_bag

    bag = tmp_path / "run1"
    camera_bag(bag, cv2.cvtColor(cv2.resize(cv2.imread(str(EXAMPLE)), (96, 72)), cv2.COLOR_BGR2RGB))
    flags = [
        str(bag),
        "--depth-topic",
        DEPTH,
        "--track",
        "--vocab",
        "mug, chair",
        "--quiet",
        *settings_flags(tiny_settings),
        "--templates",
        "single",
    ]
    for ray in ([], ["--ray", "auto"]):
        kind = "ray" if ray else "plain"
        assert main([*flags, "--bag-out", str(tmp_path / f"{kind}_bag"), *ray]) == 0
        assert main([*flags, "--out", str(tmp_path / f"{kind}_files"), *ray]) == 0
    assert "3 frame(s) without 3D geometry" in capsys.readouterr().err
    plain = bag_messages(tmp_path / "plain_bag")
    assert "/ovseg/markers" in {topic for topic, _, _ in plain}
    assert bag_messages(tmp_path / "ray_bag") == plain
    files = outputs(tmp_path / "plain_files")
    assert files["run1_000001.json"]["instances"][0]["track_id"] == 1
    assert files["run1_000001.json"]["instances"][0]["centroid"] is not None
    assert outputs(tmp_path / "ray_files") == files


def test_depth_files_over_ray_equal_the_single_process_run(tmp_path, tiny_settings, ray_cluster):
    """Each image is a shard that reads its depth file; the depth folder is one every Ray
    node reads (here, this machine)."""
    for name in ("a", "b"):
        small_image(tmp_path / "in" / f"{name}.png")
    (tmp_path / "depth").mkdir()
    cv2.imwrite(str(tmp_path / "depth/a.png"), np.full((72, 96), 1500, np.uint16))
    info = tmp_path / "K.yaml"
    info.write_text("camera_matrix: {rows: 3, cols: 3, data: [100, 0, 48, 0, 100, 36, 0, 0, 1]}\n")
    flags = [
        str(tmp_path / "in"),
        "--depth",
        str(tmp_path / "depth"),
        "--camera-info",
        str(info),
        "--vocab",
        "mug, chair",
        "--quiet",
        *settings_flags(tiny_settings),
        "--templates",
        "single",
    ]
    assert main([*flags, "--out", str(tmp_path / "plain")]) == 0
    assert main([*flags, "--out", str(tmp_path / "ray"), "--ray", "auto"]) == 0
    plain = outputs(tmp_path / "plain")
    assert plain["a.json"]["instances"][0]["centroid"][2] == pytest.approx(1.5)
    assert plain["b.json"]["instances"][0]["centroid"] is None
    assert outputs(tmp_path / "ray") == plain


def test_ray_missing_is_one_clear_error(tmp_path, tiny_settings, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    code = main(
        [
            str(small_image(tmp_path / "x.png")),
            "--vocab",
            "mug",
            "--out",
            str(tmp_path / "out"),
            "--ray",
            "auto",
            *settings_flags(tiny_settings),
        ]
    )
    assert code == 2
    assert "--ray needs Ray: pip install 'ovseg_ros[ray]'" in capsys.readouterr().err
