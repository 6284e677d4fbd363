"""DPO, ORPO and KTO side by side: the same pairs, the same starting adapter, one table.

Each method trains through `tuneforge train` (the real path: checks, TRL trainer, held-out
figures) on the medical-preferences pairs, starting from an SFT run's adapter, and the table
shows what each did to the held-out pairs: preference accuracy, margin and the chosen
answers' loss (the SFT loss: did it forget the definitions?), with the time it took.

    tuneforge train --output-dir results-sft          # the starting adapter (about 5 min on 2 cores)
    .venv/bin/python benchmarks/preference_methods.py --adapter results-sft --json prefs.json
    .venv/bin/python benchmarks/preference_methods.py --tiny --steps 4   # the code path, in seconds

One method at a time fits a short quiet slot: `--methods orpo --json prefs.json` adds its row to
the rows already in prefs.json (a method run again replaces its row) and prints the whole table.
`--results DIR` adds a finished `tuneforge train --method ...` run's row instead of training.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.conftest's tiny model builders


def run_method(method: str, out: Path, args: argparse.Namespace, model: str, dataset: str | None) -> dict[str, Any]:
    from tuneforge.commands.train import run_train

    values: dict[str, Any] = {"train.method": method, "train.output_dir": out, "model.name": model}
    if args.adapter:
        values["model.adapter"] = Path(args.adapter)
    if dataset:
        values["data.dataset"] = dataset
    if args.steps:
        values["train.max_steps"] = args.steps
    if args.tiny:
        values.update({"train.max_seq_length": 128, "lora.r": 8, "train.precision": "fp32", "data.val_size": 16})
    return row(run_train(values))


def row(metrics: dict[str, Any]) -> dict[str, Any]:
    """One table row from a preference run's metrics.json."""
    pref = metrics["preference"]
    return {
        "method": metrics["method"],
        "steps": metrics["steps"],
        "train_s": round(metrics["train_time_s"]),
        "wall_s": round(metrics["wall_time_s"]),
        "accuracy": [pref["before"]["accuracy"], pref["after"]["accuracy"]],
        "margin": [pref["before"]["margin"], pref["after"]["margin"]],
        "chosen_loss": [metrics["eval_loss_before"], metrics["eval_loss_after"]],
        "pairs": pref["after"]["pairs"],
    }


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| method | steps | wall time | held-out accuracy (start -> tuned) | margin, nats | chosen-answer loss |",
        "|---|---:|---:|---|---|---|",
    ]
    for r in rows:
        (a0, a1), (m0, m1), (l0, l1) = r["accuracy"], r["margin"], r["chosen_loss"]
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['wall_s'] / 60:.1f} min | {100 * a0:.1f}% -> {100 * a1:.1f}% "
            f"({100 * (a1 - a0):+.1f} points) | {m0:+.2f} -> {m1:+.2f} | {l0:.3f} -> {l1:.3f} ({100 * (l1 / l0 - 1):+.1f}%) |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", help="results folder of the SFT run to start from")
    parser.add_argument("--methods", default="dpo,orpo,kto")
    parser.add_argument("--steps", type=int, help="optimizer steps per method (default: each method's default)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tiny", action="store_true", help="the test suite's 2-layer model and a few pairs")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    parser.add_argument("--keep", type=Path, help="keep each method's results folder under this folder")
    parser.add_argument(
        "--results", type=Path, nargs="*", default=[], help="finished preference runs to add, untrained"
    )
    args = parser.parse_args()
    if args.results:
        rows = [row(json.loads((folder / "metrics.json").read_text())) for folder in args.results]
        return report(rows, args.json)
    with tempfile.TemporaryDirectory(prefix="prefs-") as scratch:
        root = args.keep or Path(scratch)
        model, dataset = args.model, None
        if args.tiny:
            from tests.conftest import build_tiny_model, build_tiny_tokenizer
            from tests.test_preferences import preference_file

            (root / "tiny").mkdir(parents=True, exist_ok=True)
            build_tiny_model(root / "tiny", build_tiny_tokenizer(root / "tiny"))
            model, dataset = str(root / "tiny"), str(preference_file(root / "prefs.jsonl"))
        rows = [run_method(m, root / m, args, model, dataset) for m in args.methods.split(",")]
    report(rows, args.json)


def report(rows: list[dict[str, Any]], path: Path | None) -> None:
    """Print the table; with --json, merged with the rows already there (a method measured again replaces its row)."""
    if path and path.is_file():
        earlier = json.loads(path.read_text())["rows"]
        rows = [r for r in earlier if r["method"] not in {n["method"] for n in rows}] + rows
    print(table(rows))
    if path:
        path.write_text(json.dumps({"rows": rows, "table": table(rows)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
