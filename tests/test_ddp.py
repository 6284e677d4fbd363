"""Guards `train --nproc 2` (torchrun, gloo, CPU): both ranks train, rank 0 alone writes, DDP equals one process, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import adapter_diff, assert_plain_exit_2, tiny_train_values

pytestmark = pytest.mark.slow

# fp32, same seed, same data order: the only difference is where the sums happen. DDP adds each
# rank's gradient and then averages across ranks, one process adds all of them at once, so
# roundings differ near fp32's 1e-7 relative precision. Measured: 1.5e-6 after 12 steps. 1e-4
# leaves a wide margin yet is ~300x smaller than how far training moves the weights (see below),
# and than the 0.039 gap we measured to a run with half the global batch.
ATOL = 1e-4


def _settings(model_dir: Path, dataset: Path, out: Path, batch_size: int) -> dict:
    values = tiny_train_values(model_dir, dataset, out, **{"train.batch_size": batch_size, "train.eval_examples": 4,
                                                          "train.max_steps": 30, "train.logging_steps": 1,
                                                          # 60 training rows, a multiple of the global batch:
                                                          # a short last batch is padded with repeats under DDP
                                                          "data.val_size": 4})  # fmt: skip
    values.update({"train.device": "cpu", "train.precision": "fp32"})
    return values


def _as_yaml(values: dict, path: Path) -> Path:
    nested: dict = {}
    for key, value in values.items():
        section, name = key.split(".")
        nested.setdefault(section, {})[name] = str(value) if isinstance(value, Path) else value
    path.write_text(yaml.safe_dump(nested), encoding="utf-8")
    return path


def _adapter(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "adapter_model.safetensors")


ENV = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
TUNEFORGE = Path(sys.executable).with_name("tuneforge")


def _launch(config: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(TUNEFORGE), "train", "--nproc", "2", "--config", str(config)], cwd=cwd,
                          env=ENV, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory, tiny_model_dir, tiny_dataset) -> tuple[Path, subprocess.CompletedProcess]:
    """An uninterrupted `train --nproc 2` run (global batch 4) and its output."""
    tmp_path = tmp_path_factory.mktemp("ddp-run")
    run_dir = tmp_path / "ddp"
    run_dir.mkdir()
    config = _as_yaml(_settings(tiny_model_dir, tiny_dataset, run_dir / "results", 2), tmp_path / "ddp.yaml")
    done = _launch(config, run_dir)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run_dir, done


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, tiny_model_dir, tiny_dataset) -> Path:
    """One process with the same global batch (4) as two processes of 2."""
    from tuneforge.commands.train import run_train

    single = tmp_path_factory.mktemp("single") / "results"
    run_train(_settings(tiny_model_dir, tiny_dataset, single, 4))
    return single


def test_two_processes_train_like_one(ddp_run, single_run):
    run_dir, done = ddp_run
    out = run_dir / "results"
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["global_batch"]) == (2, 4)
    # both ranks trained: each saves its own random state into every checkpoint
    assert sorted(p.name for p in (out / "checkpoints" / "checkpoint-30").glob("rng_state_*")) == [
        "rng_state_0.pth",
        "rng_state_1.pth",
    ]
    # one results folder, one log, and progress printed once (by rank 0)
    assert [p.name for p in run_dir.iterdir()] == ["results"]
    assert len(list(run_dir.rglob("training_log_*"))) == 1
    assert done.stdout.count("held-out loss, base model") == 1 and done.stdout.count("step 30/30") == 1
    assert "processes: 2 (ddp), global batch 2 × 1 × 2 = 4 sequences per update" in done.stdout

    single = single_run
    assert json.loads((single / "metrics.json").read_text())["tokens_seen"] == metrics["tokens_seen"]
    ddp, one = _adapter(out), _adapter(single)
    assert ddp.keys() == one.keys()
    worst = max((ddp[k] - one[k]).abs().max().item() for k in one)
    assert worst < ATOL, f"DDP and single-process adapters differ by {worst}"
    moved = max(v.abs().max().item() for k, v in one.items() if "lora_B" in k)  # lora_B starts at zero
    assert moved > 100 * ATOL, "training barely moved the weights, so the comparison proves nothing"


def test_a_stopped_ddp_run_resumes_to_the_same_adapter(ddp_run, tiny_model_dir, tiny_dataset, tmp_path):
    """SIGTERM to `tuneforge train --nproc 2` (as a scheduler sends it): both ranks stop at the same step,
    save one checkpoint, exit 143; the same command then resumes and ends where the uninterrupted run did."""
    out = tmp_path / "results"
    config = _as_yaml(_settings(tiny_model_dir, tiny_dataset, out, 2), tmp_path / "ddp.yaml")
    log = tmp_path / "stopped.out"
    with log.open("w") as handle:
        command = [str(TUNEFORGE), "train", "--nproc", "2", "--config", str(config)]
        process = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=handle, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while "step 3/30" not in log.read_text(errors="replace") and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 143, log.read_text()[-3000:]
    text = log.read_text()
    assert text.count("Stopped at step") == 1  # rank 0 says it; rank 1 stops quietly
    step = int(text.split("Stopped at step ")[1].split()[0])
    assert 3 <= step < 30 and (out / "checkpoints" / f"checkpoint-{step}" / "rng_state_1.pth").is_file()
    resumed = _launch(config, tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert f"from checkpoint-{step} (step {step} of 30)" in resumed.stdout
    assert adapter_diff(ddp_run[0] / "results", out) <= 1e-6
    history = [(e["step"], e["loss"]) for e in json.loads((out / "metrics.json").read_text())["loss_history"]]
    reference = json.loads((ddp_run[0] / "results" / "metrics.json").read_text())["loss_history"]
    assert history == [(e["step"], e["loss"]) for e in reference]


def test_a_second_train_on_a_launched_runs_folder_is_refused(tiny_model_dir, tiny_dataset, tmp_path):
    """The `--nproc` parent holds the results folder for its ranks, which train on without fighting over it."""
    values = {**_settings(tiny_model_dir, tiny_dataset, tmp_path / "results", 2), "train.max_steps": 5000}
    config = _as_yaml(values, tmp_path / "long.yaml")
    log = tmp_path / "long.out"
    with log.open("w") as handle:
        command = [str(TUNEFORGE), "train", "--nproc", "2", "--config", str(config)]
        process = subprocess.Popen(command, cwd=tmp_path, env=ENV, stdout=handle, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 120
            while "step 2/5000" not in log.read_text(errors="replace") and time.monotonic() < deadline:
                time.sleep(0.05)
            second = subprocess.run([str(TUNEFORGE), "train", "--config", str(config)], cwd=tmp_path, env=ENV,
                                    capture_output=True, text=True, timeout=60)  # fmt: skip
            assert_plain_exit_2(second, f"process {process.pid}", "is being written by another tuneforge process")
            assert process.poll() is None, log.read_text()[-3000:]  # the launched run was not disturbed
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)


def test_fsdp_on_two_cpu_processes_trains_like_one(single_run, tiny_model_dir, tiny_dataset, tmp_path):
    """FSDP2 shards the model over gloo on CPU too: the whole path (wrap, gather, save) runs here, not only on GPUs.
    Measured: 3.2e-7 from the single-process adapter after 30 steps."""
    out = tmp_path / "results"
    config = _as_yaml(
        {**_settings(tiny_model_dir, tiny_dataset, out, 2), "train.strategy": "fsdp"}, tmp_path / "fsdp.yaml"
    )
    done = _launch(config, tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "processes: 2 (fsdp)" in done.stdout
    assert json.loads((out / "metrics.json").read_text())["world_size"] == 2
    assert adapter_diff(single_run, out) < ATOL


@pytest.mark.parametrize("method", ["dpo", "orpo", "kto"])
def test_each_preference_method_on_two_processes_trains_like_one(method, tiny_model_dir, tmp_path):
    """--method dpo, orpo or kto under --nproc 2: the same adapter as one process with the same global batch.

    DPO's and KTO's reference is each rank's own policy with the adapter disabled; ORPO needs none."""
    from tests.test_preferences import preference_file
    from tuneforge.commands.train import run_train

    data = preference_file(tmp_path / "prefs.jsonl", count=16)  # 8 training pairs: a multiple of the global batch
    # the SFT terms are TRL's means over each micro-batch's tokens: DPO's over the chosen answers, ORPO's over the
    # prompts and chosen answers. One prompt and one answer for all, so that two ranks' means average to the one
    # process's mean (docs/PREFERENCES.md: otherwise close, not exact). Each pair keeps its own definition, as the
    # rejected side, so that which rank gets which pair still matters.
    pairs = [json.loads(line) for line in data.read_text().splitlines()]
    same = {"prompt": pairs[0]["prompt"], "chosen": "Elevated body temperature."}
    data.write_text("".join(json.dumps({**p, **same, "rejected": p["chosen"]}) + "\n" for p in pairs))
    run = {"train.method": method, "train.max_steps": 2, "data.val_size": 8, "train.learning_rate": 2e-2,
           "train.device": "cpu", "train.logging_steps": 1}  # fmt: skip
    (tmp_path / "ddp").mkdir()
    ddp = tiny_train_values(tiny_model_dir, data, tmp_path / "ddp" / "results", **run, **{"train.batch_size": 2})
    done = _launch(_as_yaml(ddp, tmp_path / f"{method}.yaml"), tmp_path / "ddp")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    single = run_train(tiny_train_values(tiny_model_dir, data, tmp_path / "single", **run))
    metrics = json.loads((tmp_path / "ddp" / "results" / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["global_batch"], metrics["method"]) == (2, 4, method)
    assert metrics["preference"]["before"] == pytest.approx(single["preference"]["before"])
    worst = adapter_diff(tmp_path / "ddp" / "results", tmp_path / "single")
    assert worst < ATOL, f"DDP and single-process {method} adapters differ by {worst}"
    moved = max(v.abs().max().item() for k, v in _adapter(tmp_path / "single").items() if "lora_B" in k)
    assert moved > 100 * ATOL, "training barely moved the weights, so the comparison proves nothing"
