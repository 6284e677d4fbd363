"""README.md of an export: what the model is, how it was made, how well it did, and whose licences apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.models.loading import ModelSource


def write_export_card(
    folder: Path, shown: Path, adapter: Path, run_config: dict[str, Any], source: ModelSource, files: dict[str, str]
) -> None:
    """Write into `folder` (the staging copy) a card that names `shown`, where the export will live.

    files: {'format': 'gguf', 'quant': 'q8_0', 'file': 'x.gguf', 'ollama': 'name'}, whichever apply.
    """
    rows = [("base model", source.description)] + _training_rows(run_config) + _eval_rows(adapter)
    rows.append(("export", f"{files['format']}{' ' + files['quant'] if files.get('quant') else ''}, "
                           f"adapter merged with peft's merge_and_unload, from {adapter}"))  # fmt: skip
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    text = f"""# {source.name}, tuned with tuneforge

| | |
|---|---|
{table}

## Use it

{_usage(shown, files)}

## Licences
{chr(10).join(f"- {line}" for line in _licences(run_config, source))}
"""
    (folder / "README.md").write_text(text, encoding="utf-8")


def _training_rows(run_config: dict[str, Any]) -> list[tuple[str, str]]:
    data, lora, train = (run_config.get(key) or {} for key in ("data", "lora", "train"))
    if not run_config:
        return [("training", "not recorded (no tuneforge.yaml in the adapter folder)")]
    return [
        ("data", str(data.get("dataset"))),
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


def _usage(folder: Path, files: dict[str, str]) -> str:
    if files["format"] == "hf":
        return f"""```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{folder}")
tokenizer = AutoTokenizer.from_pretrained("{folder}")
```"""
    return f"""From this folder:

```bash
ollama create {files["ollama"]} -f Modelfile && ollama run {files["ollama"]}
llama-cli -m {files["file"]} -cnv
```"""


def _licences(run_config: dict[str, Any], source: ModelSource) -> list[str]:
    from tuneforge.presets import DATASET_PRESETS

    base = source.licence or f"Base model {source.name}: see its licence; this export is a derivative of it."
    dataset = str((run_config.get("data") or {}).get("dataset", "unknown"))
    preset = DATASET_PRESETS.get(dataset)
    data = f"Training data {dataset}: check its licence before you share this model."
    if preset and preset.licence:
        data = preset.licence
    return [base, data]
