"""SAM from its checkpoint: which file, where it comes from, and the model its shapes describe.

``settings.sam_checkpoint`` if set (never downloaded), else the official file for
``settings.sam_model`` (``SAM_CHECKPOINTS``) in ``settings.resolved_cache_dir()``, downloaded
there on first use (``checkpoints.fetch``: SHA-256 checked, a bad download is never cached).
``$OVSEG_WEIGHTS_URL`` replaces the base URL (a mirror). The encoder's sizes are read off the
tensors, so fine-tuned and test models load too; an official file of another variant than
``sam_model`` is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from ..settings.config import Settings
from .checkpoints import (
    KEYS_SHOWN,
    WeightsError,
    existing_file,
    fetch,
    load_strict,
    offline_message,
    read_state_dict,
)

WEIGHTS_URL_ENV = "OVSEG_WEIGHTS_URL"
SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything"


@dataclass(frozen=True)
class RemoteFile:
    """An official checkpoint: its file name and the SHA-256 of its content.

    The six hex digits in SAM's file names are an MD5 prefix, not SHA-256, so they cannot serve
    as torch.hub's ``hash_prefix``; the full SHA-256 digests below do (a prefix check of the
    whole digest).
    """

    filename: str
    sha256: str

    def url(self) -> str:
        """Download address: ``$OVSEG_WEIGHTS_URL/<filename>`` when set, else the official one."""
        base = os.environ.get(WEIGHTS_URL_ENV) or SAM_BASE_URL
        return f"{base.rstrip('/')}/{self.filename}"


SAM_CHECKPOINTS: dict[str, RemoteFile] = {
    "vit_b": RemoteFile(
        "sam_vit_b_01ec64.pth", "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"
    ),
    "vit_l": RemoteFile(
        "sam_vit_l_0b3195.pth", "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"
    ),
    "vit_h": RemoteFile(
        "sam_vit_h_4b8939.pth", "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"
    ),
}


@dataclass(frozen=True)
class SamArchitecture:
    """The image-encoder hyper-parameters of a SAM checkpoint, read from its tensor shapes."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int
    patch_size: int

    @property
    def variant(self) -> str | None:
        """'vit_b', 'vit_l' or 'vit_h' when the encoder is one of the official ones, else None."""
        return next(
            (
                name
                for name, known in _SAM_VARIANTS.items()
                if known == (self.embed_dim, self.depth, self.num_heads, self.global_attn_indexes)
            ),
            None,
        )

    def describe(self) -> str:
        return (
            f"{self.embed_dim} wide, {self.depth} blocks, {self.num_heads} heads, "
            f"global attention in blocks {list(self.global_attn_indexes)}"
        )


# (embed_dim, depth, num_heads, global_attn_indexes) as segment_anything/build_sam.py builds them.
_SAM_VARIANTS = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
_SAM_WINDOW_SIZE = 14
_SAM_PROMPT_DIM = 256
_SAM_BLOCK_KEY = re.compile(r"image_encoder\.blocks\.(\d+)\.")
_SAM_COPY_HINT = "or set sam_checkpoint to the path of a copy."


def load_sam(settings: Settings, device: str | torch.device) -> Sam:
    """Build SAM from its checkpoint: the architecture is read from the tensor shapes.

    Official checkpoints of a variant other than ``settings.sam_model`` are refused; other
    shapes (fine-tuned or test models) are built as found. Returns the model in eval mode on
    ``device``.
    """
    path = sam_checkpoint_path(settings)
    state = read_state_dict(path, "SAM checkpoint")
    architecture = sam_architecture(state, source=path)
    variant = architecture.variant
    if variant is not None and variant != settings.sam_model:
        raise WeightsError(
            f"SAM checkpoint {path} is a {variant} model ({architecture.describe()}) but "
            f"sam_model is {settings.sam_model}. Set sam_model to {variant}, or use a "
            f"{settings.sam_model} checkpoint ({SAM_CHECKPOINTS[settings.sam_model].filename})."
        )
    sam = _build_sam(architecture)
    load_strict(sam, state, f"SAM checkpoint {path}")
    return sam.to(device).eval()


def sam_architecture(
    state: Mapping[str, torch.Tensor], source: Path | str = "checkpoint"
) -> SamArchitecture:
    """Read the image encoder's hyper-parameters from a SAM state dict's shapes.

    patch_embed.proj.weight [embed, 3, patch, patch] gives width and patch size; pos_embed
    [1, grid, grid, embed] the input size; the block indices the depth; rel_pos_h
    [2 * size - 1, head_dim] the head count and, through its length, which blocks attend
    globally (size = grid) rather than in 14x14 windows.
    """
    try:
        patch_weight = state["image_encoder.patch_embed.proj.weight"]
        pos_embed = state["image_encoder.pos_embed"]
    except KeyError as err:
        raise WeightsError(
            f"{source} is not a SAM checkpoint: it has no {err.args[0]} "
            f"(segment-anything's image encoder)."
        ) from None
    embed_dim, patch_size = patch_weight.shape[0], patch_weight.shape[-1]
    grid = pos_embed.shape[1]
    blocks = sorted({int(m.group(1)) for k in state if (m := _SAM_BLOCK_KEY.match(k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise WeightsError(
            f"{source}: image encoder blocks are missing or not numbered "
            f"0..N-1 (found {blocks[:KEYS_SHOWN]}...)."
        )
    rel_pos = []
    for index in blocks:
        key = f"image_encoder.blocks.{index}.attn.rel_pos_h"
        if key not in state:
            raise WeightsError(
                f"{source}: no {key}; segment-anything's encoder uses relative "
                f"position embeddings in every block."
            )
        rel_pos.append(state[key].shape)
    head_dim = rel_pos[0][1]
    if head_dim == 0 or embed_dim % head_dim:
        raise WeightsError(
            f"{source}: head dimension {head_dim} does not divide the width {embed_dim}."
        )
    return SamArchitecture(
        embed_dim=embed_dim,
        depth=len(blocks),
        num_heads=embed_dim // head_dim,
        global_attn_indexes=tuple(
            i for i, shape in zip(blocks, rel_pos) if shape[0] == 2 * grid - 1
        ),
        image_size=grid * patch_size,
        patch_size=patch_size,
    )


def _build_sam(arch: SamArchitecture) -> Sam:
    """segment_anything.build_sam's construction with the encoder sizes of ``arch``."""
    embedding_size = arch.image_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth,
            embed_dim=arch.embed_dim,
            img_size=arch.image_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=arch.num_heads,
            patch_size=arch.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=list(arch.global_attn_indexes),
            window_size=_SAM_WINDOW_SIZE,
            out_chans=_SAM_PROMPT_DIM,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=_SAM_PROMPT_DIM,
            image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(arch.image_size, arch.image_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=_SAM_PROMPT_DIM, mlp_dim=2048, num_heads=8
            ),
            transformer_dim=_SAM_PROMPT_DIM,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def sam_checkpoint_path(settings: Settings) -> Path:
    """The explicit sam_checkpoint (must exist), else the official file, fetched if needed."""
    if settings.sam_checkpoint:
        return existing_file(settings.sam_checkpoint, "sam_checkpoint", _sam_default_hint(settings))
    official = SAM_CHECKPOINTS[settings.sam_model]
    return fetch(
        official.filename,
        official.url(),
        official.sha256,
        settings.resolved_cache_dir(),
        offline=settings.offline,
        what="SAM checkpoint",
        hint=_SAM_COPY_HINT,
    )


def _sam_default_hint(settings: Settings) -> str:
    official = SAM_CHECKPOINTS[settings.sam_model]
    return (
        f"Point it at a SAM checkpoint, or leave it empty to use {official.filename} from "
        f"{settings.resolved_cache_dir()} (downloaded on first use from {official.url()})."
    )


def missing_sam(settings: Settings) -> list[str]:
    """What load_sam would not find, without loading: an explicit sam_checkpoint that does not
    exist, or (offline only) an official file absent from the cache."""
    if settings.sam_checkpoint:
        if Path(settings.sam_checkpoint).expanduser().is_file():
            return []
        return [
            f"sam_checkpoint {settings.sam_checkpoint} does not exist. "
            + _sam_default_hint(settings)
        ]
    official = SAM_CHECKPOINTS[settings.sam_model]
    cache_dir = settings.resolved_cache_dir()
    if settings.offline and not (cache_dir / official.filename).is_file():
        return [
            offline_message(
                "SAM checkpoint", official.filename, cache_dir, official.url(), _SAM_COPY_HINT
            )
        ]
    return []
