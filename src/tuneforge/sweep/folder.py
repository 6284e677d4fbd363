"""The sweep folder: where it is, what it holds, and when running again resumes it or is refused.

`sweep.json` records the settings the study was started with and whether it finished. Running
the same command again resumes an unfinished sweep; a finished one is never overwritten
silently, and a folder that holds a sweep of other settings is refused with the keys that differ.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from tuneforge.config_resolve import ResolvedConfig
from tuneforge.errors import UserError

STATE = "sweep.json"
SWEEPS = Path("sweeps")
# Sweep settings that may change between runs of one sweep: how many, how many at once, where.
OWN = {"trials", "sweep.log", "study.db"}
FREE = {"sweep.trials", "sweep.workers", "sweep.output_dir", "train.output_dir", "train.report_to"}


def fingerprint(resolved: ResolvedConfig) -> dict[str, Any]:
    """The settings that make two runs the same sweep (JSON-safe, flat)."""
    dumped = resolved.config.model_dump(mode="json", exclude={"serve"})
    flat = {f"{s}.{k}": v for s, values in dumped.items() for k, v in values.items()}
    return {k: v for k, v in flat.items() if k not in FREE}


def choose_folder(resolved: ResolvedConfig) -> tuple[Path, bool]:
    """(folder, chosen by default). Without --output-dir, the newest unfinished sweep of the same settings resumes."""
    given = resolved.config.sweep.output_dir
    if given is not None:
        return Path(given), False
    if SWEEPS.is_dir():
        mine = fingerprint(resolved)
        for folder in sorted(SWEEPS.iterdir(), reverse=True):
            state = read_state(folder)
            if state and state.get("status") == "running" and state.get("settings") == mine:
                return folder, True
    return SWEEPS / datetime.now().strftime("%Y%m%d-%H%M%S"), True


def read_state(folder: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((folder / STATE).read_text(encoding="utf-8"))
        return state
    except (OSError, ValueError):
        return None


def check_folder_for(folder: Path, resolved: ResolvedConfig) -> dict[str, Any] | None:
    """The earlier state of this sweep, or None for a new one; a folder of something else is refused."""
    state = read_state(folder)
    if state is None:
        # a sweep stopped before its first state write leaves only these: still ours to continue
        if folder.is_dir() and any(p.name not in OWN for p in folder.iterdir()):
            raise UserError(
                f"The sweep folder '{folder}' already holds files that are not a tuneforge sweep. "
                "Choose another --output-dir (nothing was changed)."
            )
        return None
    before, now = state.get("settings", {}), fingerprint(resolved)
    changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
    if changed:
        shown = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed[:6])
        raise UserError(
            f"The sweep folder '{folder}' holds a sweep of other settings ({shown}). A study compares trials "
            "of one search only: choose a new --output-dir, or run again with the settings it was started with."
        )
    return state


def write_state(folder: Path, status: str, resolved: ResolvedConfig) -> None:
    """Through a temporary file and a rename, so a kill never leaves half a state file."""
    data = {
        "status": status,
        "updated_at": datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join(["tuneforge", *sys.argv[1:]]),
        "settings": fingerprint(resolved),
    }
    tmp = folder / f".{STATE}.tmp"
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, folder / STATE)
