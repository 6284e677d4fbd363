"""Where this process stands in a multi-process run, and what `train.strategy` means to the Trainer.

torchrun (and `accelerate launch`) start one process per GPU and tell each who it is through
RANK, LOCAL_RANK and WORLD_SIZE. transformers' Trainer reads them itself and wraps the model in
DDP, FSDP or DeepSpeed; this module only answers "am I rank 0?" so that one process, not all of
them, writes the log and the results, and turns the strategy name into Trainer arguments.
Reading the environment instead of asking torch.distributed keeps these answers valid before the
process group exists and in a plain single-process run.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from tuneforge.errors import UserError

CHILD_ENV = "TUNEFORGE_LAUNCHED"  # set by `tuneforge train --nproc`, so the children never relaunch
STRATEGIES = ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3")
CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # package data: found after a wheel install too
STRATEGY_FILES = {
    "fsdp": "fsdp.json",
    "deepspeed-zero2": "deepspeed-zero2.json",
    "deepspeed-zero3": "deepspeed-zero3.json",
}
SHARDED = ("fsdp", "deepspeed-zero3")  # each rank holds only a slice of the weights


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0 of all nodes: the one process that prints, logs and saves."""
    return rank() == 0


def is_launched_child() -> bool:
    """True inside torchrun/accelerate (they set LOCAL_RANK) or under our own relaunch."""
    return "LOCAL_RANK" in os.environ or os.environ.get(CHILD_ENV) == "1"


def setup_rank(device: str) -> None:
    """Each process takes its own GPU: without this every rank's `.to("cuda")` lands on GPU 0."""
    if device == "cuda" and world_size() > 1:
        import torch

        torch.cuda.set_device(local_rank())


class QuietLog:
    """The log of ranks other than 0: same interface as RunLog, writes no file and prints nothing."""

    def __init__(self, folder: Path) -> None:
        import time

        self.path = folder / "training_log.rank-quiet"  # never created; only its name is read
        self.console = Console(quiet=True)
        self.started = time.monotonic()

    def info(self, message: str, show: bool = True) -> None:
        pass

    def section(self, title: str) -> None:
        pass

    def close(self) -> None:
        pass


OUTPUT_DIR_FIX = "choose another --output-dir (or OUTPUT_DIR)"


@contextmanager
def results_folder_lock(path: Path) -> Iterator[None]:
    """Rank 0 holds the results folder's lock for the run; other ranks never take it.

    Under `tuneforge train --nproc` the parent holds it for the whole launch and tells its
    children so (runs/lock.py: HELD_ENV), so a restarted rank 0 doesn't find its own run's lock.
    """
    from tuneforge.runs.lock import holding

    if not is_main_process():
        yield
        return
    with holding(path, fix=OUTPUT_DIR_FIX):
        yield


def output_for_rank(path: Path, flags: Any, config: dict[str, Any]) -> tuple[Path, Any, Any]:
    """Rank 0 checks and claims the results folder and opens the log; the others only read it.

    Two processes preparing one folder would race: with --overwrite each would move the other's
    fresh folder aside. Every rank still works out the same checkpoint to resume from.
    """
    from tuneforge.runs.output_dir import prepare_output_dir, start_plan_for_other_ranks
    from tuneforge.runs.runlog import RunLog

    if is_main_process():
        out, plan = prepare_output_dir(path, flags, config, world_size())
        return out, RunLog(out), plan
    out = Path(path).expanduser()
    return out, QuietLog(out), start_plan_for_other_ranks(out, flags, config, world_size())


def run_shape(batch_size: int, grad_accum: int) -> dict[str, int]:
    """For metrics.json: how many processes trained, and how many sequences make one update."""
    return {"world_size": world_size(), "micro_batch": batch_size, "grad_accum": grad_accum,
            "global_batch": batch_size * grad_accum * world_size()}  # fmt: skip


def describe_processes(train: Any, batch: Any) -> str | None:
    """One log line for a multi-process run: how many processes, the strategy, the global batch.

    `batch` is the BatchShape actually run (micro_batch, grad_accum), which a step-down may have changed.
    """
    if world_size() == 1:
        return None
    shape = run_shape(batch.micro_batch, batch.grad_accum)
    return (
        f"processes: {shape['world_size']} ({train.strategy}), global batch {batch.micro_batch} × "
        f"{batch.grad_accum} × {shape['world_size']} = {shape['global_batch']} sequences per update"
    )


def strategy_file(strategy: str) -> Path:
    path = CONFIGS / STRATEGY_FILES[strategy]
    if not path.is_file():
        raise UserError(
            f"train.strategy '{strategy}' needs its settings file {path}, which is missing. Copy "
            f"configs/{STRATEGY_FILES[strategy]} from the tuneforge repository there, or use --strategy ddp."
        )
    return path


def require_deepspeed(strategy: str) -> None:
    """DeepSpeed is an optional extra; say how to get it before any model loads."""
    if strategy.startswith("deepspeed") and importlib.util.find_spec("deepspeed") is None:
        raise UserError(
            f"train.strategy '{strategy}' needs DeepSpeed, which is not installed. Install it with "
            "pip install 'tuneforge[deepspeed]' (or pip install deepspeed; it needs a CUDA toolkit), "
            "or use --strategy ddp (model fits one GPU) or fsdp (it doesn't)."
        )


def strategy_arguments(strategy: str) -> dict[str, Any]:
    """TrainingArguments fields for a strategy; DDP needs none, the Trainer picks it up from torchrun."""
    if strategy == "ddp":
        return {}
    require_deepspeed(strategy)
    path = str(strategy_file(strategy))
    if strategy == "fsdp":
        return {"fsdp": True, "fsdp_config": path}
    return {"deepspeed": path}


def apply_strategy(args: Any, strategy: str) -> Any:
    """Add the strategy to finished TrainingArguments; a single process trains as it always did.

    `dataclasses.replace` runs the arguments' own checks again, which is where transformers
    loads and validates the FSDP/DeepSpeed file; setting the attribute afterwards would skip that.
    """
    if world_size() == 1:
        return args
    args.ddp_find_unused_parameters = False  # LoRA uses every trainable weight; the search costs a pass
    extra = strategy_arguments(strategy)
    return dataclasses.replace(args, **extra) if extra else args


def plain_copies(strategy: str) -> bool:
    """True when every rank holds a whole, ordinary model: one process, or DDP.

    Only then do the extras around training run: an evaluate() before train() fails under FSDP2
    (transformers issue #48841), and rank 0 generating alone would wait forever for the shards
    that FSDP/ZeRO-3 keep on the other ranks. FSDP training itself runs in CI on two CPU processes
    (tests/test_ddp.py); these extras stay off there, as on GPUs.
    """
    return world_size() == 1 or strategy == "ddp"


def undo_eval_prepare(trainer: Any) -> None:
    """Let trainer.train() wrap the model in DDP after an evaluate() that came first.

    evaluate() prepares the model in accelerate's evaluation mode, which marks it prepared
    (accelerate >= 1.14 skips models so marked); train() then skipped the DDP wrap, and every
    rank trained its own copy on its own shard with no error. Measured here: the two ranks'
    adapters differed by 0.045 after 12 steps.
    """
    if world_size() > 1 and getattr(trainer.model, "_is_accelerate_prepared", False):
        trainer.model._is_accelerate_prepared = False


def gathered_state_dict(trainer: Any, strategy: str) -> dict[str, Any] | None:
    """FSDP and ZeRO-3 shard the weights, so every rank must join to gather them before rank 0 saves.

    DDP and ZeRO-2 keep a full copy on each rank: None lets peft read rank 0's own copy.
    """
    if world_size() == 1 or strategy not in SHARDED:
        return None
    state: dict[str, Any] = trainer.accelerator.get_state_dict(trainer.model_wrapped)
    return state
