"""The search space: check it before anything runs, draw a trial's values, turn them into config values."""

from __future__ import annotations

from typing import Any

from tuneforge.config import SEARCHABLE, SearchRange
from tuneforge.config_resolve import ResolvedConfig, validate
from tuneforge.errors import UserError

# "attention" in a sweep means LoRA on the attention projections only (llama-style names).
ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]


def check_space(resolved: ResolvedConfig) -> None:
    """Every end of every range must be a value the config accepts, so no trial dies of a typo at minute 20."""
    base = base_values(resolved)
    for key, span in resolved.config.sweep.space.items():
        ends = span.choices if span.choices is not None else [span.low, span.high]
        for end in ends:
            value = config_value(key, end)
            try:
                validate({**base, key: value}, {**resolved.sources, key: "sweep.space"})
            except UserError as exc:
                raise UserError(
                    f"The search space gives {key} the value {end!r}, which the config refuses: {exc} "
                    f"Fix the range of '{key}' under 'sweep: space:' ({resolved.sources['sweep.space']}).",
                    field=f"sweep.space.{key}",
                ) from None


def base_values(resolved: ResolvedConfig) -> dict[str, Any]:
    """The resolved config as flat dotted keys: what every trial starts from."""
    dumped = resolved.config.model_dump(mode="python")
    return {f"{s}.{k}": v for s, values in dumped.items() for k, v in values.items()}


def suggest(trial: Any, space: dict[str, SearchRange]) -> dict[str, Any]:
    """Optuna's own suggest_* calls, one per parameter: the sampler and importances see real distributions."""
    values: dict[str, Any] = {}
    for key, span in space.items():
        if span.choices is not None:
            values[key] = trial.suggest_categorical(key, span.choices)
        elif SEARCHABLE[key] == "int":
            values[key] = trial.suggest_int(key, int(span.low or 0), int(span.high or 0), log=span.log)
        else:
            values[key] = trial.suggest_float(key, float(span.low or 0), float(span.high or 0), log=span.log)
    return values


def config_value(key: str, value: Any) -> Any:
    """A drawn value as the config spells it ("attention" becomes the projection list)."""
    if key == "lora.target_modules" and value == "attention":
        return list(ATTENTION)
    if SEARCHABLE.get(key) == "int":
        return int(value)
    return value
