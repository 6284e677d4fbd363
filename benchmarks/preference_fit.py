"""How far does preference tuning fit the pairs it trained on, and how much of that reaches held-out pairs?

Issue 16 asks DPO for +20 points of held-out preference accuracy (the share of pairs whose chosen
answer gets more summed log-probability than the rejected one). This asks the question beneath it:
on the very pairs a run trained on, what does the same figure reach? A small file of medical-preferences
pairs (256 to train on, 128 held out) is trained on for two epochs, then both sets are scored with the
starting adapter and the tuned one, with `evaluation/preference.py`'s scorer (the one `train` uses):

    python benchmarks/preference_fit.py --make /tmp/pf/prefs.jsonl             # 384 pairs, seed 7
    tuneforge train --method dpo --adapter results-sft --dataset /tmp/pf/prefs.jsonl --val-size 128 \\
        --max-steps 128 --output-dir /tmp/pf/dpo
    python benchmarks/preference_fit.py --results /tmp/pf/dpo --start results-sft

`benchmarks/learning_levers.py dpo-sft-weight:0 train ...` runs the same with plain DPO (no SFT term).
Figures in docs/PREFERENCES.md.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any


def make(path: Path, count: int, seed: int) -> None:
    """`count` medical-preferences pairs, shuffled with `seed` (siblings sit together in HPO order)."""
    from tuneforge.data.hpo_pairs import load_medical_preferences

    pairs = load_medical_preferences()[0]
    random.Random(seed).shuffle(pairs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs[:count]), encoding="utf-8")
    print(f"{count} pairs in {path}")


def split(results: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(trained, held out): the run's data file without the pairs it held out (eval_pairs.jsonl)."""
    from tuneforge.data.preferences import convert_pairs
    from tuneforge.data.readers import read_rows
    from tuneforge.runs.folder import open_run

    dataset = open_run(results, checksums=False).config["data"]["dataset"]
    dataset = dataset[0] if isinstance(dataset, list) else dataset
    held = convert_pairs(read_rows(results / "eval_pairs.jsonl"), "trl", {}, "dpo")[0]
    rows = convert_pairs(read_rows(Path(dataset)), "auto", {}, "dpo")[0]
    held_out = {json.dumps(p["prompt"]) for p in held}  # one question per term
    return [r for r in rows if json.dumps(r["prompt"]) not in held_out], held


def score(adapter: Path, sets: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Each set of pairs scored by one adapter, loaded once."""
    from tuneforge.evaluation.preference import encode_pairs, score_pairs
    from tuneforge.runs.folder import load_tuned, open_run

    model, tokenizer = load_tuned(open_run(adapter, checksums=False))
    figures = {name: score_pairs(model, encode_pairs(tokenizer, pairs, 512, None)) for name, pairs in sets.items()}
    assert all(figures.values())
    return figures  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--make", type=Path, help="write the pairs file and stop")
    parser.add_argument("--pairs", type=int, default=384)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--results", type=Path, help="a finished preference run on such a file")
    parser.add_argument("--start", type=Path, help="the adapter the run started from (its --adapter)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.make:
        return make(args.make, args.pairs, args.seed)
    if not (args.results and args.start):
        parser.error("--results and --start, or --make")
    trained, held = split(args.results)
    sets = {"trained on": trained, "held out": held}
    start, tuned = score(args.start, sets), score(args.results, sets)
    table = {name: {"start": start[name], "tuned": tuned[name]} for name in sets}
    print("| pairs | count | accuracy (start -> tuned) | where chosen is longer | chosen-answer loss |")
    print("|---|---:|---|---|---|")
    for name, row in table.items():
        start, tuned = row["start"], row["tuned"]
        longer = f"{start['accuracy_chosen_longer'] or 0:.1%} -> {tuned['accuracy_chosen_longer'] or 0:.1%}"
        print(f"| {name} | {tuned['pairs']} | {start['accuracy']:.1%} -> {tuned['accuracy']:.1%} | {longer} "
              f"| {start['loss']:.3f} -> {tuned['loss']:.3f} |")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(table, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
