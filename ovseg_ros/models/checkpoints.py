"""Checkpoint files: fetching them with a checksum, and reading them without running their code.

Checkpoints are untrusted input: ``.pth``/``.pt``/``.bin`` files are read with
``torch.load(weights_only=True)`` (tensors and plain containers only, no code), ``.safetensors``
with safetensors. Every problem a user can fix (file missing, download failed, file truncated,
keys that do not fit) raises one ``WeightsError`` whose message says which file, where it was
looked for and what to do. What to fetch and how to build a model from the tensors is in
``sam_weights`` and ``clip_weights``.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

KEYS_SHOWN = 5  # keys an error message lists before "..."


class WeightsError(RuntimeError):
    """A checkpoint is missing, cannot be fetched or does not fit; the message says what to do."""


# --------------------------------------------------------------------------- fetching


def fetch(
    filename: str,
    url: str,
    sha256_prefix: str,
    cache_dir: Path,
    *,
    offline: bool,
    what: str = "Weights file",
    hint: str = "",
) -> Path:
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
        raise WeightsError(offline_message(what, filename, cache_dir, url, hint))
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), hash_prefix=sha256_prefix, progress=True)
    except Exception as err:  # network, HTTP, disk and checksum errors all end the same way
        raise WeightsError(
            f"Could not download {what} {filename} from {url} into {cache_dir}: {err}. Nothing was "
            f"cached. Download it by hand:\n  wget -P {cache_dir} {url}" + _hint(hint)
        ) from err
    return target


def offline_message(what: str, filename: str, folder: Path, url: str, hint: str) -> str:
    """The file is not in ``folder`` and may not be downloaded: where it was looked for and
    the command that fetches it."""
    return (
        f"{what} {filename} not found in {folder} and downloads are off (offline). "
        f"Download it with:\n  wget -P {folder} {url}" + _hint(hint)
    )


def _hint(hint: str) -> str:
    return f"\n{hint}" if hint else ""


def existing_file(value: str, setting: str, hint: str) -> Path:
    """The file a path setting names (``~`` expanded), or WeightsError naming the setting."""
    path = Path(value).expanduser()
    if not path.is_file():
        raise WeightsError(f"{setting} {path} does not exist. {hint}")
    return path


# --------------------------------------------------------------------------- reading


def read_checkpoint(path: Path, what: str) -> dict[str, Any]:
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
            f"(torch.save(model.state_dict(), path)) from a source you trust."
        ) from err
    except Exception as err:  # truncated zip, bad header, I/O error: all mean a bad file
        raise _corrupt(path, what, err) from err
    if not isinstance(checkpoint, Mapping):
        raise WeightsError(
            f"{what} {path} holds a {type(checkpoint).__name__}, not a state "
            f"dict (a mapping of parameter names to tensors)."
        )
    return dict(checkpoint)


def _corrupt(path: Path, what: str, err: Exception) -> WeightsError:
    reason = str(err).strip().split(". ")[0][:200]  # torch's advice that follows is long
    return WeightsError(
        f"{what} {path} cannot be read ({type(err).__name__}: {reason}). It is probably "
        f"truncated or corrupt (an interrupted download?): delete it and download it again."
    )


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The file's parameter name -> tensor mapping (a training checkpoint's 'state_dict')."""
    return only_tensors(read_checkpoint(path, what), path, what)


def only_tensors(checkpoint: Mapping[str, Any], path: Path, what: str) -> dict[str, torch.Tensor]:
    """Unwrap a training checkpoint's 'state_dict' and insist on name -> tensor entries."""
    if isinstance(checkpoint.get("state_dict"), Mapping):
        checkpoint = checkpoint["state_dict"]
    others = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise WeightsError(
            f"{what} {path} is not a plain state dict: entries "
            f"{others[:KEYS_SHOWN]} are not tensors."
        )
    return dict(checkpoint)


def unwrap_state_dict(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the 'module.' prefix that DistributedDataParallel training adds to every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return dict(state)


def load_strict(
    module: torch.nn.Module,
    state: Mapping[str, torch.Tensor],
    source: str,
    target: str = "the model",
) -> None:
    """load_state_dict(strict=True), refusing first with a short list of what does not fit."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [
        f"{k} {list(state[k].shape)} (model {list(expected[k].shape)})"
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    problems = [
        _listed(missing, "missing key"),
        _listed(unexpected, "unexpected key"),
        _listed(wrong, "shape mismatch", plural="es"),
    ]
    problems = [p for p in problems if p]
    if problems:
        raise WeightsError(f"{source} does not fit {target}: " + "; ".join(problems) + ".")
    module.load_state_dict(state, strict=True)


def _listed(items: list[str], noun: str, plural: str = "s") -> str:
    if not items:
        return ""
    shown = ", ".join(items[:KEYS_SHOWN]) + (", ..." if len(items) > KEYS_SHOWN else "")
    return f"{len(items)} {noun}{plural if len(items) != 1 else ''} ({shown})"
