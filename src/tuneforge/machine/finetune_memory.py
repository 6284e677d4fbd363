"""What each way of fine-tuning needs in memory (lora, dora, qlora, full), and the refusal of a full fine-tune that can't fit.

`doctor` shows these estimates under the hardware profile, and `train --finetune full` refuses
with the same numbers before any model loads. The arithmetic is the profile's (machine/profile.py:
`trial_memory_gb`: weights, a fixed reserve, activations per token) plus what differs:
- lora: the weights in the training precision, +10% for the adapter and its AdamW state;
- dora: LoRA plus the weight norms DoRA recomputes per adapted layer (counted as 10% more weights);
- qlora: 4-bit weights (~0.55 bytes per parameter), CUDA only;
- full: 16 bytes per parameter: fp32 weights (4), their gradients (4) and AdamW's two moments (8),
  whatever the precision, because half-precision weights would round small updates away.
Activations come on top of each, for the same batch × length.
"""

from __future__ import annotations

from pydantic import BaseModel

from tuneforge.errors import UserError
from tuneforge.machine.hardware import Hardware
from tuneforge.machine.profile import BYTES_PER_PARAM, params_label, trial_memory_gb

FULL_BYTES_PER_PARAM = 16.0  # fp32 weights 4 + gradients 4 + AdamW's exp_avg 4 and exp_avg_sq 4
DORA_EXTRA = 0.10  # DoRA's weight norms and magnitude vectors, as a share of the weights
FOUR_BIT_BYTES = 0.55
FINETUNES = ("lora", "dora", "qlora", "full")


class FinetuneFit(BaseModel):
    finetune: str
    need_gb: float  # the estimate, activations included
    fits: bool
    reason: str  # what the estimate is made of, shown by doctor and in the refusal


def finetune_fits(hw: Hardware, params: int, precision: str, tokens_per_step: int,
                  checkpointing: bool) -> list[FinetuneFit]:  # fmt: skip
    """lora, dora, qlora and full: each one's memory estimate for this machine and batch, and whether it fits."""
    lora, usable, where = trial_memory_gb(hw, params, precision, tokens_per_step, checkpointing)
    weights = params * BYTES_PER_PARAM.get(precision, 4.0) / 1e9
    rest = lora - weights * 1.1  # the reserve and the activations, the same for every kind
    size, cuda = params_label(params), bool(hw.cuda_gpus)
    full_weights = params * FULL_BYTES_PER_PARAM / 1e9
    needs = {
        "lora": (lora, f"{_gb(weights)} of {precision} weights for the {size} model, +10% for the adapter"),
        "dora": (lora + weights * DORA_EXTRA, "LoRA's, plus the weight norms DoRA recomputes in each layer"),
        "qlora": (rest + params * FOUR_BIT_BYTES / 1e9 * 1.1, "4-bit weights (about 0.55 bytes per parameter)"),
        "full": (rest + full_weights, f"16 bytes per parameter = {_gb(full_weights)}: fp32 weights, gradients "
                 "and AdamW's two moments"),
    }  # fmt: skip
    fits = []
    for name in FINETUNES:
        need, made_of = needs[name]
        ok = need <= usable and (name != "qlora" or cuda)
        why = f"{made_of}, plus {_gb(rest)} for activations and overhead, against {where}"
        if name == "qlora" and not cuda:
            why = "needs an NVIDIA GPU (bitsandbytes 4-bit runs on CUDA only)"
        fits.append(FinetuneFit(finetune=name, need_gb=round(need, 2), fits=ok, reason=why))
    return fits


def check_full_fits(hw: Hardware, params: int, precision: str, tokens_per_step: int, checkpointing: bool,
                    model: str) -> None:  # fmt: skip
    """--finetune full on a model too big for this machine: one paragraph with the estimate and the alternatives."""
    fits = {fit.finetune: fit for fit in finetune_fits(hw, params, precision, tokens_per_step, checkpointing)}
    full = fits["full"]
    if full.fits:
        return
    other = [
        f"--finetune {name} (about {_gb(fit.need_gb)})" for name, fit in fits.items() if name != "full" and fit.fits
    ]
    fix = ("use " + " or ".join(other) if other else "use a smaller model") + ", or a machine with more memory"
    raise UserError(
        f"--finetune full on {model} ({params_label(params)} parameters) needs about {_gb(full.need_gb)}: "
        f"{full.reason}. That is more than this machine has for training. Fix: {fix}; `tuneforge doctor "
        f"--model {model}` shows each estimate.",
        field="train.finetune",
    )


def _gb(value: float) -> str:
    return f"{value:.1f} GB" if value < 10 else f"{value:.0f} GB"
