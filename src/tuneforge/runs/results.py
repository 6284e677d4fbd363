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


def write_portable_base(folder: Path, source: Any) -> None:
    """adapter_config.json names the base as other machines find it (a preset's Hub id), not this cache path.

    peft's save_pretrained records the folder it loaded, a path under this user's home; plain peft
    on another machine, and the Hub, could not find the base from that. tuneforge.yaml keeps the
    name as typed; runs/folder.py: base_model_for maps a preset's Hub id back to the preset offline.
    """
    from tuneforge.models.loading import portable_name

    path = folder / "adapter_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = portable_name(source)
    write_json(path, config)


def write_model_card(folder: Path, resolved: Any, source: Any, metrics: dict[str, Any],
                     quick_table: str = "") -> None:  # fmt: skip
    """README.md: Hub metadata (the adapter's base, licence, data), the run's figures, how to load it.

    `source` is the base's models.loading.ModelSource; `quick_table` the before/after table as
    Markdown, drawn by the evaluation layer above this one. No local path goes in.
    """
    from tuneforge.runs import hub_card

    cfg = resolved.config
    base = hub_card.base_facts(source)
    data = hub_card.data_facts(cfg.model_dump(mode="json"))
    full = cfg.train.finetune == "full"
    trained = (
        ("fine-tuning", "full: every weight trained")
        if full
        else (
            "LoRA",
            f"r={cfg.lora.r}, alpha={cfg.lora.alpha}, dropout={cfg.lora.dropout}, targets={cfg.lora.target_modules}",
        )
    )
    rows = [
        ("base model", base.shown), ("data", data.shown), trained,
        ("steps", f"{metrics['steps']} x micro-batch {metrics.get('micro_batch', cfg.train.batch_size)} x accumulation "
                  f"{metrics.get('grad_accum', cfg.train.grad_accum)}"),
        ("max length / learning rate", f"{cfg.train.max_seq_length} / {cfg.train.learning_rate}"),
        ("precision / device", f"{metrics['precision']} / {metrics['device']}"),
        ("held-out loss", f"{metrics['eval_loss_before']:.4f} (base) -> {metrics['eval_loss_after']:.4f} (tuned)"
         if metrics.get("eval_loss_after") is not None else "not measured"),
        ("method", f"{cfg.train.method}" + (f", starting from the adapter {Path(cfg.model.adapter).name}"
                                             if cfg.model.adapter else "")),
        *preference_rows(metrics.get("preference")),
        ("train loss (final)", f"{metrics['final_train_loss']:.4f}"),
        ("speed", f"{metrics['tokens_per_s']:.0f} tokens/s, {metrics['wall_time_s']:.0f} s in all"),
    ]  # fmt: skip
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    quick = metrics.get("quick_eval")
    if quick and quick_table:
        table += f"\n\n### Before/after on {quick['examples']} held-out questions (greedy)\n\n{quick_table}"
    note = base.note
    if not base.hub_id and not full:
        note += f" adapter_config.json records only that name: pass the folder's path (`--model path/to/{base.name}`)."
    note = f"\n> {note.strip()}\n" if note else ""
    title = (
        f"{base.name}, fully fine-tuned with tuneforge"
        if full
        else f"LoRA adapter for {base.name}, made with tuneforge"
    )
    body = f"""# {title}

| | |
|---|---|
{table}
{note}
{full_usage(folder.name) if full else adapter_usage(folder.name, base)}
{hub_card.licence_section(base, data)}"""
    if full:
        fields = hub_card.metadata(base, data, "finetune", "transformers", ["full-fine-tune", cfg.train.method])
    else:
        fields = hub_card.metadata(base, data, "adapter", "peft", ["lora", cfg.train.method, "peft"])
    (folder / "README.md").write_text(hub_card.render(fields, body), encoding="utf-8")


def preference_rows(figures: dict[str, Any] | None) -> list[tuple[str, str]]:
    """Held-out preference accuracy and margin, starting model -> tuned, for a card's table."""
    if not figures or not figures.get("after"):
        return []
    before, after = figures["before"], figures["after"]
    return [
        (f"held-out preference accuracy ({after['pairs']} pairs)",
         f"{100 * before['accuracy']:.1f}% (start) -> {100 * after['accuracy']:.1f}% (tuned)"),
        ("held-out margin, log p(chosen) - log p(rejected)",
         f"{before['margin']:+.3f} (start) -> {after['margin']:+.3f} (tuned) nats"),
    ]  # fmt: skip


def full_usage(where: str, repo: str | None = None) -> str:
    """The "Use it" section of a full fine-tune, from this folder or its Hub repo: a model of its own."""
    fetch = f"hf download {repo} --local-dir {where}\n" if repo else ""
    return f"""## Use it

```bash
{fetch}tuneforge chat --adapter {where} "Please tell me about Bursitis."
tuneforge serve --adapter {where}
tuneforge export --adapter {where} --format gguf --ollama my-model
```

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{repo or where}")
tokenizer = AutoTokenizer.from_pretrained("{repo or where}")
```
"""


def adapter_usage(where: str, base: Any, repo: str | None = None) -> str:
    """The card's "Use it" section: from this folder, or (after `tuneforge push`) from its Hub repo."""
    location = repo or where
    fetch = f"hf download {repo} --local-dir {where}\n" if repo else ""
    model = "" if base.hub_id else f" --model path/to/{base.name}"  # a local base: only its name travels
    if base.hub_id:
        python = f"""from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

# peft reads the base model ({base.hub_id}) from adapter_config.json and fetches it from the Hub.
model = AutoPeftModelForCausalLM.from_pretrained("{location}")
tokenizer = AutoTokenizer.from_pretrained("{location}")"""
    else:
        python = f"""from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

base = AutoModelForCausalLM.from_pretrained("path/to/{base.name}")  # a local folder: only its name travels
model = PeftModel.from_pretrained(base, "{location}")
tokenizer = AutoTokenizer.from_pretrained("{location}")"""
    return f"""## Use it

With tuneforge (offline for its presets):

```bash
{fetch}tuneforge chat --adapter {where}{model} "Please tell me about Bursitis."
tuneforge serve --adapter {where}{model}
tuneforge export --adapter {where}{model} --format gguf --ollama my-model
```

With peft and transformers:

```python
{python}
```
"""
