"""Guards `tuneforge doctor`: its report and pure-JSON output, also when torch cannot be imported."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.commands.doctor import run_doctor

SRC = Path(__file__).resolve().parents[1] / "src"
KEYS = {
    "train.device", "train.precision", "model.load_in_4bit", "train.batch_size",
    "train.grad_accum", "train.max_seq_length", "train.gradient_checkpointing",
}

# Makes `import torch` fail the way a broken CUDA install does, before doctor runs.
BROKEN_TORCH = """
import sys

class BrokenTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("libcudart.so.12: cannot open shared object file")
        return None

sys.meta_path.insert(0, BrokenTorch())
from tuneforge.commands.doctor import run_doctor
run_doctor(json_out=True)
"""


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def _check_report(report: dict) -> None:
    hw, profile = report["hardware"], report["profile"]
    assert hw["cpu_cores"] >= 1 and hw["ram_gb"] > 0
    assert {s["key"] for s in profile["settings"]} == KEYS
    assert all(s["reason"].strip() for s in profile["settings"])
    assert isinstance(profile["warnings"], list)


def test_json_report_in_process(capsys):
    run_doctor(json_out=True)
    report = json.loads(capsys.readouterr().out)  # stdout must hold the JSON object and nothing else
    _check_report(report)
    assert (report["model"], report["model_params"]) == ("smollm2-135m", 134_515_008)
    if not report["hardware"]["cuda_gpus"] and not report["hardware"]["mps_available"]:
        assert report["hardware"]["label"] == "CPU only"
        assert report["profile"]["device"] == "cpu"


def test_json_report_for_a_model_named_by_size(capsys):
    run_doctor(json_out=True, model="Qwen/Qwen2.5-7B-Instruct")
    report = json.loads(capsys.readouterr().out)
    assert report["model_params"] == 7_000_000_000
    _check_report(report)


def test_human_report(capsys):
    run_doctor()
    out = capsys.readouterr().out
    assert "Recommended profile for smollm2-135m (135M params)" in out
    for label in ("OS", "Python", "CPU", "RAM", "Free disk", "torch", "bitsandbytes"):
        assert label in out
    for key in KEYS:
        assert f"{key} = " in out


@pytest.mark.skipif(importlib.util.find_spec("tuneforge.cli") is None, reason="tuneforge.cli not written yet")
def test_cli_doctor_json():
    done = _run(["-m", "tuneforge", "doctor", "--json"])
    assert done.returncode == 0, done.stderr
    _check_report(json.loads(done.stdout))


def test_doctor_survives_broken_torch():
    done = _run(["-c", BROKEN_TORCH])
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["hardware"]["torch_version"] is None
    assert "libcudart.so.12" in report["hardware"]["torch_error"]
    assert report["profile"]["device"] == "cpu"
    assert any(w.startswith("torch could not be imported") for w in report["profile"]["warnings"])
    _check_report(report)
