"""Filesystem faults in real runs: disk full at each write site, folder renamed, read-only places: one paragraph, exit 2, resumable."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import adapter_diff, assert_plain_exit_2, tiny_train_values
from tests.fault_injection import child_env, disk_full, install

SETTINGS = """\
lora: {r: 8, alpha: 16, dropout: 0.0}
train: {max_steps: 4, batch_size: 4, learning_rate: 0.005, max_seq_length: 128, precision: fp32,
        eval_examples: 0, save_steps: 2, save_total_limit: 2, logging_steps: 1}
"""  # 32 training rows: 8 steps per epoch, so the last step does not end an epoch


def cli_exit_2(result, *needles: str) -> None:
    """What assert_plain_exit_2 checks for a child process, for an in-process CliRunner call."""
    assert result.exit_code == 2 and result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    message = " ".join(result.output.split())
    for needle in needles:
        assert needle in message, (needle, message)


def newest_verifies(out: Path, name: str) -> None:
    from tuneforge.runs import checkpoint_store

    usable = checkpoint_store.newest_usable(out / "checkpoints")
    assert usable.folder is not None and usable.folder.name == name and not usable.skipped
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".staging")]


def log_ends_with(out: Path, text: str) -> None:
    (log,) = out.glob("training_log_*.log")
    assert text in log.read_text().splitlines()[-1], log.read_text()[-600:]


@pytest.mark.slow
def test_faults_stop_plainly_and_resume_to_the_same_adapter(tmp_path, tiny_model_dir, tiny_dataset):
    """Four lives of one command: disk full while staging a checkpoint, the folder renamed away, disk full
    writing metrics.json after the last checkpoint, then the run finishes from that final-step checkpoint."""
    from tuneforge.commands.train import run_train

    config = tmp_path / "run.yaml"
    config.write_text(SETTINGS)
    reference = tmp_path / "reference"
    run_train({"model.name": str(tiny_model_dir), "data.dataset": str(tiny_dataset), "train.output_dir": reference},
              config)  # fmt: skip
    out = tmp_path / "results"
    command = [sys.executable, "-m", "tuneforge", "train", "--config", str(config), "--model", str(tiny_model_dir),
               "--dataset", str(tiny_dataset), "--output-dir", str(out)]  # fmt: skip

    def life(site: str | None, step: int = 0) -> subprocess.CompletedProcess:
        env = child_env(site, step, hook_dir=tmp_path / "hook")
        return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)

    full = life("checkpoint", 4)
    assert_plain_exit_2(full, "The disk is full: writing checkpoint-4", "MB free there", "this step needs about",
                        "Free space, then run the same command again to resume from checkpoint-2")  # fmt: skip
    newest_verifies(out, "checkpoint-2")
    log_ends_with(out, "Error: The disk is full: writing checkpoint-4")

    moved = life("rename", 3)  # resumes from checkpoint-2; renamed away after step 3, caught at the step-4 save
    assert_plain_exit_2(moved, f"The folder {out} was removed or renamed", "Put the folder back")
    assert not out.exists()  # nothing recreated at the old path: no half run written somewhere else
    out.with_name("results.moved").rename(out)
    newest_verifies(out, "checkpoint-2")

    late = life("metrics")  # trains 3..4, commits checkpoint-4 (the last step), then metrics.json fails
    assert_plain_exit_2(late, "metrics.json", "resume from checkpoint-4")
    newest_verifies(out, "checkpoint-4")

    done = life(None)  # checkpoint-4 already holds step 4 of 4: no step past max_steps
    assert done.returncode == 0, done.stderr[-2000:]
    metrics, expected = (json.loads((p / "metrics.json").read_text()) for p in (out, reference))
    assert metrics["steps"] == 4 and metrics["resumed_from"] == "checkpoint-4"
    assert [h["loss"] for h in metrics["loss_history"]] == [h["loss"] for h in expected["loss_history"]]
    assert adapter_diff(out, reference) == 0.0  # bit-exact in fp32


@pytest.mark.parametrize("site", ["eval_set", "log", "plot", "card"])
def test_each_write_site_is_one_paragraph_and_keeps_the_checkpoint(site, tmp_path, monkeypatch, tiny_model_dir,
                                                                    tiny_dataset):  # fmt: skip
    from tuneforge.commands.train import run_train
    from tuneforge.disk_faults import DiskFault

    install(site, 2, monkeypatch.setattr)
    out = tmp_path / "results"
    values = tiny_train_values(tiny_model_dir, tiny_dataset, out, **{"train.max_steps": 2, "train.save_steps": 2,
                                                                      "train.eval_examples": 0})  # fmt: skip
    with pytest.raises(DiskFault) as caught:
        run_train(values)
    message = str(caught.value)
    named = {"eval_set": "eval_set.jsonl", "log": "training log", "plot": "loss.png", "card": "README.md"}[site]
    assert "The disk is full" in message and named in message and "\n" not in message
    if site == "eval_set":  # before the first step: nothing to resume from
        assert "it starts from step 0" in message
        return
    assert "resume from checkpoint-2" in message
    newest_verifies(out, "checkpoint-2")
    log_ends_with(out, "Error: The disk is full")


def test_unwritable_places_are_named_before_any_model_loads(tmp_path, monkeypatch, tiny_model_dir, tiny_dataset):
    """A read-only model cache, a results folder gone read-only, a checkpoint that can't be read, too little space."""
    import shutil
    import tempfile

    from tuneforge.cli import app
    from tuneforge.commands.train import run_train
    from tuneforge.disk_faults import DiskFault
    from tuneforge.runs import manifest, space

    runner = CliRunner()
    denied = PermissionError(errno.EACCES, "Permission denied")
    with monkeypatch.context() as patch:
        # a cache the preset was never converted into (the suite's shared cache may hold it already)
        patch.setenv("TUNEFORGE_CACHE", str(tmp_path / "empty-cache"))
        patch.setattr(tempfile, "mkstemp", lambda **kwargs: (_ for _ in ()).throw(denied))
        result = runner.invoke(app, ["train", "--model", "smollm2-135m", "--output-dir", str(tmp_path / "a"),
                                     "--max-steps", "1", "--no-eval"])  # fmt: skip
    cli_exit_2(result, "The model cache", "can't be written (Permission denied)", "TUNEFORGE_CACHE")

    out = tmp_path / "results"
    values = tiny_train_values(tiny_model_dir, tiny_dataset, out, **{"train.max_steps": 2, "train.save_steps": 2,
                                                                      "train.eval_examples": 0})  # fmt: skip
    read_only = OSError(errno.EROFS, "Read-only file system", str(out / "README.md"))
    with monkeypatch.context() as patch, pytest.raises(DiskFault) as caught:
        patch.setattr("tuneforge.runs.results.write_model_card", lambda *a, **k: (_ for _ in ()).throw(read_only))
        run_train(values)
    assert "Can't write the final results" in str(caught.value) and "Read-only file system" in str(caught.value)
    assert "resume from checkpoint-2" in str(caught.value)

    real_sha = manifest.sha256
    blocked = PermissionError(errno.EACCES, "Permission denied", str(out / "checkpoints/checkpoint-2/optimizer.pt"))
    flags = [
        "--model",
        str(tiny_model_dir),
        "--dataset",
        str(tiny_dataset),
        "--output-dir",
        str(out),
        "--max-steps",
        "2",
    ]
    with monkeypatch.context() as patch:
        patch.setattr(
            manifest, "sha256", lambda p: (_ for _ in ()).throw(blocked) if p.name == "optimizer.pt" else real_sha(p)
        )
        result = runner.invoke(app, ["train", *flags])
    cli_exit_2(result, "Can't read", "optimizer.pt (Permission denied)", "chmod -R u+rX")

    settings = {"model": {"name": str(tiny_model_dir)}, "lora": {"r": 8, "target_modules": "all-linear"},
                "train": {"save_total_limit": 2}}  # fmt: skip
    need = space.estimate(settings)
    assert need.checkpoints == 3 and need.total > 3 * need.checkpoint > 0
    assert "3 checkpoints of" in need.describe() and "--save-total-limit 2 kept" in need.describe()
    usage = shutil.disk_usage(tmp_path)
    with monkeypatch.context() as patch:
        patch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=1000))
        result = runner.invoke(app, ["train", *flags[:4], "--output-dir", str(tmp_path / "small")])
    cli_exit_2(result, "Only 1 kB free", "this run needs about", "lower --save-total-limit")


def test_export_and_model_cache_writes_say_disk_full(tmp_path, monkeypatch, tiny_results):
    from tuneforge.commands.export import run_export
    from tuneforge.disk_faults import DiskFault
    from tuneforge.models import loading

    monkeypatch.setattr("tuneforge.commands.export.write_hf",
                        lambda plan, merged, tokenizer, folder: (_ for _ in ()).throw(disk_full(folder / "model.safetensors")))  # fmt: skip
    with pytest.raises(
        DiskFault, match=r"The disk is full: writing the hf export .*model.safetensors.* run the same command again"
    ):
        run_export(tiny_results, tmp_path / "exported", "hf")
    assert list(tmp_path.iterdir()) == []  # the hidden half-written folder is gone

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(
        loading, "_convert_gguf", lambda gguf, name, out: (_ for _ in ()).throw(disk_full(out / "model.safetensors"))
    )
    with pytest.raises(DiskFault, match="writing the model cache's copy of smollm2-135m"):
        loading.ensure_preset_cached("smollm2-135m", log=lambda _: None)
    assert list((tmp_path / "cache" / "models").iterdir()) == []
