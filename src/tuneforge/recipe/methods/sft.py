"""Supervised fine-tuning: chat rows with the answer tokens as labels, run by TRL's SFTTrainer."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tuneforge.config import TuneforgeConfig
from tuneforge.errors import UserError
from tuneforge.recipe.methods import Method
from tuneforge.recipe.oom import BatchShape


def encode(
    tokenizer: Any, train_set: list[Any], eval_set: list[Any], cfg: TuneforgeConfig, log: Any
) -> tuple[Any, list[dict[str, Any]]]:
    """Rows cut to max_seq_length with the prompt masked out; the held-out rows score the loss."""
    from tuneforge.data.encode import encode_all
    from tuneforge.data.token_cache import encode_cached
    from tuneforge.models.loading import cache_root
    from tuneforge.runs.checkpoint_store import resume_hint

    max_len = cfg.train.max_seq_length
    started = time.monotonic()
    checkpoints = Path(cfg.train.output_dir).expanduser() / "checkpoints"  # a full cache disk names the resume point
    train_rows, stats, hit = encode_cached(tokenizer, train_set, max_len, cache_root(), cfg.data.template,
                                           cfg.data.drop_long, lambda: resume_hint(checkpoints))  # fmt: skip
    eval_rows, _ = encode_all(tokenizer, eval_set[: cfg.train.eval_examples], max_len, cfg.data.template)
    if not train_rows:
        raise UserError("No training example has answer tokens left after encoding. Raise --max-seq-length.")
    lengths: list[int] = sorted(stats.lengths)

    def pick(q: float) -> int:
        return lengths[min(len(lengths) - 1, int(q * len(lengths)))]

    log.section("data")
    log.info(f"{len(train_set)} training examples, {len(eval_set)} held out (eval_set.jsonl)")
    how = "reused from the cache" if hit else "tokenized and cached"
    log.info(
        f"training rows {how} in {time.monotonic() - started:.1f} s (Arrow, memory-mapped, {cache_root() / 'tokenized'})"
    )
    log.info(f"tokens per example: min {lengths[0]}, median {pick(0.5)}, p95 {pick(0.95)}, max {lengths[-1]}")
    log.info(f"{stats.length_summary(max_len)}; {stats.dropped} dropped with no answer left")
    return train_rows, eval_rows


def build_trainer(model: Any, tokenizer: Any, datasets: tuple[Any, Any], cfg: TuneforgeConfig, shape: BatchShape,
                  where: tuple[str, str, Path], callbacks: list[Any], run_config: dict[str, Any]) -> Any:  # fmt: skip
    """SFTTrainer for one batch shape; `where` is (device, precision, checkpoint folder)."""
    from tuneforge.recipe.distributed import apply_strategy
    from tuneforge.recipe.trainer_setup import build_trainer as build_sft_trainer
    from tuneforge.recipe.trainer_setup import training_arguments

    device, precision, checkpoints = where
    args = apply_strategy(training_arguments(cfg, device, precision, checkpoints, shape), cfg.train.strategy)
    return build_sft_trainer(model, tokenizer, args, *datasets, callbacks,
                             keep=cfg.train.save_total_limit, run_config=run_config)  # fmt: skip


def report(model: Any, tokenizer: Any, eval_set: list[Any], cfg: TuneforgeConfig, log: Any) -> dict[str, Any] | None:
    """Base vs tuned on a few held-out questions: figures, and one answer pair side by side."""
    from tuneforge.evaluation.compare import format_comparison_table, quick_eval
    from tuneforge.evaluation.sample_table import comparison_table
    from tuneforge.recipe.oom import unless_out_of_memory

    questions = [c for c in eval_set if any(m["role"] == "user" for m in c)]  # plain text has no question
    if cfg.train.eval_examples == 0 or not cfg.train.quick_eval or not questions:
        return None
    started = time.monotonic()
    skipped = "before/after check: skipped, out of memory (run `tuneforge eval` later with a smaller --batch-size)"
    result = unless_out_of_memory(lambda: quick_eval(model, tokenizer, questions, limit=cfg.train.eval_examples),
                                  log, skipped, model.device.type)  # fmt: skip
    if result is None:
        return None
    log.section(f"before/after on {result['examples']} held-out questions ({time.monotonic() - started:.0f} s)")
    for key, tuned in result["tuned"].items():
        log.info(
            f"{key}: base {result['base'][key]:.4f}, tuned {tuned:.4f}, difference {result['diff'][key]:+.4f}",
            show=False,
        )
    log.console.print(format_comparison_table(result))
    sample = result["samples"][0]
    for key in ("question", "base", "tuned", "reference"):
        log.info(f"{key}: {sample[key]}", show=False)
    log.console.print(comparison_table(sample))
    return {key: result[key] for key in ("examples", "settings", "base", "tuned", "diff", "samples")}


METHOD = Method("sft", encode, build_trainer, report)
