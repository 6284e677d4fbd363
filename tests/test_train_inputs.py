"""Guards the main job's bad-input paths: each exits 2 with a plain message before heavy work."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import assert_plain_exit_2
from tuneforge.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def train_cli(*args: str, env: dict | None = None, cwd: Path = ROOT) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=180,
    )  # fmt: skip
    return result, time.monotonic() - started


def test_unknown_model_preset(tmp_path):
    result, seconds = train_cli("--model", "smollm-9000", "--output-dir", str(tmp_path / "out"))
    assert_plain_exit_2(result, "smollm-9000", "smollm2-135m", "--model")
    assert seconds < 30


def test_missing_model_folder(tmp_path):
    result, _ = train_cli("--model", str(tmp_path / "no-such-model"), "--output-dir", str(tmp_path / "out"))
    assert_plain_exit_2(result, "no-such-model")


def test_unknown_dataset(tmp_path):
    result, _ = train_cli("--dataset", "medical-termz", "--output-dir", str(tmp_path / "out"))
    assert_plain_exit_2(result, "medical-termz", "medical-terms")


def test_empty_dataset_file(tmp_path):
    data = tmp_path / "empty.jsonl"
    data.write_text("")
    result, _ = train_cli("--dataset", str(data), "--output-dir", str(tmp_path / "out"))
    assert_plain_exit_2(result, str(data), "empty")
    assert not (tmp_path / "out").exists(), "nothing is written before the inputs are checked"


def test_file_with_no_usable_rows_names_the_first_bad_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
                    '{"question": "what?", "answer": "that"}\n')  # fmt: skip
    result, _ = train_cli("--dataset", str(data), "--output-dir", str(tmp_path / "out"))
    assert_plain_exit_2(result, f"{data}:2", "instruction", "messages")
    data.write_text('{"messages": [}\n')
    result, _ = train_cli("--dataset", str(data), "--output-dir", str(tmp_path / "out"))
    assert_plain_exit_2(result, f"{data}:1", "not valid JSON")


def test_max_steps_zero(tmp_path):
    result, _ = train_cli("--output-dir", str(tmp_path / "out"), env={"MAX_STEPS": "0"})
    assert_plain_exit_2(result, "train.max_steps", "MAX_STEPS")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; the in-process test below covers it")
def test_unwritable_output_dir_cli(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result, _ = train_cli("--output-dir", str(locked / "out"))
    assert_plain_exit_2(result, "Can't write", "--output-dir")


def test_unwritable_output_dir(tmp_path, monkeypatch):
    from tuneforge.runs import output_dir

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(UserError, match="Can't write to the results folder .* --output-dir"):
        output_dir.prepare_output_dir(tmp_path / "out", output_dir.ResumeFlags(), {})


def test_not_enough_disk_for_the_cache(tmp_path, monkeypatch):
    import shutil

    from tuneforge.models import loading as model_loading

    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 10**12, 50 * 10**6))
    with pytest.raises(UserError, match="Not enough disk for the model cache.*TUNEFORGE_CACHE"):
        model_loading.ensure_preset_cached("smollm2-135m", log=lambda *_: None)


def test_overwrite_moves_the_old_run_aside(tmp_path):
    from tuneforge.runs.output_dir import ResumeFlags, prepare_output_dir

    out = tmp_path / "results"
    out.mkdir()
    (out / "adapter_model.safetensors").write_text("old")
    prepare_output_dir(out, ResumeFlags(overwrite=True), {}, log=lambda *_: None)
    backups = list(tmp_path.glob("results.old-*"))
    assert len(backups) == 1 and (backups[0] / "adapter_model.safetensors").read_text() == "old"
    assert [p.name for p in out.iterdir()] == ["tuneforge-run.json"]  # claimed for the new run, nothing else
