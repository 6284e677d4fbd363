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
    plain = result.exception is None or isinstance(result.exception, SystemExit)  # not an exception the CLI let out
    assert result.exit_code == 2 and plain, result.output
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
    log = sorted(out.glob("training_log_*.log"))[-1]  # one log per start (to the second): the newest
    assert text in log.read_text().splitlines()[-1], log.read_text()[-600:]


def ends_like(out: Path, reference: Path, resumed_from: str) -> None:
    """The run finished as the uninterrupted one did: same per-step losses, same adapter bit for bit (fp32)."""
    metrics, expected = (json.loads((p / "metrics.json").read_text()) for p in (out, reference))
    assert metrics["steps"] == 4 and metrics["resumed_from"] == resumed_from
    assert [h["loss"] for h in metrics["loss_history"]] == [h["loss"] for h in expected["loss_history"]]
    assert adapter_diff(out, reference) == 0.0


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model_dir, tiny_dataset) -> tuple[Path, Path]:
    """(the settings file, the results of one uninterrupted run): every faulted run must end as this one did."""
    from tuneforge.commands.train import run_train

    folder = tmp_path_factory.mktemp("reference")
    config = folder / "run.yaml"
    config.write_text(SETTINGS)
    with pytest.MonkeyPatch.context() as patch:  # module scope starts before conftest's per-test cache setting
        patch.setenv("TUNEFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        run_train({"model.name": str(tiny_model_dir), "data.dataset": str(tiny_dataset),
                   "train.output_dir": folder / "results"}, config)  # fmt: skip
    return config, folder / "results"


@pytest.mark.slow
def test_faults_stop_plainly_and_resume_to_the_same_adapter(reference, tmp_path, tiny_model_dir, tiny_dataset):
    """Four lives of one command as real processes: disk full while staging a checkpoint, the folder renamed
    away, disk full writing metrics.json after the last checkpoint, then the run finishes from that checkpoint."""
    config, expected = reference
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
    ends_like(out, expected, "checkpoint-4")


@pytest.mark.slow
def test_each_write_site_stops_plainly_and_the_same_command_resumes_to_the_same_adapter(
    reference, tmp_path, monkeypatch, tiny_model_dir, tiny_dataset
):
    """Six lives of one `tuneforge train` command in this process, each of the first five meeting a full disk at
    another write site; every one exits 2 with the newest checkpoint intact, and the last ends as the reference."""
    from tuneforge.cli import app

    config, expected = reference
    out, fresh_cache = tmp_path / "results", tmp_path / "fresh-cache"
    argv = ["train", "--config", str(config), "--model", str(tiny_model_dir), "--dataset", str(tiny_dataset),
            "--output-dir", str(out)]  # fmt: skip

    def life(site: str | None, step: int = 0):  # type: ignore[no-untyped-def]
        with monkeypatch.context() as patch:  # the fault is removed again before the next life
            if site is not None:
                install(site, step, patch.setattr)
            return CliRunner().invoke(app, argv)

    lives = [  # (site, at step, the file the paragraph names, the checkpoint it says to resume from)
        ("log", 2, "the training log training_log_", "checkpoint-2"),  # trains 1..2, commits checkpoint-2
        ("eval_set", 0, "eval_set.jsonl", "checkpoint-2"),
        ("tokenized", 0, "the tokenized training rows", "checkpoint-2"),  # a cache without these rows yet
        ("plot", 0, "loss.png", "checkpoint-4"),  # trains 3..4, commits checkpoint-4, then writes the results
        ("card", 0, "README.md", "checkpoint-4"),  # the last step's checkpoint: no training, only the results
    ]
    for site, step, named, resume in lives:
        if site == "tokenized":
            monkeypatch.setenv("TUNEFORGE_CACHE", str(fresh_cache))
        result = life(site, step)
        cli_exit_2(result, "The disk is full: writing", named, "Nothing committed was lost",
                   f"Free space, then run the same command again to resume from {resume}")  # fmt: skip
        newest_verifies(out, resume)
        log_ends_with(out, "Error: The disk is full: writing")
        if site == "tokenized":  # the half-written entry is gone: the next life tokenizes again, never reads it
            assert "this step needs about" in " ".join(result.output.split())
            assert list((fresh_cache / "tokenized").iterdir()) == []
        if site == "plot":
            assert "training rows tokenized and cached" in result.output
    done = life(None)
    assert done.exit_code == 0, done.output[-2000:]
    ends_like(out, expected, "checkpoint-4")


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


def test_an_export_and_the_model_cache_stop_plainly_then_the_same_command_writes_the_same_files(
    tmp_path, monkeypatch, tiny_results
):
    """Disk full halfway through a GGUF export, then through the model cache's conversion of a preset's GGUF
    (the tiny model's, standing in for the embedded one): exit 2, nothing half-written kept, and the same
    command then writes what an uninterrupted one writes, byte for byte (the export) and tensor for tensor."""
    import torch
    from safetensors.torch import load_file

    from tuneforge.cli import app
    from tuneforge.commands import export
    from tuneforge.disk_faults import DiskFault
    from tuneforge.models import loading
    from tuneforge.presets import MODEL_PRESETS, ModelPreset

    def half_written(path: Path) -> OSError:
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
        return disk_full(path)

    reference = export.run_export(tiny_results, tmp_path / "reference", "gguf")
    argv = ["export", "--adapter", str(tiny_results), "--out", str(tmp_path / "exported"), "--format", "gguf"]
    real_write = export.write_gguf_export

    def write_half(plan, merged, tokenizer, folder):  # type: ignore[no-untyped-def]
        raise half_written(folder / real_write(plan, merged, tokenizer, folder)["file"])

    with monkeypatch.context() as patch:
        patch.setattr(export, "write_gguf_export", write_half)
        result = CliRunner().invoke(app, argv)
    cli_exit_2(result, "The disk is full: writing the gguf", ".gguf", "Free space, then run the same command again")
    assert not [p for p in tmp_path.iterdir() if "exported" in p.name and "lock" not in p.name]  # no half export
    assert CliRunner().invoke(app, argv).exit_code == 0
    assert (tmp_path / "exported" / reference.name).read_bytes() == reference.read_bytes()

    preset = ModelPreset("tiny-gguf", "the tiny model as GGUF", 0, package="tiny", gguf_file=reference.name)
    monkeypatch.setitem(MODEL_PRESETS, preset.name, preset)
    monkeypatch.setattr(loading, "_package_dir", lambda _: reference.parent)

    def convert_in(cache: Path) -> dict:
        monkeypatch.setenv("TUNEFORGE_CACHE", str(cache))
        return load_file(loading.ensure_preset_cached(preset.name, log=lambda _: None) / "model.safetensors")

    uninterrupted = convert_in(tmp_path / "cache-a")
    real_convert = loading._convert_gguf

    def convert_half(gguf: Path, name: str, out: Path) -> None:
        real_convert(gguf, name, out)
        raise half_written(out / "model.safetensors")

    with monkeypatch.context() as patch, pytest.raises(DiskFault) as caught:
        patch.setattr(loading, "_convert_gguf", convert_half)
        convert_in(tmp_path / "cache-b")
    assert "The disk is full: writing the model cache's copy of tiny-gguf" in str(caught.value)
    assert list((tmp_path / "cache-b" / "models").iterdir()) == []  # the staging copy is gone
    again = convert_in(tmp_path / "cache-b")
    assert again.keys() == uninterrupted.keys() and all(torch.equal(again[k], uninterrupted[k]) for k in again)
