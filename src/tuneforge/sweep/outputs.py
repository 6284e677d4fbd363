"""What a sweep leaves: the trials table, best.yaml, the best trial's adapter, summary.json, plots and summary.html."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path
from typing import Any

from tuneforge.config_resolve import ResolvedConfig
from tuneforge.sweep.space import config_value
from tuneforge.sweep.trial_run import write_yaml

SECTIONS = ("model", "data", "lora", "train")


def trial_rows(study: Any) -> list[dict[str, Any]]:
    """One row per trial: number, state, objective, time, folder and every parameter."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        row = {"trial": t.number, "state": t.state.name.lower(), "value": t.value,
               "last_step": max(t.intermediate_values, default=None), "wall_s": t.user_attrs.get("wall_s"),
               "folder": t.user_attrs.get("folder")}  # fmt: skip
        rows.append({**row, **t.params})
    return rows


def write_table(folder: Path, rows: list[dict[str, Any]], keys: list[str]) -> None:
    """trials.csv for tools, trials.md for people."""
    columns = ["trial", "state", "value", "last_step", "wall_s", *keys, "folder"]
    with (folder / "trials.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c)) for c in columns) + " |" for row in rows]
    (folder / "trials.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def write_best_yaml(folder: Path, resolved: ResolvedConfig, best: Any) -> Path:
    """The sweep's base config with the best trial's values, at full length: `tuneforge train --config best.yaml`."""
    config = resolved.config.model_dump(mode="json")
    sections = {name: dict(config[name]) for name in SECTIONS}
    for key, value in best.params.items():
        section, name = key.split(".")
        sections[section][name] = config_value(key, value)
    value = f"{best.value:.4f}" if best.value is not None else "?"
    header = (f"The best settings of the sweep in {folder} (trial {best.number}, {resolved.config.sweep.objective} "
              f"{value} after {resolved.config.sweep.trial_steps} steps).\n# Train with them: "
              f"tuneforge train --config {folder / 'best.yaml'}")  # fmt: skip
    path = folder / "best.yaml"
    write_yaml(path, sections, header)
    return path


def copy_best_adapter(folder: Path, best: Any) -> Path | None:
    """The best trial's results folder as `best/` (without checkpoints), ready for chat, eval, serve and export."""
    source = folder / "trials" / str(best.user_attrs.get("folder", ""))
    if not (source / "adapter_model.safetensors").is_file():
        return None
    target, staging = folder / "best", folder / ".best.staging"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging, ignore=shutil.ignore_patterns("checkpoints", "tracking"))
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
    return target


def summarize(study: Any, resolved: ResolvedConfig, wall_s: float) -> dict[str, Any]:
    """The figures the log, summary.json and summary.html share: counts, best, time, pruning savings, overhead."""
    trials = study.get_trials(deepcopy=False)
    states = [t.state.name.lower() for t in trials]
    walls = [t.user_attrs["wall_s"] for t in trials if "wall_s" in t.user_attrs]
    trained = [t.user_attrs["train_time_s"] for t in trials if "train_time_s" in t.user_attrs]
    done = [t for t in trials if t.state.name == "COMPLETE"]
    best = study.best_trial if done else None
    overhead = [t.user_attrs["wall_s"] - t.user_attrs["train_time_s"] for t in trials
                if "wall_s" in t.user_attrs and "train_time_s" in t.user_attrs]  # fmt: skip
    return {
        "objective": resolved.config.sweep.objective, "direction": study.direction.name.lower(),
        "trials": len(trials), "complete": states.count("complete"), "pruned": states.count("pruned"),
        "failed": states.count("fail"), "best_trial": best.number if best else None,
        "best_value": best.value if best else None, "best_params": best.params if best else None,
        "wall_s": wall_s, "trial_wall_s": sum(walls), "train_time_s": sum(trained),
        "pruning_saved_s": sum(t.user_attrs.get("saved_s", 0.0) for t in trials),
        "overhead_per_trial_s": sum(overhead) / len(overhead) if overhead else None,
    }  # fmt: skip


def write_outputs(study: Any, resolved: ResolvedConfig, folder: Path, wall_s: float, log: Any) -> dict[str, Any]:
    from tuneforge.sweep.report import write_plots, write_summary_html

    summary = summarize(study, resolved, wall_s)
    write_table(folder, trial_rows(study), list(resolved.config.sweep.space))
    if summary["best_trial"] is not None:
        best = study.best_trial
        write_best_yaml(folder, resolved, best)
        summary["best_adapter"] = str(copy_best_adapter(folder, best) or "")
    summary["plots"] = [p.name for p in write_plots(study, folder, log)]
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    write_summary_html(folder, summary)
    log(f"{summary['trials']} trials: {summary['complete']} complete, {summary['pruned']} pruned "
        f"(saving about {summary['pruning_saved_s']:.0f} s), {summary['failed']} failed")  # fmt: skip
    if summary["best_trial"] is not None:
        log(f"best: trial {summary['best_trial']}, {summary['objective']} {summary['best_value']:.4f}; "
            f"train with it: tuneforge train --config {folder / 'best.yaml'}")  # fmt: skip
    log(f"table: {folder / 'trials.md'}; summary: {folder / 'summary.html'}")
    return summary
