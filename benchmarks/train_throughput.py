"""Training throughput, side by side: the guide's approach, plain TRL, tuneforge, and each option.

Every pipeline trains the same model on the same data slice with the same micro-batch, max
length and LoRA shape, in its own subprocess (so peak RSS is its own). Each gets warm-up
steps, then timed steps. Figures are ratios against TRL and the guide, never bare times.

    python benchmarks/train_throughput.py                 # the real embedded default (minutes)
    python benchmarks/train_throughput.py --tiny          # a tiny model, as CI runs it (seconds)
    python benchmarks/train_throughput.py --only trl,tuneforge --steps 10

On an NVIDIA GPU, a model of a known shape built from its config (random weights: speed does
not depend on them) with the SmolLM2 tokenizer, and the Liger kernels:

    python benchmarks/train_throughput.py --model-config llama-0.5b --batch-size 32 \
        --only trl,tuneforge,tf-liger --warmup 3 --steps 20

There the timer waits for the GPU (torch.cuda.synchronize), the memory column is the peak
GPU memory torch allocated, and MFU = model FLOPs per second / the bf16 dense peak (989
TFLOP/s for an H100/H200 SXM; --peak-tflops). Model FLOPs per real token are 4 × N, N the
weights of the matrix products (every linear layer and the LM head): 2N forward, 2N for the
activation gradients; LoRA freezes the base weights, so the 2N of their weight gradients
(6N in full fine-tuning) is not spent. Attention scores (~12 × layers × context × hidden per
token, about 2% here) and padded tokens are not counted as useful work.
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
sys.path.insert(0, str(ROOT / "benchmarks"))  # the CLI timer and the profiler breakdown live beside this file

# name -> (pipeline, tuneforge config overrides); options are measured one at a time
PIPELINES: dict[str, tuple[str, dict]] = {
    "guide": ("guide", {}),
    "trl": ("trl", {}),
    "trl-matched": ("trl-matched", {}),  # TRL given tuneforge's settings and answer-only loss: the loss check
    # TRL doing tuneforge's work (LoRA r32/16/0 all-linear, bf16 autocast, dynamic padding): the speed headline
    "trl-same": ("trl-same", {}),
    "cli": ("cli", {}),  # the real `tuneforge train` command, timed from its metrics.json
    "cli-pad1": ("cli", {"train.pad_to_multiple_of": 1}),  # packed rows of any length (the default pads to 64)
    "tuneforge": ("tuneforge", {}),
    "tf-padded": ("tuneforge", {"train.padding_free": False}),
    "tf-grouped": ("tuneforge", {"train.padding_free": False, "train.group_by_length": True}),
    "tf-bf16": ("tuneforge", {"train.precision": "bf16"}),
    "tf-dropout0": ("tuneforge", {"lora.dropout": 0.0}),
    "tf-bf16-dropout0": ("tuneforge", {"train.precision": "bf16", "lora.dropout": 0.0}),
    "tf-attn-only": ("tuneforge", {"lora.target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}),
    "tf-fp32-dropout": ("tuneforge", {"train.precision": "fp32", "lora.dropout": 0.05}),  # the guide-like settings
    "tf-compile": ("tuneforge", {}),
    "tf-pad1": ("tuneforge", {"train.pad_to_multiple_of": 1}),  # no padding to a multiple of 64: a new shape each step
    "tf-threads1": ("tuneforge", {}),
    "tf-omp-passive": ("tuneforge", {}),
    "tf-liger": ("tuneforge", {}),
    "trl-liger": ("trl", {}),
}
DEFAULT_ONLY = [name for name in PIPELINES if not name.endswith("liger")]
SAME_WORK = "trl-same"  # the ratio every pipeline is reported against  # Liger needs triton, so a GPU
# Trainer arguments set on top of a pipeline's own. Liger: its RMSNorm, RoPE and SwiGLU kernels. TRL (1.16)
# refuses Liger's fused linear cross-entropy because SFTTrainer already scores tokens with its own chunked,
# fused LM head, which never builds the (tokens × vocab) logits either.
TRAINER_EXTRAS: dict[str, dict] = {"tf-liger": {"use_liger_kernel": True}, "trl-liger": {"use_liger_kernel": True},
                                   "tf-compile": {"torch_compile": True}}  # fmt: skip
# Environment of a pipeline's own process: thread count, and OpenMP threads that sleep instead of spin
CHILD_ENV: dict[str, dict] = {"tf-threads1": {"OMP_NUM_THREADS": "1"}, "tf-omp-passive": {"OMP_WAIT_POLICY": "PASSIVE"}}

# Shapes built from a config with random weights (SmolLM2's tokenizer, so its 49,152-token vocabulary).
_LLAMA = {"model_type": "llama", "vocab_size": 49152, "tie_word_embeddings": True, "max_position_embeddings": 8192,
          "rms_norm_eps": 1e-5, "rope_theta": 100000.0, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}  # fmt: skip
MODEL_CONFIGS: dict[str, dict] = {
    "tiny": {**_LLAMA, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 128},
    # 0.42B parameters
    "llama-0.5b": {**_LLAMA, "hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                   "num_key_value_heads": 4, "intermediate_size": 4096},
    # 1.07B parameters, TinyLlama's shape
    "llama-1.1b": {**_LLAMA, "hidden_size": 2048, "num_hidden_layers": 22, "num_attention_heads": 32,
                   "num_key_value_heads": 4, "intermediate_size": 5632},
}  # fmt: skip
PEAK_TFLOPS = 989.0  # dense bf16, H100/H200 SXM datasheet


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="tiny local model (CI); figures are not meaningful")
    parser.add_argument("--model-config", choices=list(MODEL_CONFIGS),
                        help="a model of this shape built from its config, random weights, SmolLM2 tokenizer")  # fmt: skip
    parser.add_argument(
        "--tokenizer", help="folder with the tokenizer for --model-config (default: the cached preset's)"
    )
    parser.add_argument(
        "--save-model", type=Path, help="with --model-config: build the model into this folder and stop"
    )
    parser.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default="auto", help="auto: CUDA when torch sees a GPU"
    )
    parser.add_argument("--only", default=",".join(DEFAULT_ONLY), help="comma-separated pipelines to run")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per pipeline")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--peak-tflops", type=float, default=PEAK_TFLOPS, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--profile", action="store_true",
                        help="torch.profiler over the timed steps: top operations and matmul/attention/optimizer shares "
                        "(slows the steps it profiles)")  # fmt: skip
    parser.add_argument("--keep-going", action="store_true", help="record a failed pipeline and run the others")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/train_throughput.json"))
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one pipeline in this process
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def main() -> None:
    args = parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return
    if args.save_model:
        if not args.model_config:
            raise SystemExit("--save-model needs --model-config")
        params = build_model(args.model_config, args.save_model, args.tokenizer, args.device)
        print(f"built {args.model_config} ({params / 1e6:.1f}M parameters, random weights) in {args.save_model}")
        return
    model_dir = prepare_model(args)
    results = {}
    for name in args.only.split(","):
        results[name] = run_child(name, model_dir, args)
        if "error" in results[name]:
            print(f"{name}: FAILED: {results[name]['error'].splitlines()[-1][:300]}", flush=True)
        else:
            print(f"{name}: {results[name]['real_tokens_per_s']:.1f} real tokens/s", flush=True)
        save(results, args)  # a run cut short still leaves the pipelines it finished
    report(results, args)


def prepare_model(args: argparse.Namespace) -> str:
    """The embedded default (cached safetensors copy), a model built from a config, or a tiny model folder."""
    if args.model_config:
        folder = Path(tempfile.mkdtemp(prefix=f"bench-{args.model_config}-"))
        params = build_model(args.model_config, folder, args.tokenizer, args.device)
        print(f"model: {args.model_config}, {params / 1e6:.1f}M parameters, random weights, in {folder}", flush=True)
        return str(folder)
    if not args.tiny:
        from tuneforge.models.loading import ensure_preset_cached

        return str(ensure_preset_cached("smollm2-135m"))
    from tests.conftest import build_tiny_model, build_tiny_tokenizer

    folder = Path(tempfile.mkdtemp(prefix="tiny-bench-"))
    build_tiny_model(folder, build_tiny_tokenizer(folder))
    return str(folder)


def build_model(name: str, folder: Path, tokenizer_dir: str | None, device: str) -> int:
    """A model of a known shape with random weights, saved with the SmolLM2 tokenizer; returns its size."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if tokenizer_dir is None:
        from tuneforge.models.loading import ensure_preset_cached

        tokenizer_dir = str(ensure_preset_cached("smollm2-135m"))
    values = dict(MODEL_CONFIGS[name])
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):  # random init on the GPU takes a second, not half a minute
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def run_child(name: str, model_dir: str, args: argparse.Namespace) -> dict:
    if PIPELINES[name][0] == "cli":
        from throughput_cli import run_cli

        return {**run_cli(model_dir, args, data_slice, PIPELINES[name][1]), "pipeline": name}
    command = [sys.executable, __file__, "--one", name, "--model-dir", model_dir, "--warmup", str(args.warmup),
               "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--max-length", str(args.max_length),
               "--device", args.device, "--peak-tflops", str(args.peak_tflops)] + ["--profile"] * args.profile  # fmt: skip
    env = {**os.environ, **CHILD_ENV.get(name, {})}
    done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        if args.keep_going:
            return {"pipeline": name, "error": done.stderr[-3000:]}
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
    """Counts real and padded tokens of every batch, and times the steps after warm-up.

    The training set holds exactly (warm-up + timed steps) batches, so the timed steps are the
    last `timed` batches built, whatever the data loader prefetches. On a GPU the clock waits for
    the queued kernels at both ends.
    """

    def __init__(self, warmup: int, timed: int, device: str) -> None:
        self.warmup, self.timed, self.device = warmup, timed, device
        self.batches: list[tuple[int, int]] = []  # (real, padded) tokens per batch
        self.started: float | None = None
        self.ended: float | None = None

    def count(self, batch: dict, features: list[dict] | None = None) -> dict:
        """Real tokens are the examples' own (bucket padding of a packed row is not real); else the mask's."""
        mask = batch.get("attention_mask")
        if features is not None:
            real = sum(sum(f["attention_mask"]) if "attention_mask" in f else len(f["input_ids"]) for f in features)
        else:
            real = int(mask.sum()) if mask is not None else batch["input_ids"].numel()
        self.batches.append((real, batch["input_ids"].numel()))
        return batch

    @property
    def real(self) -> int:
        return sum(r for r, _ in self.batches[-self.timed :])

    @property
    def padded(self) -> int:
        return sum(p for _, p in self.batches[-self.timed :])

    def now(self) -> float:
        if self.device == "cuda":
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class _Timer(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                if state.global_step == meter.warmup:
                    meter.started = meter.now()
                elif state.global_step == meter.warmup + meter.timed:
                    meter.ended = meter.now()

        return _Timer()


def run_one(args: argparse.Namespace) -> dict:
    import torch

    torch.manual_seed(0)
    cuda = args.device == "cuda"  # a fresh process: the peak GPU memory counts from zero
    pipeline, overrides = PIPELINES[args.one]
    meter = Meter(args.warmup, args.steps, args.device)
    steps = args.warmup + args.steps
    trainer, eval_rows = build(pipeline, overrides, TRAINER_EXTRAS.get(args.one, {}), args, meter, steps)
    trainer.add_callback(meter.callback())
    profiler = None
    if args.profile:
        from profile_breakdown import StepProfiler

        profiler = StepProfiler(args.warmup, args.warmup + args.steps)
        trainer.add_callback(profiler)
    trainer.train()
    seconds = (meter.ended or meter.now()) - meter.started
    flops_per_token = 4 * matmul_params(trainer.model)
    real_per_s = meter.real / seconds
    return {
        "pipeline": args.one, "device": args.device, "real_tokens_per_s": real_per_s,
        "padded_tokens_per_s": meter.padded / seconds, "seconds_per_step": seconds / args.steps,
        "timed_batches": len(meter.batches[-args.steps :]), "batches": len(meter.batches),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "model_flops_per_token": flops_per_token, "achieved_tflops": flops_per_token * real_per_s / 1e12,
        "mfu": flops_per_token * real_per_s / (args.peak_tflops * 1e12) if cuda else None,
        "attn_implementation": getattr(model_config(trainer.model), "_attn_implementation", None),
        "weights_dtype": str(next(trainer.model.parameters()).dtype).removeprefix("torch."),
        "bf16": bool(trainer.args.bf16), "use_liger_kernel": bool(getattr(trainer.args, "use_liger_kernel", False)),
        "final_loss": answer_loss(trainer.model, eval_rows), "threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "profile": profiler.breakdown() if profiler else None,
    }  # fmt: skip


def model_config(model):
    return getattr(model, "config", None)


def matmul_params(model) -> int:
    """Weights of the matrix products per token: every nn.Linear (LoRA's A and B included) and the LM head."""
    import torch

    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def build(pipeline: str, overrides: dict, extras: dict, args, meter: Meter, steps: int):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    count = args.batch_size * steps
    conversations, rows = data_slice(tokenizer, count + 32, args.max_length)
    train_conv, train_rows, eval_rows = conversations[:count], rows[:count], rows[count:]
    if pipeline == "tuneforge":
        return build_tuneforge(tokenizer, train_rows, overrides, extras, args, meter, steps), eval_rows
    return build_baseline(pipeline, tokenizer, train_conv, train_rows, extras, args, meter, steps), eval_rows


def build_tuneforge(tokenizer, rows, overrides: dict, extras: dict, args, meter: Meter, steps: int):
    """As `tuneforge train` sets it up: the hardware profile's precision; on CUDA the weights in it too."""
    from tuneforge.config_resolve import resolve_config
    from tuneforge.machine.devices import torch_dtype
    from tuneforge.models.loading import ModelSource, load_model
    from tuneforge.recipe.trainer_setup import add_lora, build_trainer, training_arguments

    values = {"model.name": args.model_dir, "train.batch_size": args.batch_size, "train.max_steps": steps,
              "train.max_seq_length": args.max_length, "train.save_steps": 10**6, "train.logging_steps": 10**6,
              "train.device": args.device, **overrides}  # fmt: skip
    cfg = resolve_config(values, env={}).config
    precision = cfg.train.precision if cfg.train.precision != "auto" else "fp32"
    weights = precision if args.device == "cuda" else "fp32"  # as train.load_base: CPU keeps fp32 weights
    source = ModelSource(args.model_dir, args.model_dir, "local", "bench")
    model = add_lora(load_model(source, torch_dtype(weights), args.device), cfg, False)
    training_args = training_arguments(cfg, args.device, precision, Path(tempfile.mkdtemp()))
    for key, value in extras.items():  # before SFTTrainer is built: it adapts the Liger settings there
        setattr(training_args, key, value)
    trainer = build_trainer(model, tokenizer, training_args, rows, [], [])
    trainer.data_collator = _counting(trainer.data_collator, meter)
    return trainer


def build_baseline(pipeline: str, tokenizer, conversations, rows, extras: dict, args, meter: Meter, steps: int):
    """'trl': SFTTrainer with its defaults on the raw conversations. 'guide': Trainer, every row padded to max length.

    On CUDA both load the weights in bf16 and train with bf16 autocast, as their docs show it.
    """
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
    from trl import SFTConfig, SFTTrainer

    cuda = args.device == "cuda"
    lora = LoraConfig(r=32, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16 if cuda else torch.float32,
                                                 attn_implementation="sdpa")  # fmt: skip
    common = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=args.batch_size, max_steps=steps,
                  learning_rate=2e-4, report_to="none", save_strategy="no", use_cpu=not cuda, disable_tqdm=True,
                  logging_steps=10**6, seed=42, **extras)  # fmt: skip
    if cuda:
        common["bf16"] = True
    if pipeline == "trl-matched":
        trainer = matched_trl(model, tokenizer, conversations, common, args, steps)
    elif pipeline == "trl-same":
        trainer = same_work_trl(model, tokenizer, conversations, common, args)
    elif pipeline == "trl":
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


def matched_trl(model, tokenizer, conversations, common: dict, args, steps: int):
    """Plain TRL with every setting tuneforge uses (LoRA shape, rate, schedule, precision) and loss on
    the answers only (TRL's prompt-completion format), so a loss gap can only come from the pipeline."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tuneforge.config_resolve import resolve_config

    cfg = resolve_config({"train.device": args.device}, env={}).config
    t = cfg.train
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")  # fmt: skip
    common = {**common, "learning_rate": t.learning_rate, "lr_scheduler_type": "cosine",
              "warmup_steps": min(t.warmup_steps, steps // 5), "bf16": t.precision == "bf16"}  # fmt: skip
    config = SFTConfig(max_length=args.max_length, completion_only_loss=True, **common)
    data = Dataset.from_list([{"prompt": c[:-1], "completion": c[-1:]} for c in conversations])
    return SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora)


def same_work_trl(model, tokenizer, conversations, common: dict, args):
    """SFTTrainer on the raw conversations doing tuneforge's work: the same LoRA (r, alpha, dropout 0, all
    linear layers), the same precision (bf16 autocast where the profile picks it, as TRL's own default),
    dynamic padding of each micro-batch (TRL's default collator). Only the pipeline differs."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from tuneforge.config_resolve import resolve_config

    cfg = resolve_config({"train.device": args.device}, env={}).config
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=cfg.lora.target_modules, task_type="CAUSAL_LM")  # fmt: skip
    common = {**common, "learning_rate": cfg.train.learning_rate, "bf16": cfg.train.precision == "bf16"}
    config = SFTConfig(max_length=args.max_length, **common)
    data = Dataset.from_list([{"messages": c} for c in conversations])
    return SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tokenizer, peft_config=lora)


def _pad_row(row: dict, length: int, pad_id: int) -> dict:
    n = len(row["input_ids"])
    return {"input_ids": row["input_ids"] + [pad_id] * (length - n), "labels": row["labels"] + [-100] * (length - n),
            "attention_mask": [1] * n + [0] * (length - n)}  # fmt: skip


def _stack(features: list[dict]) -> dict:
    import torch

    return {key: torch.tensor([f[key] for f in features]) for key in features[0]}


def _counting(collator, meter: Meter):
    return lambda features: meter.count(collator(features), features)


def answer_loss(model, rows: list[dict]) -> float:
    """Held-out loss on answer tokens only, the same measure for every pipeline."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
        for row in rows:
            ids, labels = torch.tensor([row["input_ids"]], device=device), torch.tensor([row["labels"]], device=device)
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / max(count, 1)


def _fmt(value, spec: str) -> str:
    return format("-", spec.split(".")[0]) if value is None else format(value, spec)


def report(results: dict, args: argparse.Namespace) -> None:
    ok = {name: r for name, r in results.items() if isinstance(r, dict) and "error" not in r and "pipeline" in r}
    trl, guide = ok.get(SAME_WORK) or ok.get("trl"), ok.get("guide")
    if trl is not None:
        print(
            f"\n× TRL: against {trl['pipeline']} ({'the same work' if trl['pipeline'] == SAME_WORK else 'its defaults'})"
        )
    cuda = args.device == "cuda"
    memory = "peak GPU MB" if cuda else "peak RSS MB"
    header = (f"{'pipeline':<14}{'real tok/s':>11}{'padded tok/s':>13}{'s/step':>8}{memory:>12}{'loss':>8}"
              f"{'× TRL':>7}{'× guide':>8}" + (f"{'TFLOP/s':>9}{'MFU':>7}" if cuda else ""))  # fmt: skip
    print("\n" + header)
    for name, r in results.items():
        if name not in ok and "error" not in r:
            continue
        if "error" in r:
            print(f"{name:<14}FAILED: {r['error'].strip().splitlines()[-1][:200] if r['error'].strip() else '?'}")
            continue
        vs_trl = r["real_tokens_per_s"] / trl["real_tokens_per_s"] if trl else float("nan")
        vs_guide = r["real_tokens_per_s"] / guide["real_tokens_per_s"] if guide else float("nan")
        r.update(ratio_vs_trl=vs_trl, ratio_vs_guide=vs_guide)
        mem = r["peak_gpu_mb"] if cuda else r["peak_rss_mb"]
        line = (f"{name:<14}{r['real_tokens_per_s']:>11.1f}{_fmt(r['padded_tokens_per_s'], '>13.1f')}"
                f"{r['seconds_per_step']:>8.3f}{mem:>12.0f}{_fmt(r['final_loss'], '>8.3f')}{vs_trl:>7.2f}{vs_guide:>8.2f}")  # fmt: skip
        if cuda:
            line += f"{r['achieved_tflops']:>9.1f}{_fmt(r['mfu'] and 100 * r['mfu'], '>6.1f')}%"
        print(line)
    for name, r in ok.items():
        if r.get("profile"):
            from profile_breakdown import print_breakdown

            print_breakdown(name, r["profile"])
    # same work and answer-only loss on both sides: only the pipeline differs (trl-same, else trl-matched)
    matched, ours = ok.get("trl-same") or ok.get("trl-matched"), ok.get("tuneforge")
    if matched and ours:
        gap = ours["final_loss"] / matched["final_loss"] - 1
        results["loss_check"] = {
            "tuneforge": ours["final_loss"],
            "trl_matched": matched["final_loss"],
            "relative_gap": gap,
        }
        print(f"\nheld-out answer loss after the same examples: tuneforge {ours['final_loss']:.4f}, "
              f"TRL with the same settings {matched['final_loss']:.4f} ({100 * gap:+.2f}%)")  # fmt: skip
    save(results, args)
    print(f"\nwrote {args.json}")


def save(results: dict, args: argparse.Namespace) -> None:
    meta = {"tiny": args.tiny, "model_config": args.model_config, "device": args.device, "warmup": args.warmup,
            "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
            "cpu_count": os.cpu_count(), "peak_tflops": args.peak_tflops if args.device == "cuda" else None}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"settings": meta, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
