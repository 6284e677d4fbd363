"""`tuneforge train --nproc N`: relaunch the same training under torchrun, one process per GPU.

We never build our own process group: torchrun (or `accelerate launch`) starts the processes
and sets RANK/LOCAL_RANK/WORLD_SIZE, and transformers' Trainer turns those into DDP, FSDP or
DeepSpeed. This parent process resolves the config once, checks what can be checked (output
folder, DeepSpeed installed, model found), writes the resolved config to a YAML file, and starts
`python -m tuneforge train --config that.yaml` under the launcher with TUNEFORGE_LAUNCHED=1, so
every child trains with exactly the values the user saw and none of them relaunches again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import Stopped, UserError
from tuneforge.recipe.distributed import CHILD_ENV, require_deepspeed, strategy_file
from tuneforge.runs.lock import HELD_ENV

LAUNCHERS = ("torchrun", "accelerate")
DEFAULT_PORT = 29500  # torchrun's own default


@dataclass
class LaunchOptions:
    """The launcher flags: processes per node, and where this node sits among the others."""

    nproc: str = "auto"  # a number, or "auto" for every visible GPU
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    master_port: int | None = None
    launcher: str = "torchrun"


def resolve_nproc(value: str, gpu_count: int | None = None) -> int:
    """'auto' means one process per visible GPU; a number is taken as it is (CPU processes too)."""
    if value == "auto":
        count = _visible_gpus() if gpu_count is None else gpu_count
        if count == 0:
            raise UserError(
                "--nproc auto starts one process per GPU, but torch sees no GPU here. "
                "Give a number instead (e.g. --nproc 2 trains with 2 CPU processes), or drop --nproc."
            )
        return count
    if not value.isdigit() or int(value) < 1:
        raise UserError(f"--nproc must be a whole number of processes (1 or more) or 'auto', not '{value}'.")
    return int(value)


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_topology(opts: LaunchOptions) -> None:
    """Multi-node runs need a meeting point; catch a wrong node rank before any node waits for it."""
    if opts.launcher not in LAUNCHERS:
        raise UserError(f"--launcher must be one of {', '.join(LAUNCHERS)}, not '{opts.launcher}'.")
    if opts.nnodes < 1 or not 0 <= opts.node_rank < opts.nnodes:
        raise UserError(
            f"--node-rank {opts.node_rank} does not fit --nnodes {opts.nnodes}: number the machines "
            f"0 to {opts.nnodes - 1}, with 0 on the machine whose address is --master-addr."
        )
    if opts.nnodes > 1 and not opts.master_addr:
        raise UserError(
            f"--nnodes {opts.nnodes} needs --master-addr: the address of the node-rank 0 machine that "
            "every machine can reach (e.g. --master-addr 10.0.0.1), given the same on all of them."
        )


def torchrun_command(opts: LaunchOptions, nproc: int, train_args: list[str]) -> list[str]:
    """`python -m torch.distributed.run` is torchrun from this very Python, so the venv is the same."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc)]
    if opts.nnodes == 1 and not opts.master_addr:
        cmd.append("--standalone")  # picks a free port itself: two runs on one machine don't collide
    else:
        cmd += ["--nnodes", str(opts.nnodes), "--node_rank", str(opts.node_rank),
                "--master_addr", str(opts.master_addr or "127.0.0.1"),
                "--master_port", str(opts.master_port or DEFAULT_PORT)]  # fmt: skip
    return cmd + ["-m", "tuneforge", "train", *train_args]


def accelerate_command(opts: LaunchOptions, nproc: int, train_args: list[str]) -> list[str]:
    """`accelerate launch` counts processes over all machines, torchrun per machine."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(nproc * opts.nnodes), "--num_machines", str(opts.nnodes),
           "--machine_rank", str(opts.node_rank)]  # fmt: skip
    if opts.nnodes > 1 or opts.master_addr:
        cmd += ["--main_process_ip", str(opts.master_addr or "127.0.0.1"),
                "--main_process_port", str(opts.master_port or DEFAULT_PORT)]  # fmt: skip
    return cmd + ["-m", "tuneforge", "train", *train_args]


def build_command(opts: LaunchOptions, nproc: int, train_args: list[str]) -> list[str]:
    check_topology(opts)
    builder = torchrun_command if opts.launcher == "torchrun" else accelerate_command
    return builder(opts, nproc, train_args)


def write_resolved_config(resolved: Any, folder: Path) -> Path:
    """Every value the parent resolved, so the children don't re-resolve on another machine's profile.

    The serve section is left out: training never reads it, and it may hold an API key.
    """
    import yaml

    data = resolved.config.model_dump(mode="json")
    data.pop("serve", None)
    path = folder / "resolved.yaml"
    path.write_text(
        "# Written by `tuneforge train --nproc` for its child processes; deleted after the run.\n"
        + yaml.safe_dump(data, sort_keys=False),
        encoding="utf-8",
    )
    return path


def preflight_parent(resolved: Any, opts: LaunchOptions, nproc: int, flags: Any) -> None:
    """What fails on bad input fails here, in one process and one message, not N tracebacks."""
    from tuneforge.models.loading import resolve_model
    from tuneforge.runs.output_dir import prepare_output_dir
    from tuneforge.runs.resume import run_settings

    cfg = resolved.config
    require_deepspeed(cfg.train.strategy)
    if cfg.train.strategy != "ddp":
        strategy_file(cfg.train.strategy)
    resolve_model(cfg.model.name)
    if opts.node_rank == 0:  # rank 0 lives on node 0; it is the only one that writes results
        prepare_output_dir(cfg.train.output_dir, flags, run_settings(cfg), opts.nnodes * nproc,
                           log=lambda message: print(message, flush=True), claim=False)  # fmt: skip


@contextmanager
def parent_lock(output_dir: Path, opts: LaunchOptions) -> Iterator[str | None]:
    """Node 0's parent holds the results folder's lock for the whole launch; yields the folder it holds.

    Its rank-0 child writes there, told through HELD_ENV that the lock is its parent's. Other
    nodes write no results, so they take no lock.
    """
    from tuneforge.recipe.distributed import OUTPUT_DIR_FIX
    from tuneforge.runs.lock import holding

    if opts.node_rank != 0:
        yield None
        return
    with holding(output_dir, fix=OUTPUT_DIR_FIX) as lock:
        yield str(lock.folder) if lock else os.environ.get(HELD_ENV)


def child_environment(held: str | None = None) -> dict[str, str]:
    """The guide's variables (BATCH_SIZE, ...) are already in the resolved config, where a CLI flag
    may have overridden them; left in the environment they would override that flag in the children."""
    from tuneforge.config_resolve import ENV_VARS

    env = {name: value for name, value in os.environ.items() if name not in ENV_VARS and name != HELD_ENV}
    return {**env, CHILD_ENV: "1", **({HELD_ENV: held} if held else {})}


def child_flags(flags: Any, debug: bool) -> list[str]:
    """--overwrite stays with the parent, which already moved the old run aside; the rest travel."""
    return ["--resume"] * flags.resume + ["--resume-anyway"] * flags.resume_anyway + ["--debug"] * debug


def wait_for_launcher(command: list[str], held: str | None = None) -> tuple[int, int | None]:
    """Run the launcher; returns its exit code and the signal that stopped the run, if one did.

    Ctrl-C reaches every process of the terminal: the children save and stop, and the parent
    must outlive them to report it. A SIGTERM sent to the parent alone is passed on. torchrun
    itself exits 1 with a traceback when signalled, so the parent's own record says what happened.
    """
    process = subprocess.Popen(command, env=child_environment(held))
    received: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        received.append(signum)
        if signum == signal.SIGTERM:
            process.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait(), (received[0] if received else None)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_launch(cli_values: dict[str, Any], config_file: Path | None, opts: LaunchOptions,
               flags: Any = None, dry_run: bool = False, debug: bool = False) -> None:  # fmt: skip
    """Resolve once, check, then run the launcher and wait; its exit status becomes ours."""
    from tuneforge.commands.train import print_dry_run
    from tuneforge.config_resolve import resolve_config

    resolved = resolve_config(cli_values, config_file)
    nproc = resolve_nproc(opts.nproc)
    command = build_command(opts, nproc, ["--config", "<resolved.yaml>"])
    if dry_run:
        print_dry_run(resolved, as_json=False)
        print("Would launch: " + " ".join(command))
        return
    from tuneforge.runs.resume import ResumeFlags

    flags = flags or ResumeFlags()
    with parent_lock(resolved.config.train.output_dir, opts) as held:
        preflight_parent(resolved, opts, nproc, flags)
        with tempfile.TemporaryDirectory(prefix="tuneforge-launch-") as folder:
            config_path = write_resolved_config(resolved, Path(folder))
            command = build_command(opts, nproc, ["--config", str(config_path)] + child_flags(flags, debug))
            print(f"Launching {nproc * opts.nnodes} processes ({nproc} on this machine): {' '.join(command)}",
                  flush=True)  # fmt: skip
            code, signalled = wait_for_launcher(command, held)
    if signalled is not None or code in (130, 143):
        raise Stopped("Training stopped; the processes saved a checkpoint (see above). Run the same command "
                      "again to resume.", 128 + signalled if signalled else code)  # fmt: skip
    if code != 0:
        raise UserError(
            f"A training process stopped with exit code {code}; its own message is above. "
            "Run again with --debug for full tracebacks."
        )
