"""Decide how a run starts in its results folder: fresh, resumed from a checkpoint, or refused.

A folder holding an unfinished run of the same settings resumes from its newest complete
checkpoint, so re-running the command that crashed is all a user has to do. A finished run is
never touched without --overwrite, and a resume with changed settings is refused with a table of
what changed, since it would silently become a different run (--resume-anyway accepts that).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.runs import checkpoint_store

RUN_MARKER = "tuneforge-run.json"  # {"status": "running" | "finished", "config": {...}}
DRIFT_KEYS = (
    "model.name", "data.dataset", "data.format", "data.map", "data.template", "data.split",
    "data.eval_fraction", "data.eval_min", "data.val_size", "data.drop_long",
    "lora.r", "lora.alpha", "lora.dropout", "lora.target_modules",
    "train.max_seq_length", "train.learning_rate", "train.max_steps", "train.warmup_steps", "train.seed",
    "train.padding_free", "train.group_by_length", "train.method", "train.finetune", "model.adapter",
)  # fmt: skip
SHAPE_KEYS = ("model.name", "lora.r", "lora.target_modules")  # a checkpoint can't load into another shape
BATCH = "batch (micro-batch × accumulation × processes)"


@dataclass
class ResumeFlags:
    overwrite: bool = False
    resume: bool = False  # must resume: no checkpoint is an error, not a fresh start
    resume_anyway: bool = False  # resume even though settings changed


@dataclass
class StartPlan:
    checkpoint: Path | None = None
    shape: tuple[int, int] | None = None  # (micro-batch, accumulation) kept from an out-of-memory step-down
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def run_settings(cfg: Any) -> dict[str, Any]:
    """The settings a run is recorded with (marker, manifests); serve is left out, it may hold an API key."""
    settings: dict[str, Any] = cfg.model_dump(mode="json", exclude={"serve"})
    return settings


def flat(config: dict[str, Any]) -> dict[str, Any]:
    return {f"{section}.{key}": value for section, values in config.items() for key, value in values.items()}


def run_status(out: Path) -> str:
    """'empty', 'unfinished', 'finished' or 'foreign' (files that aren't a tuneforge run we can resume)."""
    if not out.is_dir() or not any(out.iterdir()):
        return "empty"
    marker = read_marker(out)
    if marker is None:  # results written before run markers existed still count as a finished run
        return "finished" if (out / "adapter_model.safetensors").is_file() else "foreign"
    return "unfinished" if marker.get("status") == "running" else "finished"


def read_marker(out: Path) -> dict[str, Any] | None:
    try:
        marker: dict[str, Any] = json.loads((out / RUN_MARKER).read_text(encoding="utf-8"))
        return marker
    except (OSError, ValueError):
        return None


def write_marker(out: Path, status: str, config: dict[str, Any]) -> None:
    """Written through a temporary file and a rename: a crash never leaves a half marker."""
    data = {"status": status, "updated_at": datetime.now(timezone.utc).isoformat(), "config": config}
    temporary = out / f".{RUN_MARKER}.tmp"
    temporary.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(temporary, out / RUN_MARKER)


def plan_resume(out: Path, config: dict[str, Any], flags: ResumeFlags, world_size: int) -> StartPlan:
    """For an unfinished run: which checkpoint, after checking it is the same run."""
    checkpoints = out / "checkpoints"
    usable = checkpoint_store.newest_usable(checkpoints)
    plan = StartPlan(warnings=[f"skipped torn checkpoint {line}" for line in usable.skipped])
    if usable.folder is None:
        if usable.skipped or flags.resume:
            raise no_usable_checkpoint(checkpoints, usable.skipped)
        plan.notes.append(f"{out} holds a run that stopped before its first checkpoint; starting it again from step 0")
        return plan
    old = usable.manifest.get("config", {})
    check_drift(out, old, config, usable.manifest, world_size, flags.resume_anyway)
    plan.checkpoint = usable.folder
    plan.shape = kept_shape(usable.manifest, config, world_size)
    total = config["train"]["max_steps"]
    plan.notes.append(
        f"resuming the unfinished run in {out} from {usable.folder.name} (step {usable.manifest['step']} of {total})"
    )
    return plan


def no_usable_checkpoint(checkpoints: Path, skipped: list[str]) -> UserError:
    if not skipped:
        return UserError(
            f"--resume was given, but {checkpoints} holds no checkpoint to resume from. "
            "Run without --resume to start from step 0."
        )
    return UserError(
        f"No usable checkpoint in {checkpoints}: {'; '.join(skipped)}. Nothing can be resumed; "
        "pass --overwrite to move this run aside and start over, or restore the file from a backup."
    )


def batch_of(micro: int, accum: int, world: int) -> str:
    return f"{micro * accum * world} ({micro} × {accum} × {world})"


def drift(
    old: dict[str, Any], new: dict[str, Any], manifest: dict[str, Any], world_size: int
) -> list[tuple[str, Any, Any]]:
    """[(setting, checkpoint value, value now)] for every setting that changes what the run computes."""
    before, now = flat(old), flat(new)
    rows = [(key, before.get(key), now.get(key)) for key in DRIFT_KEYS if before.get(key) != now.get(key)]
    train = new["train"]
    if not same_effective_batch(manifest, train, world_size):
        rows.append((BATCH, batch_of(manifest["micro_batch"], manifest["grad_accum"], manifest["world_size"]),
                     batch_of(train["batch_size"], train["grad_accum"], world_size)))  # fmt: skip
    return rows


def same_effective_batch(manifest: dict[str, Any], train: dict[str, Any], world_size: int) -> bool:
    """Sequences per update, in the checkpoint and now; a step-down or other process count may reach it differently."""
    then = manifest["micro_batch"] * manifest["grad_accum"] * manifest["world_size"]
    return bool(then == train["batch_size"] * train["grad_accum"] * world_size)


def check_drift(
    out: Path, old: dict[str, Any], new: dict[str, Any], manifest: dict[str, Any], world_size: int, anyway: bool
) -> None:
    rows = drift(old, new, manifest, world_size)
    if not rows:
        return
    table = drift_table(rows)
    shape = [key for key, _, _ in rows if key in SHAPE_KEYS]
    if shape:
        raise UserError(
            f"The results folder '{out}' holds an unfinished run whose checkpoint can't load with the new "
            f"{', '.join(shape)}:\n{table}\nRun the earlier command again to resume, or pass --overwrite to "
            "move that run aside and start over."
        )
    if anyway:
        return
    raise UserError(
        f"The results folder '{out}' holds an unfinished run with other settings, so resuming it now "
        f"would make a different run:\n{table}\nRun the earlier command again to resume it, pass "
        "--resume-anyway to resume with the new settings, or --overwrite to move that run aside and start over."
    )


def drift_table(rows: list[tuple[str, Any, Any]]) -> str:
    width = max(len("setting"), *(len(key) for key, _, _ in rows))
    old_width = max(len("in the checkpoint"), *(len(str(old)) for _, old, _ in rows))
    lines = [f"  {'setting':<{width}}  {'in the checkpoint':<{old_width}}  now"]
    lines += [f"  {key:<{width}}  {str(old):<{old_width}}  {new}" for key, old, new in rows]
    return "\n".join(lines)


def kept_shape(manifest: dict[str, Any], config: dict[str, Any], world_size: int) -> tuple[int, int] | None:
    """An out-of-memory step-down halved the micro-batch; the resumed run keeps it rather than fail again."""
    train = config["train"]
    if same_effective_batch(manifest, train, world_size) and manifest["micro_batch"] < train["batch_size"]:
        return manifest["micro_batch"], manifest["grad_accum"]
    return None
