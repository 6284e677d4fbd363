"""How much disk a training run will fill: checkpoints kept, the one being written, and the final results.

The start-up check compares this with the free space before any model loads, so a run that
can't fit stops in seconds instead of at its first checkpoint. A LoRA checkpoint holds the
adapter in fp32 and AdamW's two moments of the same size, plus the tokenizer; the results hold
the adapter and the tokenizer once more. A full fine-tune's hold the whole model the same way. Shapes come from the base's config.json; a base not
on disk yet (a preset before its first conversion) gets a fixed floor, and the log says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.disk_faults import mb

FLOOR_BYTES = 200 * 1024**2  # when the base's shapes are unknown: adapter, checkpoints and logs of a small run
MARGIN_BYTES = 10 * 1024**2  # log, metrics.json, loss.png, eval_set.jsonl, scheduler and random states
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "special_tokens_map.json", "chat_template.jinja")  # fmt: skip


@dataclass(frozen=True)
class SpaceNeed:
    total: int
    checkpoint: int  # one checkpoint; 0 when unknown
    checkpoints: int  # how many exist at once at worst: the kept ones and the one being written
    results: int

    def describe(self) -> str:
        if not self.checkpoint:
            return f"about {mb(self.total)} (a fixed floor: the base model's size is not known before its first load)"
        return (f"about {mb(self.total)} ({self.checkpoints} checkpoints of {mb(self.checkpoint)}: "
                f"--save-total-limit {self.checkpoints - 1} kept and one being written; the results, "
                f"{mb(self.results)}; the log and metrics)")  # fmt: skip


def estimate(config: dict[str, Any]) -> SpaceNeed:
    """The run's bytes on disk at its fullest, from the recorded settings (runs/resume.py: run_settings)."""
    from tuneforge.models.loading import resolve_model

    try:
        keep = int(config["train"]["save_total_limit"]) + 1
    except (KeyError, TypeError, ValueError):  # a marker written by an older version: its default
        keep = 3
    try:
        base = Path(resolve_model(config["model"]["name"]).path)
        shapes = json.loads((base / "config.json").read_text(encoding="utf-8"))
    except Exception:  # noqa: BLE001 - a hub id, a preset not converted yet, a bad config: the floor, said so
        return SpaceNeed(FLOOR_BYTES, 0, keep, 0)
    if (config.get("train") or {}).get("finetune") == "full":  # every weight is saved, with its AdamW moments
        from tuneforge.presets import estimate_model_params

        params = estimate_model_params(str(base))
    else:
        params = lora_parameters(shapes, int(config["lora"]["r"]), config["lora"]["target_modules"])
    if not params:
        return SpaceNeed(FLOOR_BYTES, 0, keep, 0)
    tokenizer = sum((base / name).stat().st_size for name in TOKENIZER_FILES if (base / name).is_file())
    checkpoint = params * 4 * 3 + tokenizer  # fp32 weights and AdamW's exp_avg and exp_avg_sq
    results = params * 4 + tokenizer
    return SpaceNeed(keep * checkpoint + results + MARGIN_BYTES, checkpoint, keep, results)


def lora_parameters(shapes: dict[str, Any], r: int, targets: list[str] | str) -> int:
    """r × (in + out) for each adapted projection of a llama-style block; 0 when the config lacks the shapes."""
    try:
        hidden, layers = int(shapes["hidden_size"]), int(shapes["num_hidden_layers"])
        heads = int(shapes["num_attention_heads"])
    except (KeyError, TypeError, ValueError):
        return 0
    head_dim = int(shapes.get("head_dim") or hidden // heads)
    inner = int(shapes.get("intermediate_size") or 4 * hidden)
    q, kv = heads * head_dim, int(shapes.get("num_key_value_heads") or heads) * head_dim
    sizes = {"q_proj": (hidden, q), "k_proj": (hidden, kv), "v_proj": (hidden, kv), "o_proj": (q, hidden),
             "gate_proj": (hidden, inner), "up_proj": (hidden, inner), "down_proj": (inner, hidden)}  # fmt: skip
    chosen = {k: v for k, v in sizes.items() if targets == "all-linear" or k in targets} or sizes  # others: upper bound
    return layers * r * sum(a + b for a, b in chosen.values())
