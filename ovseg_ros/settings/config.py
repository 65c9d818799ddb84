"""One typed settings object shared by the CLI, the ROS node and config/params.yaml.

Every tunable lives here once, with its default, a description, whether it may change while
running (``live``) and its validation. The CLI turns fields into flags, the node turns them
into declared parameters, and YAML files are read into the same object.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SettingsError
from .templates import TEMPLATE_SETS

__all__ = ["Settings", "SettingsError", "field_names", "settings_fields", "start_only_changes"]

SAM_MODELS = ("vit_b", "vit_l", "vit_h")
CLASSIFIER_MODES = ("crop", "mask_token")
PROPOSAL_BACKENDS = ("fast", "stock")
PRECISIONS = ("fp32", "bf16", "fp16")
DEVICES_HELP = "'auto' (GPU when there is one), 'cpu', 'cuda' or 'cuda:N'"

CACHE_ENV = "OVSEG_CACHE"


def _setting(default: Any, description: str, *, live: bool, **extra: Any) -> Any:
    metadata = {"description": description, "live": live, **extra}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Settings:
    """Everything that shapes a segmentation run. ``Settings().validate()`` always passes."""

    # Models (read at start).
    sam_model: str = _setting(
        "vit_b", "SAM image encoder: vit_b, vit_l or vit_h.", live=False, choices=SAM_MODELS
    )
    sam_checkpoint: str = _setting(
        "",
        "Path to a SAM checkpoint (.pth state dict). Empty: the official file for "
        "sam_model in the cache directory, downloaded on first use.",
        live=False,
    )
    clip_model: str = _setting(
        "ViT-B-16", "open_clip model name, e.g. ViT-B-16 or ViT-L-14.", live=False
    )
    clip_pretrained: str = _setting(
        "openai", "open_clip pretrained tag (e.g. openai) or path to a state dict.", live=False
    )
    ovseg_checkpoint: str = _setting(
        "",
        "Optional OVSeg checkpoint with mask-adapted CLIP weights (and the mask prompt): "
        "ovseg_clip_l_9a1909.pth or ovseg_swinbase_vitL14_ft_mpt.pth. Use with "
        "clip_model ViT-L-14.",
        live=False,
    )
    cache_dir: str = _setting(
        "", f"Where weights are cached. Empty: ${CACHE_ENV} or ~/.cache/ovseg_ros.", live=False
    )
    offline: bool = _setting(
        False,
        "Never download weights; fail with a clear message when a file is missing.",
        live=False,
    )
    device: str = _setting("auto", f"Torch device: {DEVICES_HELP}.", live=False)
    precision: str = _setting(
        "fp32",
        "Numeric precision: fp32, bf16 or fp16. bf16 also "
        "runs on the CPU (fast on CPUs with AVX-512 BF16 or AMX); fp16 "
        "only on the GPU (the CPU runs fp32).",
        live=False,
        choices=PRECISIONS,
    )
    compile: bool = _setting(
        False, "torch.compile SAM's image encoder (GPU; slow first frame).", live=False
    )
    proposal_backend: str = _setting(
        "fast",
        "Mask proposals: 'fast' (batched, all on the device) or 'stock' "
        "(segment-anything's SamAutomaticMaskGenerator, the reference).",
        live=False,
        choices=PROPOSAL_BACKENDS,
    )

    # Vocabulary.
    vocabulary: list = _setting(
        [],
        "Classes to segment, e.g. [mug, door handle]. Empty: nothing is labelled until "
        "a vocabulary is given.",
        live=True,
        item_type=str,
    )
    stuff_classes: list = _setting(
        [],
        "Vocabulary entries that are amorphous regions (floor, sky): merged into one "
        "region per class; all others are countable things.",
        live=True,
        item_type=str,
    )
    templates: str = _setting(
        "vild",
        "Prompt templates: 'single' ('a photo of a {}.'), "
        "'vild' (OVSeg's 14) or 'imagenet' (CLIP's 80).",
        live=True,
        choices=tuple(TEMPLATE_SETS),
    )
    max_classes: int = _setting(
        256, "Largest vocabulary accepted.", live=True, minimum=1, maximum=65534
    )

    # SAM automatic mask generation (SamAutomaticMaskGenerator's defaults).
    points_per_side: int = _setting(
        32, "Prompt grid is points_per_side x points_per_side.", live=True, minimum=1, maximum=128
    )
    points_per_batch: int = _setting(
        64, "Prompts per decoder call (memory vs. speed).", live=True, minimum=1, maximum=16384
    )
    pred_iou_thresh: float = _setting(
        0.88, "Keep masks whose predicted IoU exceeds this.", live=True, minimum=0.0, maximum=1.0
    )
    stability_score_thresh: float = _setting(
        0.95, "Keep masks whose stability exceeds this.", live=True, minimum=0.0, maximum=1.0
    )
    stability_score_offset: float = _setting(
        1.0, "Logit offset of the stability score.", live=True, minimum=0.0, maximum=100.0
    )
    box_nms_thresh: float = _setting(
        0.7,
        "Box IoU above which the lower-quality mask is dropped.",
        live=True,
        minimum=0.0,
        maximum=1.0,
    )
    min_mask_region_area: int = _setting(
        0,
        "Remove holes and islands smaller than this many pixels (0: off).",
        live=True,
        minimum=0,
        maximum=1 << 30,
    )
    max_masks: int = _setting(
        100,
        "At most this many proposals (best predicted IoU first) are classified.",
        live=True,
        minimum=1,
        maximum=10000,
    )
    max_image_side: int = _setting(
        1280,
        "Images are resized so their longest side is at most this (OVSeg's demo uses "
        "1280); outputs are at the input resolution. 0: never resize.",
        live=True,
        minimum=0,
        maximum=16384,
    )

    # Classification and fusion.
    classifier_mode: str = _setting(
        "crop",
        "'crop': OVSeg's masked crops (with the mask prompt when the OVSeg "
        "checkpoint has one); 'mask_token': MaskCLIP mask class tokens, one ViT pass.",
        live=True,
        choices=CLASSIFIER_MODES,
    )
    granularity: float = _setting(
        0.8,
        "OVSeg's granularity: per class keep every mask whose probability exceeds "
        "granularity x the best one (1: one mask per class).",
        live=True,
        minimum=0.0,
        maximum=1.0,
    )
    unknown_thresh: float = _setting(
        0.0,
        "Pixels whose winning class has mean probability below this over the masks "
        "covering them are left unlabelled (0: off, as in OVSeg).",
        live=True,
        minimum=0.0,
        maximum=1.0,
    )

    # Tracking across frames.
    track: bool = _setting(
        False,
        "Give instances track ids that follow them from frame to frame (motion, mask "
        "overlap, CLIP appearance and, with depth, 3D position, within a class name). Off: "
        "track ids are 0.",
        live=True,
    )
    track_min_iou: float = _setting(
        0.3,
        "Least overlap (IoU of the predicted box, or of the last mask) between an "
        "instance and a track to continue it.",
        live=True,
        minimum=0.01,
        maximum=1.0,
    )
    track_max_age: int = _setting(
        5,
        "Frames a track is followed by its motion after it was last seen.",
        live=True,
        minimum=0,
        maximum=10000,
    )
    track_min_similarity: float = _setting(
        0.8,
        "Least cosine similarity of CLIP appearance for an instance to continue a track "
        "it does not overlap (fast motion, a camera pan) or to re-identify one.",
        live=True,
        minimum=0.0,
        maximum=1.0,
    )
    track_reid_age: int = _setting(
        90,
        "Frames a track is kept after it was last seen, to be re-identified by its "
        "appearance (0: none beyond track_max_age).",
        live=True,
        minimum=0,
        maximum=100000,
    )
    track_max_speed: float = _setting(
        3.0,
        "Metres per second a tracked object's 3D centroid may move between two matches "
        "(with depth and stamped frames; 0: no 3D gate).",
        live=True,
        minimum=0.0,
        maximum=1000.0,
    )

    # 3D from a depth image registered to the colour image.
    depth_scale: float = _setting(
        0.001,
        "Metres per unit of a 16-bit (16UC1) depth image: 0.001 for millimetres, as "
        "RealSense, ZED and Azure Kinect publish. 32FC1 depth is in metres already.",
        live=True,
        minimum=1e-6,
        maximum=10.0,
    )
    depth_min_range: float = _setting(
        0.0,
        "Depths nearer than this many metres are invalid (0: no limit).",
        live=True,
        minimum=0.0,
        maximum=1000.0,
    )
    depth_max_range: float = _setting(
        0.0,
        "Depths farther than this many metres are invalid (0: no limit).",
        live=True,
        minimum=0.0,
        maximum=1000.0,
    )
    sync_slop: float = _setting(
        0.05,
        "Most seconds between the stamps of a colour image and the depth image (and "
        "CameraInfo) paired with it.",
        live=False,
        minimum=0.0,
        maximum=10.0,
    )

    def validate(self) -> Settings:
        """Raise SettingsError naming the first bad field and why; return self when fine."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            meta = f.metadata
            if f.type in ("bool",) and not isinstance(value, bool):
                raise SettingsError(f"{f.name} must be true or false, got {value!r}")
            if f.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise SettingsError(f"{f.name} must be an integer, got {value!r}")
            if f.type == "float":
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise SettingsError(f"{f.name} must be a number, got {value!r}")
                if not math.isfinite(value):
                    raise SettingsError(f"{f.name} must be finite, got {value!r}")
            if f.type == "str" and not isinstance(value, str):
                raise SettingsError(f"{f.name} must be a string, got {value!r}")
            if f.type == "list" and (
                not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value)
            ):
                raise SettingsError(f"{f.name} must be a list of strings, got {value!r}")
            if "choices" in meta and value not in meta["choices"]:
                raise SettingsError(
                    f"{f.name} must be one of {', '.join(meta['choices'])}, got {value!r}"
                )
            if "minimum" in meta and value < meta["minimum"]:
                raise SettingsError(f"{f.name} must be >= {meta['minimum']}, got {value!r}")
            if "maximum" in meta and value > meta["maximum"]:
                raise SettingsError(f"{f.name} must be <= {meta['maximum']}, got {value!r}")
        if 0 < self.depth_max_range <= self.depth_min_range:
            raise SettingsError(
                f"depth_max_range ({self.depth_max_range}) must be above "
                f"depth_min_range ({self.depth_min_range}), or 0 for no limit"
            )
        if not re.fullmatch(r"auto|cpu|cuda(:[0-9]+)?", self.device):
            raise SettingsError(f"device must be {DEVICES_HELP}, got {self.device!r}")
        return self

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with some fields changed; unknown names are refused."""
        unknown = sorted(set(changes) - set(field_names()))
        if unknown:
            raise SettingsError(
                f"unknown setting(s): {', '.join(unknown)}; known: {', '.join(field_names())}"
            )
        coerced = {name: _coerce(name, value) for name, value in changes.items()}
        return dataclasses.replace(self, **coerced).validate()

    def resolved_cache_dir(self) -> Path:
        """The weight cache folder: cache_dir, else $OVSEG_CACHE, else ~/.cache/ovseg_ros."""
        if self.cache_dir:
            return Path(self.cache_dir).expanduser()
        if os.environ.get(CACHE_ENV):
            return Path(os.environ[CACHE_ENV]).expanduser()
        return Path.home() / ".cache" / "ovseg_ros"

    def resolved_device(self) -> str:
        """'auto' becomes 'cuda' when torch sees a GPU, else 'cpu'."""
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


# The settings read once, when the pipeline is made (live=False): changing one means a restart.
START_ONLY_SETTINGS = tuple(f.name for f in dataclasses.fields(Settings) if not f.metadata["live"])


def start_only_changes(old: Settings, new: Settings) -> list[str]:
    """Names of the start-only settings whose values differ from old to new, in field order:
    the ones a running pipeline must refuse."""
    return [name for name in START_ONLY_SETTINGS if getattr(new, name) != getattr(old, name)]


def field_names() -> list[str]:
    """The setting names, in declaration order."""
    return [f.name for f in dataclasses.fields(Settings)]


def settings_fields() -> list[dataclasses.Field]:
    """The fields with their metadata (description, live, choices, minimum, maximum)."""
    return list(dataclasses.fields(Settings))


def _coerce(name: str, value: Any) -> Any:
    """Accept ints for floats and tuples for lists, as YAML and ROS parameters deliver them."""
    kind = next(f.type for f in dataclasses.fields(Settings) if f.name == name)
    if kind == "float" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind == "list" and isinstance(value, tuple):
        return list(value)
    return value
