"""Parse the command line and hand off to one `run_<command>` function. No logic lives here.

Heavy libraries (torch, transformers) are imported by the command modules, inside their
functions, so `tuneforge --help` and `tuneforge doctor` still work when torch is broken.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tuneforge.config import field_help, flag_for
from tuneforge.errors import EXIT_USAGE, Stopped, UserError, not_available_yet

app = typer.Typer(
    name="tuneforge",
    help="Fine-tune a language model on your own machine. Start with: tuneforge train",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Debug = Annotated[bool, typer.Option("--debug", help="Show the full traceback on errors.")]
SkipChecksums = Annotated[
    bool,
    typer.Option(
        "--skip-checksums",
        help="Check the results files' sizes only, not their SHA-256 (for huge full fine-tunes; an adapter takes ms).",
    ),
]
_LOOSE = {"allow_extra_args": True, "ignore_unknown_options": True}


def _opt(key: str, *names: str) -> Any:
    """A CLI flag whose help text is the config field's own description (documented once).

    Its name is config.flag_for(key), the one the resolved config names as the value's source.
    """
    primary = flag_for(key)
    assert not names or names[0].split("/")[0] == primary, (key, names)  # a renamed flag must be renamed there too
    return typer.Option(*(names or (primary,)), help=field_help(key), show_default=False)


# Flags shared by `train` and `data check`: declared once, so their help and names never drift.
ModelOpt = Annotated[Optional[str], _opt("model.name", "--model")]
DatasetOpt = Annotated[Optional[list[str]], _opt("data.dataset", "--dataset")]
DataFormatOpt = Annotated[Optional[str], _opt("data.format", "--data-format")]
DataMapOpt = Annotated[Optional[str], _opt("data.map", "--data-map")]
DatasetSplitOpt = Annotated[Optional[str], _opt("data.split", "--dataset-split")]
TemplateOpt = Annotated[Optional[str], _opt("data.template", "--template")]
ValSizeOpt = Annotated[Optional[float], _opt("data.val_size", "--val-size")]
DropLongOpt = Annotated[Optional[bool], _opt("data.drop_long", "--drop-long")]
MaxSeqLengthOpt = Annotated[Optional[int], _opt("train.max_seq_length", "--max-seq-length")]
MethodOpt = Annotated[Optional[str], _opt("train.method", "--method")]
ReportToOpt = Annotated[Optional[str], _opt("train.report_to", "--report-to")]


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
        from rich.markup import escape

        # escape: messages quote user data, and text like "[/INST]" would break rich markup
        Console(stderr=True, soft_wrap=True).print(f"[bold red]Error:[/] {escape(str(exc))}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except Stopped as exc:
        if str(exc):  # empty on ranks other than 0, which stop quietly
            typer.echo(f"\n{exc}", err=True)
        raise typer.Exit(exc.code) from None
    except KeyboardInterrupt:
        typer.echo("\nStopped by Ctrl-C.", err=True)
        raise typer.Exit(130) from None
    except (RuntimeError, MemoryError) as exc:
        from tuneforge.machine.memory import is_out_of_memory

        if not is_out_of_memory(exc):
            raise
        typer.echo(
            f"Error: out of memory ({str(exc).splitlines()[0][:200]}). Lower --batch-size or --max-seq-length, "
            "use a smaller --model, or close other programs. Training steps already saved are kept; "
            "run the same command again to resume.", err=True,
        )  # fmt: skip
        raise typer.Exit(EXIT_USAGE) from None


@app.command()
def train(
    method: MethodOpt = None,
    model: ModelOpt = None,
    dataset: DatasetOpt = None,
    data_format: DataFormatOpt = None,
    data_map: DataMapOpt = None,
    dataset_split: DatasetSplitOpt = None,
    template: TemplateOpt = None,
    val_size: ValSizeOpt = None,
    drop_long: DropLongOpt = None,
    packing: Annotated[Optional[bool], _opt("train.padding_free", "--packing/--no-packing")] = None,
    load_in_4bit: Annotated[Optional[bool], _opt("model.load_in_4bit", "--load-in-4bit/--no-load-in-4bit")] = None,
    finetune: Annotated[Optional[str], _opt("train.finetune", "--finetune")] = None,
    adapter: Annotated[Optional[Path], _opt("model.adapter", "--adapter")] = None,
    save_steps: Annotated[Optional[int], _opt("train.save_steps")] = None,
    save_total_limit: Annotated[Optional[int], _opt("train.save_total_limit")] = None,
    group_by_length: Annotated[Optional[bool], _opt("train.group_by_length", "--group-by-length")] = None,
    output_dir: Annotated[Optional[Path], _opt("train.output_dir", "--output-dir")] = None,
    batch_size: Annotated[Optional[int], _opt("train.batch_size", "--batch-size")] = None,
    grad_accum: Annotated[Optional[int], _opt("train.grad_accum", "--grad-accum")] = None,
    max_steps: Annotated[Optional[int], _opt("train.max_steps", "--max-steps")] = None,
    max_seq_length: MaxSeqLengthOpt = None,
    learning_rate: Annotated[Optional[float], _opt("train.learning_rate", "--learning-rate")] = None,
    lora_r: Annotated[Optional[int], _opt("lora.r", "--lora-r")] = None,
    lora_alpha: Annotated[Optional[int], _opt("lora.alpha", "--lora-alpha")] = None,
    lora_dropout: Annotated[Optional[float], _opt("lora.dropout", "--lora-dropout")] = None,
    seed: Annotated[Optional[int], _opt("train.seed", "--seed")] = None,
    device: Annotated[Optional[str], _opt("train.device", "--device")] = None,
    precision: Annotated[Optional[str], _opt("train.precision", "--precision")] = None,
    eval_examples: Annotated[Optional[int], _opt("train.eval_examples", "--eval-examples")] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="YAML file with config sections (see configs/).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the resolved config with sources, then stop.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --dry-run: print JSON.")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite", help="Start over: move the earlier run in --output-dir aside (kept as <folder>.old-<time>)."
        ),
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Resume the unfinished run in --output-dir; an error if there is none. (An unfinished run of the same settings resumes by itself.)",
        ),
    ] = False,
    resume_anyway: Annotated[
        bool,
        typer.Option(
            "--resume-anyway",
            help="Resume even though settings changed since the checkpoint (batch, learning rate, data, ...).",
        ),
    ] = False,
    no_eval: Annotated[bool, typer.Option("--no-eval", help="Skip the before/after check at the end.")] = False,
    strategy: Annotated[Optional[str], _opt("train.strategy", "--strategy")] = None,
    report_to: ReportToOpt = None,
    nproc: Annotated[
        Optional[str],
        typer.Option(
            "--nproc", help="Train with N processes (one per GPU) under torchrun; 'auto': one per visible GPU."
        ),
    ] = None,
    nnodes: Annotated[
        Optional[int],
        typer.Option("--nnodes", help="Machines taking part; run the same command on each (with --nproc)."),
    ] = None,
    node_rank: Annotated[
        int, typer.Option("--node-rank", help="This machine's number, 0 to nnodes-1; 0 writes the results.")
    ] = 0,
    master_addr: Annotated[
        Optional[str], typer.Option("--master-addr", help="Address of the node-rank 0 machine, reachable from all.")
    ] = None,
    master_port: Annotated[
        Optional[int], typer.Option("--master-port", help="Free TCP port on the node-rank 0 machine (default 29500).")
    ] = None,
    launcher: Annotated[
        str, typer.Option("--launcher", help="torchrun (default) or accelerate, to start the processes.")
    ] = "torchrun",
    debug: Debug = False,
) -> None:
    """LoRA-tune a model (default: SmolLM2-135M on medical terms, fully offline)."""
    cli_values = _train_values(locals())

    def go() -> None:
        from tuneforge.commands.train import run_train
        from tuneforge.recipe.distributed import is_launched_child
        from tuneforge.runs.resume import ResumeFlags

        flags = ResumeFlags(overwrite, resume or resume_anyway, resume_anyway)

        if (nproc or nnodes) and not is_launched_child():
            from tuneforge.commands.launch import LaunchOptions, run_launch

            opts = LaunchOptions(nproc or "auto", nnodes or 1, node_rank, master_addr, master_port, launcher)
            return run_launch(cli_values, config, opts, flags=flags, dry_run=dry_run, debug=debug)

        run_train(cli_values, config_file=config, dry_run=dry_run, as_json=as_json, flags=flags)

    _guard(go, debug)


# train's flags → config keys (the parameter name of each flag in `train` below).
_TRAIN_KEYS = {
    "train.method": "method", "model.name": "model", "data.dataset": "dataset", "train.output_dir": "output_dir",
    "train.batch_size": "batch_size", "train.grad_accum": "grad_accum", "train.max_steps": "max_steps",
    "train.max_seq_length": "max_seq_length", "train.learning_rate": "learning_rate", "lora.r": "lora_r",
    "lora.alpha": "lora_alpha", "lora.dropout": "lora_dropout", "train.seed": "seed", "train.device": "device",
    "train.precision": "precision", "train.eval_examples": "eval_examples", "train.strategy": "strategy",
    "train.report_to": "report_to", "train.padding_free": "packing", "train.group_by_length": "group_by_length",
    "model.load_in_4bit": "load_in_4bit", "train.save_steps": "save_steps",
    "train.save_total_limit": "save_total_limit", "data.format": "data_format", "data.map": "data_map",
    "data.split": "dataset_split", "data.template": "template", "data.val_size": "val_size",
    "data.drop_long": "drop_long", "train.finetune": "finetune", "model.adapter": "adapter",
}  # fmt: skip


def _train_values(params: dict[str, Any]) -> dict[str, Any]:
    """`train`'s parsed flags as {dotted key: value}; `sweep` passes the train flags it is given through here too."""
    cli_values = {key: params[name] for key, name in _TRAIN_KEYS.items()}
    cli_values["data.dataset"] = params["dataset"] or None  # repeated --dataset: a mixture; none given: unset
    if params["no_eval"]:
        cli_values["train.eval_examples"] = 0
    return cli_values


@app.command(context_settings=_LOOSE)
def sweep(
    ctx: typer.Context,
    trials: Annotated[Optional[int], _opt("sweep.trials", "--trials")] = None,
    trial_steps: Annotated[Optional[int], _opt("sweep.trial_steps", "--trial-steps")] = None,
    eval_every: Annotated[Optional[int], _opt("sweep.eval_every", "--eval-every")] = None,
    objective: Annotated[Optional[str], _opt("sweep.objective", "--objective")] = None,
    pruner: Annotated[Optional[str], _opt("sweep.pruner", "--pruner")] = None,
    workers: Annotated[Optional[int], _opt("sweep.workers", "--workers")] = None,
    storage: Annotated[Optional[str], _opt("sweep.storage", "--storage")] = None,
    study_name: Annotated[Optional[str], _opt("sweep.study_name", "--study-name")] = None,
    output_dir: Annotated[Optional[Path], _opt("sweep.output_dir", "--output-dir")] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="YAML file with config sections, a sweep: section among them.")
    ] = None,
    debug: Debug = False,
) -> None:
    """Search learning rate, LoRA rank, alpha, dropout, target layers and warm-up with Optuna; any `train` flag also works."""
    values = {"sweep.trials": trials, "sweep.trial_steps": trial_steps, "sweep.eval_every": eval_every,
              "sweep.objective": objective, "sweep.pruner": pruner, "sweep.workers": workers,
              "sweep.storage": storage, "sweep.study_name": study_name, "sweep.output_dir": output_dir}  # fmt: skip

    def go() -> None:
        from tuneforge.commands.sweep import run_sweep

        run_sweep({**_sweep_train_values(ctx.args), **values}, config_file=config)

    _guard(go, debug)


def _sweep_train_values(args: list[str]) -> dict[str, Any]:
    """The `train` flags given to `sweep`, parsed by train's own parser: same names, same checks, same help."""
    import click

    train_command = typer.main.get_command(app).commands["train"]  # type: ignore[attr-defined]
    try:
        params = train_command.make_context("tuneforge sweep", list(args), resilient_parsing=False).params
    except click.UsageError as exc:
        raise UserError(
            f"{exc.format_message()} (`tuneforge sweep` takes its own flags and `tuneforge train`'s; see both --help)"
        ) from None
    return {k: v for k, v in _train_values(params).items() if k != "train.output_dir"}


@app.command()
def chat(
    prompt: Annotated[Optional[str], typer.Argument(help="One question; without it an interactive chat opens.")] = None,
    adapter: Annotated[Path, typer.Option("--adapter", help="Results folder of a training run.")] = Path("results"),
    base: Annotated[bool, typer.Option("--base", help="Answer with the base model, without the adapter.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", min=1, help="Longest answer in tokens.")] = 200,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Base model; default: the one the adapter was trained on.")
    ] = None,
    tools: Annotated[
        Optional[Path],
        typer.Option(
            "--tools", help="JSON file of tools (OpenAI shape) the model may call; calls are printed as tool_calls."
        ),
    ] = None,
    skip_checksums: SkipChecksums = False,
    debug: Debug = False,
) -> None:
    """Talk to a tuned model (or the base model with --base)."""

    def go() -> None:
        from tuneforge.commands.chat import run_chat

        checksums = not skip_checksums
        run_chat(adapter, prompt, base, max_new_tokens, checksums, base_model=model, tools_file=tools)

    _guard(go, debug)


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    model: Annotated[str, typer.Option("--model", help=field_help("model.name"))] = "smollm2-135m",
    debug: Debug = False,
) -> None:
    """Check this machine and recommend training settings, each with its reason."""

    def go() -> None:
        from tuneforge.commands.doctor import run_doctor

        run_doctor(json_out=as_json, model=model)

    _guard(go, debug)


@app.command()
def studio(
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on; beyond 127.0.0.1 a --token is required.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="Port of the page (0: any free one).")] = 7860,
    runs_dir: Annotated[Path, typer.Option("--runs-dir", help="Folder holding one results folder per run.")] = Path(
        "runs"
    ),
    data_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--data-dir", help="The studio's own files: jobs, uploads, exports (default: <runs-dir>/.studio)."
        ),
    ] = None,
    token: Annotated[
        Optional[str],
        typer.Option(
            "--token",
            help="Token for state-changing requests (default: a new one per launch; env TUNEFORGE_STUDIO_TOKEN).",
        ),
    ] = None,
    open_browser: Annotated[
        bool, typer.Option("--open/--no-open", help="Open the page in the default browser.")
    ] = False,
    debug: Debug = False,
) -> None:
    """Train, watch, compare, chat and export from a local web page (http://127.0.0.1:7860), offline."""

    def go() -> None:
        from tuneforge.commands.studio import run_studio

        run_studio(host, port, runs_dir, data_dir, token, open_browser)

    _guard(go, debug)


def _later(name: str, summary: str) -> None:
    def command(ctx: typer.Context, debug: Debug = False) -> None:
        def go() -> None:
            raise not_available_yet(name)

        _guard(go, debug)

    command.__doc__ = summary
    app.command(name, context_settings=_LOOSE)(command)


from tuneforge.evaluation import defaults as _EVAL  # noqa: E402  (stdlib only: --help stays fast)


@app.command("eval")
def eval_(
    adapter: Annotated[Path, typer.Option("--adapter", help="Results folder of a training run.")] = Path("results"),
    dataset: Annotated[
        Optional[Path],
        typer.Option(
            "--dataset", help="JSONL of held-out conversations; default: <adapter>/eval_set.jsonl, never trained on."
        ),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="Score only the first N examples.")] = _EVAL.LIMIT,
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Longest answer in tokens.")
    ] = _EVAL.MAX_NEW_TOKENS,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Prompts answered together (faster, more memory).")
    ] = _EVAL.BATCH_SIZE,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out", help="Folder for report.html, report.md, metrics.json and charts; default: <adapter>/eval."
        ),
    ] = None,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Base model; default: the one the adapter was trained on.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as one JSON object.")] = False,
    skip_checksums: SkipChecksums = False,
    debug: Debug = False,
) -> None:
    """Compare the base and the tuned model on held-out data: loss, ROUGE, BLEU, answers side by side."""

    def go() -> None:
        from tuneforge.commands.evaluate import run_eval

        run_eval(adapter, dataset, limit, as_json, max_new_tokens, batch_size, out, model, not skip_checksums)

    _guard(go, debug)


@app.command()
def serve(
    adapter: Annotated[
        Optional[list[str]],
        typer.Option(
            "--adapter",
            help="Results folder to serve, or NAME=FOLDER; repeat to serve several adapters on one base (default: results).",
        ),
    ] = None,
    model: Annotated[
        Optional[str],
        typer.Option(
            "--model",
            help="Base model; default: the one the adapters were trained on. Alone, it serves the base model only.",
        ),
    ] = None,
    host: Annotated[Optional[str], _opt("serve.host", "--host")] = None,
    port: Annotated[Optional[int], _opt("serve.port", "--port")] = None,
    api_key: Annotated[Optional[str], _opt("serve.api_key", "--api-key")] = None,
    insecure_no_key: Annotated[
        bool,
        typer.Option(
            "--insecure-no-key", help="Allow a non-loopback --host without an API key (trusted networks only)."
        ),
    ] = False,
    max_tokens_cap: Annotated[Optional[int], _opt("serve.max_tokens_cap", "--max-tokens-cap")] = None,
    queue_size: Annotated[Optional[int], _opt("serve.queue_size", "--queue-size")] = None,
    max_batch: Annotated[Optional[int], _opt("serve.max_batch", "--max-batch")] = None,
    precision: Annotated[Optional[str], _opt("serve.precision", "--precision")] = None,
    compile_decode: Annotated[Optional[bool], _opt("serve.compile", "--compile/--no-compile")] = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="YAML file with a serve: section (host, port, api_key).")
    ] = None,
    skip_checksums: SkipChecksums = False,
    debug: Debug = False,
) -> None:
    """Serve the tuned model behind an OpenAI-compatible API, with a chat page at /."""
    cli_values = {"serve.host": host, "serve.port": port, "serve.api_key": api_key,
                  "serve.max_tokens_cap": max_tokens_cap, "serve.queue_size": queue_size,
                  "serve.max_batch": max_batch, "serve.precision": precision,
                  "serve.compile": compile_decode}  # fmt: skip

    def go() -> None:
        from tuneforge.commands.serve import run_serve

        run_serve(adapter or [], model, cli_values, config, insecure_no_key, checksums=not skip_checksums)

    _guard(go, debug)


@app.command()
def export(
    adapter: Annotated[Path, typer.Option("--adapter", help="Results folder of a training run.")] = Path("results"),
    out: Annotated[Path, typer.Option("--out", help="Folder to write the export into.")] = Path("exported"),
    fmt: Annotated[
        str,
        typer.Option(
            "--format", help="gguf: one file for llama.cpp, LM Studio and Ollama; hf: a merged safetensors folder."
        ),
    ] = "gguf",
    quant: Annotated[
        Optional[str],
        typer.Option("--quant", help="GGUF only: f16 (default, closest to the tuned model) or q8_0 (half the size)."),
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace what is in --out.")] = False,
    model: Annotated[
        Optional[str], typer.Option("--model", help="Base model; default: the one the adapter was trained on.")
    ] = None,
    ollama: Annotated[
        Optional[str],
        typer.Option(
            "--ollama", help="GGUF only: `ollama create NAME` from the export (prints the command without Ollama)."
        ),
    ] = None,
    skip_checksums: SkipChecksums = False,
    debug: Debug = False,
) -> None:
    """Export a merged model or a GGUF file for llama.cpp and Ollama."""

    def go() -> None:
        from tuneforge.commands.export import run_export

        checksums = not skip_checksums
        run_export(
            adapter, out, fmt=fmt, quant=quant, overwrite=overwrite, model=model, checksums=checksums, ollama=ollama
        )

    _guard(go, debug)


@app.command()
def repair(
    adapter: Annotated[Path, typer.Argument(help="Results folder of a finished training run.")] = Path("results"),
    debug: Debug = False,
) -> None:
    """Restore a damaged results folder's files from its checkpoints, where they hold the very same bytes."""

    def go() -> None:
        from tuneforge.commands.repair import run_repair

        run_repair(adapter)

    _guard(go, debug)


@app.command()
def push(
    repo: Annotated[str, typer.Option("--repo", help="Hugging Face repo id to push to: owner/name.")],
    adapter: Annotated[
        Optional[Path], typer.Option("--adapter", help="Results folder of a finished run (default: results).")
    ] = None,
    export: Annotated[
        Optional[Path], typer.Option("--export", help="An export folder (hf or gguf) instead of a results folder.")
    ] = None,
    public: Annotated[bool, typer.Option("--public", help="Make the repo public (new repos are private).")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List every file and its size and print the card; upload nothing.")
    ] = False,
    message: Annotated[Optional[str], typer.Option("--message", help="Commit message on the Hub.")] = None,
    debug: Debug = False,
) -> None:
    """Upload a results folder or an export to the Hugging Face Hub (private by default)."""

    def go() -> None:
        from tuneforge.commands.push import run_push

        run_push(repo, adapter, export, public=public, dry_run=dry_run, message=message)

    _guard(go, debug)


data_app = typer.Typer(help="Check training data before a run.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("check")
def data_check(
    method: MethodOpt = None,
    dataset: DatasetOpt = None,
    data_format: DataFormatOpt = None,
    data_map: DataMapOpt = None,
    dataset_split: DatasetSplitOpt = None,
    template: TemplateOpt = None,
    val_size: ValSizeOpt = None,
    drop_long: DropLongOpt = None,
    model: ModelOpt = None,
    max_seq_length: MaxSeqLengthOpt = None,
    config: Annotated[
        Optional[Path], typer.Option("--config", help="YAML file with config sections (see configs/).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
    debug: Debug = False,
) -> None:
    """Report format, counts, token lengths, the split and one rendered example; loads only the tokenizer."""
    cli_values = {"train.method": method, "data.dataset": dataset or None, "data.format": data_format, "data.map": data_map, "data.split": dataset_split,
                  "data.template": template, "data.val_size": val_size, "data.drop_long": drop_long,
                  "model.name": model, "train.max_seq_length": max_seq_length}  # fmt: skip

    def go() -> None:
        from tuneforge.commands.data_check import run_data_check

        run_data_check(cli_values, config_file=config, as_json=as_json)

    _guard(go, debug)


def main() -> None:
    app(prog_name="tuneforge")


if __name__ == "__main__":
    main()
