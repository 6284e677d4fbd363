"""Run trainer.train() so that nothing finished is lost: stop cleanly on a signal, step down on out-of-memory.

The loop stays the Trainer's; this wraps it the way a careful user would by hand: on an
out-of-memory error, save the last finished step, rebuild the trainer with half the
micro-batch and twice the accumulation, and resume from that checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tuneforge.errors import Stopped, UserError
from tuneforge.machine.memory import is_out_of_memory
from tuneforge.recipe.distributed import world_size
from tuneforge.recipe.interrupts import StopOnSignal
from tuneforge.recipe.oom import BatchShape, free_memory, step_down
from tuneforge.runs import checkpoint_store


class OptimizerPhase(TrainerCallback):
    """Knows whether an error struck inside optimizer.step(), when the weights may be half-updated."""

    def __init__(self) -> None:
        self.inside = False

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.inside = True

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.inside = False


def train_with_recovery(build: Callable[[BatchShape], Any], handover: list[Any], shape: BatchShape, checkpoint: Path | None,
                        device: str, max_seq_length: int, log: Any) -> tuple[Any, BatchShape, list[dict[str, Any]]]:  # fmt: skip
    """Returns the trained trainer, the batch shape it ended with, and the out-of-memory step-downs taken.

    `handover` holds the trainer already built for `shape` (the held-out loss was measured with
    it), handed over in a list so that no caller keeps it, and its optimizer state, alive after a
    step-down; `build` makes the smaller ones.
    """
    step_downs: list[dict[str, Any]] = []
    trainer = handover.pop()
    if checkpoint is not None and finished_in(checkpoint, trainer):
        return trainer, shape, step_downs
    while True:
        stop, phase = StopOnSignal(log), OptimizerPhase()
        trainer.add_callback(stop)
        trainer.add_callback(phase)
        try:
            with stop:
                trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except Exception as exc:  # noqa: BLE001 - anything but out-of-memory is re-raised at once
            if not is_out_of_memory(exc):
                stop_progress(trainer)  # a live progress bar would draw over the error paragraph
                raise
            if world_size() > 1:
                raise oom_under_ddp(device, shape) from None
        else:
            if stop.code is not None:
                raise stopped(trainer, stop.code)
            return trainer, shape, step_downs
        failed_at = trainer.state.global_step + 1
        checkpoint = keep_last_good_state(trainer, phase.inside, log)
        stop_progress(trainer)
        del trainer
        free_memory(device)
        smaller = step_down(shape, failed_at, device, max_seq_length)
        log.info(f"out of memory at step {failed_at}: {shape.describe()} -> {smaller.describe()} "
                 f"(same effective batch); continuing from {checkpoint.name if checkpoint else 'step 0'}")  # fmt: skip
        step_downs.append(
            {"step": failed_at, "from": shape.micro_batch, "to": smaller.micro_batch, "grad_accum": smaller.grad_accum}
        )
        shape, trainer = smaller, build(smaller)


def finished_in(checkpoint: Path, trainer: Any) -> bool:
    """A checkpoint at the last step holds the whole training: load it instead of calling train() again.

    The Trainer resumes by skipping the batches already seen in the current epoch; when the last
    step does not end an epoch, it then trains one batch past max_steps, so the resumed adapter
    differed from an uninterrupted run's. The weights and state come from the checkpoint as they
    would in train(), and the callbacks that keep the loss curve read the state the same way.
    """
    from transformers import TrainerState

    if trainer.is_deepspeed_enabled or trainer.is_fsdp_enabled:
        return False  # sharded weights load inside train(); left to it
    state_file = checkpoint / "trainer_state.json"
    state = TrainerState.load_from_json(str(state_file))
    if state.global_step < trainer.args.max_steps:
        return False
    trainer._load_from_checkpoint(str(checkpoint))  # the adapter's weights, as train() loads them
    trainer.state = state
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "adopt"):
            callback.adopt(state)
    return True


def keep_last_good_state(trainer: Any, in_optimizer_step: bool, log: Any) -> Path | None:
    """Checkpoint the last finished step, unless the error struck mid-update; then the newest saved one."""
    root, step = Path(trainer.args.output_dir), trainer.state.global_step
    existing = checkpoint_store.newest_usable(root)
    if existing.folder is not None and existing.manifest.get("step") == step:
        return existing.folder
    if step > 0 and not in_optimizer_step:
        try:
            trainer.model.zero_grad(set_to_none=True)  # the failed step's partial gradients are not state
            trainer._save_checkpoint(trainer.model, None)  # the same atomic save as every checkpoint
            return root / f"checkpoint-{step}"
        except Exception as exc:  # noqa: BLE001 - a failed rescue save falls back to the last good one
            log.info(f"could not save step {step} after the out-of-memory error ({exc}); using the last checkpoint")
    return existing.folder  # a failed save commits nothing, so the newest usable one is unchanged


def stop_progress(trainer: Any) -> None:
    """The failed train() never reached on_train_end, so its live progress bar is still running."""
    for callback in trainer.callback_handler.callbacks:
        if hasattr(callback, "stop_display"):
            callback.stop_display()


def stopped(trainer: Any, code: int) -> Stopped:
    """Rank 0 says where the checkpoint is; the other ranks stop with the same code and say nothing."""
    from tuneforge.recipe.distributed import is_main_process

    if not is_main_process():
        return Stopped("", code)
    step, total = trainer.state.global_step, trainer.state.max_steps
    folder = Path(trainer.args.output_dir) / f"checkpoint-{step}"
    return Stopped(
        f"Stopped at step {step} of {total}; checkpoint saved in {folder}. "
        "Run the same command again to resume from there.",
        code,
    )


def oom_under_ddp(device: str, shape: BatchShape) -> UserError:
    """Ranks can't step down alone: the others would wait in the next all-reduce."""
    return UserError(
        f"Out of memory on {device} with {shape.describe()} per process. Several processes can't change "
        f"their batch on the fly; run again with --batch-size {max(1, shape.micro_batch // 2)} and "
        f"--grad-accum {shape.grad_accum * 2} (the same effective batch). Progress up to the last "
        "checkpoint is kept and resumes."
    )
