"""How much faster is batched generation than one prompt at a time? And how long does a quick eval take?

Answers held-out medical-term questions (the split `train` makes) one at a time and in
batches, with a fresh LoRA adapter on top (as at the end of training), and prints seconds per
answer and the speed-up. Then times `quick_eval` (base + tuned) at the fastest batch size.

    .venv/bin/python benchmarks/eval_generation.py --model tiny
    .venv/bin/python benchmarks/eval_generation.py --model smollm2-135m --examples 64 --single 16
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.conftest's tiny model builders


DEVICE = "cpu"  # the question is the CPU: training ends with this check on the user's machine


def load(model_name: str):
    import torch
    from peft import LoraConfig, get_peft_model

    from tuneforge.models.loading import load_model, load_tokenizer, resolve_model

    if model_name == "tiny":  # the test suite's 2-layer llama, built in seconds and held in memory
        from tests.conftest import build_tiny_model, build_tiny_tokenizer

        with tempfile.TemporaryDirectory(prefix="tiny-llama-") as folder:
            build_tiny_model(Path(folder), build_tiny_tokenizer(Path(folder)))
            source = resolve_model(folder)
            tokenizer, model = load_tokenizer(source), load_model(source, torch.float32, DEVICE)
    else:
        source = resolve_model(model_name)
        tokenizer, model = load_tokenizer(source), load_model(source, torch.float32, DEVICE)
    lora = LoraConfig(r=32, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora).eval(), tokenizer


def held_out_prompts(count: int) -> list:
    from tuneforge.config import default_values
    from tuneforge.data.hpo import load_medical_terms
    from tuneforge.data.split import split_heldout
    from tuneforge.evaluation.dataset import to_examples

    d = default_values()
    conversations, _ = load_medical_terms()
    _, held = split_heldout(conversations, d["data.eval_fraction"], d["data.eval_min"], d["train.seed"])
    return to_examples(held)[:count]


def timed(fn, *args, **kwargs):
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="'tiny', a preset such as smollm2-135m, or a model folder")
    parser.add_argument("--examples", type=int, default=32, help="held-out prompts answered in batches")
    parser.add_argument("--single", type=int, default=16, help="of those, how many are also answered one at a time")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--batch-sizes", default="8,16,32")
    args = parser.parse_args()

    from tuneforge.evaluation.generation import generate_answers

    model, tokenizer = load(args.model)
    examples = held_out_prompts(args.examples)
    prompts, tokens = [e.prompt for e in examples], args.max_new_tokens
    say(f"model {args.model}, {len(prompts)} held-out prompts, max {tokens} new tokens, greedy, fp32, {DEVICE}")
    single, seconds = timed(generate_answers, model, tokenizer, prompts[: args.single], tokens, batch_size=1)
    single_each = seconds / len(single)
    say(f"one at a time: {single_each:5.2f} s per answer ({len(single)} answers)")
    best = (1, single_each)
    for size in [int(s) for s in args.batch_sizes.split(",")]:
        batched, seconds = timed(generate_answers, model, tokenizer, prompts, tokens, batch_size=size)
        each = seconds / len(batched)
        same = sum(a.text == b.text for a, b in zip(single, batched))  # noqa: B905 - single is a prefix
        say(f"batch {size:3d}: {each:5.2f} s per answer ({len(batched)} answers)  speed-up x{single_each / each:.1f}"
            f"  ({same}/{len(single)} answers same as one at a time)")  # fmt: skip
        best = min(best, (size, each), key=lambda pair: pair[1])
    time_quick_eval(model, tokenizer, examples, tokens, best[0])


def time_quick_eval(model, tokenizer, examples, max_new_tokens: int, batch_size: int) -> None:
    """What `train` runs at the end: base and tuned answers and scores, no held-out loss."""
    from tuneforge.evaluation.compare import quick_eval

    conversations = [e.messages for e in examples]
    result, seconds = timed(quick_eval, model, tokenizer, conversations, len(examples), max_new_tokens, batch_size)
    each = seconds / len(examples)
    say(f"quick_eval (base + tuned, batch {batch_size}): {seconds:.1f} s for {len(examples)} examples, "
        f"{each:.2f} s each -> about {int(120 / each)} examples fit in 2 minutes")  # fmt: skip
    base = result["base"]
    say(f"base model: ROUGE-L {base['rougeL']:.3f}, BLEU {base['bleu']:.2f}, stops by itself {base['stop_rate']:.2f}")


def say(line: str) -> None:
    print(line, flush=True)  # flushed: a slow run shows each figure as soon as it is measured


if __name__ == "__main__":
    main()
