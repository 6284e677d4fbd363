"""Start from an earlier run's adapter (--adapter results): SFT first, then DPO on top.

The earlier adapter is merged into the base weights in memory (no copy of the model), and a
fresh adapter trains on top. So the starting model is exactly the policy with the new adapter
disabled, which is the reference preference methods need, without a second model.

What a run saves must still load on the plain base, for chat, eval, serve and export alike, so
the two adapters are saved as one: LoRA updates add up, and two of them are one LoRA of the
summed rank, A stacked on A, B next to B (each B times its own alpha / r), with alpha = rank.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError


def check_start_adapter(folder: Path | None, model_name: str) -> None:
    """Before any model loads: the folder holds a LoRA adapter (not DoRA) trained on this run's base."""
    if folder is None:
        return
    config_file = Path(folder) / "adapter_config.json"
    if not config_file.is_file():
        raise UserError(f"--adapter {folder}: no adapter_config.json there. Point it at the results folder of a "
                        "finished `tuneforge train` run.", field="model.adapter")  # fmt: skip
    config = json.loads(config_file.read_text(encoding="utf-8"))
    if config.get("use_dora") or config.get("peft_type", "LORA") != "LORA":
        raise UserError(f"--adapter {folder}: only a LoRA adapter can be a starting point (this one is "
                        f"{'DoRA' if config.get('use_dora') else config.get('peft_type')}).", field="model.adapter")  # fmt: skip


def merge_start_adapter(model: Any, folder: Path | None) -> Any:
    """The base with the earlier adapter folded into its weights, in place."""
    if folder is None:
        return model
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(folder)).merge_and_unload()


def fold_into_saved(out: Path, start: Path) -> None:
    """Rewrite `out`'s adapter as start + out, one LoRA that loads on the plain base."""
    from safetensors.torch import load_file, save_file

    first_cfg, second_cfg = (json.loads((p / "adapter_config.json").read_text()) for p in (start, out))
    first, second = (
        load_file(str(start / "adapter_model.safetensors")),
        load_file(str(out / "adapter_model.safetensors")),
    )
    scale_1 = first_cfg["lora_alpha"] / first_cfg["r"]
    scale_2 = second_cfg["lora_alpha"] / second_cfg["r"]
    rank_1, rank_2 = first_cfg["r"], second_cfg["r"]
    stacked = {}
    for name in sorted({k.replace("lora_A", "lora_X").replace("lora_B", "lora_X") for k in {**first, **second}}):
        a_name, b_name = name.replace("lora_X", "lora_A"), name.replace("lora_X", "lora_B")
        a1, b1 = _pair(first, a_name, b_name, rank_1, second)
        a2, b2 = _pair(second, a_name, b_name, rank_2, first)
        stacked[a_name] = _cat([a1, a2], 0)
        stacked[b_name] = _cat([b1 * scale_1, b2 * scale_2], 1)
    rank = rank_1 + rank_2
    second_cfg.update(r=rank, lora_alpha=rank, rank_pattern={}, alpha_pattern={})
    save_file(stacked, str(out / "adapter_model.safetensors"), metadata={"format": "pt"})
    (out / "adapter_config.json").write_text(json.dumps(second_cfg, indent=2, sort_keys=True), encoding="utf-8")


def _pair(weights: dict[str, Any], a_name: str, b_name: str, rank: int, other: dict[str, Any]) -> tuple[Any, Any]:
    """A layer's (A, B); zeros of the right shape where only the other adapter touched that layer."""
    import torch

    if a_name in weights:
        return weights[a_name].float(), weights[b_name].float()
    a, b = other[a_name], other[b_name]
    return torch.zeros(rank, a.shape[1]), torch.zeros(b.shape[0], rank)


def _cat(parts: list[Any], dim: int) -> Any:
    import torch

    return torch.cat(parts, dim=dim).contiguous()
