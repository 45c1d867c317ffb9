"""The training precision "auto" picks bf16 only where this CPU runs it natively."""

import platform

import pytest
import torch

from llavakit.precision import fast_cpu_bf16, resolve_precision


def test_explicit_precisions_are_kept_and_unknown_ones_refused():
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("bf16") == "bf16"
    with pytest.raises(ValueError, match="'fp8'"):
        resolve_precision("fp8")


def test_auto_follows_the_measured_speed():
    assert resolve_precision("auto") == ("bf16" if fast_cpu_bf16() else "fp32")


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 flags only")
def test_the_measurement_agrees_with_the_cpu_flags_on_x86():
    """Native bf16 on x86 means AVX-512 BF16 or AMX; without either torch emulates it."""
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert fast_cpu_bf16() == native
