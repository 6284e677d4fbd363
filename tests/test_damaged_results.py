"""A damaged results folder: chat, eval, export and serve exit 2 naming the file and the way back; repair restores it."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import assert_plain_exit_2
from tuneforge.cli import app
from tuneforge.errors import UserError
from tuneforge.runs.folder import check_folder
from tuneforge.runs.manifest import RESULTS_MANIFEST

DAMAGES = ("cut", "emptied", "removed", "garbage")


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "cut":
        path.write_bytes(data[: min(1000, len(data) // 2)])
    elif how == "emptied":
        path.write_bytes(b"")
    elif how == "removed":
        path.unlink()
    else:  # garbage, of another size: what a bad copy or a sync tool leaves
        path.write_bytes(b"\x00\xffnot what was written\n" * 7)


def fingerprint(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.fixture
def run_copy(tiny_results: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(tiny_results, copy)
    return copy


def listed(folder: Path) -> list[str]:
    return sorted(json.loads((folder / RESULTS_MANIFEST).read_text())["files"])


def reader_commands(folder: Path, out: Path) -> dict[str, list[str]]:
    return {
        "chat": ["chat", "--adapter", str(folder), "hello"],
        "eval": ["eval", "--adapter", str(folder), "--limit", "2"],
        "export": ["export", "--adapter", str(folder), "--out", str(out / "exported"), "--format", "hf"],
        "serve": ["serve", "--adapter", str(folder), "--port", "8999"],  # refused before it binds
    }


def test_the_manifest_lists_every_results_file_but_the_card_and_the_log(tiny_results):
    names = listed(tiny_results)
    for needed in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tuneforge.yaml",
                   "metrics.json", "eval_set.jsonl"):  # fmt: skip
        assert needed in names
    assert "README.md" not in names and not any(n.startswith("training_log_") for n in names)
    check_folder(tiny_results)  # a finished run is whole


def test_each_damaged_file_stops_every_reader_with_exit_2_naming_it(tiny_results, tmp_path):
    """Every listed file, cut, emptied, removed or garbage, under chat, eval, export and serve."""
    runner = CliRunner()
    names = listed(tiny_results)
    for name in names:
        for how in DAMAGES:
            folder = tmp_path / f"{name}-{how}"
            shutil.copytree(tiny_results, folder)
            damage(folder / name, how)
            before = fingerprint(folder)
            for command, args in reader_commands(folder, tmp_path / f"{name}-{how}-out").items():
                result = runner.invoke(app, args)
                message = " ".join(result.output.split())
                assert result.exit_code == 2, (name, how, command, result.output, result.exception)
                assert f"is damaged: {name} is" in message, (name, how, command, message)
                assert "Traceback" not in result.output
            assert fingerprint(folder) == before  # a reader never rewrites a results folder
            shutil.rmtree(folder)
    assert not (tmp_path / "exported").exists()


def test_real_processes_say_it_in_one_paragraph_without_a_traceback(run_copy, tmp_path):
    damage(run_copy / "adapter_model.safetensors", "cut")
    for args in reader_commands(run_copy, tmp_path).values():
        result = subprocess.run([sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, timeout=120)
        assert_plain_exit_2(result, "adapter_model.safetensors is truncated or changed", "tuneforge repair")


def test_serve_refuses_to_start_when_one_of_its_adapters_is_damaged(tiny_results, run_copy):
    damage(run_copy / "tokenizer_config.json", "garbage")
    result = CliRunner().invoke(app, ["serve", "--adapter", f"good={tiny_results}", "--adapter", f"bad={run_copy}"])
    assert result.exit_code == 2 and str(run_copy) in " ".join(result.output.split())


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "tokenizer.json", "tokenizer_config.json"])
def test_repair_restores_from_the_last_checkpoint_bit_for_bit(tiny_results, run_copy, name):
    original = (tiny_results / name).read_bytes()
    damage(run_copy / name, "cut")
    refused = CliRunner().invoke(app, ["chat", "--adapter", str(run_copy), "hello"])
    assert refused.exit_code == 2 and "checkpoint-12 holds the same" in " ".join(refused.output.split())
    repaired = subprocess.run([sys.executable, "-m", "tuneforge", "repair", str(run_copy)], capture_output=True,
                              text=True, timeout=120)  # fmt: skip
    assert repaired.returncode == 0, repaired.stderr
    assert f"Restored {name}" in repaired.stdout
    assert (run_copy / name).read_bytes() == original
    assert fingerprint(run_copy) == fingerprint(tiny_results)
    check_folder(run_copy)
    again = subprocess.run([sys.executable, "-m", "tuneforge", "repair", str(run_copy)], capture_output=True, text=True)
    assert again.returncode == 0 and "Nothing to repair" in again.stdout


def test_a_file_no_checkpoint_holds_says_train_again_and_repair_refuses(run_copy):
    damage(run_copy / "tuneforge.yaml", "garbage")
    before = fingerprint(run_copy)
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", "repair", str(run_copy)], capture_output=True, text=True
    )
    assert_plain_exit_2(result, "tuneforge.yaml is", "No checkpoint holds the same tuneforge.yaml", "--overwrite")
    assert fingerprint(run_copy) == before


def test_same_size_changes_need_the_checksum_and_skip_checksums_skips_it(run_copy):
    weights = run_copy / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one byte of the weights, same size, header intact
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="adapter_model.safetensors does not match its checksum"):
        check_folder(run_copy)
    check_folder(run_copy, checksums=False)  # sizes only, for huge full fine-tunes


@pytest.mark.parametrize(
    ("name", "how", "said"),
    [
        ("adapter_config.json", "garbage", "adapter_config.json is not valid JSON"),
        ("tuneforge.yaml", "garbage", "tuneforge.yaml is not valid YAML"),
        ("adapter_model.safetensors", "cut", "adapter_model.safetensors has no readable safetensors header"),
        ("tokenizer.json", "removed", "tokenizer.json is missing"),
    ],
)
def test_a_folder_without_a_manifest_is_still_checked(run_copy, name, how, said):
    """Older runs and adapters made elsewhere have no manifest: what readers parse must parse."""
    (run_copy / RESULTS_MANIFEST).unlink()
    check_folder(run_copy)
    if name == "tuneforge.yaml":
        (run_copy / name).write_text("model: [unclosed\n")
    else:
        damage(run_copy / name, how)
    with pytest.raises(UserError, match=said) as refused:
        check_folder(run_copy)
    assert "Train the run again" in str(refused.value)


def test_a_damaged_manifest_is_damage_too(run_copy):
    (run_copy / RESULTS_MANIFEST).write_text("{not json")
    with pytest.raises(UserError, match=f"{RESULTS_MANIFEST} is unreadable"):
        check_folder(run_copy)
