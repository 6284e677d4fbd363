"""README.md of an export: what the model is, how it was made, how well it did, and whose licences apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.models.loading import ModelSource


def write_export_card(
    folder: Path, shown: Path, adapter: Path, run_config: dict[str, Any], source: ModelSource, files: dict[str, str]
) -> None:
    """Write into `folder` (the staging copy) the card of the export that will live at `shown`.

    files: {'format': 'gguf', 'quant': 'q8_0', 'file': 'x.gguf', 'ollama': 'name'}, whichever apply.
    The card names folders by their names only: it is meant to travel (a colleague, the Hub).
    """
    from tuneforge.runs import hub_card

    base = hub_card.base_facts(source)
    data = hub_card.data_facts(run_config)
    rows = [("base model", base.shown), ("data", data.shown)] + _training_rows(run_config) + _eval_rows(adapter)
    full = (run_config.get("train") or {}).get("finetune") == "full"
    how = "the fully fine-tuned weights as trained" if full else "the LoRA adapter merged with peft's merge_and_unload"
    rows.append(("export", f"{files['format']}{' ' + files['quant'] if files.get('quant') else ''}, {how}"))
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    note = f"\n> {base.note}\n" if base.note else ""
    body = f"""# {base.name}, tuned with tuneforge

| | |
|---|---|
{table}
{note}
{export_usage(shown.name, files)}
{hub_card.licence_section(base, data)}"""
    # The weights are the base's, changed by training: a fine-tune of it, whichever file format holds them
    # (the Hub would guess "quantized" for a GGUF, which would list it as the base's own weights).
    gguf = files["format"] == "gguf"
    tags = (
        ["gguf", "llama-cpp", "ollama", files.get("quant", "f16")]
        if gguf
        else ["safetensors", "full" if full else "merged-lora"]
    )
    fields = hub_card.metadata(base, data, "finetune", "gguf" if gguf else "transformers", tags)
    (folder / "README.md").write_text(hub_card.render(fields, body), encoding="utf-8")


def export_usage(where: str, files: dict[str, str], repo: str | None = None) -> str:
    """The card's "Use it" section: from the export folder, or (after `tuneforge push`) from its Hub repo."""
    if files["format"] == "hf":
        location = repo or where
        return f"""## Use it

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{location}")
tokenizer = AutoTokenizer.from_pretrained("{location}")
```
"""
    name, gguf = files["ollama"], files["file"]
    hub = f"""From the Hub:

```bash
ollama run hf.co/{repo}
llama-cli -hf {repo} -cnv
```

""" if repo else ""  # fmt: skip
    fetch = f"hf download {repo} --local-dir {where} && cd {where}\n" if repo else f"cd {where}\n"
    return f"""## Use it

{hub}From the folder (the Modelfile carries the chat template and the stop tokens):

```bash
{fetch}ollama create {name} -f Modelfile && ollama run {name}
llama-cli -m {gguf} -cnv
```
"""


def _training_rows(run_config: dict[str, Any]) -> list[tuple[str, str]]:
    lora, train = (run_config.get(key) or {} for key in ("lora", "train"))
    if not run_config:
        return [("training", "not recorded (no tuneforge.yaml in the adapter folder)")]
    return [
        ("LoRA", f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, "
                 f"targets={lora.get('target_modules')}"),
        ("training", f"{train.get('max_steps')} steps x micro-batch {train.get('batch_size')} x accumulation "
                     f"{train.get('grad_accum')}, learning rate {train.get('learning_rate')}, "
                     f"max length {train.get('max_seq_length')}"),
    ]  # fmt: skip


def _eval_rows(adapter: Path) -> list[tuple[str, str]]:
    """Held-out loss from metrics.json, plus the numbers of any eval*.json report in the results folder."""
    rows = []
    metrics = _read_json(adapter / "metrics.json")
    if metrics.get("eval_loss_after") is not None:
        before, after = metrics["eval_loss_before"], metrics["eval_loss_after"]
        rows.append(("held-out loss", f"{before:.4f} (base) -> {after:.4f} (tuned)"))
    for report in sorted(adapter.glob("eval*.json")):
        for key, value in _numbers(_read_json(report)):
            rows.append((f"{report.stem}: {key}", f"{value:.4g}"))
    return rows[:25] or [("evaluation", "no figures in the results folder")]


def _numbers(data: Any, prefix: str = "") -> list[tuple[str, float]]:
    if isinstance(data, bool):
        return []
    if isinstance(data, (int, float)):
        return [(prefix, float(data))]
    if isinstance(data, dict) and prefix.count(".") < 2:
        return [
            pair for key, value in data.items() for pair in _numbers(value, f"{prefix}.{key}" if prefix else str(key))
        ]
    return []


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
