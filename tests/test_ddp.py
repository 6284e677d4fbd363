"""Guards `train --nproc 2` (torchrun, gloo, CPU): both ranks train, rank 0 alone writes, DDP equals one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_train_values

pytestmark = pytest.mark.slow

# fp32, same seed, same data order: the only difference is where the sums happen. DDP adds each
# rank's gradient and then averages across ranks, one process adds all of them at once, so
# roundings differ near fp32's 1e-7 relative precision. Measured: 1.5e-6 after 12 steps. 1e-4
# leaves a wide margin yet is ~300x smaller than how far training moves the weights (see below),
# and than the 0.039 gap we measured to a run with half the global batch.
ATOL = 1e-4


def _settings(model_dir: Path, dataset: Path, out: Path, batch_size: int) -> dict:
    values = tiny_train_values(model_dir, dataset, out, **{"train.batch_size": batch_size, "train.eval_examples": 4})
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


def test_two_processes_train_like_one(tiny_model_dir, tiny_dataset, tmp_path):
    from tuneforge.train import run_train

    run_dir = tmp_path / "ddp"
    run_dir.mkdir()
    config = _as_yaml(_settings(tiny_model_dir, tiny_dataset, run_dir / "results", 2), tmp_path / "ddp.yaml")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    tuneforge = Path(sys.executable).with_name("tuneforge")
    done = subprocess.run([str(tuneforge), "train", "--nproc", "2", "--config", str(config)], cwd=run_dir,
                          env=env, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = run_dir / "results"
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["global_batch"]) == (2, 4)
    # both ranks trained: each saves its own random state into every checkpoint
    assert sorted(p.name for p in (out / "checkpoints" / "checkpoint-12").glob("rng_state_*")) == ["rng_state_0.pth", "rng_state_1.pth"]
    # one results folder, one log, and progress printed once (by rank 0)
    assert [p.name for p in run_dir.iterdir()] == ["results"]
    assert len(list(tmp_path.rglob("training_log_*"))) == 1
    assert done.stdout.count("held-out loss, base model") == 1 and done.stdout.count("step 12/12") == 1
    assert "processes: 2 (ddp), global batch 2 × 1 × 2 = 4 sequences per update" in done.stdout

    single = tmp_path / "single"
    run_train(_settings(tiny_model_dir, tiny_dataset, single, 4))  # the same global batch in one process
    assert json.loads((single / "metrics.json").read_text())["tokens_seen"] == metrics["tokens_seen"]
    ddp, one = _adapter(out), _adapter(single)
    assert ddp.keys() == one.keys()
    worst = max((ddp[k] - one[k]).abs().max().item() for k in one)
    assert worst < ATOL, f"DDP and single-process adapters differ by {worst}"
    moved = max(v.abs().max().item() for k, v in one.items() if "lora_B" in k)  # lora_B starts at zero
    assert moved > 100 * ATOL, "training barely moved the weights, so the comparison proves nothing"
