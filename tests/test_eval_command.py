"""Guards `tuneforge eval` end to end on the tiny run: every report file, the page in Chromium, exit 2 on bad input."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.evaluation.metrics import METRICS

QUICK = ["--limit", "6", "--max-new-tokens", "8", "--batch-size", "4"]


def _eval(*args: str):
    return CliRunner().invoke(app, ["eval", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def report_dir(tiny_results, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval")
    result = _eval("--adapter", str(tiny_results), "--out", str(out), "--json", *QUICK)
    assert result.exit_code == 0, result.output
    return out


def test_eval_writes_every_report_file(report_dir):
    for name in ("metrics.json", "report.md", "report.html", "metrics.png", "loss.png"):
        assert (report_dir / name).stat().st_size > 0, name
    metrics = json.loads((report_dir / "metrics.json").read_text())
    assert metrics["examples"] == 6 and len(metrics["samples"]) == 6
    for info in METRICS:
        base, tuned = metrics["base"][info.key], metrics["tuned"][info.key]
        assert metrics["diff"][info.key] == pytest.approx(tuned - base), info.key
    assert metrics["tuned"]["heldout_loss"] < metrics["base"]["heldout_loss"], (
        "the tiny run lowered its loss in training"
    )
    assert 0 < metrics["tuned"]["answer_tokens"] <= 8
    markdown = (report_dir / "report.md").read_text()
    assert "| ROUGE-L |" in markdown and "![metrics_chart](metrics.png)" in markdown
    assert metrics["samples"][0]["reference"].split()[0] in markdown


def test_json_output_is_the_metrics(tiny_results, tmp_path):
    result = CliRunner().invoke(app, ["eval", "--adapter", str(tiny_results), "--out", str(tmp_path), "--json", *QUICK])
    assert result.exit_code == 0
    printed = json.loads(result.stdout)
    assert printed == json.loads((tmp_path / "metrics.json").read_text())


def _chromium() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found:
        return found
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing; CI must install Debian's chromium (apt-get install chromium)")
    pytest.skip("chromium is not installed (apt-get install chromium); in CI (CI=true) this test fails instead")


def _browser(chromium: str, profile: Path, *args: str) -> str:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000"]  # fmt: skip
    done = subprocess.run([chromium, *flags, *args], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_report_renders_in_headless_chromium(report_dir, tmp_path):
    from PIL import Image

    chromium, page = _chromium(), (report_dir / "report.html").as_uri()
    shot = tmp_path / "report.png"
    _browser(chromium, tmp_path / "p1", f"--screenshot={shot}", "--window-size=1200,2000", page)
    with Image.open(shot) as image:
        assert image.size == (1200, 2000)
        assert len(image.convert("RGB").getcolors(maxcolors=1 << 20) or []) > 50, "the screenshot is blank"
    dom = _browser(chromium, tmp_path / "p2", "--dump-dom", page)
    sizes = json.loads(html.unescape(re.search(r'data-image-sizes="([^"]*)"', dom).group(1)))
    assert {s["id"] for s in sizes} == {"metrics_chart", "loss_chart"}
    assert all(s["width"] > 100 and s["height"] > 100 for s in sizes), sizes
    figures = re.search(r'<table id="figures">.*?</table>', dom, re.S).group(0)
    assert all(html.escape(info.label) in figures for info in METRICS)
    assert len(re.findall(r"<tr>", re.search(r'<table id="samples">.*?</table>', dom, re.S).group(0))) == 1 + 6


def test_quick_eval_on_a_loaded_model(tiny_results, tiny_model_dir):
    """What `train` calls at the end: an in-memory peft model, no files written."""
    from peft import PeftModel
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.evaluation.compare import format_comparison_table, quick_eval

    tokenizer = AutoTokenizer.from_pretrained(tiny_results)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_results)
    model.train()
    conversations = [
        json.loads(line)["messages"] for line in (tiny_results / "eval_set.jsonl").read_text().splitlines()
    ]
    metrics = quick_eval(model, tokenizer, conversations, limit=4, max_new_tokens=6, with_loss=True)
    assert model.training, "quick_eval must leave the model in the mode it found it"
    assert metrics["examples"] == 4 and set(metrics) >= {"base", "tuned", "diff", "samples"}
    assert metrics["samples"][0]["reference"] == conversations[0][-1]["content"]
    console = Console(record=True, width=120)
    console.print(format_comparison_table(metrics))
    text = console.export_text()
    assert "ROUGE-L" in text and "held-out loss" in text and f"{metrics['tuned']['heldout_loss']:.4f}" in text


def _copy_run(tiny_results: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "results"
    shutil.copytree(tiny_results, copy, ignore=shutil.ignore_patterns("checkpoints", "eval"))
    return copy


def test_bad_input_exits_2_with_a_clear_message(tiny_results, tmp_path, tiny_model_dir):
    cases = {"does not exist": ["--adapter", str(tmp_path / "missing")],
             "not a tuneforge results folder": ["--adapter", str(tmp_path)],
             "--limit is 0": ["--adapter", str(tiny_results), "--limit", "0"],
             "does not match the adapter's": ["--adapter", str(tiny_results), "--model", str(tmp_path)]}  # fmt: skip
    (tmp_path / "config.json").write_text("{}")  # a model folder, but not the adapter's base
    unanswered = tmp_path / "questions.jsonl"
    unanswered.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi?"}]}) + "\n")
    cases["no answers"] = ["--adapter", str(tiny_results), "--dataset", str(unanswered)]
    for needle, args in cases.items():
        result = _eval(*args)
        assert result.exit_code == 2, (needle, result.output)
        assert needle in " ".join(result.output.split()), (needle, result.output)
        assert "Traceback" not in result.output


def test_edited_base_model_is_refused(tiny_results, tmp_path, tiny_model_dir):
    """tuneforge.yaml naming another model than the adapter was trained on (a copied or edited folder)."""
    copy = _copy_run(tiny_results, tmp_path)
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    config = copy / "tuneforge.yaml"
    config.write_text(config.read_text().replace(str(tiny_model_dir), str(other)))
    (copy / "tuneforge-results.json").unlink()  # else the edit is caught as damage first (test_damaged_results.py)
    result = _eval("--adapter", str(copy))
    assert result.exit_code == 2 and "does not match the adapter's" in " ".join(result.output.split())
