"""Build the config from its layers and remember where every value came from.

Precedence, lowest first: built-in defaults < hardware profile < YAML file < environment
variables < CLI flags. CLI flags arrive as "unset" unless the user typed them, so they only
override what was asked for (mlx-lm's trick).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tuneforge.config import (
    FULL_LEARNING_RATES,
    METHOD_DEFAULTS,
    SECTIONS,
    TuneforgeConfig,
    all_keys,
    default_values,
    flag_for,
)
from tuneforge.errors import UserError

# The guide's variable names, so its instructions keep working with tuneforge.
ENV_VARS: dict[str, str] = {
    "MODEL": "model.name",
    "DATASET": "data.dataset",
    "OUTPUT_DIR": "train.output_dir",
    "BATCH_SIZE": "train.batch_size",
    "GRAD_ACCUM": "train.grad_accum",
    "MAX_STEPS": "train.max_steps",
    "MAX_SEQ_LENGTH": "train.max_seq_length",
    "LEARNING_RATE": "train.learning_rate",
    "LORA_R": "lora.r",
    "LORA_ALPHA": "lora.alpha",
    "LORA_DROPOUT": "lora.dropout",
    "SEED": "train.seed",
    "LOAD_IN_4BIT": "model.load_in_4bit",
    "TUNEFORGE_API_KEY": "serve.api_key",
}


@dataclass
class ResolvedConfig:
    """The validated config plus, for each dotted key, the layer that set it."""

    config: TuneforgeConfig
    sources: dict[str, str]
    profile: Any = None  # tuneforge.machine.profile.Profile, when hardware was considered
    hardware: Any = None  # tuneforge.machine.hardware.Hardware
    layers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"config": self.config.model_dump(mode="json"), "sources": self.sources}

    def describe(self, overrides: Mapping[str, tuple[Any, str]] | None = None) -> list[str]:
        """'train.batch_size = 3  (cli --batch-size)' for every key: where each value came from.

        `overrides` shows a value the run uses instead of the config's (the batch after an
        out-of-memory step-down) with its own source; the config itself stays frozen.
        """
        overrides = overrides or {}
        lines = []
        for section, values in self.config.model_dump(mode="json").items():
            for key, value in values.items():
                dotted = f"{section}.{key}"
                value, source = overrides.get(dotted, (value, self.sources[dotted]))
                shown = "(hidden)" if key == "api_key" and value else value
                lines.append(f"{dotted} = {shown}  ({source})")
        return lines


def resolve_config(
    cli_values: Mapping[str, Any] | None = None,
    config_file: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    hardware: Any = None,
    use_profile: bool = True,
) -> ResolvedConfig:
    """Merge every layer, validate once, and explain any bad value in one paragraph."""
    env = os.environ if env is None else env
    layers: list[tuple[str, dict[str, Any]]] = []
    yaml_values = read_yaml(Path(config_file)) if config_file else {}
    env_values = read_env(env)
    cli = {k: v for k, v in (cli_values or {}).items() if v is not None}
    profile = None
    if use_profile:
        model_name = _first_set("model.name", cli, env_values, yaml_values)
        profile, hardware = _profile_for(model_name, hardware)
        layers.append(("profile", {k: v for k, (v, _) in profile.overrides().items()}))
    if yaml_values:
        layers.append((f"config {config_file}", yaml_values))
    layers.append(("env", env_values))
    layers.append(("cli", cli))
    merged, sources = _merge(layers, profile)
    config = validate(merged, sources)
    return ResolvedConfig(config, sources, profile, hardware, layers)


def _first_set(key: str, *layers: Mapping[str, Any]) -> str:
    for layer in layers:
        if key in layer:
            return str(layer[key])
    return str(default_values()[key])


def _profile_for(model_name: str, hardware: Any) -> tuple[Any, Any]:
    from tuneforge.machine.hardware import detect_hardware
    from tuneforge.machine.profile import recommend_profile
    from tuneforge.presets import estimate_model_params

    hardware = hardware or detect_hardware()
    return recommend_profile(hardware, estimate_model_params(model_name)), hardware


def _merge(layers, profile) -> tuple[dict[str, Any], dict[str, str]]:
    merged: dict[str, Any] = dict(default_values())
    sources = {key: "default" for key in merged}
    env_names = {v: k for k, v in ENV_VARS.items()}
    for label, values in layers:
        for key, value in values.items():
            merged[key] = value
            if label == "env":
                sources[key] = f"env {env_names[key]}"
            elif label == "cli":
                sources[key] = f"cli {flag_for(key)}"
            elif label == "profile":
                sources[key] = f"profile: {profile.overrides()[key][1]}"
            else:
                sources[key] = label
    method = merged["train.method"]
    for key, value in METHOD_DEFAULTS.get(str(method), {}).items():
        if sources[key] == "default":
            merged[key], sources[key] = value, f"default for --method {method}"
    if merged["train.finetune"] == "full" and sources["train.learning_rate"].startswith("default"):
        rate = FULL_LEARNING_RATES.get(str(method), FULL_LEARNING_RATES["sft"])
        merged["train.learning_rate"], sources["train.learning_rate"] = rate, "default for --finetune full"
    return merged, sources


def read_env(env: Mapping[str, str]) -> dict[str, Any]:
    """Guide-style variables; an empty variable counts as unset (`BATCH_SIZE= ./run.sh`)."""
    return {key: env[name] for name, key in ENV_VARS.items() if env.get(name, "") != ""}


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML config into dotted keys, rejecting unknown keys with a suggestion."""
    import yaml

    if not path.is_file():
        raise UserError(
            f"The config file '{path}' does not exist. Check the path given to --config, "
            "or start from one of the files in configs/."
        )
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(
            f"The config file '{path}' is not valid YAML{where}: {getattr(exc, 'problem', exc)}. "
            "Fix the indentation or quoting there; each section holds 'key: value' lines."
        ) from None
    if not isinstance(data, dict):
        raise UserError(f"The config file '{path}' must hold sections such as 'train:' with keys under them.")
    return _flatten(data, path)


def _flatten(data: dict[str, Any], path: Path) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise unknown_key_error(str(section), path, list(SECTIONS))
        if not isinstance(values, dict):
            raise UserError(
                f"In '{path}', '{section}' must be a section with keys under it, not {values!r}. "
                f"Example:\n{section}:\n  {next(iter(SECTIONS[section].model_fields))}: ..."
            )
        for name, value in values.items():
            key = f"{section}.{name}"
            if key not in default_values():
                raise unknown_key_error(key, path, all_keys())
            flat[key] = value
    return flat


def unknown_key_error(key: str, path: Path, choices: list[str]) -> UserError:
    close = difflib.get_close_matches(key, choices, n=1, cutoff=0.6)
    if not close and "." in key:  # 'train.batchsize' should still find 'train.batch_size'
        close = difflib.get_close_matches(key.split(".")[-1], [c.split(".")[-1] for c in choices], n=1)
        close = [c for c in choices if close and c.endswith("." + close[0])][:1]
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return UserError(
        f"Unknown config key '{key}' in '{path}'.{hint} Known keys are listed by "
        "`tuneforge train --dry-run`; remove or rename this one.",
        field=key,
    )


def validate(merged: dict[str, Any], sources: dict[str, str]) -> TuneforgeConfig:
    nested: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for key, value in merged.items():
        section, name = key.split(".")
        nested[section][name] = value
    try:
        return TuneforgeConfig.model_validate(nested)
    except ValidationError as exc:
        raise _explain(exc, merged, sources) from None


def _explain(exc: ValidationError, merged: dict[str, Any], sources: dict[str, str]) -> UserError:
    """Turn pydantic's report into one paragraph: field, value, where it came from, the fix."""
    err = exc.errors()[0]
    key = ".".join(str(part) for part in err["loc"][:2])
    value = merged.get(key, err.get("input"))
    source = sources.get(key, "")
    reason = err["msg"].removeprefix("Value error, ")
    return UserError(
        f"Invalid value for {key}: {value!r} (set by {source}). {reason}. "
        f"Fix: {_where_to_fix(key, source)} ({_describe(key)}).",
        field=key,
    )


def _where_to_fix(key: str, source: str) -> str:
    if source.startswith("env "):
        return f"change or unset the environment variable {source[4:]}"
    if source.startswith("cli "):
        return f"change the flag {source[4:]}"
    if source.startswith("config "):
        return f"change '{key.split('.')[1]}' under '{key.split('.')[0]}:' in {source[7:]}"
    return f"set {key} explicitly"


def _describe(key: str) -> str:
    from tuneforge.config import field_help

    return field_help(key).rstrip(".")
