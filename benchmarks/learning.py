"""How much does the default run learn, and in how long? Train it, then score base and tuned.

Runs the real `tuneforge train` (any extra flags pass through, so each lever is one command),
then answers the held-out questions the run saved with the base and the tuned model, greedy, at
64 new tokens and at `tuneforge eval`'s default length, and prints for each length: ROUGE-L of
base and tuned, the gain, and the tuned answers' median length against the references' (tokens).

    python benchmarks/learning.py                             # the default run
    python benchmarks/learning.py --out /tmp/lr -- --learning-rate 2e-3 --max-steps 200
    python benchmarks/learning.py --score-only results        # score a finished run again
    python benchmarks/learning.py --out /tmp/syn --lever synonyms   # a lever no flag sets (learning_levers.py)

Goal (issue 17): gain >= +0.20 at both lengths, median length ratio 0.6-1.5, train <= 10 minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUICK_TOKENS = 64  # the length the independent scorer used


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tuneforge-learning"), help="the run's results folder")
    parser.add_argument("--limit", type=int, default=60, help="held-out questions scored")
    parser.add_argument("--score-only", type=Path, help="skip training; score this finished run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--lever", help="train through benchmarks/learning_levers.py with this lever (synonyms, eos-weight:W)"
    )
    parser.add_argument("train_flags", nargs="*", help="flags for `tuneforge train`, after --")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    folder, train_s = args.score_only, None
    if folder is None:
        folder, train_s = args.out, train(args.out, args.train_flags, args.lever)
    figures = {
        "run": str(folder),
        "train_flags": args.train_flags,
        "lever": args.lever,
        "train_wall_s": train_s,
        **score(folder, args.limit),
    }
    metrics = json.loads((folder / "metrics.json").read_text())
    figures.update(steps=metrics["steps"], tokens_seen=metrics["tokens_seen"], train_examples=metrics["train_examples"],
                   eval_loss_before=metrics["eval_loss_before"], eval_loss_after=metrics["eval_loss_after"])  # fmt: skip
    report(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


def train(out: Path, flags: list[str], lever: str | None = None) -> float:
    """The CLI's own wall time, as a user sees it: model load, held-out loss and the end-of-run check included."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    runner = ["-m", "tuneforge"] if lever is None else [str(ROOT / "benchmarks" / "learning_levers.py"), lever]
    command = [sys.executable, *runner, "train", "--output-dir", str(out), "--overwrite", *flags]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"tuneforge train failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return time.monotonic() - started


def score(folder: Path, limit: int) -> dict:
    from tuneforge.evaluation import defaults
    from tuneforge.evaluation.compare import eval_settings, evaluate_both
    from tuneforge.evaluation.dataset import load_eval_set
    from tuneforge.runs.folder import load_tuned, open_run

    run = open_run(folder)
    model, tokenizer = load_tuned(run)
    examples = load_eval_set(folder / "eval_set.jsonl", limit)
    ref_tokens = statistics.median(len(tokenizer(e.reference)["input_ids"]) for e in examples)
    out: dict = {"examples": len(examples), "reference_median_tokens": ref_tokens}
    for tokens in (QUICK_TOKENS, defaults.MAX_NEW_TOKENS):
        result = evaluate_both(model, tokenizer, examples, eval_settings(tokens, with_loss=False))
        tuned = statistics.median(len(tokenizer(s["tuned"])["input_ids"]) for s in result["samples"])
        out[str(tokens)] = {"base_rouge_l": result["base"]["rougeL"], "tuned_rouge_l": result["tuned"]["rougeL"],
                            "gain": result["tuned"]["rougeL"] - result["base"]["rougeL"],
                            "tuned_median_tokens": tuned, "length_ratio": tuned / ref_tokens}  # fmt: skip
    return out


def report(f: dict) -> None:
    wall = "-" if f["train_wall_s"] is None else f"{f['train_wall_s']:.0f} s"
    before, after = (
        "-" if f[k] is None else f"{f[k]:.3f}" for k in ("eval_loss_before", "eval_loss_after")
    )  # --no-eval
    how = " ".join([*([f"--lever {f['lever']}"] if f.get("lever") else []), *f["train_flags"]])
    print(f"run {f['run']} {how}: train wall {wall}, {f['steps']} steps, "
          f"{f['tokens_seen']} tokens, held-out loss {before} -> {after}")  # fmt: skip
    print(f"{'new tokens':>10}{'base R-L':>10}{'tuned R-L':>11}{'gain':>8}{'median len':>12}{'× reference':>13}")
    for key in (k for k in f if k.isdigit()):
        r = f[key]
        print(f"{key:>10}{r['base_rouge_l']:>10.3f}{r['tuned_rouge_l']:>11.3f}{r['gain']:>+8.3f}"
              f"{r['tuned_median_tokens']:>12.0f}{r['length_ratio']:>13.2f}")  # fmt: skip
    print(f"reference median length: {f['reference_median_tokens']:.0f} tokens, {f['examples']} held-out questions")


if __name__ == "__main__":
    main()
