"""serve --precision fp16, int8 or int4: smaller copies of the linear weights, read by decode steps of few rows.

Why: on a CPU a decode step multiplies a few rows by every weight, so its time is the time to
read the weights from memory; fewer bytes per weight is the lever. A prompt's prefill (many
rows) keeps the fp32 weights, where the CPU's fp32 or AMX kernels are faster than these.

- fp16 (`HalfDecode`), for one row: measured on a 2-core AVX2 CPU (docs/PERFORMANCE.md), one row
  times the 576×49152 output layer took 10.0 ms in fp32 and 4.1 ms from fp16; a decode step of
  the 135M model went from about 70 to 45 ms. That CPU has no fp16 matrix-multiply instructions,
  so PyTorch's fp16 kernel converts as it goes and its cost grows with the rows (at 8 rows, 2.8x
  slower than fp32): one row only. fp16 over bf16: 10 mantissa bits to 7, so greedy answers
  stayed those of fp32 where bf16's changed (benchmarks/decode_precision.py).
- int8 (`Int8Decode`), for up to 8 rows: each weight row is scaled by its own largest value and
  rounded to 8 bits (a quarter of fp32's bytes), and the step's rows are rounded to bf16 for
  PyTorch's weight-only int8 kernel (`_weight_int8pack_mm`, the one gpt-fast uses on CPUs). On
  the 2-core AMX Xeon, 576×1536 at one row (weights not in cache): fp32 131 µs, bf16 127, int8
  35; at 8 rows: fp32 227, int8 144; at 40 rows int8 is the slower (592 against 464), hence the cut at
  8 rows.
  Written here, not taken from torchao: torchao 0.18's int8 weight-only tensor runs eager CPU
  steps 2.4x slower than fp32 (89 vs 37.5 ms a token) and is fast only under torch.compile,
  which takes ~50 s to start and compiles again for every new batch shape. The kernel needs the
  input width to be a multiple of 16 (it crashes or returns garbage otherwise), so a layer of
  another width keeps fp32.

- int4 (`Int4Decode`): int8's copies with the MLP's in 4 bits, PyTorch's `_weight_int4pack_mm_for_cpu`
  at about half int8's time per layer; why only the MLP is in its docstring.

The layers keep their modules and fp32 weights; only their `forward` is replaced, so peft's
adapter layers around them, and its merge and unmerge, work unchanged. `refresh` copies again
after a merge or unmerge changed the fp32 weights.
"""

from __future__ import annotations

from typing import Any

INT8_ROWS = 8  # up to here int8 beats fp32 on the AMX Xeon (above); the server's default --max-batch
INT4_GROUP = 32  # weights per scale and offset in int4 copies (gpt-fast and llama.cpp Q4 use 32)


class DecodeCopies:
    """The copies, and the linear layers whose forward reads them for steps of at most `rows` rows."""

    rows = 1

    def __init__(self, model: Any) -> None:
        import torch

        self.layers: list[tuple[Any, list[Any]]] = []  # (linear layer, its copies)
        for name, module in model.named_modules():
            # LoRA's own A and B matrices are a few MB: not worth a copy, and peft calls them directly
            if type(module) is torch.nn.Linear and "lora_" not in name and self.fits(module):
                with torch.no_grad():
                    copies = self.copy(module)
                self.layers.append((module, copies))
                module.forward = self._forward(module, copies)  # type: ignore[method-assign]  # this instance only

    def refresh(self) -> None:
        """Copy the fp32 weights again (and biases: peft's lora_bias merges into them)."""
        import torch

        with torch.no_grad():
            for module, copies in self.layers:
                for mine, fresh in zip(copies, self.copy(module), strict=True):
                    if mine is not None:
                        mine.copy_(fresh)

    @property
    def nbytes(self) -> int:
        return sum(c.numel() * c.element_size() for _, copies in self.layers for c in copies if c is not None)

    def fits(self, module: Any) -> bool:
        import torch

        return module.weight.dtype == torch.float32

    def copy(self, module: Any) -> list[Any]:
        raise NotImplementedError

    def few(self, module: Any, copies: list[Any], x: Any) -> Any:
        """The layer's output for a step of at most `rows` rows, from the copies."""
        raise NotImplementedError

    def _forward(self, module: Any, copies: list[Any]):
        from torch.nn.functional import linear

        def forward(x: Any) -> Any:
            if x.numel() <= self.rows * x.shape[-1]:  # few rows: bound by reading the weights
                return self.few(module, copies, x)
            return linear(x, module.weight, module.bias)

        return forward


class HalfDecode(DecodeCopies):
    """serve --precision fp16: an fp16 copy of each weight (and bias), read by one-row steps."""

    rows = 1

    def copy(self, module: Any) -> list[Any]:
        import torch

        return [module.weight.detach().to(torch.float16), None if module.bias is None else module.bias.detach().half()]

    def few(self, module: Any, copies: list[Any], x: Any) -> Any:
        import torch
        from torch.nn.functional import linear

        return linear(x.to(torch.float16), copies[0], copies[1]).to(x.dtype)


class Int8Decode(DecodeCopies):
    """serve --precision int8: each weight in 8 bits with one bf16 scale per output, read by steps of up to 8 rows."""

    rows = INT8_ROWS

    def fits(self, module: Any) -> bool:
        return super().fits(module) and module.in_features % 16 == 0  # the kernel's own limit (docstring)

    def copy(self, module: Any) -> list[Any]:
        import torch

        weight = module.weight.detach()
        # symmetric, per output: the row's largest becomes ±127; rounded to bf16 first (the kernel's scale type)
        # so each weight is within half a step of what the kernel multiplies back
        scale = (torch.linalg.vector_norm(weight, float("inf"), dim=1).clamp(min=1e-12) / 127).to(torch.bfloat16)
        quantized = torch.empty(weight.shape, dtype=torch.int8)
        for start in range(0, weight.shape[0], 1024):  # in slices: no fp32 temporary the size of the output layer
            rows = slice(start, start + 1024)
            quantized[rows] = torch.round(weight[rows] / scale[rows].float()[:, None]).clamp_(-127, 127)
        return [quantized, scale]

    def few(self, module: Any, copies: list[Any], x: Any) -> Any:
        import torch

        return _bf16_rows(module, x, lambda rows: torch.ops.aten._weight_int8pack_mm(rows, copies[0], copies[1]))


class Int4Decode(Int8Decode):
    """serve --precision int4: the MLP's weights in 4 bits, attention's and the output layer's in 8.

    Why a mix: the MLP's three layers hold two thirds of a decoder layer's weights, and PyTorch's
    4-bit kernel (`_weight_int4pack_mm_for_cpu`, gpt-fast's) reads them in about half int8's time. In
    4 bits everywhere, held-out ROUGE-L fell from 0.292 to 0.247; with attention and the output layer
    kept in 8 bits it stayed at 0.285 (docs/PERFORMANCE.md). Each group of 32 weights along the input
    has its own scale and offset (llama.cpp's Q4 blocks are 32 too).
    """

    def __init__(self, model: Any) -> None:
        self.four_bit = {id(m) for name, m in model.named_modules() if ".mlp." in f".{name}."}
        super().__init__(model)

    def copy(self, module: Any) -> list[Any]:
        import torch

        if id(module) not in self.four_bit or module.in_features % INT4_GROUP:
            return super().copy(module)
        weight = module.weight.detach()
        out_f, in_f = weight.shape
        groups = weight.reshape(out_f, in_f // INT4_GROUP, INT4_GROUP)
        low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
        # the kernel multiplies back (q - 8) * scale + zero with both in bf16: round them first, then the weights
        scale = ((high - low) / 15).clamp(min=1e-8).to(torch.bfloat16)
        zero = (low + 8 * scale.float()).to(torch.bfloat16)
        quantized = torch.round((groups - zero.float()) / scale.float() + 8).clamp_(0, 15).to(torch.int32)
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(quantized.reshape(out_f, in_f), 1)
        return [packed, torch.cat([scale, zero], dim=-1).transpose(0, 1).contiguous()]  # [groups, out, 2]

    def few(self, module: Any, copies: list[Any], x: Any) -> Any:
        import torch

        if copies[0].dtype == torch.int8:
            return super().few(module, copies, x)
        return _bf16_rows(
            module, x, lambda rows: torch.ops.aten._weight_int4pack_mm_for_cpu(rows, copies[0], INT4_GROUP, copies[1])
        )


def _bf16_rows(module: Any, x: Any, kernel: Any) -> Any:
    """`module`'s output from a weight-only kernel that takes bf16 rows (x flattened to them and back)."""
    import torch

    out = kernel(x.reshape(-1, x.shape[-1]).to(torch.bfloat16)).to(x.dtype)
    out = out.reshape(*x.shape[:-1], out.shape[-1])
    return out if module.bias is None else out + module.bias


COPIES = {"fp16": HalfDecode, "int8": Int8Decode, "int4": Int4Decode}  # serve --precision -> its copies
