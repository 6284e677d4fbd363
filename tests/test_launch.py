"""Guards `train --nproc`: the torchrun/accelerate command lines, the FSDP/DeepSpeed files, rank helpers and clear errors."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.commands.launch import (
    LaunchOptions,
    build_command,
    child_environment,
    resolve_nproc,
    write_resolved_config,
)
from tuneforge.config_resolve import resolve_config
from tuneforge.errors import UserError
from tuneforge.recipe import distributed
from tuneforge.recipe.oom import BatchShape

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["-m", "tuneforge", "train", "--config", "run.yaml"]


def test_one_node_eight_gpus_torchrun():
    cmd = build_command(LaunchOptions(nproc="8"), 8, ["--config", "run.yaml"])
    assert cmd == [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "8", "--standalone", *TRAIN]


def test_two_nodes_four_gpus_torchrun():
    opts = LaunchOptions(nproc="4", nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29400)
    assert build_command(opts, 4, ["--config", "run.yaml"]) == [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4", "--nnodes", "2", "--node_rank", "1",
        "--master_addr", "10.0.0.1", "--master_port", "29400", *TRAIN,
    ]  # fmt: skip


def test_accelerate_counts_processes_over_all_machines():
    one = build_command(LaunchOptions(nproc="8", launcher="accelerate"), 8, ["--config", "run.yaml"])
    assert one == [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "8",
                   "--num_machines", "1", "--machine_rank", "0", *TRAIN]  # fmt: skip
    opts = LaunchOptions(nproc="4", nnodes=2, node_rank=0, master_addr="10.0.0.1", launcher="accelerate")
    two = build_command(opts, 4, ["--config", "run.yaml"])
    assert two[4:] == ["--num_processes", "8", "--num_machines", "2", "--machine_rank", "0",
                       "--main_process_ip", "10.0.0.1", "--main_process_port", "29500", *TRAIN]  # fmt: skip


@pytest.mark.parametrize(
    ("opts", "needle"),
    [
        (LaunchOptions(nnodes=2), "needs --master-addr"),
        (LaunchOptions(nnodes=2, node_rank=2, master_addr="10.0.0.1"), "--node-rank 2 does not fit --nnodes 2"),
        (LaunchOptions(launcher="mpirun"), "--launcher must be one of torchrun, accelerate"),
    ],
)
def test_bad_topology_is_a_user_error(opts, needle):
    with pytest.raises(UserError, match=needle):
        build_command(opts, 4, [])


def test_nproc_auto_and_numbers():
    assert resolve_nproc("auto", gpu_count=8) == 8 and resolve_nproc("2") == 2
    with pytest.raises(UserError, match="torch sees no GPU"):
        resolve_nproc("auto", gpu_count=0)
    for bad in ("0", "two", "-1"):
        with pytest.raises(UserError, match="whole number"):
            resolve_nproc(bad)


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed-zero2", "deepspeed-zero3"])
def test_strategy_files_parse(strategy, monkeypatch):
    """Every shipped file is valid JSON, and the FSDP one goes through transformers' own checks."""
    real = distributed.importlib.util.find_spec
    fake = lambda name, *rest: object() if name == "deepspeed" else real(name, *rest)  # pretend it's installed
    monkeypatch.setattr(distributed.importlib.util, "find_spec", fake)
    path = distributed.strategy_file(strategy)
    data = json.loads(path.read_text())
    args = distributed.strategy_arguments(strategy)
    if strategy == "fsdp":
        from tuneforge.config import TuneforgeConfig
        from tuneforge.recipe.trainer_setup import training_arguments

        base = training_arguments(TuneforgeConfig(), "cpu", "fp32", Path("unused"))
        checked = dataclasses.replace(base, **args)  # transformers loads and validates the file here
        assert (
            checked.fsdp
            and checked.fsdp_config["version"] == 2
            and checked.fsdp_config["state_dict_type"] == "FULL_STATE_DICT"
        )
    else:
        assert args == {"deepspeed": str(path)}
        assert data["zero_optimization"]["stage"] == int(strategy[-1])
        assert data["train_micro_batch_size_per_gpu"] == "auto"  # the Trainer fills in our batch size


def test_missing_deepspeed_is_a_clear_error(monkeypatch):
    real = distributed.importlib.util.find_spec
    monkeypatch.setattr(
        distributed.importlib.util, "find_spec", lambda name, *rest: None if name == "deepspeed" else real(name, *rest)
    )
    with pytest.raises(UserError, match=r"needs DeepSpeed, which is not installed.*tuneforge\[deepspeed\]"):
        distributed.strategy_arguments("deepspeed-zero3")
    assert distributed.strategy_arguments("ddp") == {}


def test_cli_stops_before_launching_without_deepspeed(monkeypatch, tmp_path):
    real = distributed.importlib.util.find_spec
    monkeypatch.setattr(
        distributed.importlib.util, "find_spec", lambda name, *rest: None if name == "deepspeed" else real(name, *rest)
    )
    result = CliRunner().invoke(
        app, ["train", "--nproc", "2", "--strategy", "deepspeed-zero2", "--output-dir", str(tmp_path / "r")]
    )
    assert result.exit_code == 2, result.output
    assert "needs DeepSpeed" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()  # nothing was prepared or launched


def test_dry_run_shows_the_launch_command():
    result = CliRunner().invoke(app, ["train", "--nproc", "3", "--strategy", "fsdp", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "train.strategy = fsdp  (cli --strategy)" in result.output
    assert "torch.distributed.run --nproc_per_node 3 --standalone -m tuneforge train --config" in result.output


def test_children_get_the_resolved_config_and_not_the_guides_variables(tmp_path, monkeypatch):
    """BATCH_SIZE=8 with --batch-size 2: the children must train with 2, the value the parent resolved."""
    resolved = resolve_config(
        {"train.batch_size": 2, "serve.api_key": "secret"}, env={"BATCH_SIZE": "8"}, use_profile=False
    )
    path = write_resolved_config(resolved, tmp_path)
    assert "secret" not in path.read_text()
    again = resolve_config({}, config_file=path, env={}, use_profile=False).config
    assert again.model_dump(exclude={"serve"}) == resolved.config.model_dump(exclude={"serve"})
    monkeypatch.setenv("BATCH_SIZE", "8")
    env = child_environment()
    assert "BATCH_SIZE" not in env and env[distributed.CHILD_ENV] == "1"


def test_rank_helpers_read_torchruns_variables(monkeypatch):
    assert distributed.is_main_process() and distributed.world_size() == 1
    assert distributed.run_shape(4, 2) == {"world_size": 1, "micro_batch": 4, "grad_accum": 2, "global_batch": 8}
    assert distributed.plain_copies("fsdp")  # one process: the strategy changes nothing
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert not distributed.is_main_process() and distributed.is_launched_child()
    assert distributed.run_shape(4, 2) == {"world_size": 8, "micro_batch": 4, "grad_accum": 2, "global_batch": 64}
    assert distributed.plain_copies("ddp") and not distributed.plain_copies("fsdp")
    from tuneforge.config import TrainSection

    train = TrainSection(batch_size=4, grad_accum=2, strategy="fsdp")
    line = distributed.describe_processes(train, BatchShape(train.batch_size, train.grad_accum))
    assert line == "processes: 8 (fsdp), global batch 4 × 2 × 8 = 64 sequences per update"


def test_other_ranks_write_nothing(monkeypatch, tmp_path):
    from tuneforge.runs.resume import ResumeFlags

    monkeypatch.setenv("RANK", "1")
    out, log, plan = distributed.output_for_rank(tmp_path / "results", ResumeFlags(), {})
    log.info("hello")
    log.close()
    assert out == tmp_path / "results" and not out.exists() and plan.checkpoint is None
