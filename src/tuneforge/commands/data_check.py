"""`tuneforge data check`: what training would see, before any model loads.

It reads the data the way `train` does, tokenizes it with the model's tokenizer and template,
and reports the format, the counts, token lengths, the over-long examples, the split and one
rendered example with the trained tokens highlighted, so masking mistakes show up in seconds.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from tuneforge.config_resolve import resolve_config


def run_data_check(
    cli_values: dict[str, Any], config_file: Path | None = None, as_json: bool = False
) -> dict[str, Any]:
    resolved = resolve_config(cli_values, config_file)
    return check_data(resolved.config, as_json, resolved.sources["train.method"])


def check_data(cfg, as_json: bool = False, method_source: str = "default") -> dict[str, Any]:
    """The report for a resolved config; `train --dry-run` can call this too."""
    from tuneforge.data import load_conversations
    from tuneforge.data.blocks import encode_documents
    from tuneforge.data.split import split_heldout
    from tuneforge.models.loading import load_tokenizer, resolve_model
    from tuneforge.presets import PREFERENCE_METHODS
    from tuneforge.recipe.methods import auto_method

    if cfg.train.method in PREFERENCE_METHODS:
        from tuneforge.commands.preference_check import check_preferences

        return check_preferences(cfg, as_json)
    data = load_conversations(cfg.data.dataset, data=cfg.data)
    train_set, held = split_heldout(data.conversations, cfg.data.eval_fraction, cfg.data.eval_min, cfg.train.seed)
    tokenizer = load_tokenizer(resolve_model(cfg.model.name), cfg.model.trust_remote_code)
    report = build_report(tokenizer, data, (train_set, held), cfg)
    report["method"], why = auto_method(cfg.train.method, method_source, data.format)
    if report["method"] == "pretrain":
        blocks = encode_documents(tokenizer, train_set, cfg.train.max_seq_length, cfg.data.template)[1]
        report["pretrain"] = blocks.as_dict()
        report["method_why"] = why or "--method pretrain"
    if as_json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        print_report(report)
    return report


def build_report(tokenizer, data, split: tuple[list, list], cfg) -> dict[str, Any]:
    from tuneforge.data.templates import template_label
    from tuneforge.data.token_cache import encode_cached
    from tuneforge.models.loading import cache_root

    max_len, template = cfg.train.max_seq_length, cfg.data.template
    train_set, held = split
    rows, stats, _ = encode_cached(tokenizer, train_set, max_len, cache_root(), template, cfg.data.drop_long)
    over = sum(length > max_len for length in stats.lengths)
    return {
        "dataset": cfg.data.dataset,
        "source": data.source,
        "format": data.format,
        "format_detected": cfg.data.format == "auto",
        "rows": data.rows,
        "skipped_empty": data.skipped,
        "examples": len(data.conversations),
        "split": {"train": len(train_set), "held_out": len(held), "how": _split_how(data, cfg)},
        "template": template_label(tokenizer, template),
        "max_seq_length": max_len,
        "tokens": length_stats(stats.lengths),
        "over_max_length": over,
        "over_max_length_action": "dropped" if cfg.data.drop_long else "truncated",
        "no_answer_left": stats.dropped,
        "trainable_examples": len(rows),
        "example": highlighted_example(tokenizer, train_set[0] if train_set else held[0], template),
        "tool_example": _tool_example(tokenizer, train_set + held, template),
        "sources": data.sources or None,
    }


def _tool_example(tokenizer, conversations: list, template: str | None) -> dict[str, Any] | None:
    """One conversation with a tool call, marked like the first example: the call trained, the results not."""
    found = next((c for c in conversations if any(m.get("tool_calls") for m in c)), None)
    return None if found is None else highlighted_example(tokenizer, found, template)


def length_stats(lengths: list[int]) -> dict[str, int]:
    ordered = sorted(lengths)
    p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
    return {"min": ordered[0], "median": int(statistics.median(ordered)), "p95": p95, "max": ordered[-1]}


def _split_how(data, cfg) -> str:
    if data.validation_source:
        return f"validation file {data.validation_source}"
    if cfg.data.val_size is not None:
        return f"--val-size {cfg.data.val_size:g}"
    return f"eval_fraction {cfg.data.eval_fraction:g}, at least {cfg.data.eval_min}, at most 10%, none below 50 rows"


def highlighted_example(tokenizer, messages: list[dict[str, str]], template: str | None) -> dict[str, Any]:
    """The rendered text cut into pieces, each marked trained or not, from the real label mask."""
    from tuneforge.data.encode import IGNORE, encode_conversation

    row = encode_conversation(tokenizer, messages, 10**9, template)
    pieces: list[list[Any]] = []
    for token, label in zip(row["input_ids"], row["labels"]):
        text, trained = tokenizer.decode([token]), label != IGNORE
        if pieces and pieces[-1][1] == trained:
            pieces[-1][0] += text
        else:
            pieces.append([text, trained])
    trained_tokens = sum(label != IGNORE for label in row["labels"])
    return {"pieces": [{"text": t, "trained": flag} for t, flag in pieces], "tokens": len(row["labels"]),
            "trained_tokens": trained_tokens}  # fmt: skip


def print_report(report: dict[str, Any]) -> None:
    console = Console(highlight=False, soft_wrap=True)
    tokens, split = report["tokens"], report["split"]
    share = 100 * report["over_max_length"] / max(split["train"], 1)
    lines = [
        f"source: {report['source']}",
        f"format: {report['format']} ({'detected' if report['format_detected'] else 'from --data-format'})",
        f"rows: {report['rows']} read, {report['skipped_empty']} skipped with nothing to learn, {report['examples']} examples",
        f"split: {split['train']} train, {split['held_out']} held out ({split['how']})",
        f"template: {report['template']}",
        f"tokens per example: min {tokens['min']}, median {tokens['median']}, p95 {tokens['p95']}, max {tokens['max']}",
        (
            f"over max length ({report['max_seq_length']}): {report['over_max_length']} training examples "
            f"({share:.1f}%), {report['over_max_length_action']}"
        ),
    ]
    for part in report.get("sources") or []:
        lines.append(f"  source {part['dataset']} (weight {part['weight']:g}): {part['rows']} rows, "
                     f"{part['examples_read']} examples, {part['examples_used']} used")  # fmt: skip
    if "pretrain" in report:
        blocks = report["pretrain"]
        lines.append(f"method: pretrain ({report['method_why']}): {blocks['documents']} documents, {blocks['tokens']} "
                     f"tokens, {blocks['blocks']} blocks of {blocks['block']} tokens, every token trained")  # fmt: skip
    console.print("[bold]tuneforge data check[/]")
    for line in lines:
        console.print(line, markup=False)
    print_example(console, "one training example", report["example"])
    if report.get("tool_example"):
        print_example(console, "one tool-call example", report["tool_example"])


def print_example(console: Console, title: str, example: dict[str, Any]) -> None:
    console.print(f"\n{title}, rendered ({example['trained_tokens']} of {example['tokens']} tokens trained, "
                  "shown in green" + ("" if console.is_terminal else " between ⟦ ⟧") + "):", markup=False)  # fmt: skip
    text = Text()
    for piece in example["pieces"]:
        if not piece["trained"]:
            text.append(piece["text"], style="dim")
        else:
            text.append(piece["text"] if console.is_terminal else f"⟦{piece['text']}⟧", style="bold green")
    console.print(text)
