"""Guards the benchmark scripts against rot: each runs end to end on a tiny model (figures not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_train_throughput_runs_on_a_tiny_model(tmp_path):
    out = tmp_path / "throughput.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/train_throughput.py", "--tiny", "--only", "guide,trl,tuneforge",
         "--warmup", "1", "--steps", "2", "--max-length", "128", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())["results"]
    assert set(report) == {"guide", "trl", "tuneforge"}
    for row in report.values():
        assert row["real_tokens_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert report["guide"]["padded_tokens_per_s"] > report["guide"]["real_tokens_per_s"], "the guide pads to max length"
    assert report["tuneforge"]["padded_tokens_per_s"] == pytest.approx(report["tuneforge"]["real_tokens_per_s"])
    assert "× TRL" in result.stdout
