"""serve --precision fp16: a float16 copy of each linear layer's weight, read when one token row runs.

Why: on a CPU a decode step of one request multiplies one row by every weight, so its time is
the time to read the weights from memory. fp16 halves the bytes. Measured on a 2-core AVX2 CPU
(docs/PERFORMANCE.md), one row times the 576×49152 output layer took 10.0 ms in fp32 and 4.1 ms
from fp16; a whole decode step of the 135M model went from about 70 to 45 ms.

Why only one row: this CPU has no fp16 matrix-multiply instructions, so PyTorch's fp16 kernel
converts as it goes and its cost grows with the rows (at 8 rows, 2.8x slower than fp32). A
prompt's prefill and a batch of several requests therefore keep the fp32 weights, and the copy
costs half the weights' memory again (270 MB for the 135M model).

Why fp16 and not bf16: fp16 keeps 10 mantissa bits to bf16's 7, so the rounding error of one
product is about 8x smaller (4e-4 relative here), and greedy answers stayed those of fp32 where
bf16's changed (benchmarks/decode_precision.py).

The layers keep their modules and fp32 weights; only their `forward` is replaced, so peft's
adapter layers around them, and its merge and unmerge, work unchanged. `refresh` re-copies
after a merge or unmerge changed the fp32 weights.
"""

from __future__ import annotations

from typing import Any


class HalfDecode:
    """The fp16 copies, and the linear layers whose forward reads them for a single row."""

    def __init__(self, model: Any) -> None:
        import torch

        self.pairs: list[tuple[Any, Any]] = []  # (linear layer, its fp16 weight)
        self.biases: list[tuple[Any, Any]] = []  # (linear layer, its fp16 bias), for layers that have one
        for name, module in model.named_modules():
            # LoRA's own A and B matrices are a few MB: not worth a copy, and peft calls them directly
            if type(module) is torch.nn.Linear and "lora_" not in name and module.weight.dtype == torch.float32:
                half = module.weight.detach().to(torch.float16)
                bias = None if module.bias is None else module.bias.detach().to(torch.float16)
                self.pairs.append((module, half))
                if bias is not None:
                    self.biases.append((module, bias))
                module.forward = _forward(module, half, bias)  # type: ignore[method-assign]  # this instance only

    def refresh(self) -> None:
        """Copy the fp32 weights again (and biases: peft's lora_bias merges into them)."""
        import torch

        with torch.no_grad():
            for module, half in self.pairs:
                half.copy_(module.weight)
            for module, bias in self.biases:
                bias.copy_(module.bias)

    @property
    def nbytes(self) -> int:
        return sum(half.numel() * half.element_size() for _, half in self.pairs)


def _forward(module: Any, half: Any, bias: Any):
    import torch
    from torch.nn.functional import linear

    def forward(x: Any) -> Any:
        if x.numel() == x.shape[-1]:  # one row: bound by reading the weights
            return linear(x.to(torch.float16), half, bias).to(x.dtype)
        return linear(x, module.weight, module.bias)

    return forward
