"""Write what a finished run leaves behind: config, metrics, loss plot and a model card."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml


def write_config(folder: Path, resolved: Any, overrides: dict[str, tuple[Any, str]] | None = None) -> None:
    """tuneforge.yaml: the resolved config, loadable with --config, each value's source as a comment.

    `overrides` are values the run used instead of the config's (the batch after an out-of-memory
    step-down), so that reusing the file does not run out of memory again.
    """
    data = resolved.config.model_dump(mode="json")
    for dotted, (value, _) in (overrides or {}).items():
        section, key = dotted.split(".")
        data[section][key] = value
    lines = ["# The resolved config of this run. Reuse it with: tuneforge train --config tuneforge.yaml"]
    for section, values in data.items():
        lines.append(f"{section}:")
        for key, value in values.items():
            dumped = yaml.safe_dump({key: value}, default_flow_style=True, width=1000).strip()[1:-1]
            source = (overrides or {}).get(f"{section}.{key}", (None, resolved.sources[f"{section}.{key}"]))[1]
            lines.append(f"  {dumped}  # {source}")
    (folder / "tuneforge.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def plot_loss(path: Path, history: list[dict[str, float]], eval_points: dict[str, tuple[int, float]]) -> None:
    """The training curve, with the held-out losses as stars: {label: (step, loss)}."""
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], marker="o", label="training loss")
    for label, (step, value) in eval_points.items():
        ax.scatter([step], [value], marker="*", s=150, zorder=3, label=f"{label}: {value:.3f}")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title("tuneforge training loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_model_card(folder: Path, resolved: Any, data_source: str, licences: list[str], metrics: dict[str, Any],
                     quick_table: str = "") -> None:  # fmt: skip
    """`quick_table`: the before/after table as Markdown, drawn by the evaluation layer above this one."""
    cfg = resolved.config
    rows = [
        ("base model", cfg.model.name), ("data", data_source),
        ("LoRA", f"r={cfg.lora.r}, alpha={cfg.lora.alpha}, dropout={cfg.lora.dropout}, targets={cfg.lora.target_modules}"),
        ("steps", f"{metrics['steps']} x micro-batch {metrics.get('micro_batch', cfg.train.batch_size)} x accumulation "
                  f"{metrics.get('grad_accum', cfg.train.grad_accum)}"),
        ("max length / learning rate", f"{cfg.train.max_seq_length} / {cfg.train.learning_rate}"),
        ("precision / device", f"{metrics['precision']} / {metrics['device']}"),
        ("held-out loss", f"{metrics['eval_loss_before']:.4f} (base) -> {metrics['eval_loss_after']:.4f} (tuned)"
         if metrics.get("eval_loss_after") is not None else "not measured"),
        ("train loss (final)", f"{metrics['final_train_loss']:.4f}"),
        ("speed", f"{metrics['tokens_per_s']:.0f} tokens/s, {metrics['wall_time_s']:.0f} s in all"),
    ]  # fmt: skip
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    quick = metrics.get("quick_eval")
    if quick and quick_table:
        table += f"\n\n### Before/after on {quick['examples']} held-out questions (greedy)\n\n{quick_table}"
    text = f"""# LoRA adapter made with tuneforge

| | |
|---|---|
{table}

## Use it

```bash
tuneforge chat --adapter {folder} "Please tell me about Bursitis."
```

```python
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained("<base model folder or id>")
model = PeftModel.from_pretrained(base, "{folder}")
```

## Licences
{chr(10).join(f"- {line}" for line in licences if line)}
"""
    (folder / "README.md").write_text(text, encoding="utf-8")
