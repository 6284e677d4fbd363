"""The report's PNG charts, drawn with matplotlib (headless): base vs tuned bars and the loss curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.evaluation.metrics import METRICS

# Figures on a 0-1 scale share the left panel; BLEU is scaled down to fit (its label says so).
_SHARE_KEYS = ("rouge1", "rouge2", "rougeL", "bleu", "exact_match", "stop_rate")
_BASE, _TUNED = "#8c8c8c", "#2a7ab9"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    return plt


def metrics_chart(path: Path, result: dict[str, Any]) -> Path:
    """Grouped bars of the 0-1 figures, and held-out loss beside them when it was measured."""
    plt = _pyplot()
    labels = {m.key: m.label for m in METRICS}
    keys = [k for k in _SHARE_KEYS if k in result["tuned"]]
    scale = {k: 0.01 if k == "bleu" else 1.0 for k in keys}
    has_loss = "heldout_loss" in result["tuned"]
    fig, axes = plt.subplots(1, 2 if has_loss else 1, figsize=(10 if has_loss else 7, 4), dpi=110,
                             gridspec_kw={"width_ratios": [4, 1]} if has_loss else None, squeeze=False)  # fmt: skip
    ax = axes[0][0]
    xs = range(len(keys))
    for offset, name, colour in ((-0.2, "base", _BASE), (0.2, "tuned", _TUNED)):
        values = [result[name][k] * scale[k] for k in keys]
        bars = ax.bar([x + offset for x in xs], values, width=0.4, label=f"{name} model", color=colour)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(list(xs), [labels[k].replace("BLEU (0-100)", "BLEU / 100") for k in keys], rotation=20)
    ax.set_ylim(0, 1.05)
    ax.set_title(f"Base vs tuned on {result['examples']} held-out examples")
    ax.legend()
    if has_loss:
        loss_ax = axes[0][1]
        loss_ax.bar(
            ["base", "tuned"], [result["base"]["heldout_loss"], result["tuned"]["heldout_loss"]], color=[_BASE, _TUNED]
        )
        loss_ax.set_title("held-out loss\n(lower is better)")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def loss_chart(path: Path, history: list[dict[str, float]], result: dict[str, Any]) -> Path | None:
    """The run's training loss, with this evaluation's held-out loss of base and tuned as stars.

    None without a training history (a results folder with no metrics.json): two stars alone
    on a step axis would say nothing the bar chart doesn't.
    """
    if not history:
        return None
    has_loss = "heldout_loss" in result["tuned"]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o", label="training loss")
    if has_loss:
        for step, name, colour in ((0, "base", _BASE), (history[-1]["step"], "tuned", _TUNED)):
            value = result[name]["heldout_loss"]
            ax.scatter(
                [step], [value], marker="*", s=180, zorder=3, color=colour, label=f"held-out, {name}: {value:.3f}"
            )
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title("Training loss and held-out loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
