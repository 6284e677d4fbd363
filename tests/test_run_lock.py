"""One writer per folder: a second train/eval/export on a folder in use exits 2 naming the holder; a kill frees it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.conftest import assert_plain_exit_2
from tuneforge.errors import UserError
from tuneforge.runs import checkpoint_store
from tuneforge.runs.lock import HELD_ENV, acquire, holding, lock_path

HOLDER = textwrap.dedent(
    """
    import sys, time
    from tuneforge.runs.lock import acquire
    lock = acquire(sys.argv[1])  # kept: a collected handle would close and free the lock
    print("locked", flush=True)
    time.sleep(600)
    """
)


def start_holder(folder: Path) -> subprocess.Popen:
    """Another process that takes the folder's lock and keeps it until killed."""
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "locked"
    return process


def test_a_second_writer_is_refused_with_the_holders_pid_and_a_kill_frees_the_folder(tmp_path):
    folder = tmp_path / "results"
    holder = start_holder(folder)
    try:
        with pytest.raises(UserError) as refused:
            acquire(folder)
        message = str(refused.value)
        assert f"process {holder.pid}" in message and str(folder) in message
        assert "Ctrl-C" in message and "choose another folder" in message
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert lock_path(folder).exists()  # a killed holder can't clean up: the file stays, the lock doesn't
    lock = acquire(folder)
    assert lock_path(folder).read_text(encoding="utf-8").count(f'"pid": {os.getpid()}') == 1
    lock.release()
    assert not lock_path(folder).exists()


def test_the_lock_lives_beside_the_folder_so_moving_the_folder_keeps_it(tmp_path):
    folder = tmp_path / "results"
    folder.mkdir()
    with holding(folder) as lock:
        assert lock is not None and lock.path == tmp_path / ".results.tuneforge.lock"
        folder.rename(tmp_path / "results.old")  # what --overwrite does with the earlier run
        with pytest.raises(UserError, match=f"process {os.getpid()}"):
            acquire(folder)
    assert not any(tmp_path.glob(".*.lock"))
    with holding(folder):  # released at the end of the block, so taking it again works
        pass


def test_the_launch_parents_lock_is_not_taken_again_by_its_child(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setenv(HELD_ENV, str(folder.absolute()))
    with holding(folder) as lock:
        assert lock is None and not lock_path(folder).exists()
    monkeypatch.setenv(HELD_ENV, str(tmp_path / "another"))  # a lock held elsewhere is no excuse here
    with holding(folder) as lock:
        assert lock is not None


def test_eval_and_export_refuse_a_folder_another_process_writes(tmp_path, tiny_results):
    eval_holder = start_holder(tiny_results / "eval")
    export_holder = start_holder(tmp_path / "exported")
    try:
        base = [sys.executable, "-m", "tuneforge"]
        evaluated = subprocess.run([*base, "eval", "--adapter", str(tiny_results)], capture_output=True, text=True)
        assert_plain_exit_2(evaluated, f"process {eval_holder.pid}", "eval report folder", "--out")
        exported = subprocess.run(
            [*base, "export", "--adapter", str(tiny_results), "--out", str(tmp_path / "exported"), "--format", "hf"],
            capture_output=True, text=True,
        )  # fmt: skip
        assert_plain_exit_2(exported, f"process {export_holder.pid}", "export folder", "--out")
    finally:
        for holder in (eval_holder, export_holder):
            holder.kill()
            holder.wait()
        lock_path(tiny_results / "eval").unlink()  # a killed holder's file: the shared run stays as it was
    assert not (tiny_results / "eval").exists() and not (tmp_path / "exported").exists()


def train_command(model_dir: Path, dataset: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "tuneforge", "train", "--model", str(model_dir), "--dataset", str(dataset),
        "--output-dir", str(out), "--max-steps", "400", "--batch-size", "2", "--learning-rate", "5e-3",
        "--max-seq-length", "128", "--lora-r", "8", "--precision", "fp32", "--no-eval", "--save-steps", "2",
    ]  # fmt: skip


def wait_for_checkpoint(process: subprocess.Popen, out: Path, log: Path, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        usable = checkpoint_store.newest_usable(out / "checkpoints")
        if usable.folder is not None:
            return int(usable.manifest["step"])
        time.sleep(0.1)
    raise AssertionError(f"no checkpoint was saved:\n{log.read_text(errors='replace')[-2000:]}")


@pytest.mark.slow
def test_the_same_train_started_twice_refuses_then_resumes_after_a_kill(tmp_path, tiny_model_dir, tiny_dataset):
    out, log = tmp_path / "results", tmp_path / "first.out"
    command = train_command(tiny_model_dir, tiny_dataset, out)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    with log.open("w") as handle:
        first = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
        try:
            wait_for_checkpoint(first, out, log)
            started = time.monotonic()
            second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
            assert time.monotonic() - started < 20
            assert_plain_exit_2(second, f"process {first.pid}", str(out), "--output-dir")
            assert "tuneforge train" in " ".join(second.stderr.split())  # the holder's command, from the lock file
            assert "resuming" not in second.stdout and first.poll() is None
        finally:
            first.send_signal(signal.SIGKILL)
            first.wait()
    newest = checkpoint_store.newest_usable(out / "checkpoints").manifest["step"]
    again = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert again.stdout is not None
    for line in again.stdout:  # the lock died with the first process: this one resumes where it stopped
        if "resuming the unfinished run" in line:
            assert f"from checkpoint-{newest} (step {newest} of 400)" in line
            break
    else:
        raise AssertionError("the second start did not resume")
    again.kill()
    again.wait()
