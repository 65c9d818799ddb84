"""CLIP from open_clip, with its weights from a pretrained tag, a state dict file or OVSeg.

- ``settings.clip_pretrained`` is a state dict file or an open_clip pretrained tag. A tag's
  file is downloaded by open_clip's own downloader into the cache folder (open_clip fetches
  from the Hugging Face Hub, so the folder has huggingface_hub's layout). Offline, the file is
  looked up with huggingface_hub's ``try_to_load_from_cache``, asked per call, so that
  nothing in the process is switched offline (``HF_HUB_OFFLINE`` is read once, when
  huggingface_hub is imported, and holds for the whole process).
- ``settings.ovseg_checkpoint`` (never downloaded) replaces the CLIP weights and may carry the
  mask prompt; the model is then built with QuickGELU, as OVSeg was trained.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from huggingface_hub import try_to_load_from_cache

from ..settings.config import Settings
from .checkpoints import (
    WeightsError,
    existing_file,
    load_strict,
    only_tensors,
    read_checkpoint,
    read_state_dict,
    unwrap_state_dict,
)

# OVSeg's detectron2 checkpoint keeps CLIP under this prefix and the mask prompt beside it.
OVSEG_CLIP_PREFIX = "clip_adapter.clip_model."
MASK_EMBEDDING_KEY = "visual.mask_embedding"

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


@dataclass
class ClipBundle:
    """A loaded CLIP and everything needed to feed it.

    model: open_clip CLIP in eval mode on the device.
    tokenizer: list[str] -> LongTensor [B, context_length].
    mask_embedding: OVSeg's mask prompt [depth, grid*grid, width] on the device (float32), or
        None when no OVSeg checkpoint with a prompt was given.
    image_mean, image_std: per-channel normalisation of images scaled to [0, 1].
    image_size: side of the square input image in pixels.
    """

    model: Any  # open_clip's CLIP: its .visual and .encode_text are read by attribute
    tokenizer: Callable[[list[str]], torch.Tensor]
    mask_embedding: torch.Tensor | None
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    image_size: int


def load_clip(settings: Settings, device: str | torch.device) -> ClipBundle:
    """Build ``settings.clip_model`` with open_clip's factory and load its weights.

    With ``settings.ovseg_checkpoint`` the CLIP weights (and the mask prompt, if present) come
    from that file and the model uses QuickGELU, as OVSeg was trained; ``clip_pretrained`` is
    then not used. Otherwise ``clip_pretrained`` is a state dict file or an open_clip tag (the
    model then also takes the tag's QuickGELU flag and normalisation).
    """
    name = settings.clip_model
    if open_clip.get_model_config(name) is None:
        close = difflib.get_close_matches(name, open_clip.list_models(), n=5, cutoff=0.5)
        raise WeightsError(
            f"Unknown open_clip model {name!r} (clip_model)."
            + (f" Did you mean: {', '.join(close)}?" if close else "")
            + " open_clip.list_models() lists them all."
        )
    if settings.ovseg_checkpoint:
        path = existing_file(
            settings.ovseg_checkpoint,
            "ovseg_checkpoint",
            "Download OVSeg's ovseg_clip_l_9a1909.pth or "
            "ovseg_swinbase_vitL14_ft_mpt.pth, or leave ovseg_checkpoint "
            "empty to use clip_pretrained.",
        )
        state, mask_embedding = _read_ovseg_checkpoint(path)
        source, quick_gelu, preprocess = f"OVSeg checkpoint {path}", True, {}
    else:
        path, tag_cfg = _clip_weights_file(settings)
        state = unwrap_state_dict(read_state_dict(path, "CLIP checkpoint"))
        mask_embedding = None
        source = f"CLIP weights {path}"
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        preprocess = {
            k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg
        }
    model = _create_clip(name, quick_gelu=quick_gelu, preprocess=preprocess)
    target = f"open_clip {name}"
    if settings.ovseg_checkpoint:
        target += " (OVSeg's released checkpoints are ViT-L-14)"
    load_strict(model, state, source, target)
    if mask_embedding is not None:
        _check_mask_embedding(mask_embedding, model, source, name)
        mask_embedding = mask_embedding.to(device=device, dtype=torch.float32)
    preprocess_cfg = getattr(model.visual, "preprocess_cfg", {})
    return ClipBundle(
        model=model.to(device).eval(),
        tokenizer=open_clip.get_tokenizer(name, cache_dir=str(settings.resolved_cache_dir())),
        mask_embedding=mask_embedding,
        image_mean=tuple(preprocess_cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        image_std=tuple(preprocess_cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        image_size=_square_size(model.visual.image_size, name),
    )


class _DropRandomInitWarning(logging.Filter):
    """open_clip warns 'Model initialized randomly' when built without weights; ours are
    loaded right after, so the warning would only mislead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


def _create_clip(name: str, *, quick_gelu: bool, preprocess: dict[str, Any]) -> torch.nn.Module:
    """open_clip's factory without weights (we load them), on the CPU, in fp32."""
    root = logging.getLogger()  # open_clip logs through the root logger
    drop = _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        return open_clip.create_model(
            name,
            pretrained=None,
            force_quick_gelu=quick_gelu,
            force_preprocess_cfg=preprocess or None,
        )
    finally:
        root.removeFilter(drop)


def _clip_weights_file(settings: Settings) -> tuple[Path, dict[str, Any]]:
    """The file clip_pretrained names, and the open_clip pretrained config when it is a tag
    ({} for a path). A tag's file is taken from the cache or fetched with open_clip."""
    value = settings.clip_pretrained
    if not value:
        raise WeightsError(
            "clip_pretrained is empty: give an open_clip pretrained tag (e.g. "
            "openai) or the path of a state dict, or set ovseg_checkpoint."
        )
    if _looks_like_path(value):
        return existing_file(
            value,
            "clip_pretrained",
            "Point it at an open_clip state dict, or use a pretrained tag "
            f"of {settings.clip_model}: {_tags(settings.clip_model)}.",
        ), {}
    tag_cfg = _tag_config(settings)
    cache_dir = settings.resolved_cache_dir()
    cached = _cached_tag_file(tag_cfg, cache_dir)
    if cached is not None:
        return cached, tag_cfg
    if settings.offline:
        raise WeightsError(_tag_not_cached_message(settings, tag_cfg))
    try:
        return Path(open_clip.download_pretrained(tag_cfg, cache_dir=str(cache_dir))), tag_cfg
    except Exception as err:  # open_clip raises whatever urllib / huggingface_hub raise
        raise WeightsError(
            f"Could not download the {settings.clip_model} weights for pretrained tag "
            f"{value!r} ({_tag_source(tag_cfg)}) into {cache_dir}: {err}. Check the network "
            f"(a proxy: HTTPS_PROXY; a Hugging Face mirror: HF_ENDPOINT), or download them "
            f"elsewhere and set clip_pretrained to the file's path."
        ) from err


def _looks_like_path(value: str) -> bool:
    """open_clip tags are plain identifiers (openai, laion2b_s34b_b79k); anything with a
    folder or a weight-file suffix, or naming an existing file, is a path."""
    return (
        "/" in value
        or os.sep in value
        or value.startswith("~")
        or value.endswith(_WEIGHT_SUFFIXES)
        or Path(value).is_file()
    )


def _tag_config(settings: Settings) -> dict[str, Any]:
    tag_cfg = open_clip.get_pretrained_cfg(settings.clip_model, settings.clip_pretrained)
    if not tag_cfg:
        raise WeightsError(
            f"clip_pretrained {settings.clip_pretrained!r} is neither a file nor a pretrained "
            f"tag of open_clip model {settings.clip_model}. Tags: "
            f"{_tags(settings.clip_model)}."
        )
    return tag_cfg


def _tags(model_name: str) -> str:
    return ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"


def _hf_source(tag_cfg: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """(repo id, file names in the order open_clip tries them) when open_clip fetches the tag
    from the Hugging Face Hub, which it prefers over the URL (huggingface_hub is one of its
    dependencies): the .safetensors twin first, as open_clip.pretrained's
    download_pretrained_from_hf does, then the file itself."""
    if not tag_cfg.get("hf_hub"):
        return None
    repo_id, filename = os.path.split(tag_cfg["hf_hub"])
    filename = filename or open_clip.constants.HF_WEIGHTS_NAME
    if filename == open_clip.constants.HF_WEIGHTS_NAME:
        safe = [open_clip.constants.HF_SAFE_WEIGHTS_NAME]
    elif filename.endswith((".bin", ".pth")):
        safe = [filename[:-4] + ".safetensors"]
    else:
        safe = []
    return repo_id, [*safe, filename]


def _tag_source(tag_cfg: Mapping[str, Any]) -> str:
    if tag_cfg.get("file"):
        return tag_cfg["file"]
    hf = _hf_source(tag_cfg)
    return f"https://huggingface.co/{hf[0]}" if hf else tag_cfg.get("url", "?")


def _cached_tag_file(tag_cfg: Mapping[str, Any], cache_dir: Path) -> Path | None:
    """The tag's weights where open_clip's downloader leaves them, found without any network:
    huggingface_hub resolves its own cache folder; a URL download is ``cache_dir/<name>``."""
    if tag_cfg.get("file"):
        return Path(tag_cfg["file"]) if Path(tag_cfg["file"]).is_file() else None
    hf = _hf_source(tag_cfg)
    if hf is not None:
        repo_id, filenames = hf
        for filename in filenames:
            found = try_to_load_from_cache(repo_id, filename, cache_dir=str(cache_dir))
            if isinstance(found, str):
                return Path(found)
        return None
    if tag_cfg.get("url"):
        candidate = cache_dir / os.path.basename(tag_cfg["url"])
        return candidate if candidate.is_file() else None
    return None


def _tag_not_cached_message(settings: Settings, tag_cfg: Mapping[str, Any]) -> str:
    cache_dir = settings.resolved_cache_dir()
    return (
        f"The {settings.clip_model} weights for pretrained tag "
        f"{settings.clip_pretrained!r} ({_tag_source(tag_cfg)}) are not in {cache_dir} "
        f"and downloads are off (offline). Run once with offline false to fetch them "
        f"there, or set clip_pretrained to the path of an open_clip state dict."
    )


def _read_ovseg_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """CLIP state dict and mask prompt from either OVSeg layout.

    ovseg_clip_l_9a1909.pth: a plain open_clip state dict. ovseg_swinbase_vitL14_ft_mpt.pth:
    detectron2's {'model': {...}} with CLIP under 'clip_adapter.clip_model.' and the prompt at
    'clip_adapter.clip_model.visual.mask_embedding'; the rest of OVSeg's network is ignored.
    """
    checkpoint = read_checkpoint(path, "OVSeg checkpoint")
    if isinstance(checkpoint.get("model"), Mapping):
        state = {
            k[len(OVSEG_CLIP_PREFIX) :]: v
            for k, v in checkpoint["model"].items()
            if k.startswith(OVSEG_CLIP_PREFIX)
        }
        if not state:
            raise WeightsError(
                f"OVSeg checkpoint {path} has no CLIP weights (no keys under "
                f"'{OVSEG_CLIP_PREFIX}' in its 'model')."
            )
    else:
        state = unwrap_state_dict(only_tensors(checkpoint, path, "OVSeg checkpoint"))
    state = dict(state)
    return state, state.pop(MASK_EMBEDDING_KEY, None)


def _check_mask_embedding(
    mask_embedding: torch.Tensor, model: torch.nn.Module, source: str, name: str
) -> None:
    """The prompt adds one [grid*grid, width] token block to each of the first depth layers."""
    visual = model.visual
    if not hasattr(visual, "grid_size") or not hasattr(visual, "transformer"):
        raise WeightsError(
            f"{source} has a mask prompt, which needs a ViT image encoder; "
            f"open_clip {name} has none."
        )
    tokens = visual.grid_size[0] * visual.grid_size[1]
    width = visual.conv1.out_channels
    layers = len(visual.transformer.resblocks)
    shape = list(mask_embedding.shape)
    if len(shape) != 3 or shape[1] != tokens or shape[2] != width or not 1 <= shape[0] <= layers:
        raise WeightsError(
            f"{source}: {MASK_EMBEDDING_KEY} has shape {shape}, but open_clip {name} needs "
            f"[depth 1..{layers}, {tokens} ({visual.grid_size[0]}x{visual.grid_size[1]} "
            f"patches), {width} (width)]. Use the clip_model the checkpoint was trained with "
            f"(ViT-L-14 for OVSeg's)."
        )


def _square_size(size: int | tuple[int, int], name: str) -> int:
    if isinstance(size, int):
        return size
    if size[0] != size[1]:
        raise WeightsError(
            f"open_clip {name} takes {size[0]}x{size[1]} images; only square inputs are supported."
        )
    return int(size[0])


def missing_clip(settings: Settings) -> list[str]:
    """What load_clip would not find, without loading: an explicit ovseg_checkpoint or
    clip_pretrained path that does not exist, an unknown pretrained tag, or (offline only) a
    tag whose weights are not in the cache."""
    if settings.ovseg_checkpoint:
        if not Path(settings.ovseg_checkpoint).expanduser().is_file():
            return [f"ovseg_checkpoint {settings.ovseg_checkpoint} does not exist."]
    elif settings.clip_pretrained and _looks_like_path(settings.clip_pretrained):
        if not Path(settings.clip_pretrained).expanduser().is_file():
            return [f"clip_pretrained {settings.clip_pretrained} does not exist."]
    elif settings.clip_pretrained:
        tag_cfg = open_clip.get_pretrained_cfg(settings.clip_model, settings.clip_pretrained)
        if not tag_cfg:
            return [
                f"clip_pretrained {settings.clip_pretrained!r} is neither a file nor a "
                f"pretrained tag of {settings.clip_model} "
                f"(tags: {_tags(settings.clip_model)})."
            ]
        if settings.offline and _cached_tag_file(tag_cfg, settings.resolved_cache_dir()) is None:
            return [_tag_not_cached_message(settings, tag_cfg)]
    return []
