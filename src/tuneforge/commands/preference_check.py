"""`tuneforge data check --method dpo|orpo|kto`: the pairs as the trainer will see them, before any model loads.

It reads and checks every pair the way `train` does, then shows the counts, the split, token
lengths, and one pair rendered with the model's template: the prompt (context, not scored) and
each side's answer tokens, the ones whose probability the method compares.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.text import Text


def check_preferences(cfg: Any, as_json: bool = False) -> dict[str, Any]:
    from tuneforge.data.split import split_heldout
    from tuneforge.data.templates import template_label
    from tuneforge.evaluation.preference import encode_pairs
    from tuneforge.models.loading import load_tokenizer, resolve_model
    from tuneforge.recipe.methods.preference import load

    data = load(cfg)
    train_set, held = split_heldout(data.conversations, cfg.data.eval_fraction, cfg.data.eval_min, cfg.train.seed)
    tokenizer = load_tokenizer(resolve_model(cfg.model.name), cfg.model.trust_remote_code)
    first: Any = next((p for p in [*train_set, *held] if "chosen" in p), None)
    example = encode_pairs(tokenizer, [first], 10**9, cfg.data.template)[0] if first else None
    report = {
        "method": cfg.train.method,
        "dataset": cfg.data.dataset,
        "source": data.source,
        "format": data.format,
        "rows": data.rows,
        "split": {"train": len(train_set), "held_out": len(held)},
        "unpaired": sum("label" in p for p in data.conversations),
        "template": template_label(tokenizer, cfg.data.template),
        "max_seq_length": cfg.train.max_seq_length,
        "pair": None if example is None else {
            side: {"text": tokenizer.decode(example[f"{side}_ids"]), "tokens": len(example[f"{side}_ids"])}
            for side in ("prompt", "chosen", "rejected")
        },
    }  # fmt: skip
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report)
    return report


def print_report(report: dict[str, Any]) -> None:
    console = Console(highlight=False, soft_wrap=True)
    split = report["split"]
    console.print(f"[bold]tuneforge data check[/] (--method {report['method']})")
    for line in (
        f"source: {report['source']}",
        f"format: {report['format']} (preference pairs)" if not report["unpaired"] else
        f"format: {report['format']} ({report['unpaired']} unpaired KTO examples)",
        f"rows: {report['rows']}; split: {split['train']} train, {split['held_out']} held out (eval_pairs.jsonl)",
        f"template: {report['template']}",
    ):  # fmt: skip
        console.print(line, markup=False)
    pair = report["pair"]
    if pair is None:
        return
    mark = "" if console.is_terminal else " between ⟦ ⟧"
    console.print(f"\none pair, rendered: the prompt ({pair['prompt']['tokens']} tokens) is context; the tokens "
                  f"each side is scored on are shown in green{mark}:", markup=False)  # fmt: skip
    for side in ("chosen", "rejected"):
        text = Text(pair["prompt"]["text"], style="dim")
        answer = pair[side]["text"]
        text.append(answer if console.is_terminal else f"⟦{answer}⟧", style="bold green")
        console.print(f"\n{side} ({pair[side]['tokens']} tokens scored):", markup=False)
        console.print(text)
