"""ovseg-eval --ray: a real local Ray cluster (2 CPUs) gives the same report as the plain
run; without --ray, Ray is never imported."""

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import pytest

TEST_DIR = Path(__file__).resolve().parent


def test_without_ray_flag_ray_is_never_imported(tmp_path):
    code = ("import sys; from ovseg_ros.evaluation import cli; import ovseg_ros.cli; "
            f"cli.main(['--dataset', 'ade20k-150', '--root', {str(tmp_path)!r}]); "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


def test_ray_path_equals_the_plain_path(tmp_path, tiny_settings, capsys):
    ray = pytest.importorskip("ray")
    import tiny_models
    from test_eval import make_dataset

    from ovseg_ros.evaluation import cli as eval_cli
    from ovseg_ros.scale import shards

    assert shards(5, 2) == [[0, 1, 2], [3, 4]]
    import numpy as np
    from test_eval import write_label

    root = make_dataset(tmp_path / "ade", "ade20k-150", stems=("a", "b", "c"))
    rng = np.random.default_rng(6)
    for stem in "abc":  # every class can occur, so the per-class IoUs say what was predicted
        write_label(root / f"annotations/validation/{stem}.png",
                    rng.integers(0, 151, (24, 32), dtype=np.uint8))
    settings = tiny_settings.replace(max_classes=150, templates="single")
    args = ["--dataset", "ade20k-150", "--root", str(root), "--quiet"]
    assert eval_cli.main([*args, "--out", str(tmp_path / "plain")], settings=settings) == 0
    start = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": f"{TEST_DIR}:{TEST_DIR.parent}"}})
    try:
        setup = partial(tiny_models.register_tiny_clip, tmp_path / "clip_configs")
        assert eval_cli.main([*args, "--out", str(tmp_path / "ray"), "--ray", "auto"],
                             settings=settings, setup=setup) == 0
    finally:
        ray.shutdown()
    print(f"ray init + run: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    plain = json.loads((tmp_path / "plain/ade20k-150.json").read_text())
    remote = json.loads((tmp_path / "ray/ade20k-150.json").read_text())
    assert remote["images"] == plain["images"] == 3
    assert plain["semantic"]["pixel_accuracy"] > 0
    assert remote["semantic"] == plain["semantic"]
