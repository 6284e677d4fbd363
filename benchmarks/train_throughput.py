"""Training throughput, side by side: the guide's approach, plain TRL, tuneforge, and each option.

Every pipeline trains the same model on the same data slice with the same micro-batch, max
length and LoRA shape, in its own subprocess (so peak RSS is its own). Each gets warm-up
steps, then timed steps. Figures are ratios against TRL and the guide, never bare times.

    python benchmarks/train_throughput.py                 # the real embedded default (minutes)
    python benchmarks/train_throughput.py --tiny          # a tiny model, as CI runs it (seconds)
    python benchmarks/train_throughput.py --only trl,tuneforge --steps 10
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.conftest's tiny model builders

# name -> (pipeline, tuneforge config overrides); options are measured one at a time
PIPELINES: dict[str, tuple[str, dict]] = {
    "guide": ("guide", {}),
    "trl": ("trl", {}),
    "tuneforge": ("tuneforge", {}),
    "tf-padded": ("tuneforge", {"train.padding_free": False}),
    "tf-grouped": ("tuneforge", {"train.padding_free": False, "train.group_by_length": True}),
    "tf-bf16": ("tuneforge", {"train.precision": "bf16"}),
    "tf-dropout0": ("tuneforge", {"lora.dropout": 0.0}),
    "tf-bf16-dropout0": ("tuneforge", {"train.precision": "bf16", "lora.dropout": 0.0}),
    "tf-attn-only": ("tuneforge", {"lora.target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}),
    "tf-fp32-dropout": ("tuneforge", {"train.precision": "fp32", "lora.dropout": 0.05}),  # the guide-like settings
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny local model (CI); figures are not meaningful")
    parser.add_argument("--only", default=",".join(PIPELINES), help="comma-separated pipelines to run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per pipeline")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/train_throughput.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one pipeline in this process
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    model_dir = prepare_model(args.tiny)
    results = {}
    for name in args.only.split(","):
        results[name] = run_child(name, model_dir, args)
        print(f"{name}: {results[name]['real_tokens_per_s']:.1f} real tokens/s", flush=True)
    report(results, args)


def prepare_model(tiny: bool) -> str:
    """The embedded default (cached safetensors copy) or a tiny model folder built on the spot."""
    if not tiny:
        from tuneforge.model_loading import ensure_preset_cached

        return str(ensure_preset_cached("smollm2-135m"))
    from tests.conftest import build_tiny_model, build_tiny_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="tiny-bench-"))
    build_tiny_model(folder, build_tiny_tokenizer(folder))
    return str(folder)


def run_child(name: str, model_dir: str, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--one", name, "--model-dir", model_dir, "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def data_slice(tokenizer, count: int, max_length: int):
    """The same shuffled slice of HPO terms for every pipeline: conversations, and our encoded rows."""
    import random

    from tuneforge.data.encode import encode_all
    from tuneforge.data.hpo import hpo_obo_path, read_terms, term_to_messages

    terms = read_terms(hpo_obo_path())
    random.Random(0).shuffle(terms)
    conversations = [term_to_messages(t) for t in terms[:count]]
    rows, _ = encode_all(tokenizer, conversations, max_length)
    return conversations, rows


class Meter:
    """Counts real and padded tokens as batches are built, and times the steps after warm-up."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.step, self.real, self.padded, self.started = warmup, 0, 0, 0, None

    def count(self, batch: dict) -> dict:
        if self.step >= self.warmup:
            mask = batch.get("attention_mask")
            self.real += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
            self.padded += batch["input_ids"].numel()
        return batch

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class _Timer(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                meter.step = state.global_step
                if state.global_step == meter.warmup:
                    meter.started = time.perf_counter()

        return _Timer()


def run_one(args: argparse.Namespace) -> dict:
    import torch

    torch.manual_seed(0)
    pipeline, overrides = PIPELINES[args.one]
    meter = Meter(args.warmup)
    steps = args.warmup + args.steps
    trainer, eval_rows = build(pipeline, overrides, args, meter, steps)
    trainer.add_callback(meter.callback())
    trainer.train()
    seconds = time.perf_counter() - meter.started
    return {
        "pipeline": args.one, "real_tokens_per_s": meter.real / seconds, "padded_tokens_per_s": meter.padded / seconds,
        "seconds_per_step": seconds / args.steps, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "final_loss": answer_loss(trainer.model, eval_rows), "threads": torch.get_num_threads(),
    }  # fmt: skip


def build(pipeline: str, overrides: dict, args, meter: Meter, steps: int):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    count = args.batch_size * steps
    conversations, rows = data_slice(tokenizer, count + 32, args.max_length)
    train_conv, train_rows, eval_rows = conversations[:count], rows[:count], rows[count:]
    if pipeline == "tuneforge":
        return build_tuneforge(tokenizer, train_rows, overrides, args, meter, steps), eval_rows
    return build_baseline(pipeline, tokenizer, train_conv, train_rows, args, meter, steps), eval_rows


def build_tuneforge(tokenizer, rows, overrides: dict, args, meter: Meter, steps: int):
    from tuneforge.config_resolve import resolve_config
    from tuneforge.model_loading import ModelSource, load_model
    from tuneforge.devices import torch_dtype
    from tuneforge.tuner.trainer_setup import add_lora, build_trainer, training_arguments

    values = {"model.name": args.model_dir, "train.batch_size": args.batch_size, "train.max_steps": steps,
              "train.max_seq_length": args.max_length, "train.save_steps": 10**6, "train.logging_steps": 10**6, **overrides}  # fmt: skip
    cfg = resolve_config(values, env={}).config
    precision = cfg.train.precision if cfg.train.precision != "auto" else "fp32"
    source = ModelSource(args.model_dir, args.model_dir, "local", "bench")
    model = add_lora(load_model(source, torch_dtype("fp32"), "cpu"), cfg, False)
    trainer = build_trainer(model, tokenizer, training_arguments(cfg, "cpu", precision, Path(tempfile.mkdtemp())), rows, [], [])
    trainer.data_collator = _counting(trainer.data_collator, meter)
    return trainer


def build_baseline(pipeline: str, tokenizer, conversations, rows, args, meter: Meter, steps: int):
    """'trl': SFTTrainer with its defaults on the raw conversations. 'guide': Trainer, every row padded to max length."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
    from trl import SFTConfig, SFTTrainer

    lora = LoraConfig(r=32, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(args.model_dir)
    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, max_steps=steps,
                  learning_rate=2e-4, report_to="none", save_strategy="no", use_cpu=True, disable_tqdm=True,
                  logging_steps=10**6, seed=42)  # fmt: skip
    if pipeline == "trl":
        config = SFTConfig(max_length=args.max_length, **common)
        data = Dataset.from_list([{"messages": c} for c in conversations])
        trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora)
    else:
        from peft import get_peft_model

        padded = [_pad_row(r, args.max_length, tokenizer.pad_token_id) for r in rows]
        trainer = Trainer(model=get_peft_model(model, lora), args=TrainingArguments(**common),
                          train_dataset=Dataset.from_list(padded))  # fmt: skip
        trainer.data_collator = _stack
    trainer.data_collator = _counting(trainer.data_collator, meter)
    return trainer


def _pad_row(row: dict, length: int, pad_id: int) -> dict:
    n = len(row["input_ids"])
    return {"input_ids": row["input_ids"] + [pad_id] * (length - n), "labels": row["labels"] + [-100] * (length - n),
            "attention_mask": [1] * n + [0] * (length - n)}  # fmt: skip


def _stack(features: list[dict]) -> dict:
    import torch

    return {key: torch.tensor([f[key] for f in features]) for key in features[0]}


def _counting(collator, meter: Meter):
    return lambda features: meter.count(collator(features))


def answer_loss(model, rows: list[dict]) -> float:
    """Held-out loss on answer tokens only, the same measure for every pipeline."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / max(count, 1)


def report(results: dict, args: argparse.Namespace) -> None:
    trl, guide = results.get("trl"), results.get("guide")
    header = f"{'pipeline':<14}{'real tok/s':>11}{'padded tok/s':>13}{'s/step':>8}{'peak RSS MB':>12}{'loss':>8}{'× TRL':>7}{'× guide':>8}"
    print("\n" + header)
    for name, r in results.items():
        vs_trl = r["real_tokens_per_s"] / trl["real_tokens_per_s"] if trl else float("nan")
        vs_guide = r["real_tokens_per_s"] / guide["real_tokens_per_s"] if guide else float("nan")
        r.update(ratio_vs_trl=vs_trl, ratio_vs_guide=vs_guide)
        print(f"{name:<14}{r['real_tokens_per_s']:>11.1f}{r['padded_tokens_per_s']:>13.1f}{r['seconds_per_step']:>8.2f}"
              f"{r['peak_rss_mb']:>12.0f}{r['final_loss']:>8.3f}{vs_trl:>7.2f}{vs_guide:>8.2f}")  # fmt: skip
    meta = {"tiny": args.tiny, "warmup": args.warmup, "steps": args.steps, "batch_size": args.batch_size,
            "max_length": args.max_length, "cpu_count": os.cpu_count()}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": meta, "results": results}, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
