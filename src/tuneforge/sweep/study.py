"""The Optuna study: its storage, the objective that runs one trial, and the loop over trials.

The study lives in Optuna's RDB storage (SQLite in the sweep folder by default, or any URL such
as PostgreSQL), so several processes and machines share one study without a home-made queue.
A trial left RUNNING by a killed sweep is marked failed and retried with the same values, in the
same folder, where `tuneforge train` resumes it from its checkpoint.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.sweep.space import config_value, suggest
from tuneforge.sweep.trial_run import (
    Pruned,
    TrialFailed,
    TrialPlan,
    log_tail,
    objective_value,
    start_child,
    trial_sections,
    wait_and_watch,
    wait_until_free,
    write_yaml,
)

HEARTBEAT_S, GRACE_S = 10, 60  # a trial whose process stopped beating for a minute is failed and retried
FINISHED_STATES = ("COMPLETE", "PRUNED")


def hidden(url: str) -> str:
    """The URL as it may be shown: the password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown without its user part
        return url.split("@")[-1]


def open_storage(url: str) -> Any:
    """Optuna's RDB storage with heartbeats; a URL that can't be reached is bad input naming it (password hidden)."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError, SQLAlchemyError

    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)

    def connect() -> Any:
        return optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S, heartbeat_stale_trial_callback=retry,
            engine_kwargs={"pool_pre_ping": True},
        )  # fmt: skip

    check_driver(url)
    try:
        for attempt in range(3):
            try:
                return connect()
            except (IntegrityError, ProgrammingError, OperationalError):
                # Two workers meeting an empty database both create Optuna's tables and types; the second
                # CREATE is refused (PostgreSQL: duplicate key; SQLite: table already exists). Optuna does
                # not guard this, so the loser waits and opens again, now finding the schema the winner
                # made. A server that is really unreachable costs three short waits before its paragraph.
                time.sleep(0.5 * (attempt + 1))
        return connect()
    except (SQLAlchemyError, ImportError, ValueError, OSError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise UserError(
            f"Can't reach the sweep storage '{hidden(url)}' (sweep.storage): {reason}. Check the host, port, "
            "database name and password (and that the server runs), or leave --storage out to keep the "
            "study in the sweep folder.",
            field="sweep.storage",
        ) from None


# SQLAlchemy's driver name → the pip package that provides it; a plain postgresql:// means psycopg (3)
# since SQLAlchemy 2.1, which is what 'tuneforge[postgres]' installs
DRIVER_PACKAGES = {"psycopg": "'psycopg[binary]' (or: pip install 'tuneforge[postgres]')",
                   "psycopg2": "psycopg2-binary", "pg8000": "pg8000", "pymysql": "pymysql", "mysqldb": "mysqlclient"}  # fmt: skip


def check_driver(url: str) -> None:
    """A database driver that is not installed is named with its pip package, before any connection is tried."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
    except (ArgumentError, NoSuchModuleError, ValueError):
        return  # not a URL SQLAlchemy knows: connecting says so, with the URL
    except ImportError as exc:
        driver = parsed.get_driver_name()
        package = DRIVER_PACKAGES.get(driver, exc.name or driver)
        other = (
            ", or name an installed driver in the URL: postgresql+psycopg:// or postgresql+psycopg2://"
            if parsed.get_backend_name() == "postgresql"
            else ""
        )
        raise UserError(
            f"The sweep storage '{hidden(url)}' (sweep.storage) uses the database driver '{driver}', which is not "
            f"installed. Install it: pip install {package}{other}.",
            field="sweep.storage",
        ) from None


def load_study(storage: Any, name: str, direction: Any, pruner: str, sampler_seed: int | None) -> Any:
    import optuna

    pruners = {"median": optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
               "none": optuna.pruners.NopPruner()}  # fmt: skip
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, constant_liar=True)  # constant liar: parallel workers
    study = optuna.create_study(
        storage=storage, study_name=name, direction=direction, load_if_exists=True, sampler=sampler,
        pruner=pruners[pruner],
    )  # fmt: skip
    if study.direction.name.lower() != direction:
        raise UserError(
            f"The study '{name}' in the storage optimises in the other direction ({study.direction.name.lower()}); "
            "its objective differs from --objective. Use another --study-name or the objective it started with."
        )
    return study


def finished_count(study: Any) -> int:
    return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED_STATES)


def retry_stale_trials(study: Any, storage: Any) -> list[int]:
    """Trials left RUNNING by a sweep that was killed: failed now and queued again with the same values.

    Only for the sweep folder's own storage, whose lock we hold: no other process can be running them.
    """
    import optuna

    retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)
    stale = [t for t in study.get_trials(deepcopy=False) if t.state.name == "RUNNING"]
    study_id = storage.get_study_id_from_name(study.study_name)
    for trial in stale:
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        retry(study, storage.get_trial(trial_id))
    return [t.number for t in stale]


def make_objective(plan: TrialPlan, space: dict[str, Any], log: Any) -> Any:
    """Optuna's objective: draw the values, run the child, report its curve, return its figure."""

    def objective(trial: Any) -> float:
        import optuna

        values = {key: config_value(key, v) for key, v in suggest(trial, space).items()}
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        first = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        name = f"trial-{trial.number if first is None else first}"  # a retry resumes in its first folder
        folder, started = plan.trials_dir / name, time.monotonic()
        trial.set_user_attr("folder", name)
        config = plan.trials_dir / f"{name}.yaml"
        write_yaml(config, trial_sections(plan, values, folder), f"trial {trial.number} of a tuneforge sweep")
        log(f"trial {trial.number}: {shown(trial.params)} -> {folder}")
        if first is not None:
            wait_until_free(folder)
        proc = start_child(config, plan.trials_dir / f"{name}.log")
        sign = -1.0 if plan.objective == "rouge" else 1.0  # the pruner compares losses in the study's direction

        def on_point(step: int, loss: float) -> bool:
            trial.report(sign * loss, step)
            # the last point: the training is done, stopping it now would only mark a finished trial pruned
            return step < plan.trial_steps and bool(trial.should_prune())

        try:
            wait_and_watch(proc, folder, on_point)
        except Pruned as stop:
            wall = time.monotonic() - started
            trial.set_user_attr("wall_s", wall)
            trial.set_user_attr("saved_s", wall * (plan.trial_steps - stop.step) / max(stop.step, 1))
            log(f"trial {trial.number}: pruned at step {stop.step} of {plan.trial_steps} ({wall:.0f} s)")
            raise optuna.TrialPruned(str(stop)) from None
        return finish(trial, proc.returncode, folder, plan, started, log)

    return objective


def finish(trial: Any, code: int, folder: Path, plan: TrialPlan, started: float, log: Any) -> float:
    import json

    wall = time.monotonic() - started
    trial.set_user_attr("wall_s", wall)
    if code != 0:
        tail = log_tail(plan.trials_dir / f"{folder.name}.log")
        log(f"trial {trial.number}: failed (exit {code}): {tail}")
        if code == 2:  # bad input: every other trial would stop the same way
            raise UserError(f"Trial {trial.number} stopped on bad input: {tail}")
        raise TrialFailed(tail, code)
    value = objective_value(folder, plan.objective)
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    trial.set_user_attr("train_time_s", float(metrics.get("train_time_s") or 0.0))
    log(f"trial {trial.number}: {plan.objective} {value:.4f} ({wall:.0f} s)")
    return value


def shown(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def sampler_seed(seed: int, own_storage: bool, existing: int) -> int:
    """Deterministic for the folder's own study; a shared study gets a seed per process, or machines draw alike."""
    return seed + existing if own_storage else seed + existing + os.getpid()
