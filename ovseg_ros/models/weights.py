"""The models a Segmenter needs: where they go (``model_device``), whether their files are all
there (``missing_weights``), and the loaders themselves.

The work is done in three files, re-exported here for the node, the CLI and the pipeline:

- ``checkpoints``: fetching a file with a SHA-256 check, and reading it without running code
  (``torch.load(weights_only=True)`` or safetensors); ``WeightsError``;
- ``sam_weights``: the SAM checkpoint to use and the model its tensor shapes describe;
- ``clip_weights``: open_clip CLIP from a pretrained tag, a state dict file or an OVSeg
  checkpoint (with its mask prompt).

``offline`` turns every download into a ``WeightsError``; ``missing_weights`` lists up front
what a load would fail to find, so a program can stop with one message before loading anything.
"""

from __future__ import annotations

import torch

from ..settings.config import Settings
from .checkpoints import WeightsError, fetch
from .clip_weights import ClipBundle, load_clip, missing_clip
from .sam_weights import SAM_CHECKPOINTS, load_sam, missing_sam

__all__ = [
    "SAM_CHECKPOINTS",
    "ClipBundle",
    "DeviceError",
    "WeightsError",
    "fetch",
    "load_clip",
    "load_sam",
    "missing_weights",
    "model_device",
]


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
    reason = "torch sees no CUDA GPU" if count == 0 else f"torch sees {count} CUDA GPU(s)"
    raise DeviceError(
        f"device {settings.device!r} does not exist: {reason}; devices here: "
        f"{existing} (set device to one of them, or 'auto')"
    )


def missing_weights(settings: Settings) -> list[str]:
    """One line for each required file that loading would not find, without loading anything.

    Files that would be downloaded (official SAM checkpoint, CLIP pretrained tag) count as
    missing only when ``settings.offline``; otherwise the loaders fetch them, and a failed
    download raises WeightsError then. Explicit paths (sam_checkpoint, a clip_pretrained path,
    ovseg_checkpoint) are never downloaded and always count. An unknown CLIP pretrained tag is
    reported here too.
    """
    return missing_sam(settings) + missing_clip(settings)
