"""Tiny random-weight SAM and CLIP models of the real architectures, saved in real formats.

Real weights cannot be downloaded on the development machines, so tests build these, write
them exactly as the real checkpoints are laid out, and load them through ovseg_ros.models.weights.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import open_clip
import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

TINY_CLIP = "ovseg-test-tiny-ViT"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 224, "layers": 3, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_SAM_IMAGE_SIZE = 256
MASK_PROMPT_DEPTH = 3


def register_tiny_clip(folder: Path) -> str:
    """Make the tiny CLIP architecture known to open_clip's factory under TINY_CLIP."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{TINY_CLIP}.json"
    # Node processes started together each register it, and open_clip reads every *.json
    # of the folder: replace the file in one step, never leave it half written.
    partial = folder / f".{TINY_CLIP}.{os.getpid()}.tmp"
    partial.write_text(json.dumps(TINY_CLIP_CONFIG))
    os.replace(partial, config)
    open_clip.add_model_config(config)
    return TINY_CLIP


def build_tiny_sam(seed: int = 0, image_size: int = TINY_SAM_IMAGE_SIZE) -> Sam:
    """A SAM with the real module classes: 2 encoder blocks, 64 wide (block 1 global)."""
    torch.manual_seed(seed)
    embedding = image_size // 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=2,
            embed_dim=64,
            img_size=image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=2,
            patch_size=16,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=[1],
            window_size=14,
            out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256,
            image_embedding_size=(embedding, embedding),
            input_image_size=(image_size, image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )
    return sam.eval()


def save_sam_checkpoint(sam: Sam, path: Path) -> Path:
    """As the official sam_vit_*.pth files: a plain state dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(sam.state_dict(), path)
    return path


def build_tiny_clip(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return open_clip.create_model(TINY_CLIP, pretrained=None).eval()


def tiny_mask_embedding(model: torch.nn.Module, seed: int = 1) -> torch.Tensor:
    """A random mask prompt of OVSeg's shape [depth, grid * grid, width]."""
    visual = model.visual
    grid = visual.grid_size[0] * visual.grid_size[1]
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randn(MASK_PROMPT_DEPTH, grid, visual.conv1.out_channels, generator=generator) * 0.1
    )


def save_clip_state_dict(model: torch.nn.Module, path: Path) -> Path:
    """As ovseg_clip_l_9a1909.pth or an open_clip checkpoint: a plain state dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path


def save_ovseg_checkpoint(model: torch.nn.Module, mask_embedding: torch.Tensor, path: Path) -> Path:
    """As ovseg_swinbase_vitL14_ft_mpt.pth: detectron2 {'model': ...}, CLIP under
    clip_adapter.clip_model., the prompt at clip_adapter.clip_model.visual.mask_embedding,
    next to weights of other parts of OVSeg's network that the loader must ignore."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"clip_adapter.clip_model.{k}": v for k, v in model.state_dict().items()}
    state["clip_adapter.clip_model.visual.mask_embedding"] = mask_embedding
    state["backbone.patch_embed.proj.weight"] = torch.zeros(8, 3, 4, 4)
    state["sem_seg_head.predictor.class_embed.weight"] = torch.zeros(4, 8)
    torch.save({"model": state, "iteration": 1}, path)
    return path


def node_parameters(folder: Path) -> tuple[Path, dict[str, str]]:
    """Write the tiny checkpoints in the real formats under folder; (the CLIP config folder
    to register in the node's process, the node parameters that load them)."""
    config_dir = folder / "clip_configs"
    clip_name = register_tiny_clip(config_dir)
    save_sam_checkpoint(build_tiny_sam(0), folder / "cache" / "sam_vit_b_01ec64.pth")
    clip = save_clip_state_dict(build_tiny_clip(1), folder / "tiny_clip.pth")
    return config_dir, {
        "clip_model": clip_name,
        "clip_pretrained": str(clip),
        "cache_dir": str(folder / "cache"),
        "offline": "true",
        "device": "cpu",
        "points_per_side": "4",
        "pred_iou_thresh": "0.0",
        "stability_score_thresh": "0.0",
        "templates": "single",
        "vocabulary": "[mug, kettle]",
    }
