"""`tuneforge doctor`: what this machine has, what training will use, and what to fix first.

It must work on the machines that need it most, where torch or CUDA is broken, so it only
imports torch through `detect_hardware`, which turns every failure into text.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from tuneforge.machine.finetune_memory import FinetuneFit, finetune_fits
from tuneforge.machine.hardware import Hardware, detect_hardware
from tuneforge.machine.profile import Profile, params_label, recommend_profile, serve_precision
from tuneforge.presets import estimate_model_params


def run_doctor(json_out: bool = False, model: str = "smollm2-135m", disk_path: str | Path = ".") -> None:
    """Print the hardware report and the recommended profile for `model` (JSON with `json_out`)."""
    if json_out:
        # torch or bitsandbytes may print banners while importing; keep stdout pure JSON.
        with contextlib.redirect_stdout(sys.stderr):
            report = doctor_report(model, disk_path)
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        sys.stdout.flush()
        return
    hw = detect_hardware(disk_path)
    params = estimate_model_params(model)
    profile = recommend_profile(hw, params)
    _print_report(hw, profile, model, params, profile_fits(hw, profile, params))


def doctor_report(model: str = "smollm2-135m", disk_path: str | Path = ".") -> dict:
    """The `--json` object: hardware, profile, model and its estimated size, what each --finetune needs."""
    hw = detect_hardware(disk_path)
    params = estimate_model_params(model)
    profile = recommend_profile(hw, params)
    return {
        "hardware": hw.model_dump(),
        "profile": profile.model_dump(),
        "model": model,
        "model_params": params,
        "finetune": [fit.model_dump() for fit in profile_fits(hw, profile, params)],
        "serve": serve_precision(hw).model_dump(),
    }


def profile_fits(hw: Hardware, profile: Profile, params: int) -> list[FinetuneFit]:
    """lora, dora, qlora and full at the profile's precision and batch × length (machine/finetune_memory.py)."""
    tokens = int(profile.value("train.batch_size")) * int(profile.value("train.max_seq_length"))
    precision, checkpointing = (
        str(profile.value("train.precision")),
        bool(profile.value("train.gradient_checkpointing")),
    )
    return finetune_fits(hw, params, precision, tokens, checkpointing)


def _print_fits(console: Any, fits: list[FinetuneFit], profile: Profile) -> None:
    from rich.padding import Padding
    from rich.text import Text

    batch, length = profile.value("train.batch_size"), profile.value("train.max_seq_length")
    console.print(f"\n[bold]Memory for each --finetune[/bold] (batch {batch} × {length} tokens)")
    for fit in fits:
        mark = "[green]fits[/green]" if fit.fits else "[red]does not fit[/red]"
        console.print(f"  [cyan]{fit.finetune}[/cyan] about {fit.need_gb:.1f} GB: {mark}")
        console.print(Padding(Text(fit.reason, style="dim"), (0, 0, 0, 6)))


def _print_report(hw: Hardware, profile: Profile, model: str, params: int, fits: list[FinetuneFit]) -> None:
    from rich.console import Console
    from rich.markup import escape  # warnings hold text like 'tuneforge[cuda]' that rich would eat as markup
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    console = Console()
    console.print(f"[bold]tuneforge doctor[/bold]: {hw.label}")
    machine = Table(show_header=False, box=None, padding=(0, 2))
    for name, value in _machine_rows(hw):
        machine.add_row(f"[cyan]{name}[/cyan]", escape(value))
    console.print(machine)
    console.print(f"\n[bold]Recommended profile for {escape(model)}[/bold] ({params_label(params)} params)")
    for s in profile.settings:  # key = value, then the reason indented under it: readable at 80 columns
        console.print(f"  [cyan]{s.key}[/cyan] = [bold]{escape(str(s.value))}[/bold]")
        console.print(Padding(Text(s.reason, style="dim"), (0, 0, 0, 6)))
    _print_fits(console, fits, profile)
    advice = serve_precision(hw)
    console.print("\n[bold]Serving[/bold] (tuneforge serve; not applied, the default stays auto)")
    console.print(f"  [cyan]--precision[/cyan] [bold]{advice.value}[/bold]")
    console.print(Padding(Text(advice.reason, style="dim"), (0, 0, 0, 6)))
    if profile.warnings:
        console.print("\n[bold yellow]Warnings[/bold yellow]")
        for warning in profile.warnings:
            console.print(f"[yellow]![/yellow] {escape(warning)}")
    else:
        console.print("\n[green]No warnings: this machine is ready to train.[/green]")


def _machine_rows(hw: Hardware) -> list[tuple[str, str]]:
    """One (label, value) row per fact, in the order a user checks them."""
    rows = [
        ("OS", " ".join(filter(None, [hw.os, hw.os_version, f"({hw.arch})" if hw.arch else ""]))),
        ("Python", hw.python),
        ("CPU", f"{hw.cpu_model}, {hw.cpu_cores} logical cores" + (", bf16 instructions" if hw.cpu_bf16 else "")),
        ("RAM", f"{hw.ram_gb:.1f} GB"),
        ("Free disk", f"{hw.disk_free_gb:.1f} GB at {hw.disk_path}"),
        ("torch", _torch_line(hw)),
    ]
    for index, gpu in enumerate(hw.cuda_gpus):
        bf16 = "yes" if gpu.bf16 else "no"
        rows.append(
            (
                f"GPU {index}",
                f"{gpu.name}, {gpu.vram_gb:.1f} GB, compute capability {gpu.compute_capability}, bf16 {bf16}",
            )
        )
    if not hw.cuda_gpus:
        seen = f" (nvidia-smi lists {hw.nvidia_smi_gpus})" if hw.nvidia_smi_gpus else ""
        rows.append(("CUDA GPUs", f"none usable by torch{seen}"))
    if hw.apple_chip or hw.os == "Darwin":
        mps = (
            "available" if hw.mps_available else ("built but not available" if hw.mps_built else "not built into torch")
        )
        rows.append(("Apple chip", f"{hw.apple_chip or 'none'}; MPS {mps}"))
    rows.append(("bitsandbytes", hw.bitsandbytes))
    return rows


def _torch_line(hw: Hardware) -> str:
    if hw.torch_version is None:
        return f"not importable: {hw.torch_error}"
    build = f"CUDA {hw.torch_cuda_build} build" if hw.torch_cuda_build else "CPU-only build"
    if hw.mps_built:
        build += ", MPS built"
    error = f"; CUDA error: {hw.cuda_error}" if hw.cuda_error else ""
    return f"{hw.torch_version} ({build}){error}"
