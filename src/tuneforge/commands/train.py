"""`tuneforge train`: resolve the config, check the inputs, LoRA-tune, save and show the result.

Read `run_train` top to bottom: it is the whole recipe (torchtune style). Every check that can
fail on bad input runs before the model loads, so mistakes cost seconds, not minutes.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from tuneforge.config_resolve import ResolvedConfig, resolve_config
from tuneforge.errors import UserError


def run_train(
    cli_values: dict[str, Any],
    config_file: Path | None = None,
    dry_run: bool = False,
    as_json: bool = False,
    flags: Any = None,
) -> dict[str, Any] | None:
    from tuneforge.runs.resume import ResumeFlags

    resolved = resolve_config(cli_values, config_file)
    if dry_run:
        return print_dry_run(resolved, as_json)
    plan = preflight(resolved, flags or ResumeFlags())
    log = plan["log"]
    try:
        return _train(resolved, plan, log)
    finally:
        log.close()


def print_dry_run(resolved: ResolvedConfig, as_json: bool) -> None:
    if as_json:
        print(json.dumps(resolved.as_dict(), indent=2))
        return
    console = Console(highlight=False)
    console.print(f"Hardware: {resolved.hardware.label}" if resolved.hardware else "Hardware: not checked")
    for line in describe_config(resolved):
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

    check_data(resolved.config)


def describe_config(resolved: ResolvedConfig) -> list[str]:
    """'train.batch_size = 3  (cli --batch-size)' for every key: where each value came from."""
    data = resolved.config.model_dump(mode="json")
    lines = []
    for section, values in data.items():
        for key, value in values.items():
            shown = "(hidden)" if key == "api_key" and value else value
            lines.append(f"{section}.{key} = {shown}  ({resolved.sources[f'{section}.{key}']})")
    return lines


def preflight(resolved: ResolvedConfig, flags: Any) -> dict[str, Any]:
    """Everything that can fail on bad input, in seconds, before any model loads."""
    from tuneforge.data import load_conversations
    from tuneforge.machine.devices import check_four_bit, pick_device, pick_precision, prepare_environment
    from tuneforge.recipe.distributed import output_for_rank, setup_rank
    from tuneforge.models.loading import resolve_model
    from tuneforge.runs.resume import run_settings

    cfg = resolved.config
    device = pick_device(cfg.train.device, resolved.hardware)
    precision = pick_precision(cfg.train.precision, device)
    check_four_bit(cfg.model.load_in_4bit, device)
    prepare_environment(device)
    setup_rank(device)
    source = resolve_model(cfg.model.name)
    data = load_conversations(cfg.data.dataset, data=cfg.data)
    if not data.conversations:
        raise UserError(f"The dataset '{cfg.data.dataset}' has no usable examples. Check the file or the preset name.")
    requested = run_settings(cfg)  # as asked, before a resumed run's batch shape is applied
    out, log, start = output_for_rank(cfg.train.output_dir, flags, requested)  # only rank 0 writes files or prints
    if start.shape is not None:  # an earlier out-of-memory step-down: don't run out of memory again
        cfg.train.batch_size, cfg.train.grad_accum = start.shape
        resolved.sources["train.batch_size"] = resolved.sources["train.grad_accum"] = "checkpoint (out-of-memory step-down)"
    return {"device": device, "precision": precision, "source": source, "data": data, "out": out, "log": log,
            "start": start, "requested": requested}  # fmt: skip


def _train(resolved: ResolvedConfig, plan: dict[str, Any], log) -> dict[str, Any]:
    from tuneforge.data.split import split_heldout, write_jsonl
    from tuneforge.recipe.distributed import gathered_state_dict, is_main_process, plain_copies, run_shape
    from tuneforge.runs.resume import write_marker

    cfg, out, started = resolved.config, plan["out"], time.monotonic()
    plain = plain_copies(cfg.train.strategy)  # False under FSDP/DeepSpeed: no extra eval or rank-0 generation
    log_setup(log, resolved, plan)
    train_set, eval_set = split_heldout(
        plan["data"].conversations, cfg.data.eval_fraction, cfg.data.eval_min, cfg.train.seed
    )
    if is_main_process():
        write_jsonl(out / "eval_set.jsonl", eval_set)
    model, tokenizer = load_base(plan, cfg, log)
    train_rows, eval_rows = encode_splits(tokenizer, train_set, eval_set, cfg, log)
    trainer, progress, before, train_time = train_model(model, tokenizer, (train_rows, eval_rows), cfg, plan, log)
    trainer.model.config.use_cache = True  # training turned the KV cache off; generation wants it back
    after = held_out(trainer, log, "tuned model") if plain else None
    metrics = collect_metrics(trainer, progress, plan, (before, after), (started, train_time), (len(train_rows), len(eval_rows)))
    if plain and is_main_process():
        metrics["quick_eval"] = quick_check(trainer.model, tokenizer, eval_set, cfg, log)
    metrics.update(run_shape(cfg.train.batch_size, cfg.train.grad_accum))  # tokens_per_s is already summed over ranks
    plan["adapter_state"] = gathered_state_dict(trainer, cfg.train.strategy)  # all ranks join; FSDP/ZeRO-3 only
    if not is_main_process():
        return metrics
    save_results(trainer, tokenizer, resolved, plan, progress, metrics, log)
    write_marker(out, "finished", plan["requested"])
    log.section(f"Done in {time.monotonic() - started:.0f} s. Results in {out}")
    log.info(f'Try it: tuneforge chat --adapter {out} "Please tell me about Bursitis."')
    return metrics


def log_setup(log, resolved: ResolvedConfig, plan: dict[str, Any]) -> None:
    from tuneforge.recipe.distributed import describe_processes

    log.section("tuneforge train")
    hw = resolved.hardware
    if hw is not None:
        log.info(f"hardware: {hw.label}; {hw.cpu_model}, {hw.cpu_cores} cores, {hw.ram_gb:.0f} GB RAM")
    log.info(f"device: {plan['device']}, precision: {plan['precision']}")
    if (line := describe_processes(resolved.config.train)) is not None:
        log.info(line)
    log.info(f"model: {plan['source'].description}")
    log.info(f"data: {plan['data'].source}")
    if plan["data"].licence:
        log.info(f"data licence: {plan['data'].licence}")
    for note in plan["start"].notes:
        log.info(note)
    for warning in plan["start"].warnings:
        log.info(f"warning: {warning}")
    log.section("settings (value and where it came from)")
    for line in describe_config(resolved):
        log.info(line, show=False)
    log.info(f"(all {len(resolved.sources)} settings with their sources are in {log.path.name})")


def load_base(plan: dict[str, Any], cfg, log) -> tuple[Any, Any]:
    from transformers import set_seed

    from tuneforge.machine.devices import torch_dtype
    from tuneforge.models.loading import load_model, load_tokenizer

    set_seed(cfg.train.seed)  # LoRA init and dropout depend on it
    tokenizer = load_tokenizer(plan["source"], cfg.model.trust_remote_code)
    weights = plan["precision"] if plan["device"] == "cuda" else "fp32"  # CPU/MPS: fp32 weights, autocast on top
    model = load_model(
        plan["source"], torch_dtype(weights), plan["device"], cfg.model.load_in_4bit, cfg.model.trust_remote_code
    )
    params = sum(p.numel() for p in model.parameters())
    log.info(f"loaded base model: {params / 1e6:.1f}M parameters")
    return model, tokenizer


def encode_splits(tokenizer, train_set, eval_set, cfg, log) -> tuple[list, list]:
    from tuneforge.data.encode import encode_all

    max_len = cfg.train.max_seq_length
    train_rows, stats = encode_all(tokenizer, train_set, max_len, cfg.data.template, cfg.data.drop_long)
    eval_rows, _ = encode_all(tokenizer, eval_set[: cfg.train.eval_examples], max_len, cfg.data.template)
    if not train_rows:
        raise UserError("No training example has answer tokens left after encoding. Raise --max-seq-length.")
    lengths = sorted(stats.lengths)
    pick = lambda q: lengths[min(len(lengths) - 1, int(q * len(lengths)))]  # noqa: E731
    log.section("data")
    log.info(f"{len(train_set)} training examples, {len(eval_set)} held out (eval_set.jsonl)")
    log.info(f"tokens per example: min {lengths[0]}, median {pick(0.5)}, p95 {pick(0.95)}, max {lengths[-1]}")
    log.info(f"{stats.length_summary(max_len)}; {stats.dropped} dropped with no answer left")
    return train_rows, eval_rows


def train_model(model, tokenizer, rows, cfg, plan, log) -> tuple[Any, Any, float | None, float]:
    """LoRA on, held-out loss of the base, then the Trainer's loop under recovery (resume, signals, OOM)."""
    from tuneforge.recipe.distributed import plain_copies, undo_eval_prepare
    from tuneforge.recipe.oom import BatchShape
    from tuneforge.recipe.progress import ProgressCallback
    from tuneforge.recipe.recovery import train_with_recovery
    from tuneforge.recipe.trainer_setup import add_lora, as_datasets

    model = add_lora(model, cfg, cfg.train.gradient_checkpointing)
    trainable, total = model.get_nb_trainable_parameters()
    log.info(f"LoRA: {trainable / 1e6:.2f}M trainable of {total / 1e6:.1f}M parameters ({100 * trainable / total:.2f}%)")
    progress = ProgressCallback(log)
    build = trainer_builder(model, tokenizer, as_datasets(*rows), cfg, plan, progress)
    first = build(BatchShape(cfg.train.batch_size, cfg.train.grad_accum))
    before = held_out(first, log, "base model") if plain_copies(cfg.train.strategy) else None
    undo_eval_prepare(first)  # or train() skips the DDP wrap and ranks drift apart
    handover = [first]
    del first  # after an out-of-memory step-down, nothing here may keep the old trainer alive
    started = time.monotonic()
    trainer, step_downs = train_with_recovery(
        build, handover, BatchShape(cfg.train.batch_size, cfg.train.grad_accum),
        plan["start"].checkpoint, plan["device"], cfg.train.max_seq_length, log,
    )  # fmt: skip
    plan["step_downs"] = step_downs
    return trainer, progress, before, time.monotonic() - started


def trainer_builder(model, tokenizer, datasets, cfg, plan, progress):
    """A trainer for a batch shape; out-of-memory recovery asks for a smaller one."""
    from tuneforge.recipe.distributed import apply_strategy
    from tuneforge.recipe.trainer_setup import build_trainer, training_arguments

    def build(shape):
        cfg.train.batch_size, cfg.train.grad_accum = shape.micro_batch, shape.grad_accum
        args = training_arguments(cfg, plan["device"], plan["precision"], plan["out"] / "checkpoints")
        args = apply_strategy(args, cfg.train.strategy)
        return build_trainer(model, tokenizer, args, *datasets, [progress],
                             keep=cfg.train.save_total_limit, run_config=plan["requested"])  # fmt: skip

    return build


def held_out(trainer, log, label: str) -> float | None:
    """Held-out loss, or None with a log line when measuring it runs out of memory: a figure is not worth the run."""
    from tuneforge.recipe.oom import unless_out_of_memory
    from tuneforge.recipe.trainer_setup import held_out_loss

    started = time.monotonic()
    skipped = f"held-out loss, {label}: skipped, out of memory (lower --batch-size to measure it)"
    loss = unless_out_of_memory(lambda: held_out_loss(trainer), log, skipped, trainer.args.device.type)
    if loss is not None:
        log.info(f"held-out loss, {label}: {loss:.4f} ({time.monotonic() - started:.0f} s)")
    return loss


def collect_metrics(trainer, progress, plan, losses, times, counts) -> dict[str, Any]:
    state = trainer.state
    (before, after), (started, train_time), (n_train, n_eval) = losses, times, counts
    return {
        "steps": state.global_step,
        "device": plan["device"],
        "precision": plan["precision"],
        "train_examples": n_train,
        "eval_examples": n_eval,
        "loss_history": progress.history,
        "final_train_loss": progress.history[-1]["loss"] if progress.history else None,
        "eval_loss_before": before,
        "eval_loss_after": after,
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_per_s": (state.num_input_tokens_seen - progress.tokens_at_start) / max(train_time, 1e-9),
        "train_time_s": train_time,
        "wall_time_s": time.monotonic() - started,
        "peak_memory_mb": peak_memory_mb(plan["device"]),
        "resumed_from": plan["start"].checkpoint.name if plan["start"].checkpoint else None,
        "oom_step_downs": plan.get("step_downs", []),
    }


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def save_results(trainer, tokenizer, resolved, plan, progress, metrics, log) -> None:
    from tuneforge.data.templates import chat_template
    from tuneforge.evaluation.report import markdown_table
    from tuneforge.runs import results

    out = plan["out"]
    trainer.model.save_pretrained(out, state_dict=plan.get("adapter_state"))  # adapter_model.safetensors + adapter_config.json
    tokenizer.chat_template = chat_template(tokenizer, resolved.config.data.template)  # what training used
    tokenizer.save_pretrained(out)
    results.write_config(out, resolved)
    results.write_json(out / "training_args.json", json.loads(trainer.args.to_json_string()))
    results.write_json(out / "metrics.json", metrics)
    evals = {}
    if metrics["eval_loss_after"] is not None:
        evals = {"held-out, base": (0, metrics["eval_loss_before"]), "held-out, tuned": (metrics["steps"], metrics["eval_loss_after"])}
    try:  # a picture must not cost the run: under a tight memory limit matplotlib's libraries failed to load
        results.plot_loss(out / "loss.png", progress.history, evals)
    except (ImportError, OSError, MemoryError, RuntimeError) as exc:
        log.info(f"loss.png not drawn ({type(exc).__name__}: {str(exc)[:160]}); metrics.json holds the same figures")
    licences = [plan["source"].licence, plan["data"].licence]
    quick = metrics.get("quick_eval")
    results.write_model_card(out, resolved, plan["data"].source, licences, metrics, markdown_table(quick) if quick else "")
    log.section("summary")
    log.info(f"steps {metrics['steps']}, final train loss {metrics['final_train_loss']:.4f}, "
             f"{metrics['tokens_per_s']:.0f} tokens/s, peak memory {metrics['peak_memory_mb']:.0f} MB")  # fmt: skip
    if metrics["eval_loss_after"] is not None:
        log.info(f"held-out loss: base {metrics['eval_loss_before']:.4f} -> tuned {metrics['eval_loss_after']:.4f}")
    plot = ", loss.png" if (out / "loss.png").is_file() else ""
    log.info(f"saved adapter, tokenizer, tuneforge.yaml, metrics.json{plot} and README.md in {out}")


def quick_check(model, tokenizer, eval_set, cfg, log) -> dict[str, Any] | None:
    """Base vs tuned on a few held-out questions: figures, and one answer pair side by side."""
    from tuneforge.evaluation.compare import format_comparison_table, quick_eval
    from tuneforge.evaluation.sample_table import comparison_table
    from tuneforge.recipe.oom import unless_out_of_memory

    questions = [c for c in eval_set if any(m["role"] == "user" for m in c)]  # plain text has no question
    if cfg.train.eval_examples == 0 or not questions:
        return None
    started = time.monotonic()
    skipped = "before/after check: skipped, out of memory (run `tuneforge eval` later with a smaller --batch-size)"
    result = unless_out_of_memory(lambda: quick_eval(model, tokenizer, questions, limit=cfg.train.eval_examples),
                                  log, skipped, model.device.type)  # fmt: skip
    if result is None:
        return None
    log.section(f"before/after on {result['examples']} held-out questions ({time.monotonic() - started:.0f} s)")
    for key, tuned in result["tuned"].items():
        log.info(f"{key}: base {result['base'][key]:.4f}, tuned {tuned:.4f}, difference {result['diff'][key]:+.4f}", show=False)
    log.console.print(format_comparison_table(result))
    sample = result["samples"][0]
    for key in ("question", "base", "tuned", "reference"):
        log.info(f"{key}: {sample[key]}", show=False)
    log.console.print(comparison_table(sample))
    return {key: result[key] for key in ("examples", "settings", "base", "tuned", "diff", "samples")}
