"""`tuneforge sweep`: check everything, open the study, run trials until enough have finished, write the results.

Reads like the recipe: resolve → check → open the folder and the study → optimize → outputs.
The search itself is Optuna's; each trial is a real `tuneforge train` process (sweep/study.py).
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

from tuneforge.config_resolve import ResolvedConfig, resolve_config
from tuneforge.errors import UserError

SECTIONS = ("model", "data", "lora", "train")  # what a trial and best.yaml carry; not serve or sweep


def run_sweep(cli_values: dict[str, Any], config_file: Path | None = None) -> dict[str, Any]:
    from tuneforge.quiet import quiet_optuna
    from tuneforge.runs.lock import holding
    from tuneforge.sweep.folder import check_folder_for, choose_folder
    from tuneforge.sweep.space import check_space

    quiet_optuna()
    resolved = resolve_config(cli_values, config_file)
    check_space(resolved)
    check_workers(resolved)
    folder, by_default = choose_folder(resolved)
    fix = "Wait for it to finish, or give this sweep another --output-dir."
    with holding(folder, "sweep folder", fix):
        state = check_folder_for(folder, resolved)
        (folder / "trials").mkdir(parents=True, exist_ok=True)
        log = SweepLog(folder / "sweep.log")
        if by_default and state is not None:
            log(f"resuming the unfinished sweep in {folder} (same settings)")
        return run_study(resolved, folder, state, log)


def run_study(resolved: ResolvedConfig, folder: Path, state: dict[str, Any] | None, log: Any) -> dict[str, Any]:
    from tuneforge.sweep import study as studies
    from tuneforge.sweep.folder import write_state
    from tuneforge.sweep.outputs import write_outputs

    sweep = resolved.config.sweep
    url = sweep.storage or f"sqlite:///{(folder / 'study.db').absolute()}"
    storage = studies.open_storage(url)
    direction = "maximize" if sweep.objective == "rouge" else "minimize"
    existing = len(studies.load_study(storage, sweep.study_name, direction, sweep.pruner, None).trials)
    seed = studies.sampler_seed(resolved.config.train.seed, sweep.storage is None, existing)
    study = studies.load_study(storage, sweep.study_name, direction, sweep.pruner, seed)
    done = studies.finished_count(study)
    if state is not None and state.get("status") == "finished" and done >= sweep.trials:
        raise UserError(
            f"The sweep in '{folder}' already finished {done} trials (--trials {sweep.trials}); its results "
            f"are in {folder}/summary.html and best.yaml. Nothing was overwritten. Raise --trials to run more "
            "trials in the same study, or choose a new --output-dir for a new sweep."
        )
    if sweep.storage is None and (stale := studies.retry_stale_trials(study, storage)):
        log(f"trials {', '.join(map(str, stale))} were cut off by a stop; they run again from their checkpoints")
    write_state(folder, "running", resolved)
    log(f"study '{sweep.study_name}' in {studies.hidden(url)}: {done} of {sweep.trials} trials finished; "
        f"{sweep.workers} worker(s); objective {sweep.objective} ({direction})")  # fmt: skip
    started = time.monotonic()
    optimize(study, resolved, folder, log)
    summary = write_outputs(study, resolved, folder, time.monotonic() - started, log)
    write_state(folder, "finished", resolved)
    return summary


def optimize(study: Any, resolved: ResolvedConfig, folder: Path, log: Any) -> None:
    """Trials until `sweep.trials` have finished; failed ones are replaced, up to as many again."""
    import optuna

    from tuneforge.sweep.study import finished_count, make_objective
    from tuneforge.sweep.trial_run import TrialFailed, TrialPlan

    sweep, config = resolved.config.sweep, resolved.config.model_dump(mode="json")
    plan = TrialPlan({s: config[s] for s in SECTIONS}, folder / "trials", sweep.trial_steps, sweep.eval_every,
                     sweep.objective)  # fmt: skip
    objective = make_objective(plan, sweep.space, log)
    stop = optuna.study.MaxTrialsCallback(sweep.trials, states=(optuna.trial.TrialState.COMPLETE,
                                                                optuna.trial.TrialState.PRUNED))  # fmt: skip
    budget = sweep.trials  # failed trials allowed before the sweep gives up
    while (left := sweep.trials - finished_count(study)) > 0 and budget > 0:
        failed_before = _failed(study)
        study.optimize(objective, n_trials=left, n_jobs=sweep.workers, catch=(TrialFailed,), callbacks=[stop],
                       gc_after_trial=False, show_progress_bar=False)  # fmt: skip
        budget -= _failed(study) - failed_before
    if finished_count(study) == 0:
        raise UserError(
            f"Every trial of the sweep failed; the last one said: {_last_failure(folder)}. Run that trial's "
            f"command by hand to see more: tuneforge train --config {folder}/trials/trial-0.yaml"
        )


def _failed(study: Any) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name == "FAIL")


def _last_failure(folder: Path) -> str:
    from tuneforge.sweep.trial_run import log_tail

    logs = sorted((folder / "trials").glob("trial-*.log"), key=lambda p: p.stat().st_mtime)
    return log_tail(logs[-1], 3) if logs else "no log"


def check_workers(resolved: ResolvedConfig) -> None:
    """--workers N must fit: N training processes at the profile's memory estimate each."""
    from tuneforge.machine.profile import trial_memory_gb
    from tuneforge.presets import estimate_model_params

    workers, hw, cfg = resolved.config.sweep.workers, resolved.hardware, resolved.config
    if workers == 1 or hw is None:
        return
    tokens = cfg.train.batch_size * cfg.train.max_seq_length
    need, usable, where = trial_memory_gb(hw, estimate_model_params(cfg.model.name), cfg.train.precision, tokens,
                                          cfg.train.gradient_checkpointing)  # fmt: skip
    fits = max(1, int(usable // need))
    if workers > fits:
        raise UserError(
            f"--workers {workers} needs about {workers * need:.1f} GB ({need:.1f} GB per trial: weights, activations "
            f"for {cfg.train.batch_size} x {cfg.train.max_seq_length} tokens, reserve), more than {where} "
            f"({usable:.1f} GB). Use --workers {fits} or fewer, or lower --batch-size or --max-seq-length.",
            field="sweep.workers",
        )


class SweepLog:
    """Each line on screen and in sweep.log, with the time: a sweep runs for minutes to hours."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, message: str) -> None:
        line = f"{datetime.now().strftime('%H:%M:%S')} {message}"
        print(line, flush=True)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
