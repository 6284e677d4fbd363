"""Score the base and the tuned model on the same examples and line the figures up.

One peft model serves both: inside `model.disable_adapter()` it is exactly the base model, so
the base weights load once. `quick_eval` is what `tuneforge train` runs at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rich.table import Table

from tuneforge.evaluation import defaults
from tuneforge.evaluation.dataset import EvalExample, check_limit, to_examples
from tuneforge.evaluation.metrics import METRICS, differences, score_answers

SEED = 0
SAMPLE_COUNT = 10  # questions shown side by side in the reports


def evaluate_model(
    model: Any, tokenizer: Any, examples: list[EvalExample], settings: dict[str, Any], on_batch: Callable | None = None
) -> tuple[dict[str, float], list[str]]:
    """All figures for whichever model `model` is right now, and its answers."""
    from transformers import set_seed

    from tuneforge.evaluation.generation import generate_answers
    from tuneforge.evaluation.heldout_loss import answer_loss

    set_seed(SEED)  # greedy decoding needs no randomness, but a fixed seed keeps any future sampling repeatable
    figures: dict[str, float] = {}
    if settings["with_loss"]:
        loss = answer_loss(model, tokenizer, [e.messages for e in examples], settings["max_length"])
        if loss is not None:
            figures.update(heldout_loss=loss.loss, perplexity=loss.perplexity)
    answers = generate_answers(
        model, tokenizer, [e.prompt for e in examples], settings["max_new_tokens"], settings["batch_size"], on_batch
    )
    texts = [a.text for a in answers]
    figures.update(
        score_answers(texts, [e.reference for e in examples], [a.tokens for a in answers], [a.stopped for a in answers])
    )
    return figures, texts


def evaluate_both(
    model: Any, tokenizer: Any, examples: list[EvalExample], settings: dict[str, Any], on_batch: Callable | None = None
) -> dict[str, Any]:
    """{'examples', 'settings', 'base', 'tuned', 'diff', 'samples', 'seconds'} for a peft model."""
    was_training = model.training
    model.eval()  # LoRA dropout off: in training mode the tuned answers would change from run to run
    started = time.monotonic()
    try:
        with model.disable_adapter():
            base, base_answers = evaluate_model(model, tokenizer, examples, settings, on_batch)
        tuned, tuned_answers = evaluate_model(model, tokenizer, examples, settings, on_batch)
    finally:
        model.train(was_training)
    samples = [
        {"question": e.question, "reference": e.reference, "base": b, "tuned": t}
        for e, b, t in zip(examples, base_answers, tuned_answers, strict=True)
    ]
    return {
        "examples": len(examples), "settings": settings, "base": base, "tuned": tuned,
        "diff": differences(base, tuned), "samples": samples, "seconds": time.monotonic() - started,
    }  # fmt: skip


def eval_settings(
    max_new_tokens: int, batch_size: int = defaults.BATCH_SIZE, max_length: int = 512, with_loss: bool = True
) -> dict[str, Any]:
    return {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "max_length": max_length,
            "with_loss": with_loss, "decoding": "greedy", "seed": SEED}  # fmt: skip


def quick_eval(
    model: Any,
    tokenizer: Any,
    eval_conversations: list[list[dict[str, str]]],
    limit: int,
    max_new_tokens: int = defaults.QUICK_MAX_NEW_TOKENS,
    batch_size: int = defaults.BATCH_SIZE,
    with_loss: bool = False,
    max_length: int = 512,
) -> dict[str, Any]:
    """Base vs tuned on the first `limit` held-out conversations of an already-loaded peft model.

    The held-out loss is off by default because `train` has already measured it with the trainer.
    """
    check_limit(limit)
    examples = to_examples(eval_conversations)[:limit]
    if not examples:
        from tuneforge.errors import UserError

        raise UserError("The held-out set has no conversation that ends in an answer, so there is nothing to compare.")
    return evaluate_both(model, tokenizer, examples, eval_settings(max_new_tokens, batch_size, max_length, with_loss))


def format_comparison_table(metrics: dict[str, Any]) -> Table:
    """Base, tuned and difference per figure; the difference is green where tuned is better."""
    table = Table(title=f"Base vs tuned on {metrics['examples']} held-out examples")
    for name, justify in (("figure", "left"), ("base", "right"), ("tuned", "right"), ("difference", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for info in METRICS:
        if info.key not in metrics["tuned"]:
            continue
        base, tuned, diff = metrics["base"][info.key], metrics["tuned"][info.key], metrics["diff"][info.key]
        colour = "white"
        if info.higher_is_better is not None and diff:
            colour = "green" if (diff > 0) == info.higher_is_better else "red"
        table.add_row(
            info.label, f"{base:.{info.digits}f}", f"{tuned:.{info.digits}f}", f"[{colour}]{diff:+.{info.digits}f}[/]"
        )
    return table
