"""Wrap the base model in LoRA and hand the loop to TRL's SFTTrainer, configured from our config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.config import TuneforgeConfig, wants_four_bit
from tuneforge.recipe.oom import BatchShape


def check_finetune(cfg: TuneforgeConfig, hardware: Any, precision: str) -> None:
    """--finetune full before any model loads: not on a 4-bit base, and only when it fits (machine/finetune_memory.py)."""
    from tuneforge.errors import UserError
    from tuneforge.machine.finetune_memory import check_full_fits
    from tuneforge.machine.hardware import detect_hardware
    from tuneforge.presets import estimate_model_params

    t = cfg.train
    if t.finetune != "full":
        return
    if cfg.model.load_in_4bit:
        raise UserError("--finetune full trains every weight in fp32 and can't train 4-bit weights, but "
                        "--load-in-4bit is on. Turn it off (--no-load-in-4bit), or use --finetune qlora for LoRA on a "
                        "4-bit base.", field="train.finetune")  # fmt: skip
    params = estimate_model_params(cfg.model.name)
    tokens = t.batch_size * t.max_seq_length
    check_full_fits(hardware or detect_hardware(), params, precision, tokens, t.gradient_checkpointing, cfg.model.name)


def trainable(model: Any, cfg: TuneforgeConfig) -> Any:
    """What trains: the whole model (--finetune full), or LoRA/DoRA adapters on it (peft)."""
    if cfg.train.finetune != "full":
        return add_lora(model, cfg, cfg.train.gradient_checkpointing)
    model.config.use_cache = False  # as add_lora: no KV cache in training (packed rows need the per-example mask)
    return model.requires_grad_(True)  # peft froze the base when --adapter was merged in (recipe/start_adapter.py)


def describe_trainable(model: Any, finetune: str) -> str:
    """The log's line: how much of the model trains."""
    total = sum(p.numel() for p in model.parameters())
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    what = "full fine-tuning" if finetune == "full" else "DoRA" if finetune == "dora" else "LoRA"
    return f"{what}: {count / 1e6:.2f}M trainable of {total / 1e6:.1f}M parameters ({100 * count / total:.2f}%)"


def add_lora(model: Any, cfg: TuneforgeConfig, gradient_checkpointing: bool) -> Any:
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if wants_four_bit(cfg):
        kbit = prepare_model_for_kbit_training
        model = kbit(model, use_gradient_checkpointing=gradient_checkpointing)  # type: ignore[no-untyped-call]
    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type="CAUSAL_LM",
        use_dora=cfg.train.finetune == "dora",
    )
    # No KV cache in training: transformers only builds the per-example mask of a packed
    # (padding-free) row when there is no cache; with one, attention would cross examples.
    model.config.use_cache = False
    return get_peft_model(model, lora)


def training_arguments(cfg: TuneforgeConfig, device: str, precision: str, checkpoint_dir: Path,
                       shape: BatchShape | None = None) -> Any:  # fmt: skip
    """SFTConfig from the frozen config; `shape` is the batch actually run (smaller after an out-of-memory step-down)."""
    from trl import SFTConfig

    t = cfg.train
    return SFTConfig(
        **common_arguments(cfg, device, precision, checkpoint_dir, shape),
        max_length=None,  # rows are cut to max_seq_length in encode_all, which counts what it cuts
        padding_free=t.padding_free,  # TRL flattens the batch and passes position_ids; sdpa masks per example
        # Padded positions in a packed row sit at position 0: one-token pieces that train nothing.
        pad_to_multiple_of=pad_multiple(cfg),
        train_sampling_strategy="group_by_length" if t.group_by_length else "random",
    )


def common_arguments(cfg: TuneforgeConfig, device: str, precision: str, checkpoint_dir: Path,
                     shape: BatchShape | None = None) -> dict[str, Any]:  # fmt: skip
    """The TrainingArguments every method shares: batch, schedule, checkpoints, precision, logging."""
    from tuneforge.recipe.tracking import report_targets

    t = cfg.train
    shape = shape or BatchShape(t.batch_size, t.grad_accum)
    return dict(
        output_dir=str(checkpoint_dir),
        per_device_train_batch_size=shape.micro_batch,
        per_device_eval_batch_size=shape.micro_batch,
        gradient_accumulation_steps=shape.grad_accum,
        max_steps=t.max_steps,
        learning_rate=t.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=min(t.warmup_steps, t.max_steps // 5),
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=t.save_steps,
        save_total_limit=None,  # checkpointing.py rotates, and only after the new checkpoint is committed
        seed=t.seed,
        data_seed=t.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        gradient_checkpointing=t.gradient_checkpointing,
        include_num_input_tokens_seen="non_padding",
        report_to=report_targets(t.report_to, checkpoint_dir.parent),  # none by default; offline folders
        disable_tqdm=True,  # our rich bar replaces tqdm
        dataloader_num_workers=0,
        # held-out loss before and after; mid-run only when asked (a sweep's pruner reads it)
        eval_strategy="steps" if t.eval_steps else "no",
        eval_steps=t.eval_steps or None,
    )


def pad_multiple(cfg: Any) -> int | None:
    """The multiple each batch's length is padded up to (`train.pad_to_multiple_of`; None for 1: off).

    SFT, DPO and KTO all read it: a batch as long as its longest example is a new shape at almost
    every step, and the CPU's kernels are built and kept per shape, so memory grew with the steps.
    """
    multiple = cfg.train.pad_to_multiple_of
    return multiple if multiple > 1 else None


def build_trainer(model: Any, tokenizer: Any, args: Any, train_data: Any, eval_data: Any, callbacks: list[Any],
                  keep: int = 2, run_config: dict[str, Any] | None = None) -> Any:  # fmt: skip
    """Rows are already tokenized with labels, so SFTTrainer only batches them (dynamic padding).

    Data comes as row lists or as `as_datasets` output (built once, reused when an out-of-memory
    step-down rebuilds the trainer). `keep` checkpoints are kept; `run_config` goes into each
    checkpoint's manifest, so a resume can tell whether it is the same run.
    """
    from transformers.trainer_callback import PrinterCallback

    from tuneforge.recipe.checkpointing import CheckpointingSFTTrainer

    train_dataset, eval_dataset = as_datasets(train_data, eval_data)
    trainer = CheckpointingSFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
        keep=keep,
        run_config=run_config or {},
    )
    trainer.remove_callback(PrinterCallback)  # it prints raw dicts; our progress callback logs instead
    return lighter_steps(trainer)


def lighter_steps(trainer: Any, mean_logits: bool = False) -> Any:
    """The two step savings every TRL trainer of ours gets, once the trainer is built.

    - The answer-only vocabulary head (answer_head.py), put in front of the fused head TRL adds
      while it builds the trainer; `mean_logits` for the trainers that log it (DPO, KTO).
    - bf16 copies of the frozen weights where a CPU trains under bf16 autocast (frozen_bf16.py).
    """
    from tuneforge.recipe.answer_head import score_answers_only
    from tuneforge.recipe.frozen_bf16 import keep_bf16_copies

    score_answers_only(trainer.model, mean_logits)
    if trainer.args.bf16 and trainer.args.device.type == "cpu":
        keep_bf16_copies(trainer.model)
    return trainer


def as_datasets(train_data: Any, eval_data: Any) -> tuple[Any, Any]:
    """Row lists become datasets; datasets pass through, so the data is built once per run."""
    from datasets import Dataset

    train = Dataset.from_list(train_data) if isinstance(train_data, list) else train_data
    held_out = Dataset.from_list(eval_data) if isinstance(eval_data, list) and eval_data else eval_data or None
    return train, held_out


def held_out_loss(trainer: Any) -> float | None:
    if trainer.eval_dataset is None:
        return None
    return float(trainer.evaluate()["eval_loss"])
