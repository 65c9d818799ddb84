"""What the precision setting means on each device."""

import pytest
import torch

from ovseg_ros.models.precision import autocast, compute_dtype

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


def test_compute_dtype_per_device():
    assert compute_dtype("fp32", CPU) == compute_dtype("fp32", CUDA) == torch.float32
    assert compute_dtype("bf16", CPU) == compute_dtype("bf16", CUDA) == torch.bfloat16
    assert compute_dtype("fp16", CUDA) == torch.float16
    assert compute_dtype("fp16", CPU) == torch.float32  # no fast fp16 matmuls on CPUs
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        compute_dtype("int8", CPU)


def test_autocast_on_the_cpu():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("bf16", CPU):
        assert (a @ b).dtype == torch.bfloat16
    for precision in ("fp32", "fp16"):
        with autocast(precision, CPU):
            assert (a @ b).dtype == torch.float32
