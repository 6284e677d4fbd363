"""TRL's trainers (SFT, DPO, ORPO, KTO) with atomic checkpoints, the MPS random state, and a learning rate that can change on resume.

Four Trainer methods are wrapped, each keeping the original's work and adding to it:
- `_save_checkpoint`: the Trainer writes its usual files into a staging folder; we swap the
  pickled training_args.bin for JSON, add the MPS random state, then commit (checkpoint_store).
- `_load_rng_state`: transformers restores Python, NumPy, torch CPU and CUDA states but not
  MPS, so a resumed run on a Mac drew different dropout masks.
- `_load_optimizer_and_scheduler`: the scheduler's saved base rate would silently win over a
  learning rate changed with --resume-anyway.
- `_track_num_input_tokens`: a packed (padding-free) row has no attention mask, so the Trainer
  counted tokens unequal to the pad id; SmolLM2's pad is its end-of-turn token, so every
  example's own end-of-turn tokens went uncounted (tokens/s read about 4% low).
A mixin is the one place these hooks exist, shared by every method's trainer class; the loop
itself stays the Trainer's.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trl import SFTTrainer

from tuneforge import disk_faults
from tuneforge.recipe.distributed import is_main_process
from tuneforge.runs import checkpoint_store

MPS_RNG = "rng_state_mps.safetensors"


class CheckpointingMixin:
    """The three hooks described above, put in front of any transformers Trainer; nothing else differs.

    Callbacks can't do these jobs: `on_save` runs after the files are written in place (too
    late to stage them), and no callback sees the checkpoint folder while it is being loaded.
    """

    args: Any
    optimizer: Any
    lr_scheduler: Any
    state: Any
    accelerator: Any

    def __init__(self, *args: Any, keep: int, run_config: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.keep, self.run_config = keep, run_config
        self.home = results_identity(Path(str(self.args.output_dir)).parent)  # the results folder this run started in

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        parent = super()._save_checkpoint  # type: ignore[misc]  # the Trainer's, after this mixin
        save_atomically(self, lambda: parent(model, trial))

    def _load_rng_state(self, checkpoint: str | None) -> None:
        super()._load_rng_state(checkpoint)  # type: ignore[misc]
        load_mps_rng(checkpoint)

    def _track_num_input_tokens(self, inputs: dict[str, Any]) -> None:
        if "position_ids" in inputs and "attention_mask" not in inputs and inputs["input_ids"].shape[0] == 1:
            import torch

            real = torch.tensor(packed_real_tokens(inputs["position_ids"]), device=inputs["input_ids"].device)
            self.state.num_input_tokens_seen += int(self.accelerator.gather(real).sum().item())  # summed over ranks
            return
        super()._track_num_input_tokens(inputs)  # type: ignore[misc]

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        super()._load_optimizer_and_scheduler(checkpoint)  # type: ignore[misc]
        if checkpoint is not None:
            apply_learning_rate(self.optimizer, self.lr_scheduler, self.args.learning_rate)


class CheckpointingSFTTrainer(CheckpointingMixin, SFTTrainer):
    """SFTTrainer with the checkpoint hooks."""


def packed_real_tokens(position_ids: Any) -> int:
    """Tokens of the examples in one packed row: all but the bucket padding at its end.

    TRL pads a packed row to `pad_to_multiple_of` at position 0 (one-token pieces that train
    nothing), while every real example ends at a position above 0 (it is longer than one token).
    """
    positions = position_ids[0].tolist()
    end = len(positions)
    while end > 0 and positions[end - 1] == 0:
        end -= 1
    return end


def results_identity(out: Path) -> tuple[int, int] | None:
    """Rank 0 remembers which folder it writes into; a folder renamed or removed later is caught at the next save."""
    if not is_main_process() or not out.is_dir():
        return None
    return disk_faults.identity(out)


def save_atomically(trainer: Any, save: Callable[[], None]) -> None:
    """Let the Trainer write into `.staging-N/`, then commit it as `checkpoint-N` once every rank is done.

    A full or read-only disk becomes one paragraph naming the checkpoint to resume from; the
    half-written staging folder is removed at once, so its space comes back.
    """
    final_root, step = Path(trainer.args.output_dir), trainer.state.global_step
    staging = checkpoint_store.staging_root(final_root, step)
    what = f"checkpoint-{step}"
    # before the Trainer's makedirs could recreate a removed results folder and write half a run there
    disk_faults.check_still_there(final_root.parent, getattr(trainer, "home", None), what)
    with checkpoint_store.writing_run(what, final_root.parent, cleanup=staging):
        _save_and_commit(trainer, save, final_root, staging, step)


def _save_and_commit(trainer: Any, save: Callable[[], None], final_root: Path, staging: Path, step: int) -> None:
    trainer.args.output_dir = str(staging)
    try:
        save()
    finally:
        trainer.args.output_dir = str(final_root)
    staged = staging / f"checkpoint-{step}"
    if is_main_process():
        json_training_args(staged, trainer.args)
        save_mps_rng(staged)
    trainer.accelerator.wait_for_everyone()  # each rank wrote its own rng_state_<rank>.pth
    if is_main_process():
        checkpoint_store.commit(staged, final_root, step, manifest_extra(trainer))
        shutil.rmtree(staging, ignore_errors=True)
        checkpoint_store.rotate(final_root, trainer.keep)
    trainer.accelerator.wait_for_everyone()  # nobody reads checkpoints before the commit is done


def manifest_extra(trainer: Any) -> dict[str, Any]:
    """What a resume needs to know beyond the Trainer's files: the run's shape and its settings."""
    args = trainer.args
    return {
        "micro_batch": args.per_device_train_batch_size,
        "grad_accum": args.gradient_accumulation_steps,
        "world_size": args.world_size,
        "config": trainer.run_config,
    }


def json_training_args(folder: Path, args: Any) -> None:
    """The Trainer pickles its arguments into every checkpoint; a shared folder should not carry a pickle.

    Nothing reads training_args.bin back on resume, so a JSON copy loses nothing.
    """
    pickled = folder / "training_args.bin"
    if pickled.exists():
        (folder / "training_args.json").write_text(args.to_json_string(), encoding="utf-8")
        pickled.unlink()


def save_mps_rng(folder: Path) -> None:
    import torch

    if torch.backends.mps.is_available():
        from safetensors.torch import save_file

        save_file({"mps": torch.mps.get_rng_state()}, str(folder / MPS_RNG))


def load_mps_rng(checkpoint: str | None) -> None:
    import torch

    if checkpoint is None or not (Path(checkpoint) / MPS_RNG).is_file() or not torch.backends.mps.is_available():
        return
    from safetensors.torch import load_file

    torch.mps.set_rng_state(load_file(str(Path(checkpoint) / MPS_RNG))["mps"])


def apply_learning_rate(optimizer: Any, scheduler: Any, learning_rate: float) -> None:
    """A rate changed on resume takes effect from the next step; an unchanged one leaves the state untouched."""
    if optimizer is None or scheduler is None or not hasattr(scheduler, "base_lrs"):
        return
    if all(base == learning_rate for base in scheduler.base_lrs):
        return
    scale = [learning_rate / base for base in scheduler.base_lrs]
    scheduler.base_lrs = [learning_rate] * len(scheduler.base_lrs)
    for group, factor in zip(optimizer.param_groups, scale):
        group["initial_lr"] = learning_rate
        group["lr"] *= factor
