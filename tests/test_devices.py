"""Guards device and precision choice for CUDA and Apple machines, which CI doesn't have."""

from __future__ import annotations

import os

import pytest

from tuneforge.errors import UserError
from tuneforge.machine.devices import check_four_bit, pick_device, pick_precision, prepare_environment
from tuneforge.machine.hardware import Gpu, Hardware


def machine(gpus: int = 0, mps: bool = False) -> Hardware:
    return Hardware(
        os="Linux", os_version="6", python="3.11", arch="x86_64", cpu_model="test", cpu_cores=8, cpu_bf16=False,
        ram_gb=32, disk_free_gb=100, disk_path="/", torch_version="2.13.0", torch_error=None,
        torch_cuda_build="12.8" if gpus else None, cuda_error=None,
        cuda_gpus=[Gpu(name="GPU", vram_gb=24, compute_capability="8.9", bf16=True)] * gpus,
        nvidia_smi_gpus=gpus, apple_chip="Apple M3" if mps else None, mps_built=mps, mps_available=mps,
        bitsandbytes="works" if gpus else "not applicable (no CUDA)",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("hw", "expected"), [(machine(gpus=2), "cuda"), (machine(mps=True), "mps"), (machine(), "cpu")]
)
def test_auto_prefers_cuda_then_mps_then_cpu(hw, expected):
    assert pick_device("auto", hw) == expected


def test_explicit_device_must_exist():
    with pytest.raises(UserError, match="no CUDA device"):
        pick_device("cuda", machine())
    with pytest.raises(UserError, match="no MPS device"):
        pick_device("mps", machine(gpus=1))
    assert pick_device("cpu", machine(gpus=1)) == "cpu"


def test_four_bit_only_on_cuda():
    check_four_bit(True, "cuda")
    for device in ("cpu", "mps"):
        with pytest.raises(UserError, match="load_in_4bit needs an NVIDIA GPU"):
            check_four_bit(True, device)


def test_fp16_refused_on_cpu():
    assert pick_precision("bf16", "cpu") == "bf16"
    assert pick_precision("fp16", "cuda") == "fp16"
    with pytest.raises(UserError, match="fp16"):
        pick_precision("fp16", "cpu")


def test_mps_enables_the_cpu_fallback(monkeypatch):
    monkeypatch.delenv("PYTORCH_ENABLE_MPS_FALLBACK", raising=False)
    prepare_environment("cpu")
    assert "PYTORCH_ENABLE_MPS_FALLBACK" not in os.environ
    prepare_environment("mps")
    assert os.environ["PYTORCH_ENABLE_MPS_FALLBACK"] == "1"
