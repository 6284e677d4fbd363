"""Parse the command line and hand off to one `run_<command>` function. No logic lives here.

Heavy libraries (torch, transformers) are imported by the command modules, inside their
functions, so `tuneforge --help` and `tuneforge doctor` still work when torch is broken.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from tuneforge.config import field_help
from tuneforge.errors import EXIT_USAGE, UserError, not_available_yet

app = typer.Typer(
    name="tuneforge",
    help="Fine-tune a language model on your own machine. Start with: tuneforge train",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
_LOOSE = {"allow_extra_args": True, "ignore_unknown_options": True}


def _opt(key: str, *names: str) -> Any:
    """A CLI flag whose help text is the config field's own description (documented once)."""
    return typer.Option(*names, help=field_help(key), show_default=False)


def _guard(fn: Callable[[], Any], debug: bool) -> None:
    """Every command runs through here: a UserError becomes one paragraph and exit 2."""
    if debug or os.environ.get("TUNEFORGE_DEBUG") == "1":
        fn()
        return
    from tuneforge.quiet import quiet_libraries

    quiet_libraries()
    try:
        fn()
    except UserError as exc:
        from rich.console import Console

        Console(stderr=True, soft_wrap=True).print(f"[bold red]Error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except KeyboardInterrupt:
        typer.echo("\nStopped by Ctrl-C.", err=True)
        raise typer.Exit(130) from None


@app.command()
def train(
    model: Annotated[Optional[str], _opt("model.name", "--model")] = None,
    dataset: Annotated[Optional[str], _opt("data.dataset", "--dataset")] = None,
    output_dir: Annotated[Optional[Path], _opt("train.output_dir", "--output-dir")] = None,
    batch_size: Annotated[Optional[int], _opt("train.batch_size", "--batch-size")] = None,
    grad_accum: Annotated[Optional[int], _opt("train.grad_accum", "--grad-accum")] = None,
    max_steps: Annotated[Optional[int], _opt("train.max_steps", "--max-steps")] = None,
    max_seq_length: Annotated[Optional[int], _opt("train.max_seq_length", "--max-seq-length")] = None,
    learning_rate: Annotated[Optional[float], _opt("train.learning_rate", "--learning-rate")] = None,
    lora_r: Annotated[Optional[int], _opt("lora.r", "--lora-r")] = None,
    lora_alpha: Annotated[Optional[int], _opt("lora.alpha", "--lora-alpha")] = None,
    lora_dropout: Annotated[Optional[float], _opt("lora.dropout", "--lora-dropout")] = None,
    seed: Annotated[Optional[int], _opt("train.seed", "--seed")] = None,
    device: Annotated[Optional[str], _opt("train.device", "--device")] = None,
    precision: Annotated[Optional[str], _opt("train.precision", "--precision")] = None,
    eval_examples: Annotated[Optional[int], _opt("train.eval_examples", "--eval-examples")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file with config sections (see configs/).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the resolved config with sources, then stop.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print JSON.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace the results of an earlier run in --output-dir.")] = False,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the before/after check at the end.")] = False,
    debug: Debug = False,
) -> None:
    """LoRA-tune a model (default: SmolLM2-135M on medical terms, fully offline)."""
    cli_values = {
        "model.name": model, "data.dataset": dataset, "train.output_dir": output_dir,
        "train.batch_size": batch_size, "train.grad_accum": grad_accum, "train.max_steps": max_steps,
        "train.max_seq_length": max_seq_length, "train.learning_rate": learning_rate,
        "lora.r": lora_r, "lora.alpha": lora_alpha, "lora.dropout": lora_dropout, "train.seed": seed,
        "train.device": device, "train.precision": precision, "train.eval_examples": eval_examples,
    }  # fmt: skip
    if no_eval:
        cli_values["train.eval_examples"] = 0

    def go() -> None:
        from tuneforge.train import run_train

        run_train(cli_values, config_file=config, dry_run=dry_run, as_json=as_json, overwrite=overwrite)

    _guard(go, debug)


@app.command()
def chat(
    prompt: Annotated[Optional[str], typer.Argument(help="One question; without it an interactive chat opens.")] = None,
    adapter: Annotated[Path, typer.Option("--adapter", help="Results folder of a training run.")] = Path("results"),
    base: Annotated[bool, typer.Option("--base", help="Answer with the base model, without the adapter.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Longest answer in tokens.")] = 200,
    debug: Debug = False,
) -> None:
    """Talk to a tuned model (or the base model with --base)."""

    def go() -> None:
        from tuneforge.chat import run_chat

        run_chat(adapter, prompt=prompt, use_base=base, max_new_tokens=max_new_tokens)

    _guard(go, debug)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    model: Annotated[str, typer.Option("--model", help=field_help("model.name"))] = "smollm2-135m",
    debug: Debug = False,
) -> None:
    """Check this machine and recommend training settings, each with its reason."""

    def go() -> None:
        from tuneforge.doctor import run_doctor

        run_doctor(json_out=as_json, model=model)

    _guard(go, debug)


def _later(name: str, summary: str) -> None:
    def command(ctx: typer.Context, debug: Debug = False) -> None:
        def go() -> None:
            raise not_available_yet(name)

        _guard(go, debug)

    command.__doc__ = summary
    app.command(name, context_settings=_LOOSE)(command)


_later("eval", "Compare the base and the tuned model on held-out data.")

from tuneforge.serving.limits import Limits as _ServeLimits  # noqa: E402  (stdlib only: --help stays fast)

_SERVE_LIMITS = _ServeLimits()


@app.command()
def serve(
    adapter: Annotated[Optional[list[str]], typer.Option("--adapter", help="Results folder to serve, or NAME=FOLDER; repeat to serve several adapters on one base (default: results).")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Base model; default: the one the adapters were trained on. Alone, it serves the base model only.")] = None,
    host: Annotated[Optional[str], _opt("serve.host", "--host")] = None,
    port: Annotated[Optional[int], _opt("serve.port", "--port")] = None,
    api_key: Annotated[Optional[str], _opt("serve.api_key", "--api-key")] = None,
    insecure_no_key: Annotated[bool, typer.Option("--insecure-no-key", help="Allow a non-loopback --host without an API key (trusted networks only).")] = False,
    max_tokens_cap: Annotated[Optional[int], typer.Option("--max-tokens-cap", min=1, help=f"Longest answer one request may ask for, in tokens (default {_SERVE_LIMITS.max_tokens_cap}).")] = None,
    queue_size: Annotated[Optional[int], typer.Option("--queue-size", min=0, help=f"Requests that may wait behind the running one; more get 429 (default {_SERVE_LIMITS.queue_size}).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file with a serve: section (host, port, api_key).")] = None,
    debug: Debug = False,
) -> None:
    """Serve the tuned model behind an OpenAI-compatible API, with a chat page at /."""
    cli_values = {"serve.host": host, "serve.port": port, "serve.api_key": api_key}

    def go() -> None:
        from tuneforge.serving.command import run_serve

        run_serve(adapter or [], model, cli_values, config, insecure_no_key, max_tokens_cap, queue_size)

    _guard(go, debug)


@app.command()
def export(
    adapter: Annotated[Path, typer.Option("--adapter", help="Results folder of a training run.")] = Path("results"),
    out: Annotated[Path, typer.Option("--out", help="Folder to write the export into.")] = Path("exported"),
    fmt: Annotated[str, typer.Option("--format", help="gguf: one file for llama.cpp, LM Studio and Ollama; hf: a merged safetensors folder.")] = "gguf",
    quant: Annotated[Optional[str], typer.Option("--quant", help="GGUF only: f16 (default, closest to the tuned model) or q8_0 (half the size).")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
    model: Annotated[Optional[str], typer.Option("--model", help="Base model; default: the one the adapter was trained on.")] = None,
    debug: Debug = False,
) -> None:
    """Export a merged model or a GGUF file for llama.cpp and Ollama."""

    def go() -> None:
        from tuneforge.export.command import run_export

        run_export(adapter, out, fmt=fmt, quant=quant, overwrite=overwrite, model=model)

    _guard(go, debug)


def main() -> None:
    app(prog_name="tuneforge")


if __name__ == "__main__":
    sys.exit(main())
