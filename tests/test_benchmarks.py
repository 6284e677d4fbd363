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
        [sys.executable, "benchmarks/train_throughput.py", "--tiny", "--only", "guide,trl-same,tuneforge,cli",
         "--warmup", "1", "--steps", "2", "--max-length", "128", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())["results"]
    check = report.pop("loss_check")  # tuneforge vs TRL with the same settings, answer-only loss on both
    assert check["tuneforge"] == report["tuneforge"]["final_loss"] and abs(check["relative_gap"]) < 0.02
    # trl and trl-matched run the same TRL path as trl-same with other settings: not repeated here
    assert set(report) == {"guide", "trl-same", "tuneforge", "cli"}
    for row in report.values():
        assert row["real_tokens_per_s"] > 0 and row["peak_rss_mb"] > 0
    assert report["guide"]["padded_tokens_per_s"] > report["guide"]["real_tokens_per_s"], "the guide pads to max length"
    padding = report["tuneforge"]["padded_tokens_per_s"] / report["tuneforge"]["real_tokens_per_s"]
    assert 1 <= padding < 1.5, "packed rows: padded up to a multiple of 64 tokens, no more"
    assert "× TRL" in result.stdout


@pytest.mark.slow
def test_train_throughput_builds_a_model_from_its_config(tmp_path):
    """The GPU path's model (--model-config), run on a CPU; Liger is recorded as failed, not fatal (--keep-going)."""
    from tests.conftest import build_tiny_tokenizer

    build_tiny_tokenizer(tmp_path / "tokenizer")
    out = tmp_path / "throughput.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/train_throughput.py", "--model-config", "tiny", "--tokenizer", str(tmp_path / "tokenizer"),
         "--device", "cpu", "--only", "tuneforge,tf-liger", "--keep-going", "--warmup", "1", "--steps", "2",
         "--max-length", "128", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["settings"]["model_config"] == "tiny" and report["settings"]["device"] == "cpu"
    row = report["results"]["tuneforge"]
    assert row["batches"] == 3 and row["real_tokens_per_s"] > 0
    assert row["peak_gpu_mb"] is None and row["mfu"] is None  # GPU-only columns
    assert row["attn_implementation"] == "sdpa" and row["achieved_tflops"] > 0
    assert "error" in report["results"]["tf-liger"], "Liger's Triton kernels cannot run on a CPU"
    assert "tf-liger: FAILED" in result.stdout


def test_throughput_meter_times_only_the_last_batches():
    """The data holds exactly warm-up + timed batches, so prefetching cannot shift what is counted."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("train_throughput", ROOT / "benchmarks" / "train_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    meter = bench.Meter(warmup=1, timed=2, device="cpu")
    meter.count({"input_ids": torch.zeros(2, 8), "attention_mask": torch.ones(2, 8)})  # warm-up: not counted
    meter.count({"input_ids": torch.zeros(2, 4), "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])})
    meter.count({"input_ids": torch.zeros(1, 6)})  # padding-free: one row, no mask, every token real
    assert (meter.real, meter.padded) == (11, 14)
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 3), torch.nn.Linear(3, 10))
    assert bench.matmul_params(model) == 4 * 3 + 3 * 10  # the embedding lookup is no matrix product
    assert set(bench.DEFAULT_ONLY) == set(bench.PIPELINES) - {"tf-liger", "trl-liger"}
    assert bench.MODEL_CONFIGS["llama-0.5b"]["vocab_size"] == 49152  # SmolLM2's tokenizer


def test_packed_rows_count_only_their_examples_and_the_cli_window_is_steady_state():
    """Bucket padding of a packed row is not real work; the CLI's speed is taken after its warm-up steps."""
    import importlib.util

    import torch

    from tuneforge.recipe.checkpointing import packed_real_tokens

    positions = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 0, 0, 0]])  # examples of 3 and 4 tokens, 3 bucket pad tokens
    assert packed_real_tokens(positions) == 7
    assert packed_real_tokens(positions[:, :7]) == 7
    spec = importlib.util.spec_from_file_location("throughput_cli", ROOT / "benchmarks" / "throughput_cli.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    history = [{"step": s, "tokens_seen": 100 * s, "elapsed_s": 10.0 + (5 if s > 2 else 2) * s} for s in range(1, 7)]
    metrics = {"loss_history": history, "device": "cpu", "peak_memory_mb": 1.0, "eval_loss_after": 2.0,
               "tokens_per_s": 1.0, "wall_time_s": 1.0}  # fmt: skip
    row = cli.steady_state(metrics, warmup=2, steps=6)
    assert row["real_tokens_per_s"] == pytest.approx(400 / 26) and row["seconds_per_step"] == pytest.approx(6.5)


@pytest.mark.slow
def test_learning_benchmark_scores_a_finished_run(tiny_results, tmp_path):
    out = tmp_path / "learning.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/learning.py", "--score-only", str(tiny_results), "--limit", "4", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    for length in ("64", "96"):
        row = figures[length]
        assert row["gain"] == pytest.approx(row["tuned_rouge_l"] - row["base_rouge_l"])
        assert row["length_ratio"] == pytest.approx(row["tuned_median_tokens"] / figures["reference_median_tokens"])
    assert "× reference" in result.stdout


def test_decode_precision_times_each_weight_format_against_fp32(tiny_results, tmp_path):
    """fp32 reproduces itself token for token (greedy), so the other formats' agreement means something."""
    out = tmp_path / "decode.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/decode_precision.py", "--adapter", str(tiny_results), "--tokens", "6",
         "--reps", "1", "--prompts", "2", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert list(rows) == ["fp32", "bf16", "fp16", "int8", "int4"]
    assert rows["fp32"]["same_as_fp32"] == [6, 6] and rows["fp32"]["all_tokens_equal_to_fp32"] == 2
    assert rows["fp32"]["answers_equal_to_fp32"] == 2
    assert all(r["answers_equal_to_fp32"] >= r["all_tokens_equal_to_fp32"] for r in rows.values())
    assert all(r["tokens_per_s"] > 0 and len(r["same_as_fp32"]) == 2 for r in rows.values())
    assert "tokens/s" in result.stdout
    # --held-out: the run's own held-out questions instead of the built-in prompts
    result = subprocess.run(
        [sys.executable, "benchmarks/decode_precision.py", "--adapter", str(tiny_results), "--tokens", "4",
         "--reps", "1", "--held-out", "3", "--only", "fp32,fp16", "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())
    assert list(rows) == ["fp32", "fp16"] and rows["fp16"]["questions"] == 3
    assert all(0 <= r["rouge_l"] <= 1 for r in rows.values()) and "ROUGE-L" in result.stdout


def test_int8_kernels_times_each_kernel_and_checks_its_product(tmp_path):
    """Both int8 kernels give fp32's product up to 8-bit rounding, so their timings compare the same result."""
    out = tmp_path / "kernels.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/int8_kernels.py", "--shapes", "64x32,96x64", "--reps", "3", "--cold-mb", "1",
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [r["shape"] for r in rows] == ["64x32", "96x64"]
    for row in rows:
        assert all(row[k] > 0 for k in ("fp32", "int8pack_mm", "onednn_qlinear", "quantize_row"))
        assert all(0 < err < 0.05 for err in row["relative_error"].values()), row["relative_error"]
    assert "GB/s" in result.stdout


def test_learning_levers_add_synonym_rows_and_weight_the_end_of_turn_loss():
    """The patched levers do what their figures say: rows for training terms only, a scaled loss, DPO's SFT
    weight, a reference of 0."""
    import importlib.util

    import torch
    import torch.nn.functional as F

    from tuneforge.data.hpo import QUESTION

    spec = importlib.util.spec_from_file_location("learning_levers", ROOT / "benchmarks" / "learning_levers.py")
    levers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(levers)

    def row(name: str, answer: str) -> list[dict[str, str]]:
        return [{"role": "user", "content": QUESTION.format(name=name)}, {"role": "assistant", "content": answer}]

    train = [
        row("Fever", "A raised body temperature."),
        row("Cough", "Air forced out."),
        [{"role": "user", "content": "hi"}],
    ]
    added = levers.synonym_rows(train, {"Fever": ["Pyrexia"], "Seizure": ["Fit"]})
    assert added == [row("Pyrexia", "A raised body temperature.")]  # Seizure is not a training term here
    obo = '[Term]\nid: HP:1\nname: Fever\nsynonym: "Pyrexia" EXACT []\nsynonym: "Hot" RELATED []\n'
    assert levers.SYNONYM.match(obo.splitlines()[3]).group(1) == "Pyrexia" and not levers.SYNONYM.match(
        obo.splitlines()[4]
    )

    logits, target = torch.randn(5, 7), torch.tensor([2, 3, 2, 0, 6])
    plain = F.cross_entropy(logits, target, reduction="none")
    weighted = levers.weighted_cross_entropy(2, 0.2)(logits, target, reduction="none")
    assert torch.allclose(weighted, torch.where(target == 2, plain * 0.2, plain))
    assert torch.equal(levers.weighted_cross_entropy(2, 0.2)(logits, target), F.cross_entropy(logits, target))

    from tuneforge.recipe.methods import dpo

    kept = dpo.SFT_WEIGHT
    try:  # issue 16's plain-DPO probe: the SFT term's weight, read when the DPO trainer is built
        levers.apply("dpo-sft-weight:0")
        assert dpo.SFT_WEIGHT == 0.0
    finally:
        dpo.SFT_WEIGHT = kept
    import trl

    kept_config, kept_scores = trl.DPOConfig, dpo.CheckpointingDPOTrainer._precompute_ref_logps
    try:  # reference-free DPO: every pair's "precomputed" reference scores are 0
        levers.apply("dpo-reference-free")
        assert (
            trl.DPOConfig(output_dir="x", bf16=False, precompute_ref_log_probs=False).precompute_ref_log_probs is True
        )
        from datasets import Dataset

        scored = dpo.CheckpointingDPOTrainer._precompute_ref_logps(None, Dataset.from_dict({"a": [1, 2]}), "train", 2)
        assert scored["ref_chosen_logps"] == [0.0, 0.0] and scored["ref_rejected_logps"] == [0.0, 0.0]
    finally:
        trl.DPOConfig, dpo.CheckpointingDPOTrainer._precompute_ref_logps = kept_config, kept_scores
    with pytest.raises(SystemExit, match="unknown lever"):
        levers.apply("dropout:9")


@pytest.mark.slow
def test_preference_fit_scores_the_pairs_a_run_trained_on_and_those_it_held_out(tiny_results, tiny_model_dir, tmp_path):
    """The held-out row equals what the run itself measured; the trained-on row is the rest of its file."""
    from tests.conftest import tiny_train_values
    from tests.test_preferences import preference_file
    from tuneforge.commands.train import run_train

    made = tmp_path / "made.jsonl"
    done = subprocess.run([sys.executable, "benchmarks/preference_fit.py", "--make", str(made), "--pairs", "10"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert len({json.dumps(json.loads(line)["prompt"]) for line in made.read_text().splitlines()}) == 10

    data, out = preference_file(tmp_path / "prefs.jsonl", count=24), tmp_path / "dpo"
    run = {"train.method": "dpo", "model.adapter": tiny_results, "train.max_steps": 8, "data.val_size": 8,
           "train.learning_rate": 2e-2}  # fmt: skip
    metrics = run_train(tiny_train_values(tiny_model_dir, data, out, **run))
    table_file = tmp_path / "fit.json"
    done = subprocess.run([sys.executable, "benchmarks/preference_fit.py", "--results", str(out), "--start",
                           str(tiny_results), "--json", str(table_file)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads(table_file.read_text())
    held, trained = table["held out"], table["trained on"]
    assert held["tuned"]["pairs"] == 8 and trained["tuned"]["pairs"] == 16
    for side, when in (("start", "before"), ("tuned", "after")):
        assert held[side]["accuracy"] == pytest.approx(metrics["preference"][when]["accuracy"])
        assert held[side]["margin"] == pytest.approx(metrics["preference"][when]["margin"], abs=1e-3)
    assert trained["tuned"]["margin"] > trained["start"]["margin"] + 1, trained
    assert "| trained on | 16 |" in done.stdout
