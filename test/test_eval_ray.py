"""ovseg-eval --ray on a real local Ray cluster (2 CPUs, conftest's ray_cluster): the same
report as the plain run, also when a shard failed once; a shard that keeps failing is
retried once and named. (Ray not imported without --ray: test_segment_ray.)"""

import json
from functools import partial

import numpy as np
import tiny_models
from ray_faults import attempts
from test_eval import make_dataset, write_label


def ade_dataset(root, stems):
    root = make_dataset(root, "ade20k-150", stems=stems)
    rng = np.random.default_rng(6)
    for stem in stems:  # every class can occur, so the per-class IoUs say what was predicted
        write_label(
            root / f"annotations/validation/{stem}.png",
            rng.integers(0, 151, (24, 32), dtype=np.uint8),
        )
    return root


def test_ray_path_equals_the_plain_path_after_a_retry(tmp_path, tiny_settings, ray_cluster):
    """The image b_flaky fails on its first read in a worker: its shard is retried."""
    from ovseg_ros.evaluation import cli as eval_cli
    from ovseg_ros.segmentation.scale import shards

    assert shards(5, 2) == [[0, 1, 2], [3, 4]]
    root = ade_dataset(tmp_path / "ade", ("a", "b_flaky", "c"))
    settings = tiny_settings.replace(max_classes=150, templates="single")
    args = ["--dataset", "ade20k-150", "--root", str(root), "--quiet"]
    assert eval_cli.main([*args, "--out", str(tmp_path / "plain")], settings=settings) == 0
    setup = partial(tiny_models.register_tiny_clip, tmp_path / "clip_configs")
    assert (
        eval_cli.main(
            [*args, "--out", str(tmp_path / "ray"), "--ray", "auto"], settings=settings, setup=setup
        )
        == 0
    )
    assert attempts(root / "images/validation/b_flaky.jpg") == 2
    plain = json.loads((tmp_path / "plain/ade20k-150.json").read_text())
    remote = json.loads((tmp_path / "ray/ade20k-150.json").read_text())
    assert remote["images"] == plain["images"] == 3
    assert plain["semantic"]["pixel_accuracy"] > 0
    assert remote["semantic"] == plain["semantic"]


def test_a_shard_that_keeps_failing_is_retried_once_then_named(
    tmp_path, tiny_settings, ray_cluster, capsys
):
    from ovseg_ros.evaluation import cli as eval_cli

    root = ade_dataset(tmp_path / "ade", ("a", "b_poison", "c"))
    settings = tiny_settings.replace(max_classes=150, templates="single")
    code = eval_cli.main(
        [
            "--dataset",
            "ade20k-150",
            "--root",
            str(root),
            "--quiet",
            "--out",
            str(tmp_path / "ray"),
            "--ray",
            "auto",
        ],
        settings=settings,
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "1 shard(s) failed 2 time(s)" in err
    assert "images a, b_poison, c: InjectedFailure: injected failure reading b_poison.jpg" in err
    assert attempts(root / "images/validation/b_poison.jpg") == 2
    assert not (tmp_path / "ray/ade20k-150.json").exists()
