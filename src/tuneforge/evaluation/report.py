"""Write an evaluation's files: metrics.json, report.md, a self-contained report.html and PNG charts.

report.html embeds its charts as base64 data, so the one file can be mailed or opened offline.
A small inline script records each image's natural size on <body data-image-sizes>, which lets
a headless browser (and the tests) confirm that the charts really decoded.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from tuneforge.evaluation.charts import loss_chart, metrics_chart
from tuneforge.evaluation.compare import SAMPLE_COUNT
from tuneforge.evaluation.metrics import METRICS


def write_report(out: Path, result: dict[str, Any], history: list[dict[str, float]]) -> dict[str, Path]:
    """Every report file in `out`; returns {kind: path}."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"metrics": out / "metrics.json", "markdown": out / "report.md", "html": out / "report.html"}
    files["metrics"].write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    charts = {"metrics_chart": metrics_chart(out / "metrics.png", result)}
    loss = loss_chart(out / "loss.png", history, result)
    if loss is not None:
        charts["loss_chart"] = loss
    files["markdown"].write_text(markdown(result, charts), encoding="utf-8")
    files["html"].write_text(html_page(result, charts), encoding="utf-8")
    return {**files, **charts}


def figure_rows(result: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(label, base, tuned, difference) as text, in the order of METRICS."""
    rows = []
    for info in METRICS:
        if info.key in result["tuned"]:
            base, tuned, diff = (result[part][info.key] for part in ("base", "tuned", "diff"))
            rows.append((info.label, f"{base:.{info.digits}f}", f"{tuned:.{info.digits}f}", f"{diff:+.{info.digits}f}"))
    return rows + preference_rows(result.get("preference"))


def preference_rows(figures: dict[str, Any] | None) -> list[tuple[str, str, str, str]]:
    """A preference run's held-out pairs (evaluation/preference.py), base (adapter disabled) against tuned."""
    if not figures:
        return []
    rows = []
    for key, label, digits in (("accuracy", f"preference accuracy ({figures['pairs']} held-out pairs)", 4),
                               ("accuracy_per_token", "preference accuracy per answer token", 4),
                               ("accuracy_chosen_longer", "... on the pairs whose chosen answer is longer", 4),
                               ("margin", "margin, log p(chosen) - log p(rejected)", 3)):  # fmt: skip
        base, tuned = figures["base"].get(key), figures["tuned"].get(key)
        if base is None or tuned is None:
            continue  # no pair with the longer chosen answer, or a report written before the figure existed
        rows.append((label, f"{base:.{digits}f}", f"{tuned:.{digits}f}", f"{tuned - base:+.{digits}f}"))
    return rows


def _summary(result: dict[str, Any]) -> str:
    s = result["settings"]
    source = result.get("run", {}).get("eval_set", "the held-out set")
    return (
        f"{result['examples']} examples from {source}; greedy decoding (seed {s['seed']}), at most "
        f"{s['max_new_tokens']} new tokens, batches of {s['batch_size']}; {result['seconds']:.0f} s."
    )


def markdown_table(result: dict[str, Any]) -> str:
    """The figures as a Markdown table: for report.md, and for the model card at the end of training."""
    lines = ["| figure | base | tuned | difference |", "|---|---:|---:|---:|"]
    return "\n".join(lines + [f"| {' | '.join(row)} |" for row in figure_rows(result)])


def markdown(result: dict[str, Any], charts: dict[str, Path]) -> str:
    cell = lambda text: " ".join(str(text).split()).replace("|", "\\|")  # noqa: E731 - one table cell
    lines = ["# Evaluation: base vs tuned", "", _summary(result), "", markdown_table(result), ""]
    lines += [f"![{name}]({path.name})" for name, path in charts.items()]
    lines += ["", f"## {min(SAMPLE_COUNT, len(result['samples']))} held-out questions", ""]
    for number, sample in enumerate(result["samples"][:SAMPLE_COUNT], start=1):
        lines += [f"### {number}. {cell(sample['question'])}", "", "| | answer |", "|---|---|"]
        lines += [f"| {part} | {cell(sample[part])} |" for part in ("reference", "base", "tuned")] + [""]
    return "\n".join(lines) + "\n"


_STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.35em .6em;vertical-align:top}
td.num{text-align:right;font-variant-numeric:tabular-nums}.better{color:#16803c}.worse{color:#b42318}
#samples td{width:25%}img{max-width:100%;display:block;margin:1em 0}"""

_SIZES_SCRIPT = """window.addEventListener("load", () => {
  const sizes = Array.from(document.images).map(i => ({id: i.id, width: i.naturalWidth, height: i.naturalHeight}));
  document.body.dataset.imageSizes = JSON.stringify(sizes);
});"""


def html_page(result: dict[str, Any], charts: dict[str, Path]) -> str:
    esc = html.escape
    figures = "".join(
        f"<tr><td>{esc(label)}</td><td class=num>{b}</td><td class=num>{t}</td>"
        f"<td class='num {_direction(label, d)}'>{d}</td></tr>"
        for label, b, t, d in figure_rows(result)
    )
    images = "".join(
        f'<img id="{name}" alt="{name.replace("_", " ")}" src="data:image/png;base64,{_base64(path)}">'
        for name, path in charts.items()
    )
    samples = "".join(
        "<tr>" + "".join(f"<td>{esc(s[part])}</td>" for part in ("question", "reference", "base", "tuned")) + "</tr>"
        for s in result["samples"][:SAMPLE_COUNT]
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tuneforge evaluation</title><style>{_STYLE}</style></head>
<body><h1>Evaluation: base vs tuned</h1><p>{esc(_summary(result))}</p>
<table id="figures">{_head("figure", "base", "tuned", "difference")}<tbody>{figures}</tbody></table>
{images}
<h2>Held-out questions, side by side</h2>
<table id="samples">{_head("question", "reference", "base model", "tuned model")}<tbody>{samples}</tbody></table>
<script>{_SIZES_SCRIPT}</script></body></html>
"""


def _head(*names: str) -> str:
    return "<thead><tr>" + "".join(f"<th>{name}</th>" for name in names) + "</tr></thead>"


def _base64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _direction(label: str, diff: str) -> str:
    """CSS class of a difference cell: 'better', 'worse' or '' (no change, or no better direction)."""
    info = next((m for m in METRICS if m.label == label), None)
    higher_is_better = True if info is None else info.higher_is_better  # preference rows: more is better
    value = float(diff)
    if higher_is_better is None or value == 0:
        return ""
    return "better" if (value > 0) == higher_is_better else "worse"
