"""Time the real `tuneforge train` command the way train_throughput.py times its pipelines.

The CLI trains on the same HPO rows (written as a train/validation folder of chat messages) with
the same micro-batch and max length, logs every step, and its metrics.json gives the tokens seen
and the clock at each step: steady state is the window after the warm-up steps. Checkpoints are
pushed past the end (a save inside the window would be timed as training) and the end-of-run
answer check is off; the held-out loss before and after still runs, outside the window.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_cli(model_dir: str, args, data_slice, overrides: dict) -> dict:
    """`overrides` ({"train.key": value}) go into the run's YAML file, as a user would set them."""
    from transformers import AutoTokenizer

    steps = args.warmup + args.steps
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    conversations, _ = data_slice(tokenizer, args.batch_size * steps + 32, args.max_length)
    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    data = work / "data"
    data.mkdir()
    cut = args.batch_size * steps
    for name, part in (("train", conversations[:cut]), ("validation", conversations[cut:])):
        (data / f"{name}.jsonl").write_text("".join(json.dumps({"messages": c}) + "\n" for c in part))
    settings = {"train.logging_steps": 1, **overrides}  # no flag for these: a YAML file, as a user would
    (work / "bench.yaml").write_text("train:\n" + "".join(f"  {k.split('.')[1]}: {v}\n" for k, v in settings.items()))
    command = [sys.executable, "-m", "tuneforge", "train", "--model", model_dir, "--dataset", str(data),
               "--output-dir", str(work / "out"), "--max-steps", str(steps), "--batch-size", str(args.batch_size),
               "--max-seq-length", str(args.max_length), "--config", str(work / "bench.yaml"), "--save-steps", str(10 * steps),
               "--device", args.device, "--no-eval"]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT,
                          env=_env())  # fmt: skip
    if done.returncode != 0:
        if args.keep_going:
            return {"pipeline": "cli", "error": (done.stdout + done.stderr)[-3000:]}
        raise SystemExit(f"cli failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return steady_state(json.loads((work / "out" / "metrics.json").read_text()), args.warmup, steps)


def _env() -> dict:
    import os

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}


def steady_state(metrics: dict, warmup: int, steps: int) -> dict:
    """Real tokens/s between the log lines of step `warmup` and the last step, as the CLI counted them."""
    by_step = {entry["step"]: entry for entry in metrics["loss_history"]}
    first, last = by_step[warmup], by_step[steps]
    seconds = last["elapsed_s"] - first["elapsed_s"]
    real = last["tokens_seen"] - first["tokens_seen"]
    return {
        "pipeline": "cli", "device": metrics["device"], "real_tokens_per_s": real / seconds,
        "padded_tokens_per_s": None, "seconds_per_step": seconds / (steps - warmup),
        "peak_rss_mb": metrics["peak_memory_mb"], "peak_gpu_mb": None, "final_loss": metrics["eval_loss_after"],
        "whole_run_tokens_per_s": metrics["tokens_per_s"], "wall_time_s": metrics["wall_time_s"],
    }  # fmt: skip
