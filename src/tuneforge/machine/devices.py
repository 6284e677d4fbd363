"""Pick the torch device and number format for a run, from the config and the hardware.

Kept apart from torch so the choice can be unit-tested with fake machines: this repo's CI has
neither CUDA nor Apple silicon, but the CUDA and MPS branches must still be right.
"""

from __future__ import annotations

import os
from typing import Any

from tuneforge.errors import UserError


def pick_device(requested: str, hardware: Any) -> str:
    """'auto' prefers CUDA, then MPS, then CPU; an explicit choice must exist on this machine."""
    available = {"cpu": True, "cuda": bool(hardware.cuda_gpus), "mps": bool(hardware.mps_available)}
    if requested == "auto":
        return "cuda" if available["cuda"] else "mps" if available["mps"] else "cpu"
    if not available[requested]:
        raise UserError(
            f"train.device is '{requested}', but this machine has no {requested.upper()} device that torch can use. "
            "Use --device auto (or cpu), or run `tuneforge doctor` to see what torch found."
        )
    return requested


def pick_precision(requested: str, device: str) -> str:
    """'auto' means fp32 here: the hardware profile has normally already chosen a concrete value."""
    if requested == "auto":
        return "fp32"
    if device == "cpu" and requested == "fp16":
        raise UserError("train.precision fp16 does not work for training on the CPU. Use fp32 or bf16.")
    return requested


def check_four_bit(load_in_4bit: bool, device: str) -> None:
    if load_in_4bit and device != "cuda":
        raise UserError(
            f"model.load_in_4bit needs an NVIDIA GPU (bitsandbytes), but this run uses {device}. "
            "Turn it off (load_in_4bit: false) or run on a CUDA machine."
        )


def prepare_environment(device: str) -> None:
    """MPS lacks some kernels; falling back to the CPU for them beats a crash mid-run."""
    if device == "mps":
        os.environ.setdefault("PYTORCH_ENABLE_MPS_FALLBACK", "1")


def inference_device() -> tuple[str, str]:
    """The one picker for answering (chat, eval, serve): CUDA, then Apple MPS, then the CPU, with its precision.

    CUDA answers in bf16 where the GPU has it (fp16 otherwise); MPS and the CPU in fp32, the
    format training used there. Export merges on the CPU in fp32 on purpose (see export/merge.py).
    """
    import torch

    if torch.cuda.is_available():
        return "cuda", "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if torch.backends.mps.is_available():
        return "mps", "fp32"
    return "cpu", "fp32"


def torch_dtype(precision: str) -> Any:
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
