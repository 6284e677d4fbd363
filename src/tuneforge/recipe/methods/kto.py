"""Kahneman-Tversky optimization: TRL's KTOTrainer on answers labelled good or bad, pairs or not.

Pairs are split into a desirable and an undesirable example each, here and shuffled with the
run's seed: KTO reads its batches in order (its KL estimate pairs neighbours), and TRL's own
unpairing would put every desirable example before every undesirable one.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from trl import KTOTrainer

from tuneforge.config import TuneforgeConfig
from tuneforge.recipe.checkpointing import CheckpointingMixin
from tuneforge.recipe.methods import Method
from tuneforge.recipe.methods import preference as shared
from tuneforge.recipe.oom import BatchShape

BETA = 0.1  # TRL's default: how far the policy may move from the reference


class CheckpointingKTOTrainer(shared.ReferenceScoredOnce, CheckpointingMixin, KTOTrainer):
    """KTOTrainer with the checkpoint hooks; a full fine-tune's reference is scored once per run."""


def encode(
    tokenizer: Any, train_set: list[Any], eval_set: list[Any], cfg: TuneforgeConfig, log: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows, held = shared.encode(tokenizer, train_set, eval_set, cfg, log)
    unpaired = [row for pair in rows for row in unpair(pair)]
    random.Random(cfg.train.seed).shuffle(unpaired)
    return unpaired, held


def unpair(row: dict[str, Any]) -> list[dict[str, Any]]:
    if "label" in row:
        return [row]
    return [{"prompt": row["prompt"], "completion": row["chosen"], "label": True},
            {"prompt": row["prompt"], "completion": row["rejected"], "label": False}]  # fmt: skip


def build_trainer(model: Any, tokenizer: Any, datasets: tuple[Any, Any], cfg: TuneforgeConfig, shape: BatchShape,
                  where: tuple[str, str, Path], callbacks: list[Any], run_config: dict[str, Any]) -> Any:  # fmt: skip
    from trl import KTOConfig

    from tuneforge.recipe.distributed import apply_strategy

    full = not hasattr(model, "peft_config")
    args = apply_strategy(KTOConfig(**shared.arguments(cfg, where, shape), **shared.padded(cfg), beta=BETA,
                                    precompute_ref_log_probs=full), cfg.train.strategy)  # fmt: skip
    trainer = CheckpointingKTOTrainer(model=model, args=args, train_dataset=datasets[0], processing_class=tokenizer,
                                      callbacks=callbacks, keep=cfg.train.save_total_limit, run_config=run_config)  # fmt: skip
    shared.reference_is_disabled_adapter(trainer.model)
    return shared.finish(trainer)


METHOD = Method("kto", encode, build_trainer, shared.report, shared.load, shared.measure)
