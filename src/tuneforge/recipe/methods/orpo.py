"""Odds ratio preference optimization: TRL's ORPOTrainer (trl.experimental), SFT and preference in one loss, no reference."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl.experimental.orpo import ORPOTrainer

from tuneforge.config import TuneforgeConfig
from tuneforge.recipe.checkpointing import CheckpointingMixin
from tuneforge.recipe.methods import Method
from tuneforge.recipe.methods import preference as shared
from tuneforge.recipe.oom import BatchShape

BETA = 0.1  # TRL's default: the weight of the odds-ratio term next to the SFT loss


class CheckpointingORPOTrainer(CheckpointingMixin, ORPOTrainer):
    """ORPOTrainer with the checkpoint hooks."""


def build_trainer(model: Any, tokenizer: Any, datasets: tuple[Any, Any], cfg: TuneforgeConfig, shape: BatchShape,
                  where: tuple[str, str, Path], callbacks: list[Any], run_config: dict[str, Any]) -> Any:  # fmt: skip
    from trl.experimental.orpo import ORPOConfig

    from tuneforge.recipe.distributed import apply_strategy

    args = apply_strategy(ORPOConfig(**shared.arguments(cfg, where, shape), beta=BETA), cfg.train.strategy)
    trainer = CheckpointingORPOTrainer(model=model, args=args, train_dataset=datasets[0], processing_class=tokenizer,
                                       callbacks=callbacks, keep=cfg.train.save_total_limit, run_config=run_config)  # fmt: skip
    return shared.finish(trainer)


METHOD = Method("orpo", shared.encode, build_trainer, shared.report, shared.load, shared.measure)
