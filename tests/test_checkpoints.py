"""Checkpoints: committed whole or not at all, torn ones named and skipped, old ones rotated only after a commit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import assert_plain_exit_2, stop_training_at, tiny_train_values
from tuneforge.errors import Stopped, UserError
from tuneforge.runs import checkpoint_store
from tuneforge.runs.resume import ResumeFlags, read_marker

RUN = {"train.save_steps": 3, "train.logging_steps": 1, "train.eval_examples": 0}
FILES = [
    "adapter_model.safetensors", "adapter_config.json", "optimizer.pt", "scheduler.pt", "rng_state.pth",
    "trainer_state.json", "training_args.json", "tokenizer.json", "tokenizer_config.json",
    checkpoint_store.MANIFEST,
]  # fmt: skip


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, tiny_model_dir, tiny_dataset) -> Path:
    """A run stopped by Ctrl-C at step 6, holding checkpoint-3 and checkpoint-6."""
    from tuneforge.commands.train import run_train

    out = tmp_path_factory.mktemp("stopped") / "results"
    with pytest.MonkeyPatch.context() as patch:
        stop_training_at(patch, 6)
        with pytest.raises(Stopped):
            run_train(tiny_train_values(tiny_model_dir, tiny_dataset, out, **RUN))
    return out


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "results"))


def damage(path: Path, how: str) -> None:
    if how == "deleted":
        path.unlink()
    elif how == "emptied":
        path.write_bytes(b"")
    else:
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def plan_for(out: Path):
    from tuneforge.runs.output_dir import prepare_output_dir

    return prepare_output_dir(out, ResumeFlags(), read_marker(out)["config"], log=lambda *_: None)[1]


def test_a_checkpoint_holds_everything_a_resume_needs(stopped_run):
    folder = stopped_run / "checkpoints" / "checkpoint-6"
    names = {p.name for p in folder.iterdir()}
    assert set(FILES) <= names and "training_args.bin" not in names  # no pickled arguments
    manifest = json.loads((folder / checkpoint_store.MANIFEST).read_text())
    assert manifest["step"] == 6 and manifest["micro_batch"] == 4 and manifest["grad_accum"] == 1
    assert set(manifest["files"]) == names - {checkpoint_store.MANIFEST}
    assert json.loads((folder / "trainer_state.json").read_text())["global_step"] == 6
    assert "serve" not in manifest["config"]  # an API key never lands in a checkpoint


@pytest.mark.parametrize("how", ["deleted", "emptied", "truncated"])
@pytest.mark.parametrize("name", FILES)
def test_a_torn_checkpoint_falls_back_to_the_previous_one(stopped_run, tmp_path, name, how):
    out = copy_of(stopped_run, tmp_path)
    damage(out / "checkpoints" / "checkpoint-6" / name, how)
    plan = plan_for(out)
    assert plan.checkpoint == out / "checkpoints" / "checkpoint-3"
    assert len(plan.warnings) == 1 and f"checkpoint-6: {name}" in plan.warnings[0], plan.warnings


def test_a_changed_byte_is_caught_by_the_checksum(stopped_run, tmp_path):
    out = copy_of(stopped_run, tmp_path)
    target = out / "checkpoints" / "checkpoint-6" / "optimizer.pt"
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    assert "optimizer.pt does not match its checksum" in plan_for(out).warnings[0]


def test_training_resumes_past_a_torn_checkpoint(stopped_run, tmp_path, tiny_model_dir, tiny_dataset):
    from tuneforge.commands.train import run_train

    out = copy_of(stopped_run, tmp_path)
    damage(out / "checkpoints" / "checkpoint-6" / "optimizer.pt", "truncated")
    metrics = run_train(tiny_train_values(tiny_model_dir, tiny_dataset, out, **RUN))
    log = "\n".join(p.read_text() for p in out.glob("training_log_*.log"))
    assert "warning: skipped torn checkpoint checkpoint-6: optimizer.pt is truncated" in log
    assert metrics["resumed_from"] == "checkpoint-3" and metrics["steps"] == 12
    assert (out / "checkpoints" / "checkpoint-6.torn").is_dir()  # set aside when step 6 was saved again, not deleted
    assert [p.name for p in checkpoint_store.committed(out / "checkpoints")] == ["checkpoint-12", "checkpoint-9"]


def test_no_usable_checkpoint_exits_2_naming_the_file(stopped_run, tmp_path, tiny_model_dir, tiny_dataset):
    out = copy_of(stopped_run, tmp_path)
    damage(out / "checkpoints" / "checkpoint-6" / "adapter_model.safetensors", "emptied")
    damage(out / "checkpoints" / "checkpoint-3" / "rng_state.pth", "deleted")
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", "--model", str(tiny_model_dir), "--dataset", str(tiny_dataset),
         "--output-dir", str(out), "--max-steps", "12", "--batch-size", "4", "--learning-rate", "5e-3",
         "--max-seq-length", "128", "--lora-r", "8", "--lora-dropout", "0", "--precision", "fp32", "--no-eval"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert_plain_exit_2(result, "adapter_model.safetensors is empty", "rng_state.pth is missing", "--overwrite")


def test_commit_renames_a_staged_folder_and_rotation_keeps_the_newest(tmp_path):
    checkpoints = tmp_path / "checkpoints"
    for step in (5, 10, 15):
        staged = checkpoint_store.staging_root(checkpoints, step) / f"checkpoint-{step}"
        staged.mkdir(parents=True)
        (staged / "weights.bin").write_bytes(bytes([step]) * 100)
        checkpoint_store.commit(staged, checkpoints, step, {"micro_batch": 4})
        shutil.rmtree(staged.parent)
        checkpoint_store.rotate(checkpoints, keep=2)
    assert [p.name for p in checkpoint_store.committed(checkpoints)] == ["checkpoint-15", "checkpoint-10"]
    assert sorted(p.name for p in checkpoints.iterdir()) == ["checkpoint-10", "checkpoint-15"]
    usable = checkpoint_store.newest_usable(checkpoints)
    assert usable.folder == checkpoints / "checkpoint-15" and usable.manifest["micro_batch"] == 4


def test_a_folder_without_a_manifest_never_counts(tmp_path):
    half = tmp_path / "checkpoints" / "checkpoint-7"  # what transformers leaves when killed mid-save
    half.mkdir(parents=True)
    (half / "adapter_model.safetensors").write_bytes(b"x" * 10)
    usable = checkpoint_store.newest_usable(tmp_path / "checkpoints")
    assert usable.folder is None and "tuneforge-checkpoint.json is missing" in usable.skipped[0]
    with pytest.raises(UserError, match="No usable checkpoint"):
        from tuneforge.runs.resume import plan_resume

        plan_resume(tmp_path, {"train": {"max_steps": 10}}, ResumeFlags(), 1)


def test_the_mps_random_state_is_saved_and_restored(tmp_path, monkeypatch):
    """transformers leaves MPS out of rng_state.pth; on a Mac dropout masks would differ after a resume."""
    import torch

    from tuneforge.recipe import checkpointing

    state, restored = torch.arange(8, dtype=torch.uint8), []
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    monkeypatch.setattr(torch.mps, "get_rng_state", lambda: state)
    monkeypatch.setattr(torch.mps, "set_rng_state", restored.append)
    checkpointing.save_mps_rng(tmp_path)
    checkpointing.load_mps_rng(str(tmp_path))
    assert (tmp_path / checkpointing.MPS_RNG).is_file() and torch.equal(restored[0], state)
