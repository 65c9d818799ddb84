"""What the ``precision`` setting means on a device, in one place.

fp32 is plain fp32 everywhere. bf16 runs the models under ``torch.autocast`` on the GPU and
on the CPU (where CPUs with AVX-512 BF16 or AMX do bf16 matmuls several times faster than
fp32). fp16 runs under autocast on the GPU only: CPUs have no fast fp16 matmuls, so there it
means fp32.
"""

from __future__ import annotations

import contextlib

import torch

from ..settings.config import PRECISIONS

# The names are config.PRECISIONS, in its order.
DTYPES = dict(zip(PRECISIONS, (torch.float32, torch.bfloat16, torch.float16), strict=True))


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype the models' matmuls run in for ``precision`` on ``device``."""
    if precision not in DTYPES:
        raise ValueError(f"precision must be one of {', '.join(DTYPES)}, got {precision!r}")
    dtype = DTYPES[precision]
    if dtype == torch.float16 and device.type != "cuda":
        return torch.float32
    return dtype


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``compute_dtype(precision, device)``; nothing for fp32."""
    dtype = compute_dtype(precision, device)
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
