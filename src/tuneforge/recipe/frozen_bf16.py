"""bf16 copies of the frozen linear weights, for LoRA training on a CPU under bf16 autocast.

Why: autocast casts a weight to bf16 at every use, and it keeps the cast only for weights that
train. LoRA's base weights are frozen, so every forward cast all of them again: profiled on
SmolLM2-135M on 2 CPU cores, about 130 ms of a 1.0 s step went to these copies, the tied
49,152×576 output layer alone about 60 ms. A copy made once removes them.

The matrix products are the same: under autocast they read the weight in bf16 either way.
Outside autocast (generation after training, `tuneforge chat` in the same process) the layers
read their fp32 weights as before, so nothing else changes. The fp32 weights stay, because the
embedding, DoRA's norms, and merging read them; the copies cost half the linear weights'
memory again (about 270 MB for the 135M model), and are skipped when that is more than a quarter
of the free memory. GPUs load their weights in bf16 already, so this is for CPU runs only.
"""

from __future__ import annotations

from typing import Any

MARK = "_tuneforge_bf16"  # set on a layer that has its copy, so a trainer rebuilt after a step-down adds none
# The copies may take at most this share of the memory free when training starts; past it (a big
# model on a small machine) the run keeps autocast's per-use casts and its memory.
SHARE_OF_FREE_MEMORY = 0.25


def keep_bf16_copies(model: Any) -> int:
    """Give every frozen fp32 linear layer a bf16 copy read under CPU bf16 autocast; the bytes added."""
    import psutil
    import torch

    layers = []
    for name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if type(module) is not torch.nn.Linear or "lora_" in name or hasattr(module, MARK):
            continue
        if weight is None or weight.requires_grad or weight.dtype != torch.float32 or weight.device.type != "cpu":
            continue
        layers.append(module)
    needed = sum(module.weight.numel() * 2 for module in layers)
    if needed > SHARE_OF_FREE_MEMORY * psutil.virtual_memory().available:
        return 0
    for module in layers:
        copy = module.weight.detach().to(torch.bfloat16)
        setattr(module, MARK, copy)
        module.forward = _forward(module, copy)  # type: ignore[method-assign]  # this instance only
    return needed


def _forward(module: Any, copy: Any) -> Any:
    import torch
    from torch.nn.functional import linear

    def forward(x: Any) -> Any:
        if torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16:
            return linear(x, copy, module.bias)  # autocast casts x and the bias; the weight is bf16 already
        return linear(x, module.weight, module.bias)

    return forward
