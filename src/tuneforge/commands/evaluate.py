"""`tuneforge eval`: base vs tuned on held-out data, printed as a table and written as a report.

Read `run_eval` top to bottom. Every check on the input (folder, files, base model, eval set,
flags) runs before the model loads, so a mistake costs a second, not a model load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from tuneforge.errors import UserError
from tuneforge.evaluation import defaults


def run_eval(
    adapter: Path,
    dataset: Path | None = None,
    limit: int | None = defaults.LIMIT,
    as_json: bool = False,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    batch_size: int = defaults.BATCH_SIZE,
    out: Path | None = None,
    model: str | None = None,
    checksums: bool = True,
) -> dict[str, Any]:
    from tuneforge.evaluation.dataset import check_limit
    from tuneforge.runs.folder import open_run
    from tuneforge.runs.lock import holding

    check_limit(limit)
    _check_positive("--max-new-tokens", max_new_tokens)
    _check_positive("--batch-size", batch_size)
    run = open_run(adapter, model, checksums)  # first: the lock must not create a folder for a mistyped --adapter
    report_dir = out or adapter / "eval"
    with holding(report_dir, what="eval report folder", fix="give this eval another folder with --out"):
        return _evaluate(run, dataset, limit, as_json, max_new_tokens, batch_size, report_dir)


def _evaluate(run: Any, dataset: Path | None, limit: int | None, as_json: bool, max_new_tokens: int,
              batch_size: int, report_dir: Path) -> dict[str, Any]:  # fmt: skip
    """The eval itself, run while this process holds the report folder (two evals would mix their files)."""
    from tuneforge.data.split import heldout_note
    from tuneforge.evaluation.compare import eval_settings, evaluate_both, format_comparison_table
    from tuneforge.evaluation.dataset import load_eval_set
    from tuneforge.evaluation.report import write_report
    from tuneforge.runs.folder import load_tuned

    adapter = run.folder
    eval_path = dataset or adapter / "eval_set.jsonl"
    examples = load_eval_set(eval_path, limit)
    console = Console(stderr=as_json, highlight=False)  # with --json, stdout carries only the JSON
    console.print(f"Evaluating {len(examples)} examples from {eval_path}: base model, then tuned model.")
    if examples and (note := heldout_note(len(examples))) is not None:
        console.print(f"warning: {note}", markup=False)
    tuned_model, tokenizer = load_tuned(run)
    settings = eval_settings(max_new_tokens, batch_size, run.max_length, with_loss=True)
    with _progress(console, 2 * len(examples)) as advance:
        result = evaluate_both(tuned_model, tokenizer, examples, settings, advance)
    result["run"] = {"adapter": str(adapter), "base_model": run.source.name, "eval_set": str(eval_path)}
    if dataset is None and (adapter / "eval_pairs.jsonl").is_file():
        add_preference_figures(result, tuned_model, tokenizer, adapter / "eval_pairs.jsonl", run.max_length)
    files = write_report(report_dir, result, run.training.get("loss_history", []))
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    else:
        console.print(format_comparison_table(result))
    console.print(f"Report: {files['html']} (also report.md, metrics.json and PNG charts in {files['html'].parent})")
    return result


def add_preference_figures(result: dict[str, Any], model: Any, tokenizer: Any, pairs_file: Path,
                           max_length: int) -> None:  # fmt: skip
    """A preference run's held-out pairs: accuracy and margin of the base (adapter disabled) and the tuned model."""
    from tuneforge.data.preferences import convert_pairs
    from tuneforge.data.readers import read_rows
    from tuneforge.evaluation.preference import encode_pairs, score_pairs

    pairs, _ = convert_pairs(read_rows(pairs_file), "trl", {}, "dpo")
    rows = encode_pairs(tokenizer, pairs, max_length, None)  # the saved tokenizer carries the run's template
    with model.disable_adapter():
        base = score_pairs(model, rows)
    tuned = score_pairs(model, rows)
    if base is None or tuned is None:
        return
    result["preference"] = {"base": base, "tuned": tuned, "pairs": tuned["pairs"]}


def _check_positive(flag: str, value: int) -> None:
    if value < 1:
        raise UserError(f"{flag} is {value}; it must be 1 or more.")


class _progress:
    """A progress bar over answers generated (base and tuned), or nothing when output isn't a terminal."""

    def __init__(self, console: Console, total: int) -> None:
        from rich.progress import Progress

        self.bar = Progress(console=console, transient=True, disable=not console.is_terminal)
        self.task = self.bar.add_task("generating answers", total=total)

    def __enter__(self):
        self.bar.start()
        return lambda done: self.bar.advance(self.task, done)

    def __exit__(self, *exc: object) -> None:
        self.bar.stop()
