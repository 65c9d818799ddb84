"""Shared fixtures: tiny random-weight models saved in the real checkpoint formats.

Built once per session (a few seconds on a CPU). Paths point to files laid out exactly as the
real ones are, so loading goes through the same code in ovseg_ros.models.weights. The model
fixtures are the originals the files were saved from, for comparison: do not modify them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

TEST_DIR = Path(__file__).resolve().parent
# test/ is not a package (no __init__.py); make tiny_models importable and, for runs from
# another folder, the repository root too.
for folder in (TEST_DIR, TEST_DIR.parent):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

import tiny_models  # noqa: E402

from ovseg_ros.settings.config import Settings  # noqa: E402

# Distinct seeds so a test can tell which weights were loaded.
SAM_SEED = 0
CLIP_SEED = 1
OVSEG_CLIP_SEED = 2


@pytest.fixture(scope="session")
def tiny_clip_name(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The tiny CLIP architecture's name, registered with open_clip's factory."""
    return tiny_models.register_tiny_clip(tmp_path_factory.mktemp("clip_configs"))


@pytest.fixture(scope="session")
def tiny_sam() -> torch.nn.Module:
    """The tiny SAM saved as tiny_weights['sam'] (eval mode)."""
    return tiny_models.build_tiny_sam(SAM_SEED)


@pytest.fixture(scope="session")
def tiny_clip(tiny_clip_name: str) -> torch.nn.Module:
    """The tiny CLIP saved as tiny_weights['clip'] (the 'pretrained' weights)."""
    return tiny_models.build_tiny_clip(CLIP_SEED)


@pytest.fixture(scope="session")
def tiny_ovseg_clip(tiny_clip_name: str) -> torch.nn.Module:
    """The tiny CLIP saved in both OVSeg layouts (tiny_weights['ovseg_clip'|'ovseg_mpt'])."""
    return tiny_models.build_tiny_clip(OVSEG_CLIP_SEED)


@pytest.fixture(scope="session")
def tiny_mask_embedding(tiny_ovseg_clip: torch.nn.Module) -> torch.Tensor:
    """The mask prompt saved in tiny_weights['ovseg_mpt']: [3, grid*grid, width]."""
    return tiny_models.tiny_mask_embedding(tiny_ovseg_clip)


@pytest.fixture(scope="session")
def tiny_weights(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_sam,
    tiny_clip,
    tiny_ovseg_clip,
    tiny_mask_embedding,
) -> dict[str, Path]:
    """Paths of the tiny checkpoints:

    - 'cache_dir': a weight cache folder holding 'sam' under the official vit_b file name;
    - 'sam': cache_dir / sam_vit_b_01ec64.pth (plain SAM state dict);
    - 'clip': plain open_clip state dict of tiny_clip;
    - 'ovseg_clip': plain open_clip state dict of tiny_ovseg_clip (as ovseg_clip_l_9a1909.pth);
    - 'ovseg_mpt': detectron2 checkpoint of tiny_ovseg_clip + tiny_mask_embedding
      (as ovseg_swinbase_vitL14_ft_mpt.pth).
    """
    root = tmp_path_factory.mktemp("weights")
    cache_dir = root / "cache"
    return {
        "cache_dir": cache_dir,
        "sam": tiny_models.save_sam_checkpoint(tiny_sam, cache_dir / "sam_vit_b_01ec64.pth"),
        "clip": tiny_models.save_clip_state_dict(tiny_clip, root / "tiny_clip.pth"),
        "ovseg_clip": tiny_models.save_clip_state_dict(
            tiny_ovseg_clip, root / "ovseg_clip_tiny.pth"
        ),
        "ovseg_mpt": tiny_models.save_ovseg_checkpoint(
            tiny_ovseg_clip, tiny_mask_embedding, root / "ovseg_tiny_mpt.pth"
        ),
    }


@pytest.fixture(scope="session")
def tiny_settings(tiny_clip_name: str, tiny_weights: dict[str, Path]) -> Settings:
    """Settings that load the tiny models offline on the CPU and let random weights through
    the mask filters (8x8 prompt grid, zero quality thresholds). No OVSeg checkpoint: use
    .replace(ovseg_checkpoint=str(tiny_weights['ovseg_mpt'])) for one."""
    return Settings().replace(
        sam_model="vit_b",
        clip_model=tiny_clip_name,
        clip_pretrained=str(tiny_weights["clip"]),
        cache_dir=str(tiny_weights["cache_dir"]),
        offline=True,
        device="cpu",
        points_per_side=8,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
    )


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory):
    """One real local Ray cluster (2 CPUs) for every --ray test of the session: starting one
    is the slow part. Its workers run ray_faults.install (tiny CLIP, injected failures)."""
    ray = pytest.importorskip("ray")
    clip_configs = tmp_path_factory.mktemp("ray_clip_configs")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {
                "PYTHONPATH": f"{TEST_DIR}:{TEST_DIR.parent}",
                "OVSEG_TEST_CLIP_CONFIGS": str(clip_configs),
            },
            "worker_process_setup_hook": "ray_faults.install",
        },
    )
    yield ray
    ray.shutdown()
