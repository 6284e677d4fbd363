"""One-row int8 matrix products on this CPU: which kernel would make `serve --precision int8` faster?

A decode step of one request multiplies one row by every weight, so its time is the time to read
the weights. `serve --precision int8` (serving/decode_copies.py) uses PyTorch's weight-only kernel
`_weight_int8pack_mm`, which reads ~10 GB/s here where llama.cpp's q8_0 reads ~19 (docs/PERFORMANCE.md).
This times, per weight shape of the default model (SmolLM2-135M: hidden 576, MLP 1536, 3 key/value
heads of 64, a 49,152-word output layer) and per fused shape (q, k and v as one 960-row matrix, gate
and up as one of 3072), with enough copies of each weight that none is in the cache:

- fp32 `x @ w.T`, the server's default;
- `_weight_int8pack_mm` (bf16 row, int8 weight, one scale per output), what int8 serving uses;
- oneDNN's `qlinear_pointwise` (int8 row, int8 weight prepacked for AMX/VNNI), the kernel
  PyTorch's x86 inductor quantization lowers to; the row's own rounding to 8 bits is timed
  apart (`quantize row`), as torch.compile would fuse it into the step.

    python benchmarks/int8_kernels.py
    python benchmarks/int8_kernels.py --threads 1 --shapes 1536x576,49152x576
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

SHAPES = "576x576,192x576,1536x576,576x1536,49152x576,960x576,3072x576"  # out x in; the last two are fused


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default=SHAPES, help="comma-separated OUTxIN weight shapes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=300, help="timed calls per kernel and shape (fewer for big ones)")
    parser.add_argument("--cold-mb", type=float, default=300, help="int8 megabytes of weight copies cycled through")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def timed(fn: Any, reps: int) -> float:
    """Microseconds per call, after a few untimed calls."""
    for i in range(5):
        fn(i)
    started = time.perf_counter()
    for i in range(reps):
        fn(i)
    return (time.perf_counter() - started) / reps * 1e6


def kernels(out_f: int, in_f: int, cold_mb: float) -> dict[str, Any]:
    """Each kernel as a function of the call's index, cycling through cold copies; and the row quantizer."""
    import torch

    copies = max(2, min(256, int(cold_mb * 1e6 // (out_f * in_f))))
    weight = torch.randn(out_f, in_f) * 0.05
    scale = weight.abs().amax(1) / 127
    q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    int8 = [q.clone() for _ in range(copies)]
    packed = [torch.ops.onednn.qlinear_prepack(w, [1, in_f]) for w in int8]
    fp32 = [weight.clone() for _ in range(max(2, copies // 4))]  # four times the bytes each
    scale_bf16, zero = scale.to(torch.bfloat16), torch.zeros(out_f, dtype=torch.int64)
    row = torch.randn(1, in_f)
    row_bf16 = row.to(torch.bfloat16)
    row_scale = float(row.abs().max() / 127)
    row_int8 = torch.round(row / row_scale).clamp(-127, 127).to(torch.int8)

    def quantize_row(_i: int) -> Any:  # symmetric, per row: what a dynamic-activation int8 linear adds
        s = row.abs().amax(-1, keepdim=True) / 127
        return torch.round(row / s).clamp(-127, 127).to(torch.int8), s

    return {
        "fp32": lambda i: row @ fp32[i % len(fp32)].t(),
        "int8pack_mm": lambda i: torch.ops.aten._weight_int8pack_mm(row_bf16, int8[i % copies], scale_bf16),
        "onednn_qlinear": lambda i: torch.ops.onednn.qlinear_pointwise(
            row_int8, row_scale, 0, packed[i % copies], scale, zero, None, 1.0, 0, torch.float32, "none", [], ""
        ),
        "quantize_row": quantize_row,
    }


def errors(calls: dict[str, Any]) -> dict[str, float]:
    """Each int8 kernel's largest difference from fp32's product, relative to fp32's largest output."""
    reference = calls["fp32"](0)
    top = float(reference.abs().max())
    return {
        name: float((calls[name](0).float() - reference).abs().max()) / top
        for name in ("int8pack_mm", "onednn_qlinear")
    }


def cell(micros: float, megabytes: float, width: int) -> str:
    """'µs (GB/s)': the call's time and the rate it read its weights at."""
    return f"{micros:.1f} ({megabytes / micros * 1e3:.0f})".rjust(width)


def main() -> None:
    import torch

    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    print(f"one row, {args.threads} threads, µs per call (GB/s of weights read)")
    print(f"{'shape':>10}{'MB int8':>9}{'fp32':>16}{'int8pack_mm':>16}{'onednn_qlinear':>17}{'quantize row':>14}")
    for shape in args.shapes.split(","):
        out_f, in_f = (int(n) for n in shape.lower().split("x"))
        reps = args.reps if out_f * in_f < 10_000_000 else max(20, args.reps // 8)
        calls = kernels(out_f, in_f, args.cold_mb)
        micros = {name: timed(fn, reps) for name, fn in calls.items()}
        mb = out_f * in_f / 1e6
        rows.append({"shape": shape, "int8_mb": mb, **micros, "relative_error": errors(calls)})

        cells = "".join(
            cell(micros[k], mb * per, w)
            for k, per, w in (("fp32", 4, 16), ("int8pack_mm", 1, 16), ("onednn_qlinear", 1, 17))
        )
        print(f"{shape:>10}{mb:>9.2f}{cells}{micros['quantize_row']:>14.1f}")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
