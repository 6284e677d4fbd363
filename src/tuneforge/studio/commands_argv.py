"""The command line of each child job: the same `tuneforge` commands and flags a user would type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tuneforge.errors import UserError
from tuneforge.studio.settings import StudioSettings

# The studio chooses where results and exports go; the page may set everything else the config holds.
STUDIO_OWNED = {"train.output_dir"}
EXPORT_FORMATS = {("hf", None), ("gguf", "f16"), ("gguf", "q8_0")}


def check_settings(values: dict[str, Any]) -> dict[str, Any]:
    """Keys are the config's dotted keys (as `--dry-run --json` names them); anything else is a typo."""
    from tuneforge.config import all_keys

    known = set(all_keys()) - STUDIO_OWNED
    for key in values:
        if key not in known:
            raise UserError(
                f"The setting '{key}' is not one `tuneforge train` takes. Known settings: {', '.join(sorted(known))}."
            )
    return {k: v for k, v in values.items() if v is not None and v != ""}


def train_argv(settings: StudioSettings, job_file: Path, run: str, values: dict[str, Any]) -> list[str]:
    """`train --config <job>.yaml --output-dir <runs>/<run>`: a YAML file carries every key, flag or not."""
    from tuneforge.studio.typed_paths import absolute_paths

    sections: dict[str, dict[str, Any]] = {}
    for key, value in absolute_paths(check_settings(values)).items():
        section, name = key.split(".")
        sections.setdefault(section, {})[name] = value
    job_file.parent.mkdir(parents=True, exist_ok=True)
    job_file.write_text(yaml.safe_dump(sections, sort_keys=True), encoding="utf-8")
    return ["train", "--config", str(job_file), "--output-dir", str(settings.runs_dir / run)]


def eval_argv(settings: StudioSettings, run: str, limit: int) -> list[str]:
    return ["eval", "--adapter", str(settings.runs_dir / run), "--limit", str(limit)]


def export_target(settings: StudioSettings, run: str, fmt: str, quant: str | None) -> Path:
    return settings.exports / "-".join(filter(None, [run, fmt, quant]))


def export_argv(settings: StudioSettings, run: str, fmt: str, quant: str | None) -> list[str]:
    if (fmt, quant) not in EXPORT_FORMATS:
        raise UserError(
            f"Export format '{fmt}' with quant '{quant}' is not one the studio offers: hf, gguf f16, gguf q8_0."
        )
    argv = ["export", "--adapter", str(settings.runs_dir / run), "--out", str(export_target(settings, run, fmt, quant))]
    argv += ["--format", fmt, "--overwrite"]
    if fmt == "gguf":
        argv += ["--quant", str(quant)]  # the export writes a Modelfile; the page shows `ollama create`
    return argv
