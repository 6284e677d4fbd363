"""`tuneforge train`: resolve the config, then either show it (--dry-run) or run the recipe.

The recipe itself, setup → fit → save, is `tuneforge.recipe.train.run_recipe`; this module only
resolves the config once and hands it over (frozen). `--nproc` goes through commands/launch.py,
which starts this same command in each process under torchrun.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console

from tuneforge.config_resolve import ResolvedConfig, resolve_config


def run_train(
    cli_values: dict[str, Any],
    config_file: Path | None = None,
    dry_run: bool = False,
    as_json: bool = False,
    flags: Any = None,
) -> dict[str, Any] | None:
    from tuneforge.recipe.train import run_recipe

    resolved = resolve_config(cli_values, config_file)
    if dry_run:
        print_dry_run(resolved, as_json)
        return None
    return run_recipe(resolved, flags)


def print_dry_run(resolved: ResolvedConfig, as_json: bool) -> None:
    if as_json:
        print(json.dumps(resolved.as_dict(), indent=2))
        return
    console = Console(highlight=False)
    console.print(f"Hardware: {resolved.hardware.label}" if resolved.hardware else "Hardware: not checked")
    for line in resolved.describe():
        console.print(line, markup=False)
    dry_run_data_report(resolved, console)
    console.print("Dry run: no model was loaded and nothing was trained.")


def dry_run_data_report(resolved: ResolvedConfig, console: Console) -> None:
    """The data report too, when the tokenizer is at hand; never a 20 s model conversion here."""
    from tuneforge.models.loading import cache_root, resolve_model

    source = resolve_model(resolved.config.model.name)
    cached = source.kind == "local" or (source.kind == "preset" and (cache_root() / "models" / source.name).is_dir())
    if not cached:
        console.print("Data report: run `tuneforge data check` (it needs the model's tokenizer).")
        return
    from tuneforge.commands.data_check import check_data

    check_data(resolved.config, method_source=resolved.sources["train.method"])
