"""Guards the real main job: the embedded SmolLM2 + HPO default trains offline and leaves every result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_embedded_default_two_steps(tmp_path):
    out = tmp_path / "results"
    env = {**os.environ, "MAX_STEPS": "2", "OUTPUT_DIR": str(out), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "tuneforge", "train", "--eval-examples", "4"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    expected = ["adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tokenizer_config.json",
                "tuneforge.yaml", "training_args.json", "metrics.json", "loss.png", "eval_set.jsonl", "README.md"]  # fmt: skip
    for name in expected:
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 and metrics["tokens_per_s"] > 0
    assert metrics["eval_loss_before"] > 0 and metrics["eval_loss_after"] > 0
    held_out = [json.loads(line) for line in (out / "eval_set.jsonl").read_text().splitlines()]
    assert 200 <= len(held_out) < 1000, "about 2% of ~16k HPO terms, at least 200"
    assert held_out[0]["messages"][0]["content"].startswith("Please tell me about ")
    log = next(out.glob("training_log_*.log")).read_text()
    for needle in ("hardware: CPU only", "model: SmolLM2-135M-Instruct", "Human Phenotype Ontology",
                   "train.max_steps = 2  (env MAX_STEPS)", "training examples", "tokens per example",
                   "step 2/2", "checkpoint saved", "held-out loss: base", "question: Please tell me about"):  # fmt: skip
        assert needle in log, needle
    card = (out / "README.md").read_text()
    assert "smollm2-135m" in card and "Human Phenotype Ontology" in card
    cache = Path(env.get("TUNEFORGE_CACHE", "")) / "models" / "smollm2-135m"
    assert (cache / "model.safetensors").is_file(), "the converted model is cached for the next run"
