"""Fault injection: real training processes SIGKILLed 10 times, also mid-save, resume with no cleanup and lose nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "kill_resume_soak.py"


@pytest.mark.slow
def test_ten_kills_lose_nothing(tmp_path):
    report = tmp_path / "soak.json"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--kills", "10", "--workdir", str(tmp_path / "work"), "--json", str(report)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(report.read_text())
    assert result["kills"] >= 10 and result["restarts_without_cleanup"] >= 10
    assert result["kills_while_staging"] >= 3  # half the kills wait for a checkpoint being written
    assert result["lost_steps"] == 0 and result["max_abs_adapter_diff"] <= 1e-6
    assert result["loss_mismatches"] == [] and result["staging_left"] == []
