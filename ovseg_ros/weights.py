"""Finding, fetching, checking and loading checkpoints: SAM, open_clip CLIP and OVSeg.

Checkpoints are untrusted input: ``.pth``/``.pt``/``.bin`` files are read with
``torch.load(weights_only=True)`` (tensors and plain containers only, no code), ``.safetensors``
with safetensors. Every problem a user can fix (file missing, download failed, file truncated,
wrong model variant, keys that do not fit) raises one ``WeightsError`` whose message says which
file, where it was looked for and what to do.

Where files come from:

- SAM: ``settings.sam_checkpoint`` if set (never downloaded), else the official file for
  ``settings.sam_model`` (``SAM_CHECKPOINTS``) in ``settings.resolved_cache_dir()``, downloaded
  there on first use with torch.hub's downloader (temporary file, SHA-256 check, then rename:
  a bad download is never cached). ``$OVSEG_WEIGHTS_URL`` replaces the base URL (a mirror).
- CLIP: ``settings.clip_pretrained`` is a state dict file or an open_clip pretrained tag; a tag
  is fetched by open_clip's own downloader into the cache folder.
- OVSeg: ``settings.ovseg_checkpoint`` (never downloaded) replaces the CLIP weights and may
  carry the mask prompt.

``offline`` turns every download into a ``WeightsError``; ``missing_weights`` lists up front
what a load would fail to find, so a program can stop with one message before loading anything.
"""

from __future__ import annotations

import difflib
import logging
import os
import pickle
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Mapping

import open_clip
import torch
from segment_anything.modeling import (ImageEncoderViT, MaskDecoder, PromptEncoder, Sam,
                                       TwoWayTransformer)

from ovseg_ros.config import Settings

WEIGHTS_URL_ENV = "OVSEG_WEIGHTS_URL"
SAM_BASE_URL = "https://dl.fbaipublicfiles.com/segment_anything"

# OVSeg's detectron2 checkpoint keeps CLIP under this prefix and the mask prompt beside it.
OVSEG_CLIP_PREFIX = "clip_adapter.clip_model."
MASK_EMBEDDING_KEY = "visual.mask_embedding"

_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_KEYS_SHOWN = 5


class WeightsError(RuntimeError):
    """A checkpoint is missing, cannot be fetched or does not fit; the message says what to do."""


class DeviceError(WeightsError):
    """The models cannot go where the device setting says: this machine has no such device."""


def model_device(settings: Settings) -> torch.device:
    """The torch device the models are loaded onto (``settings.resolved_device()``).

    A CUDA device that this machine lacks ('cuda' without a GPU, 'cuda:3' with two) is
    refused before anything loads, with one line naming the devices that do exist.
    """
    device = torch.device(settings.resolved_device())
    if device.type != "cuda":
        return device
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = 0 if device.index is None else device.index
    if index < count:
        return device
    existing = ", ".join(["cpu", *(f"cuda:{i}" for i in range(count))])
    reason = ("torch sees no CUDA GPU" if count == 0 else f"torch sees {count} CUDA GPU(s)")
    raise DeviceError(f"device {settings.device!r} does not exist: {reason}; devices here: "
                      f"{existing} (set device to one of them, or 'auto')")


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
    "vit_b": RemoteFile("sam_vit_b_01ec64.pth",
                        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
    "vit_l": RemoteFile("sam_vit_l_0b3195.pth",
                        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622"),
    "vit_h": RemoteFile("sam_vit_h_4b8939.pth",
                        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
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
        return next((name for name, known in _SAM_VARIANTS.items()
                     if known == (self.embed_dim, self.depth, self.num_heads,
                                  self.global_attn_indexes)), None)

    def describe(self) -> str:
        return (f"{self.embed_dim} wide, {self.depth} blocks, {self.num_heads} heads, "
                f"global attention in blocks {list(self.global_attn_indexes)}")


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

    model: torch.nn.Module
    tokenizer: Callable[[list[str]], torch.Tensor]
    mask_embedding: torch.Tensor | None
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    image_size: int


# --------------------------------------------------------------------------- fetching

def fetch(filename: str, url: str, sha256_prefix: str, cache_dir: Path, *,
          offline: bool, what: str = "Weights file", hint: str = "") -> Path:
    """``cache_dir / filename``, downloaded from ``url`` first when absent.

    The download goes to a temporary file and is moved into place only when its SHA-256
    starts with ``sha256_prefix`` (torch.hub's check), so a corrupt or wrong download is never
    cached. A file already in the cache is trusted as is. ``offline`` or any download failure
    raises WeightsError naming the file (after ``what``), the folder, the URL and a ``wget``
    command; ``hint`` is appended (another way to get the weights).
    """
    cache_dir = Path(cache_dir).expanduser()
    target = cache_dir / filename
    if target.is_file():
        return target
    if offline:
        raise WeightsError(_offline_message(what, filename, cache_dir, url, hint))
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256_prefix,
                                       progress=True)
    except Exception as err:  # network, HTTP, disk and checksum errors all end the same way
        raise WeightsError(
            f"Could not download {what} {filename} from {url} into {cache_dir}: {err}. Nothing was "
            f"cached. Download it by hand:\n  wget -P {cache_dir} {url}" + _hint(hint)) from err
    return target


def _offline_message(what: str, filename: str, folder: Path, url: str, hint: str) -> str:
    return (f"{what} {filename} not found in {folder} and downloads are off (offline). "
            f"Download it with:\n  wget -P {folder} {url}" + _hint(hint))


def _hint(hint: str) -> str:
    return f"\n{hint}" if hint else ""


# --------------------------------------------------------------------------- SAM

def load_sam(settings: Settings, device: str | torch.device) -> Sam:
    """Build SAM from its checkpoint: the architecture is read from the tensor shapes.

    Official checkpoints of a variant other than ``settings.sam_model`` are refused; other
    shapes (fine-tuned or test models) are built as found. Returns the model in eval mode on
    ``device``.
    """
    path = _sam_checkpoint_path(settings)
    state = _read_state_dict(path, "SAM checkpoint")
    architecture = sam_architecture(state, source=path)
    variant = architecture.variant
    if variant is not None and variant != settings.sam_model:
        raise WeightsError(
            f"SAM checkpoint {path} is a {variant} model ({architecture.describe()}) but "
            f"sam_model is {settings.sam_model}. Set sam_model to {variant}, or use a "
            f"{settings.sam_model} checkpoint ({SAM_CHECKPOINTS[settings.sam_model].filename}).")
    sam = _build_sam(architecture)
    _load_strict(sam, state, f"SAM checkpoint {path}")
    return sam.to(device).eval()


def sam_architecture(state: Mapping[str, torch.Tensor], source: Path | str = "checkpoint"
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
        raise WeightsError(f"{source} is not a SAM checkpoint: it has no {err.args[0]} "
                           f"(segment-anything's image encoder).") from None
    embed_dim, patch_size = patch_weight.shape[0], patch_weight.shape[-1]
    grid = pos_embed.shape[1]
    blocks = sorted({int(m.group(1)) for k in state if (m := _SAM_BLOCK_KEY.match(k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise WeightsError(f"{source}: image encoder blocks are missing or not numbered "
                           f"0..N-1 (found {blocks[:_KEYS_SHOWN]}...).")
    rel_pos = []
    for index in blocks:
        key = f"image_encoder.blocks.{index}.attn.rel_pos_h"
        if key not in state:
            raise WeightsError(f"{source}: no {key}; segment-anything's encoder uses relative "
                               f"position embeddings in every block.")
        rel_pos.append(state[key].shape)
    head_dim = rel_pos[0][1]
    if head_dim == 0 or embed_dim % head_dim:
        raise WeightsError(f"{source}: head dimension {head_dim} does not divide the width "
                           f"{embed_dim}.")
    return SamArchitecture(
        embed_dim=embed_dim,
        depth=len(blocks),
        num_heads=embed_dim // head_dim,
        global_attn_indexes=tuple(i for i, shape in zip(blocks, rel_pos)
                                  if shape[0] == 2 * grid - 1),
        image_size=grid * patch_size,
        patch_size=patch_size,
    )


def _build_sam(arch: SamArchitecture) -> Sam:
    """segment_anything.build_sam's construction with the encoder sizes of ``arch``."""
    embedding_size = arch.image_size // arch.patch_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=arch.depth, embed_dim=arch.embed_dim, img_size=arch.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=arch.num_heads,
            patch_size=arch.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=list(arch.global_attn_indexes), window_size=_SAM_WINDOW_SIZE,
            out_chans=_SAM_PROMPT_DIM),
        prompt_encoder=PromptEncoder(
            embed_dim=_SAM_PROMPT_DIM, image_embedding_size=(embedding_size, embedding_size),
            input_image_size=(arch.image_size, arch.image_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=_SAM_PROMPT_DIM,
                                          mlp_dim=2048, num_heads=8),
            transformer_dim=_SAM_PROMPT_DIM, iou_head_depth=3, iou_head_hidden_dim=256),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def _sam_checkpoint_path(settings: Settings) -> Path:
    """The explicit sam_checkpoint (must exist), else the official file, fetched if needed."""
    if settings.sam_checkpoint:
        return _existing_file(settings.sam_checkpoint, "sam_checkpoint",
                              _sam_default_hint(settings))
    official = SAM_CHECKPOINTS[settings.sam_model]
    return fetch(official.filename, official.url(), official.sha256,
                 settings.resolved_cache_dir(), offline=settings.offline,
                 what="SAM checkpoint", hint=_SAM_COPY_HINT)


def _sam_default_hint(settings: Settings) -> str:
    official = SAM_CHECKPOINTS[settings.sam_model]
    return (f"Point it at a SAM checkpoint, or leave it empty to use {official.filename} from "
            f"{settings.resolved_cache_dir()} (downloaded on first use from {official.url()}).")


# --------------------------------------------------------------------------- CLIP

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
        raise WeightsError(f"Unknown open_clip model {name!r} (clip_model)."
                           + (f" Did you mean: {', '.join(close)}?" if close else "")
                           + " open_clip.list_models() lists them all.")
    if settings.ovseg_checkpoint:
        path = _existing_file(settings.ovseg_checkpoint, "ovseg_checkpoint",
                              "Download OVSeg's ovseg_clip_l_9a1909.pth or "
                              "ovseg_swinbase_vitL14_ft_mpt.pth, or leave ovseg_checkpoint "
                              "empty to use clip_pretrained.")
        state, mask_embedding = _read_ovseg_checkpoint(path)
        source, quick_gelu, preprocess = f"OVSeg checkpoint {path}", True, {}
    else:
        path, tag_cfg = _clip_weights_file(settings)
        state = _unwrap_state_dict(_read_state_dict(path, "CLIP checkpoint"))
        mask_embedding = None
        source = f"CLIP weights {path}"
        quick_gelu = bool(tag_cfg.get("quick_gelu", False))
        preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode")
                      if k in tag_cfg}
    model = _create_clip(name, quick_gelu=quick_gelu, preprocess=preprocess)
    target = f"open_clip {name}"
    if settings.ovseg_checkpoint:
        target += " (OVSeg's released checkpoints are ViT-L-14)"
    _load_strict(model, state, source, target)
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
        return open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu,
                                      force_preprocess_cfg=preprocess or None)
    finally:
        root.removeFilter(drop)


def _clip_weights_file(settings: Settings) -> tuple[Path, dict[str, Any]]:
    """The file clip_pretrained names, and the open_clip pretrained config when it is a tag
    ({} for a path). A tag's file is taken from the cache or fetched with open_clip."""
    value = settings.clip_pretrained
    if not value:
        raise WeightsError("clip_pretrained is empty: give an open_clip pretrained tag (e.g. "
                           "openai) or the path of a state dict, or set ovseg_checkpoint.")
    if _looks_like_path(value):
        return _existing_file(value, "clip_pretrained",
                              "Point it at an open_clip state dict, or use a pretrained tag "
                              f"of {settings.clip_model}: {_tags(settings.clip_model)}."), {}
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
            f"elsewhere and set clip_pretrained to the file's path.") from err


def _looks_like_path(value: str) -> bool:
    """open_clip tags are plain identifiers (openai, laion2b_s34b_b79k); anything with a
    folder or a weight-file suffix, or naming an existing file, is a path."""
    return ("/" in value or os.sep in value or value.startswith("~")
            or value.endswith(_WEIGHT_SUFFIXES) or Path(value).is_file())


def _tag_config(settings: Settings) -> dict[str, Any]:
    tag_cfg = open_clip.get_pretrained_cfg(settings.clip_model, settings.clip_pretrained)
    if not tag_cfg:
        raise WeightsError(
            f"clip_pretrained {settings.clip_pretrained!r} is neither a file nor a pretrained "
            f"tag of open_clip model {settings.clip_model}. Tags: "
            f"{_tags(settings.clip_model)}.")
    return tag_cfg


def _tags(model_name: str) -> str:
    return ", ".join(open_clip.list_pretrained_tags_by_model(model_name)) or "none"


def _hf_source(tag_cfg: Mapping[str, Any]) -> tuple[str, list[str]] | None:
    """(repo id, file names to try) when open_clip would fetch the tag from the Hugging Face
    Hub: it prefers the Hub when huggingface_hub is installed, and there a .safetensors twin."""
    if not tag_cfg.get("hf_hub"):
        return None
    try:
        import huggingface_hub  # noqa: F401  (optional dependency of open_clip)
    except ImportError:
        return None
    repo_id, filename = os.path.split(tag_cfg["hf_hub"])
    filename = filename or open_clip.constants.HF_WEIGHTS_NAME
    if filename == open_clip.constants.HF_WEIGHTS_NAME:
        safe = open_clip.constants.HF_SAFE_WEIGHTS_NAME
    else:
        safe = str(Path(filename).with_suffix(".safetensors"))
    return repo_id, [safe, filename]


def _tag_source(tag_cfg: Mapping[str, Any]) -> str:
    if tag_cfg.get("file"):
        return tag_cfg["file"]
    hf = _hf_source(tag_cfg)
    return f"https://huggingface.co/{hf[0]}" if hf else tag_cfg.get("url", "?")


def _cached_tag_file(tag_cfg: Mapping[str, Any], cache_dir: Path) -> Path | None:
    """Where open_clip's downloader would have left the tag's weights, without any network."""
    if tag_cfg.get("file"):
        return Path(tag_cfg["file"]) if Path(tag_cfg["file"]).is_file() else None
    hf = _hf_source(tag_cfg)
    if hf is not None:
        from huggingface_hub import try_to_load_from_cache

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
    return (f"The {settings.clip_model} weights for pretrained tag "
            f"{settings.clip_pretrained!r} ({_tag_source(tag_cfg)}) are not in {cache_dir} "
            f"and downloads are off (offline). Run once with offline false to fetch them "
            f"there, or set clip_pretrained to the path of an open_clip state dict.")


def _read_ovseg_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """CLIP state dict and mask prompt from either OVSeg layout.

    ovseg_clip_l_9a1909.pth: a plain open_clip state dict. ovseg_swinbase_vitL14_ft_mpt.pth:
    detectron2's {'model': {...}} with CLIP under 'clip_adapter.clip_model.' and the prompt at
    'clip_adapter.clip_model.visual.mask_embedding'; the rest of OVSeg's network is ignored.
    """
    checkpoint = _read_checkpoint(path, "OVSeg checkpoint")
    if isinstance(checkpoint.get("model"), Mapping):
        state = {k[len(OVSEG_CLIP_PREFIX):]: v for k, v in checkpoint["model"].items()
                 if k.startswith(OVSEG_CLIP_PREFIX)}
        if not state:
            raise WeightsError(f"OVSeg checkpoint {path} has no CLIP weights (no keys under "
                               f"'{OVSEG_CLIP_PREFIX}' in its 'model').")
    else:
        state = _unwrap_state_dict(_only_tensors(checkpoint, path, "OVSeg checkpoint"))
    state = dict(state)
    return state, state.pop(MASK_EMBEDDING_KEY, None)


def _check_mask_embedding(mask_embedding: torch.Tensor, model: torch.nn.Module, source: str,
                          name: str) -> None:
    """The prompt adds one [grid*grid, width] token block to each of the first depth layers."""
    visual = model.visual
    if not hasattr(visual, "grid_size") or not hasattr(visual, "transformer"):
        raise WeightsError(f"{source} has a mask prompt, which needs a ViT image encoder; "
                           f"open_clip {name} has none.")
    tokens = visual.grid_size[0] * visual.grid_size[1]
    width = visual.conv1.out_channels
    layers = len(visual.transformer.resblocks)
    shape = list(mask_embedding.shape)
    if len(shape) != 3 or shape[1] != tokens or shape[2] != width or not 1 <= shape[0] <= layers:
        raise WeightsError(
            f"{source}: {MASK_EMBEDDING_KEY} has shape {shape}, but open_clip {name} needs "
            f"[depth 1..{layers}, {tokens} ({visual.grid_size[0]}x{visual.grid_size[1]} "
            f"patches), {width} (width)]. Use the clip_model the checkpoint was trained with "
            f"(ViT-L-14 for OVSeg's).")


def _square_size(size: int | tuple[int, int], name: str) -> int:
    if isinstance(size, int):
        return size
    if size[0] != size[1]:
        raise WeightsError(f"open_clip {name} takes {size[0]}x{size[1]} images; only square "
                           f"inputs are supported.")
    return int(size[0])


# --------------------------------------------------------------------------- preflight

def missing_weights(settings: Settings) -> list[str]:
    """One line for each required file that loading would not find, without loading anything.

    Files that would be downloaded (official SAM checkpoint, CLIP pretrained tag) count as
    missing only when ``settings.offline``; otherwise the loaders fetch them, and a failed
    download raises WeightsError then. Explicit paths (sam_checkpoint, a clip_pretrained path,
    ovseg_checkpoint) are never downloaded and always count. An unknown CLIP pretrained tag is
    reported here too.
    """
    lines = []
    cache_dir = settings.resolved_cache_dir()
    if settings.sam_checkpoint:
        if not Path(settings.sam_checkpoint).expanduser().is_file():
            lines.append(f"sam_checkpoint {settings.sam_checkpoint} does not exist. "
                         + _sam_default_hint(settings))
    else:
        official = SAM_CHECKPOINTS[settings.sam_model]
        if settings.offline and not (cache_dir / official.filename).is_file():
            lines.append(_offline_message("SAM checkpoint", official.filename, cache_dir,
                                          official.url(), _SAM_COPY_HINT))
    if settings.ovseg_checkpoint:
        if not Path(settings.ovseg_checkpoint).expanduser().is_file():
            lines.append(f"ovseg_checkpoint {settings.ovseg_checkpoint} does not exist.")
    elif settings.clip_pretrained and _looks_like_path(settings.clip_pretrained):
        if not Path(settings.clip_pretrained).expanduser().is_file():
            lines.append(f"clip_pretrained {settings.clip_pretrained} does not exist.")
    elif settings.clip_pretrained:
        tag_cfg = open_clip.get_pretrained_cfg(settings.clip_model, settings.clip_pretrained)
        if not tag_cfg:
            lines.append(f"clip_pretrained {settings.clip_pretrained!r} is neither a file nor "
                         f"a pretrained tag of {settings.clip_model} "
                         f"(tags: {_tags(settings.clip_model)}).")
        elif settings.offline and _cached_tag_file(tag_cfg, cache_dir) is None:
            lines.append(_tag_not_cached_message(settings, tag_cfg))
    return lines


# --------------------------------------------------------------------------- reading files

def _existing_file(value: str, setting: str, hint: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        raise WeightsError(f"{setting} {path} does not exist. {hint}")
    return path


def _read_checkpoint(path: Path, what: str) -> dict[str, Any]:
    """The checkpoint's top-level mapping, read without running any code from the file."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            checkpoint = load_file(str(path), device="cpu")
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "Weights only load failed" not in str(err):
            raise _corrupt(path, what, err) from err
        raise WeightsError(
            f"{what} {path} holds Python objects besides tensors, which are not loaded for "
            f"safety (torch.load weights_only=True). Save a plain state dict "
            f"(torch.save(model.state_dict(), path)) from a source you trust.") from err
    except Exception as err:  # truncated zip, bad header, I/O error: all mean a bad file
        raise _corrupt(path, what, err) from err
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(f"{what} {path} holds a {type(checkpoint).__name__}, not a state "
                           f"dict (a mapping of parameter names to tensors).")
    return dict(checkpoint)


def _corrupt(path: Path, what: str, err: Exception) -> WeightsError:
    reason = str(err).strip().split(". ")[0][:200]  # torch's advice that follows is long
    return WeightsError(
        f"{what} {path} cannot be read ({type(err).__name__}: {reason}). It is probably "
        f"truncated or corrupt (an interrupted download?): delete it and download it again.")


def _read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    return _only_tensors(_read_checkpoint(path, what), path, what)


def _only_tensors(checkpoint: Mapping[str, Any], path: Path, what: str
                  ) -> dict[str, torch.Tensor]:
    """Unwrap a training checkpoint's 'state_dict' and insist on name -> tensor entries."""
    if isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    others = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise WeightsError(f"{what} {path} is not a plain state dict: entries "
                           f"{others[:_KEYS_SHOWN]} are not tensors.")
    return dict(checkpoint)


def _unwrap_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the 'module.' prefix that DistributedDataParallel training adds to every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return dict(state)


def _load_strict(module: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str,
                 target: str = "the model") -> None:
    """load_state_dict(strict=True), refusing first with a short list of what does not fit."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (model {list(expected[k].shape)})"
             for k in expected if k in state and state[k].shape != expected[k].shape]
    problems = [_listed(missing, "missing key"), _listed(unexpected, "unexpected key"),
                _listed(wrong, "shape mismatch", plural="es")]
    problems = [p for p in problems if p]
    if problems:
        raise WeightsError(f"{source} does not fit {target}: " + "; ".join(problems) + ".")
    module.load_state_dict(state, strict=True)


def _listed(items: list[str], noun: str, plural: str = "s") -> str:
    if not items:
        return ""
    shown = ", ".join(items[:_KEYS_SHOWN]) + (", ..." if len(items) > _KEYS_SHOWN else "")
    return f"{len(items)} {noun}{plural if len(items) != 1 else ''} ({shown})"
