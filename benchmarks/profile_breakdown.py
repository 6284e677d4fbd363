"""Where a training step's time goes: torch.profiler over the timed steps, in four shares.

The shares answer the issue's questions about fixed costs per step: matmul (every GEMM, LoRA's
small ones included), attention (the sdpa kernels, forward and backward), optimizer (AdamW's
step, measured inclusive as the `Optimizer.step` region) and the rest (norms, activations,
cross-entropy, copies, Python and hooks, which show up as the gap to wall time).
"""

from __future__ import annotations

import time

MATMUL = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_addmm_activation", "mkldnn")
ATTENTION = ("scaled_dot_product", "flash_attention", "_efficient_attention", "flex_attention")


def kind(name: str) -> str:
    lowered = name.lower()
    if any(key in lowered for key in ATTENTION):
        return "attention"
    if any(lowered.startswith(key) for key in MATMUL):
        return "matmul"
    return "other"


class StepProfiler:
    """A Trainer callback that profiles steps (start, stop]; warm-up steps stay out of the figures."""

    def __new__(cls, start: int, stop: int):  # the base class is imported lazily, like every heavy import here
        from transformers import TrainerCallback

        class _Profiler(TrainerCallback):
            def __init__(self) -> None:
                self.profile = None
                self.seconds = 0.0

            def on_step_end(self, args, state, control, **kwargs):
                import torch

                if state.global_step == start:
                    self.profile = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
                    self.profile.__enter__()
                    self.began = time.perf_counter()
                elif state.global_step == stop and self.profile is not None:
                    self.profile.__exit__(None, None, None)
                    self.seconds = time.perf_counter() - self.began

            def breakdown(self) -> dict:
                return summarize(self.profile.key_averages(), self.seconds * 1e6, stop - start)

        return _Profiler()


def summarize(averages, wall_us: float, steps: int) -> dict:
    """Self time per operation (no double counting), grouped; the optimizer as its inclusive region."""
    shares = {"matmul": 0.0, "attention": 0.0, "optimizer": 0.0}
    top = []
    for event in averages:
        if event.key.startswith("Optimizer.step"):
            shares["optimizer"] += event.cpu_time_total
            continue
        if event.key.startswith("Optimizer.") or event.key.startswith("ProfilerStep"):
            continue
        group = kind(event.key)
        if group != "other":
            shares[group] += event.self_cpu_time_total
        top.append((event.self_cpu_time_total, event.key, event.count))
    top.sort(reverse=True)
    shares["other"] = max(wall_us - sum(shares.values()), 0.0)
    return {"wall_s_per_step": wall_us / 1e6 / steps, "shares": {k: v / wall_us for k, v in shares.items()},
            "top": [{"op": key, "self_s_per_step": us / 1e6 / steps, "share": us / wall_us, "calls_per_step": n / steps}
                    for us, key, n in top[:12]]}  # fmt: skip


def print_breakdown(name: str, profile: dict) -> None:
    shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in profile["shares"].items())
    print(f"\nprofile of {name}: {profile['wall_s_per_step']:.2f} s/step (profiled); {shares}")
    for row in profile["top"]:
        print(f"  {row['op']:<52}{row['self_s_per_step']:>8.3f} s/step {100 * row['share']:>5.1f}%"
              f"{row['calls_per_step']:>8.0f} calls/step")  # fmt: skip
