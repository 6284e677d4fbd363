"""Direct preference optimization: TRL's DPOTrainer, the reference being the policy with its adapter disabled.

A full fine-tune (--finetune full) has no adapter to disable. TRL would then load a second copy
of the model as the reference; here it scores the reference once, before the first step, and
keeps only those numbers (precompute_ref_log_probs; preference.ReferenceScoredOnce).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trl import DPOTrainer

from tuneforge.config import TuneforgeConfig
from tuneforge.recipe.checkpointing import CheckpointingMixin
from tuneforge.recipe.methods import Method
from tuneforge.recipe.methods import preference as shared
from tuneforge.recipe.oom import BatchShape

BETA = 0.1  # TRL's default: how far the policy may move from the reference
# RPO (TRL's former rpo_alpha, now loss_type "sft"): the chosen answers' SFT loss, a mean per token, added to
# DPO's, a sum over both answers' tokens times BETA. Without it DPO lowered the chosen answers' likelihood too
# (held-out SFT loss +33% in 80 steps): the model forgot definitions while it learned to rank them. At 1 the
# DPO term still outweighed it about 5 to 1 on 25-token answers (+6% in 40 steps); 5 makes them even.
# Measured in docs/PREFERENCES.md.
SFT_WEIGHT = 5.0


class CheckpointingDPOTrainer(shared.ReferenceScoredOnce, CheckpointingMixin, DPOTrainer):
    """DPOTrainer with the checkpoint hooks; a full fine-tune's reference is scored once per run."""


def build_trainer(model: Any, tokenizer: Any, datasets: tuple[Any, Any], cfg: TuneforgeConfig, shape: BatchShape,
                  where: tuple[str, str, Path], callbacks: list[Any], run_config: dict[str, Any]) -> Any:  # fmt: skip
    from trl import DPOConfig

    from tuneforge.recipe.distributed import apply_strategy

    full = not hasattr(model, "peft_config")  # no adapter to disable: score the reference once, before training
    args = apply_strategy(DPOConfig(**shared.arguments(cfg, where, shape), **shared.padded(cfg), beta=BETA,
                                    loss_type=["sigmoid", "sft"], loss_weights=[1.0, SFT_WEIGHT],
                                    precompute_ref_log_probs=full), cfg.train.strategy)  # fmt: skip
    trainer = CheckpointingDPOTrainer(model=model, args=args, train_dataset=datasets[0], processing_class=tokenizer,
                                      callbacks=callbacks, keep=cfg.train.save_total_limit, run_config=run_config)  # fmt: skip
    shared.reference_is_disabled_adapter(trainer.model)
    return shared.finish(trainer)


METHOD = Method("dpo", shared.encode, build_trainer, shared.report, shared.load, shared.measure)
