"""The sweep's pictures and its HTML page, in the eval report's style (one self-contained file).

Plots are Optuna's own matplotlib visualizations: optimization history, parameter importances
(PED-ANOVA, which needs no scikit-learn) and the held-out loss curves of every trial in one chart.
"""

from __future__ import annotations

import csv
import html
from pathlib import Path
from typing import Any

from tuneforge.evaluation.report import _SIZES_SCRIPT, _STYLE, _base64, _head

PLOTS = ("optimization_history", "param_importances", "loss_curves")


def write_plots(study: Any, folder: Path, log: Any) -> list[Path]:
    """Each PNG that can be drawn; one that can't (too few trials) is named in the log, not fatal."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization.matplotlib as vis
    from optuna.importance import PedAnovaImportanceEvaluator

    draw = {
        "optimization_history": lambda: vis.plot_optimization_history(study),
        "param_importances": lambda: vis.plot_param_importances(study, evaluator=PedAnovaImportanceEvaluator()),
        "loss_curves": lambda: vis.plot_intermediate_values(study),
    }
    written = []
    for name in PLOTS:
        try:
            axes = draw[name]()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:
            log(f"{name}.png not drawn: {' '.join(str(exc).split())[:160]}")
            continue
        if name == "loss_curves":
            axes.set_ylabel(
                "held-out loss" + (" (negated: higher is better)" if study.direction.name == "MAXIMIZE" else "")
            )
        figure: Any = plt.gcf()  # Optuna drew into the current figure
        figure.set_size_inches(8, 4.5)
        figure.tight_layout()
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


def write_summary_html(folder: Path, summary: dict[str, Any]) -> Path:
    """summary.html: the figures, the trials table and the plots, with the images embedded."""
    esc = html.escape
    figures = "".join(
        f"<tr><td>{esc(label)}</td><td class=num>{esc(value)}</td></tr>" for label, value in facts(summary)
    )
    with (folder / "trials.csv").open(encoding="utf-8", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    images = "".join(
        f'<img id="{name}" alt="{name.replace("_", " ")}" src="data:image/png;base64,{_base64(folder / f"{name}.png")}">'
        for name in PLOTS if (folder / f"{name}.png").is_file()
    )  # fmt: skip
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>tuneforge sweep</title><style>{_STYLE}</style></head>
<body><h1>Sweep: {esc(str(summary["trials"]))} trials</h1>
<table id="figures">{_head("figure", "value")}<tbody>{figures}</tbody></table>
<h2>Trials</h2><table id="trials">{_head(*map(esc, header))}<tbody>{body}</tbody></table>
{images}
<script>{_SIZES_SCRIPT}</script></body></html>
"""
    path = folder / "summary.html"
    path.write_text(page, encoding="utf-8")
    return path


def facts(summary: dict[str, Any]) -> list[tuple[str, str]]:
    def num(value: Any, fmt: str = ".4f") -> str:
        return "-" if value is None else format(value, fmt)

    return [
        ("objective", f"{summary['objective']} ({summary['direction']})"),
        ("trials: complete / pruned / failed", f"{summary['complete']} / {summary['pruned']} / {summary['failed']}"),
        ("best trial", num(summary["best_trial"], "d")),
        ("best value", num(summary["best_value"])),
        ("best settings", ", ".join(f"{k}={v}" for k, v in (summary["best_params"] or {}).items())),
        ("sweep time (s)", num(summary["wall_s"], ".0f")),
        ("time saved by pruning (s, estimated)", num(summary["pruning_saved_s"], ".0f")),
        ("overhead per trial outside training (s)", num(summary["overhead_per_trial_s"], ".1f")),
    ]
