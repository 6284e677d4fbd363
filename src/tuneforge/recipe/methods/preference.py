"""What DPO, ORPO and KTO share: reading pairs, rows in TRL's conversational form, held-out figures.

TRL's preference trainers tokenize prompt/chosen/rejected themselves with the tokenizer's chat
template, so `encode` sets the run's template on the tokenizer and hands over the turns. The
held-out pairs are tokenized here instead, once, for the figures measured before and after
training (evaluation/preference.py): accuracy, margin and the SFT loss on the chosen answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from weakref import WeakKeyDictionary

from tuneforge.config import TuneforgeConfig
from tuneforge.errors import UserError


def load(cfg: TuneforgeConfig) -> Any:
    from tuneforge.data.preference_sources import load_preferences

    spec = cfg.data.dataset
    if not isinstance(spec, str):
        raise UserError(f"--method {cfg.train.method} reads one preference dataset, not a mixture ({', '.join(spec)}). "
                        "Join the pair files into one, or name one --dataset.", field="data.dataset")  # fmt: skip
    return load_preferences(spec, cfg.data, cfg.train.method)


def encode(
    tokenizer: Any, train_set: list[Any], eval_set: list[Any], cfg: TuneforgeConfig, log: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Training rows as TRL reads them; held-out pairs as token ids for the figures."""
    from tuneforge.data.templates import chat_template
    from tuneforge.evaluation.preference import encode_pairs

    tokenizer.chat_template = chat_template(tokenizer, cfg.data.template)  # what TRL renders with
    rows = [trl_row(pair) for pair in train_set]
    if not rows:
        raise UserError("No training pairs left after holding out the evaluation pairs. Add pairs.")
    held = encode_pairs(tokenizer, eval_set, cfg.train.max_seq_length, cfg.data.template)
    log.section("data")
    kind = "examples (unpaired)" if "label" in train_set[0] else "pairs"
    log.info(f"{len(train_set)} training {kind}, {len(eval_set)} held out (eval_pairs.jsonl, eval_set.jsonl)")
    return rows, held


def trl_row(pair: dict[str, Any]) -> dict[str, Any]:
    """A pair (or KTO example) in TRL's conversational form: the answers as one assistant turn each."""

    def answer(text: str) -> list[dict[str, str]]:
        return [{"role": "assistant", "content": text}]

    if "label" in pair:
        return {"prompt": pair["prompt"], "completion": answer(pair["completion"]), "label": pair["label"]}
    return {"prompt": pair["prompt"], "chosen": answer(pair["chosen"]), "rejected": answer(pair["rejected"])}


def measure(trainer: Any, held: list[dict[str, Any]], log: Any, label: str) -> dict[str, Any] | None:
    """Held-out preference figures of the model as it is now; 'loss' is the chosen answers' SFT loss."""
    import time

    from tuneforge.evaluation.preference import length_note, score_pairs
    from tuneforge.recipe.oom import unless_out_of_memory

    started = time.monotonic()
    skipped = f"held-out preferences, {label}: skipped, out of memory (lower --batch-size to measure them)"
    bf16 = bool(trainer.args.bf16)
    figures = unless_out_of_memory(lambda: score_pairs(trainer.model, held, trainer.args.per_device_eval_batch_size,
                                                       bf16), log, skipped, trainer.args.device.type)  # fmt: skip
    if figures is not None:
        log.info(f"held-out preferences, {label}: accuracy {100 * figures['accuracy']:.1f}%, margin "
                 f"{figures['margin']:+.3f} nats, chosen-answer loss {figures['loss']:.4f} on {figures['pairs']} "
                 f"pairs ({time.monotonic() - started:.0f} s); {length_note(figures)}")  # fmt: skip
    return figures


def report(model: Any, tokenizer: Any, eval_set: list[Any], cfg: TuneforgeConfig, log: Any) -> dict[str, Any] | None:
    """No generation check: the before/after preference figures are the report (measured in fit)."""
    return None


def write_eval_pairs(out: Path, pairs: list[dict[str, Any]]) -> None:
    """The held-out pairs in TRL's conversational form, never trained on, for `tuneforge eval`."""
    import json

    with (out / "eval_pairs.jsonl").open("w", encoding="utf-8") as handle:
        for pair in pairs:
            handle.write(json.dumps(trl_row(pair), ensure_ascii=False) + "\n")


def arguments(cfg: TuneforgeConfig, where: tuple[str, str, Path], shape: Any) -> dict[str, Any]:
    """The shared TrainingArguments plus what every TRL preference config reads the same way."""
    from tuneforge.recipe.trainer_setup import common_arguments

    device, precision, checkpoints = where
    return {**common_arguments(cfg, device, precision, checkpoints, shape), "max_length": cfg.train.max_seq_length}


def padded(cfg: TuneforgeConfig) -> dict[str, Any]:
    """DPO's and KTO's pair batches padded like SFT's (ORPO's config has no such field).

    80 DPO steps on 2 CPU cores: peak 4.9 GB padded to 64 against 5.8 GB unpadded, same speed.
    """
    from tuneforge.recipe.trainer_setup import pad_multiple

    return {"pad_to_multiple_of": pad_multiple(cfg)}


def finish(trainer: Any) -> Any:
    """Our progress callback logs instead of the raw-dict printer; the SFT path's lighter steps.

    DPO's and KTO's steps go through TRL's fused head like SFT's (ORPO builds its own logits, so
    only the bf16 copies reach it). Measured in docs/PREFERENCES.md.
    """
    from transformers.trainer_callback import PrinterCallback

    from tuneforge.recipe.trainer_setup import lighter_steps

    trainer.remove_callback(PrinterCallback)
    return lighter_steps(trainer, mean_logits=True)


def reference_is_disabled_adapter(model: Any) -> None:
    """The reference is the starting model: the policy with its adapter disabled, never a copy.

    TRL copies an existing adapter into a 'ref' adapter; ours starts at zero (an earlier adapter is
    merged into the base first, recipe/start_adapter.py), so that copy equals the disabled adapter.
    """
    if "ref" in getattr(model, "peft_config", {}):
        model.delete_adapter("ref")
        model.set_adapter("default")


_SCORED: WeakKeyDictionary[Any, dict[str, Any]] = WeakKeyDictionary()  # a run's model -> its reference scores


class ReferenceScoredOnce:
    """A full fine-tune's reference: the starting model's log-probabilities, scored once per run.

    With no adapter to disable, TRL scores the reference before training (precompute_ref_log_probs)
    instead of keeping a second copy of the model. A trainer rebuilt after an out-of-memory
    step-down would score again, with the half-trained policy as its "reference"; it gets the
    scores made before the first step instead: kept per model object, so per run, whose rows
    (and so their tokenized form) stay the same from one trainer to the next.
    """

    model: Any

    def _precompute_ref_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        kept = _SCORED.setdefault(self.model, {})
        if name not in kept or len(kept[name]) != len(dataset):
            kept[name] = super()._precompute_ref_logps(dataset, name, batch_size)  # type: ignore[misc]
        return kept[name]
