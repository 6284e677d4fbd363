"""The method seam: what differs between training methods, as a table of three functions.

A method (supervised fine-tuning today; preference tuning and continued pre-training next)
owns exactly three things, and the recipe owns everything else (checks, the results folder,
the model, LoRA, recovery, saving):
- `encode`: how the split conversations become model inputs (rows with labels, pairs, ...);
- `build_trainer`: which TRL trainer and config run those rows, for one batch shape;
- `report`: which extra figures the run reports at the end (SFT: a before/after generation check).
Two more are optional, for methods whose data or held-out figures differ from SFT's:
- `load`: how the data is read and checked before any model loads (default: conversations);
- `measure`: held-out figures of the model before and after training (default: the trainer's loss).
Adding a method is a new module and one line in `method_for`, not a branch in the recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tuneforge.errors import UserError


@dataclass(frozen=True)
class Method:
    name: str
    encode: Callable[..., tuple[Any, Any]]  # row lists or datasets (training rows: a memory-mapped Arrow dataset)
    build_trainer: Callable[..., Any]
    report: Callable[..., dict[str, Any] | None]
    load: Callable[..., Any] | None = None  # (cfg) -> data.LoadedData
    measure: Callable[..., dict[str, float] | None] | None = None  # (trainer, eval rows, log, label) -> {"loss": ...}


METHODS = ("sft", "pretrain", "dpo", "orpo", "kto")  # each a module here with a METHOD


def method_for(name: str) -> Method:
    """The chosen method's table, its module imported only now: TRL's preference trainers alone take
    seconds to import, which a run of another method, or a bad flag, should not wait for."""
    import importlib

    if name not in METHODS:
        raise UserError(
            f"Training method '{name}' (--method) is not built into this version of tuneforge yet. "
            f"Choose one of: {', '.join(METHODS)}."
        )
    method: Method = importlib.import_module(f"tuneforge.recipe.methods.{name}").METHOD
    return method


AUTO_PRETRAIN = "auto: the data is raw text"


def auto_method(name: str, source: str, data_format: str) -> tuple[str, str | None]:
    """(method, why it was chosen for the user): raw text means continued pre-training unless --method says otherwise."""
    if source == "default" and name == "sft" and data_format == "text":
        return "pretrain", AUTO_PRETRAIN
    return name, None
