"""The training recipe: setup → fit → save. Read `run_recipe` top to bottom; it is the whole path.

- `prepare` runs every check that can fail on bad input before the model loads (device, data,
  results folder), then loads the model and tokenizer, wraps LoRA and encodes the rows.
  Everything it learns goes into one frozen `Setup`.
- `fit` measures the base's held-out loss and hands the loop to the method's TRL trainer
  (recipe/recovery.py adds resume, Ctrl-C and out-of-memory step-down around `trainer.train()`).
- `save` writes the adapter, the tokenizer, the config, the metrics and the model card into
  the results folder and marks the run finished.

The resolved config is frozen: what changes during a run (the batch shape after an
out-of-memory step-down) is state here, never an edit of the config.
"""

from __future__ import annotations

import json
import resource
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tuneforge.config import wants_four_bit
from tuneforge.config_resolve import ResolvedConfig
from tuneforge.errors import UserError
from tuneforge.recipe.methods import AUTO_PRETRAIN, Method, auto_method, method_for
from tuneforge.recipe.oom import BatchShape
from tuneforge.runs.resume import ResumeFlags, StartPlan

STEP_DOWN_SOURCE = "checkpoint (out-of-memory step-down)"


@dataclass(frozen=True)
class Setup:
    """What the run knows before its first step."""

    resolved: ResolvedConfig
    method: Method
    device: str
    precision: str
    source: Any  # models.loading.ModelSource
    data: Any  # data.LoadedData
    out: Path
    log: Any  # runs.runlog.RunLog (rank 0) or recipe.distributed.QuietLog
    start: StartPlan
    requested: dict[str, Any]  # the settings as asked, recorded in the marker and manifests
    shape: BatchShape  # the config's batch, or the one an earlier step-down left in the checkpoint
    started: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Fitted:
    """What training produced: the trainer, its curve, held-out losses and the batch it ended with."""

    trainer: Any
    progress: Any
    tokenizer: Any
    eval_set: list[Any]
    counts: tuple[int, int]  # encoded training and held-out rows
    before: dict[str, float] | None  # held-out figures of the starting model ("loss" always, more per method)
    after: dict[str, float] | None
    train_time: float
    shape: BatchShape
    step_downs: list[dict[str, Any]]


def run_recipe(resolved: ResolvedConfig, flags: ResumeFlags | None = None) -> dict[str, Any]:
    from tuneforge.recipe.distributed import results_folder_lock
    from tuneforge.runs.checkpoint_store import writing_run

    with results_folder_lock(resolved.config.train.output_dir):  # one writer per folder, before anything loads
        setup = prepare(resolved, flags or ResumeFlags(), method_for(resolved.config.train.method))
        try:
            # a full disk, a read-only folder or one removed mid-run: one paragraph, also the log's last line
            with writing_run("the results", setup.out, log=setup.log):
                fitted = fit(setup)
                return save(setup, fitted)
        finally:
            setup.log.close()


def prepare(resolved: ResolvedConfig, flags: ResumeFlags, method: Method) -> Setup:
    """Every check that can fail on bad input, in seconds, before any model loads."""
    from tuneforge.data import load_conversations
    from tuneforge.machine.devices import check_four_bit, pick_device, pick_precision, prepare_environment
    from tuneforge.models.loading import check_cache_writable, resolve_model
    from tuneforge.recipe.distributed import output_for_rank, setup_rank
    from tuneforge.recipe.start_adapter import check_start_adapter
    from tuneforge.recipe.tracking import check_tracker
    from tuneforge.recipe.trainer_setup import check_finetune
    from tuneforge.runs.resume import run_settings

    cfg = resolved.config
    device = pick_device(cfg.train.device, resolved.hardware)
    precision = pick_precision(cfg.train.precision, device)
    check_finetune(cfg, resolved.hardware, precision)  # --finetune full: not 4-bit, not too big for the memory
    check_four_bit(wants_four_bit(cfg), device)
    check_tracker(cfg.train.report_to, Path(cfg.train.output_dir))  # before TRL loads: it imports Trackio
    prepare_environment(device)
    setup_rank(device)
    source = resolve_model(cfg.model.name)
    check_cache_writable(source)
    check_start_adapter(cfg.model.adapter, cfg.model.name)
    data = method.load(cfg) if method.load else load_conversations(cfg.data.dataset, data=cfg.data)
    if not data.conversations:
        raise UserError(f"The dataset {cfg.data.dataset!r} has no usable examples. Check the file or the preset name.")
    chosen, _ = auto_method(method.name, resolved.sources["train.method"], data.format)
    method = method if chosen == method.name else method_for(chosen)
    requested = run_settings(cfg)
    out, log, start = output_for_rank(cfg.train.output_dir, flags, requested)  # only rank 0 writes files or prints
    shape = BatchShape(*start.shape) if start.shape else BatchShape(cfg.train.batch_size, cfg.train.grad_accum)
    return Setup(resolved, method, device, precision, source, data, out, log, start, requested, shape)


def fit(setup: Setup) -> Fitted:
    """Split, load, LoRA, encode; held-out loss of the base; then the trainer's loop under recovery."""
    from tuneforge.data.split import heldout_note, split_heldout
    from tuneforge.recipe.distributed import is_main_process, plain_copies, undo_eval_prepare
    from tuneforge.recipe.progress import ProgressCallback
    from tuneforge.recipe.recovery import train_with_recovery
    from tuneforge.recipe.start_adapter import merge_start_adapter
    from tuneforge.recipe.trainer_setup import as_datasets, describe_trainable, trainable
    from tuneforge.runs.checkpoint_store import writing_run

    cfg, log = setup.resolved.config, setup.log
    log_setup(setup)
    train_set, eval_set = split_heldout(
        setup.data.conversations, cfg.data.eval_fraction, cfg.data.eval_min, cfg.train.seed
    )
    if is_main_process():
        with writing_run("eval_set.jsonl", setup.out):
            write_held_out(setup.out, eval_set)
    if (note := heldout_note(len(eval_set))) is not None:
        log.info(f"warning: {note}")
    model, tokenizer = load_base(setup)
    rows = setup.method.encode(tokenizer, train_set, eval_set, cfg, log)
    model = trainable(merge_start_adapter(model, cfg.model.adapter), cfg)  # LoRA/DoRA, or the whole model
    log.info(describe_trainable(model, cfg.train.finetune))
    progress, datasets = ProgressCallback(log), as_datasets(*rows)
    where = (setup.device, setup.precision, setup.out / "checkpoints")

    def build(shape: BatchShape) -> Any:  # out-of-memory recovery asks for a smaller shape
        return setup.method.build_trainer(model, tokenizer, datasets, cfg, shape, where, [progress], setup.requested)

    first = build(setup.shape)
    plain = plain_copies(cfg.train.strategy)  # False under FSDP/DeepSpeed: no extra eval or rank-0 generation
    measure = setup.method.measure or held_out
    before = measure(first, rows[1], log, "starting model" if cfg.model.adapter else "base model") if plain else None
    undo_eval_prepare(first)  # or train() skips the DDP wrap and ranks drift apart
    handover = [first]
    del first  # after an out-of-memory step-down, nothing here may keep the old trainer alive
    started = time.monotonic()
    trainer, shape, step_downs = train_with_recovery(
        build, handover, setup.shape, setup.start.checkpoint, setup.device, cfg.train.max_seq_length, log
    )
    train_time = time.monotonic() - started
    trainer.model.config.use_cache = True  # training turned the KV cache off; generation wants it back
    after = already_measured(progress, trainer, log) if plain and setup.method.measure is None else None
    after = after or (measure(trainer, rows[1], log, "tuned model") if plain else None)
    counts = (len(rows[0]), len(rows[1]))
    return Fitted(trainer, progress, tokenizer, eval_set, counts, before, after, train_time, shape, step_downs)


def save(setup: Setup, fitted: Fitted) -> dict[str, Any]:
    """The method's figures, then rank 0 writes the results folder and marks the run finished."""
    from tuneforge.disk_faults import check_still_there
    from tuneforge.recipe.distributed import gathered_state_dict, is_main_process, plain_copies, run_shape
    from tuneforge.runs.checkpoint_store import writing_run
    from tuneforge.runs.manifest import write_results_manifest
    from tuneforge.runs.resume import write_marker

    cfg, log = setup.resolved.config, setup.log
    metrics = collect_metrics(setup, fitted)
    if plain_copies(cfg.train.strategy) and is_main_process():
        metrics["quick_eval"] = setup.method.report(report_model(setup, fitted), fitted.tokenizer, fitted.eval_set,
                                                    cfg, log)  # fmt: skip
    metrics.update(run_shape(fitted.shape.micro_batch, fitted.shape.grad_accum))  # tokens_per_s is summed over ranks
    adapter_state = gathered_state_dict(fitted.trainer, cfg.train.strategy)  # all ranks join; FSDP/ZeRO-3 only
    if not is_main_process():
        return metrics
    check_still_there(setup.out, getattr(fitted.trainer, "home", None), "the final results")
    with writing_run("the final results", setup.out):
        write_results(setup, fitted, metrics, adapter_state)
        write_results_manifest(setup.out, metrics["steps"])  # after every file it lists, before "finished"
        write_marker(setup.out, "finished", setup.requested)
    log.section(f"Done in {time.monotonic() - setup.started:.0f} s. Results in {setup.out}")
    log.info(
        f"Try it: tuneforge chat --adapter {shlex.quote(str(setup.out))} {shlex.quote(try_question(setup, fitted))}"
    )
    return metrics


def report_model(setup: Setup, fitted: Fitted) -> Any:
    """The trained model as the report compares it: a full fine-tune gets its base beside it (models/with_base.py)."""
    model = fitted.trainer.model
    if setup.resolved.config.train.finetune != "full":
        return model  # peft: the base is the model with its adapter disabled
    from tuneforge.machine.devices import torch_dtype
    from tuneforge.models.loading import load_model
    from tuneforge.models.with_base import WithBase
    from tuneforge.recipe.start_adapter import merge_start_adapter

    def starting_model() -> Any:  # what training started from: the base, with --adapter merged in as in fit
        base = load_model(setup.source, torch_dtype("fp32"), setup.device)
        return merge_start_adapter(base, setup.resolved.config.model.adapter)

    return WithBase(model, starting_model)


def log_setup(setup: Setup) -> None:
    from tuneforge.recipe.distributed import describe_processes
    from tuneforge.recipe.tracking import where_it_logs

    log, resolved = setup.log, setup.resolved
    log.section("tuneforge train")
    hw = resolved.hardware
    if hw is not None:
        log.info(f"hardware: {hw.label}; {hw.cpu_model}, {hw.cpu_cores} cores, {hw.ram_gb:.0f} GB RAM")
    log.info(f"device: {setup.device}, precision: {setup.precision}")
    if (line := describe_processes(resolved.config.train, setup.shape)) is not None:
        log.info(line)
    log.info(f"model: {setup.source.description}")
    log.info(f"data: {setup.data.source}")
    for part in setup.data.sources:
        log.info(f"  source {part['dataset']} (weight {part['weight']:g}): {part['rows']} rows, "
                 f"{part['examples_read']} examples, {part['examples_used']} used")  # fmt: skip
    if setup.method.name != resolved.config.train.method:
        log.info(f"method: {setup.method.name}, chosen because the data is raw text (continued pre-training: "
                 "every token trained); --method sft trains it as plain examples instead")  # fmt: skip
    if (tracked := where_it_logs(resolved.config.train.report_to, setup.out)) is not None:
        log.info(tracked)
    if setup.data.licence:
        log.info(f"data licence: {setup.data.licence}")
    for note in setup.start.notes:
        log.info(note)
    for warning in setup.start.warnings:
        log.info(f"warning: {warning}")
    log.section("settings (value and where it came from)")
    for line in resolved.describe(run_overrides(setup, setup.shape)):
        log.info(line, show=False)
    log.info(f"(all {len(resolved.sources)} settings with their sources are in {log.path.name})")


def run_overrides(setup: Setup, shape: BatchShape) -> dict[str, tuple[Any, str]]:
    """Values the run used instead of the config's: the batch after a step-down, the method chosen for raw text."""
    overrides = shape_overrides(setup.resolved, shape, STEP_DOWN_SOURCE)
    if setup.method.name != setup.resolved.config.train.method:
        overrides["train.method"] = (setup.method.name, AUTO_PRETRAIN)
    return overrides


def shape_overrides(resolved: ResolvedConfig, shape: BatchShape, source: str) -> dict[str, tuple[Any, str]]:
    """The batch actually run, where it differs from the config: shown and saved with its own source."""
    train = resolved.config.train
    if (shape.micro_batch, shape.grad_accum) == (train.batch_size, train.grad_accum):
        return {}
    return {"train.batch_size": (shape.micro_batch, source), "train.grad_accum": (shape.grad_accum, source)}


def load_base(setup: Setup) -> tuple[Any, Any]:
    from transformers import set_seed

    from tuneforge.machine.devices import torch_dtype
    from tuneforge.models.loading import load_model, load_tokenizer

    cfg = setup.resolved.config
    set_seed(cfg.train.seed)  # LoRA init and dropout depend on it
    tokenizer = load_tokenizer(setup.source, cfg.model.trust_remote_code)
    # CPU/MPS, and a full fine-tune anywhere: fp32 weights, autocast on top (half-precision weights
    # would round a full fine-tune's small updates away)
    full = cfg.train.finetune == "full"
    weights = setup.precision if setup.device == "cuda" and not full else "fp32"
    model = load_model(
        setup.source, torch_dtype(weights), setup.device, wants_four_bit(cfg), cfg.model.trust_remote_code
    )
    setup.log.info(f"loaded base model: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters")
    return model, tokenizer


def write_held_out(out: Path, eval_set: list[Any]) -> None:
    """eval_set.jsonl as conversations (chat and eval read it); preference runs add their pairs."""
    from tuneforge.data.preferences import as_conversation
    from tuneforge.data.split import write_jsonl
    from tuneforge.recipe.methods.preference import write_eval_pairs

    if eval_set and "prompt" in eval_set[0] and isinstance(eval_set[0], dict):
        write_eval_pairs(out, eval_set)
        eval_set = [as_conversation(pair) for pair in eval_set]
    write_jsonl(out / "eval_set.jsonl", eval_set)


def already_measured(progress: Any, trainer: Any, log: Any) -> dict[str, float] | None:
    """The loop's own held-out loss at the last step (eval_steps divides max_steps): the same model, the same
    rows, so measuring again would only repeat it (every sweep trial did, at ~11 s on the default model)."""
    last = progress.last_heldout
    if last is None or last[0] != trainer.state.global_step:
        return None
    log.info(f"held-out loss, tuned model: {last[1]:.4f} (measured at step {last[0]})")
    return {"loss": last[1]}


def held_out(trainer: Any, rows: Any, log: Any, label: str) -> dict[str, float] | None:
    """Held-out loss, or None with a log line when measuring it runs out of memory: a figure is not worth the run."""
    from tuneforge.recipe.oom import unless_out_of_memory
    from tuneforge.recipe.trainer_setup import held_out_loss

    started = time.monotonic()
    skipped = f"held-out loss, {label}: skipped, out of memory (lower --batch-size to measure it)"
    loss = unless_out_of_memory(lambda: held_out_loss(trainer), log, skipped, trainer.args.device.type)
    if loss is not None:
        log.info(f"held-out loss, {label}: {loss:.4f} ({time.monotonic() - started:.0f} s)")
    return None if loss is None else {"loss": float(loss)}


def collect_metrics(setup: Setup, fitted: Fitted) -> dict[str, Any]:
    state, progress = fitted.trainer.state, fitted.progress
    return {
        "method": setup.method.name,
        "data_sources": setup.data.sources or None,  # a mixture: what each source gave
        "steps": state.global_step,
        "device": setup.device,
        "precision": setup.precision,
        "train_examples": fitted.counts[0],
        "eval_examples": fitted.counts[1],
        "loss_history": progress.history,
        "final_train_loss": progress.history[-1]["loss"] if progress.history else None,
        "eval_loss_before": (fitted.before or {}).get("loss"),
        "eval_loss_after": (fitted.after or {}).get("loss"),
        **held_out_figures(fitted),
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_per_s": (state.num_input_tokens_seen - progress.tokens_at_start) / max(fitted.train_time, 1e-9),
        "train_time_s": fitted.train_time,
        "wall_time_s": time.monotonic() - setup.started,
        "peak_memory_mb": peak_memory_mb(setup.device),
        "resumed_from": setup.start.checkpoint.name if setup.start.checkpoint else None,
        "oom_step_downs": fitted.step_downs,
    }


def held_out_figures(fitted: Fitted) -> dict[str, Any]:
    """A method's held-out figures beyond the loss (preference accuracy, margin), before and after."""
    extra = {k: v for k, v in (fitted.before or {}).items() if k != "loss"}
    if not extra:
        return {}
    after = {k: v for k, v in (fitted.after or {}).items() if k != "loss"}
    return {"preference": {"before": extra, "after": after or None}}


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return float(torch.cuda.max_memory_allocated() / 2**20)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def write_results(setup: Setup, fitted: Fitted, metrics: dict[str, Any], adapter_state: Any) -> None:
    from tuneforge.data.templates import chat_template
    from tuneforge.disk_faults import kind_of
    from tuneforge.evaluation.report import markdown_table
    from tuneforge.runs import results

    out, log, resolved = setup.out, setup.log, setup.resolved
    trainer, tokenizer = fitted.trainer, fitted.tokenizer
    # adapter_model.safetensors + adapter_config.json; a full fine-tune: model.safetensors + config.json
    trainer.model.save_pretrained(out, state_dict=adapter_state)
    if resolved.config.train.finetune != "full":  # a full fine-tune holds the start adapter in its weights already
        if resolved.config.model.adapter is not None:
            from tuneforge.recipe.start_adapter import fold_into_saved

            fold_into_saved(out, resolved.config.model.adapter)  # one adapter on the plain base, as chat expects
        results.write_portable_base(out, setup.source)  # the base by its Hub id, not this machine's cache path
    tokenizer.chat_template = chat_template(tokenizer, resolved.config.data.template)  # what training used
    if hasattr(tokenizer, "backend_tokenizer"):
        # the quick eval's left padding is state of that batch, not of the tokenizer; without it the
        # saved tokenizer.json equals the last checkpoint's, byte for byte, so `repair` can restore it
        tokenizer.backend_tokenizer.no_padding()
    tokenizer.save_pretrained(out)
    results.write_config(out, resolved, run_overrides(setup, fitted.shape))
    results.write_json(out / "training_args.json", json.loads(trainer.args.to_json_string()))
    results.write_json(out / "metrics.json", metrics)
    evals = {}
    if metrics["eval_loss_after"] is not None:
        evals = {
            "held-out, base": (0, metrics["eval_loss_before"]),
            "held-out, tuned": (metrics["steps"], metrics["eval_loss_after"]),
        }
    try:  # a picture must not cost the run: under a tight memory limit matplotlib's libraries failed to load
        results.plot_loss(out / "loss.png", fitted.progress.history, evals)
    except (ImportError, OSError, MemoryError, RuntimeError) as exc:
        if isinstance(exc, OSError) and kind_of(exc, out):
            raise  # a full or read-only disk is not a missing library: the card after it would fail too
        log.info(f"loss.png not drawn ({type(exc).__name__}: {str(exc)[:160]}); metrics.json holds the same figures")
    quick = metrics.get("quick_eval")
    results.write_model_card(out, resolved, setup.source, metrics, markdown_table(quick) if quick else "")
    log_summary(log, metrics, out)


def log_summary(log: Any, metrics: dict[str, Any], out: Path) -> None:
    log.section("summary")
    log.info(f"steps {metrics['steps']}, final train loss {metrics['final_train_loss']:.4f}, "
             f"{metrics['tokens_per_s']:.0f} tokens/s, peak memory {metrics['peak_memory_mb']:.0f} MB")  # fmt: skip
    if metrics["eval_loss_after"] is not None:
        log.info(f"held-out loss: base {metrics['eval_loss_before']:.4f} -> tuned {metrics['eval_loss_after']:.4f}")
    figures = metrics.get("preference")
    if figures and figures["after"]:
        before, after = figures["before"], figures["after"]
        log.info(f"held-out preference accuracy: start {100 * before['accuracy']:.1f}% -> tuned "
                 f"{100 * after['accuracy']:.1f}%; margin {before['margin']:+.3f} -> {after['margin']:+.3f} nats")  # fmt: skip
    plot = ", loss.png" if (out / "loss.png").is_file() else ""
    what = "model" if (out / "model.safetensors").is_file() else "adapter"
    log.info(f"saved {what}, tokenizer, tuneforge.yaml, metrics.json{plot} and README.md in {out}")


def try_question(setup: Setup, fitted: Fitted) -> str:
    """A question to try the model on, from the user's own held-out data (never trained on)."""
    from tuneforge.data.preferences import as_conversation

    for conversation in [*fitted.eval_set, *setup.data.conversations]:
        if isinstance(conversation, dict):  # a preference pair: its prompt is the question
            conversation = as_conversation(conversation)
        for message in conversation:
            if message.get("role") == "user" and str(message.get("content", "")).strip():
                text = " ".join(str(message["content"]).split())
                return text if len(text) <= 200 else text[:197] + "..."
    return "Hello! What can you do?"  # plain-text data has no question to borrow
