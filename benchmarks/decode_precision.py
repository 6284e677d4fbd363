"""Single-stream decoding speed of the served model at each weight precision, and what it does to answers.

Issue 20 asks for 40 tokens/s from one client; a decode step on the CPU is bound by reading the
weights (docs/PERFORMANCE.md), so the lever is fewer bytes per weight. This loads a results folder
the way `tuneforge serve` does (load_engine: a lone adapter merged into the base), then times greedy
decoding of the same prompts with the weights in fp32, in bf16 (`serve --precision bf16`), with
fp16 copies read by single-row steps (`serve --precision fp16`), with int8 copies read by steps
of up to 8 rows (`serve --precision int8`) and with the MLP's copies in 4 bits (`serve --precision
int4`; all in serving/decode_copies.py). For each it prints
tokens/s (best of --reps, the prompt's prefill included), how many answers equal fp32's up to the
end of the answer (the end-of-turn token, what a user reads) and over all --tokens, and how many
of fp32's greedy tokens each reproduces before the first difference; with --held-out, also ROUGE-L
of each variant's answers against the held-out references.

    python benchmarks/decode_precision.py --adapter results --tokens 64
    python benchmarks/decode_precision.py --adapter results --tokens 64 --held-out 24 --reps 1 --only fp32,fp16
                                   # agreement on 24 held-out questions from the run's eval_set.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Any

PROMPTS = ["Fever", "Short stature", "Seizure", "Hearing impairment"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapter", type=Path, required=True, help="a results folder from `tuneforge train`")
    parser.add_argument("--tokens", type=int, default=64, help="new tokens per answer (all of them: no early stop)")
    parser.add_argument("--reps", type=int, default=3, help="timed repeats per prompt; the best counts")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS), help="how many of the built-in prompts")
    parser.add_argument(
        "--held-out",
        type=int,
        default=0,
        help="use this many questions from the results folder's eval_set.jsonl instead",
    )
    parser.add_argument("--only", default="fp32,bf16,fp16,int8,int4", help="comma-separated variants; fp32 first")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def served_model(adapter: Path) -> tuple[Any, Any]:
    """The model and tokenizer exactly as `tuneforge serve --adapter <folder>` holds them."""
    from tuneforge.serving.loading import base_model_name, load_engine, parse_adapter_specs

    specs = parse_adapter_specs([str(adapter)])
    engine = load_engine(specs, base_model_name(specs, None), log=lambda _line: None)
    model = engine.model.get_base_model() if hasattr(engine.model, "get_base_model") else engine.model
    return model, engine.tokenizer


def variants(model: Any) -> dict[str, Any]:
    """Each variant is built only when its turn comes, so one copy at a time sits beside fp32."""
    import torch

    from tuneforge.serving.decode_copies import HalfDecode, Int4Decode, Int8Decode

    def copied(kind: Any) -> Any:
        candidate = copy.deepcopy(model)
        kind(candidate)
        return candidate

    return {
        "fp32": lambda: model,
        "bf16": lambda: copy.deepcopy(model).to(torch.bfloat16),
        "fp16": lambda: copied(HalfDecode),
        "int8": lambda: copied(Int8Decode),
        "int4": lambda: copied(Int4Decode),
    }


def decode(model: Any, inputs: dict, tokens: int, reps: int) -> tuple[float, list[int]]:
    """Best-of-reps seconds for `tokens` greedy tokens, and the tokens."""
    import torch

    best, out = float("inf"), None
    with torch.inference_mode():
        model.generate(**inputs, max_new_tokens=4, do_sample=False)  # warm-up: first-call allocations
        for _ in range(reps):
            start = time.perf_counter()
            out = model.generate(**inputs, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
            best = min(best, time.perf_counter() - start)
    assert out is not None
    return best, out[0, inputs["input_ids"].shape[1] :].tolist()


def held_out(results: Path, count: int) -> list[str]:
    """The first `count` questions of the run's held-out set, never trained on."""
    return [messages[0]["content"] for messages in held_out_rows(results, count)]


def held_out_rows(results: Path, count: int) -> list[list[dict[str, str]]]:
    lines = (results / "eval_set.jsonl").read_text(encoding="utf-8").splitlines()[:count]
    return [json.loads(line)["messages"] for line in lines]


def agreement(tokens: list[int], reference: list[int]) -> int:
    """Greedy tokens equal to fp32's before the first difference."""
    same = 0
    for mine, theirs in zip(tokens, reference, strict=False):
        if mine != theirs:
            break
        same += 1
    return same


def answer(model: Any, inputs: dict, tokens: int) -> list[int]:
    """The greedy answer as a user gets it: up to the model's own end of turn (the timed runs go past it)."""
    import torch

    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def main() -> None:
    args = parse_args()
    model, tokenizer = served_model(args.adapter)
    rows: dict[str, dict[str, Any]] = {}
    reference: dict[str, list[int]] = {}
    reference_answers: dict[str, list[int]] = {}
    questions = held_out(args.adapter, args.held_out) if args.held_out else [
        f"Please tell me about {term}." for term in PROMPTS[: args.prompts]]  # fmt: skip
    builders = variants(model)
    for name in args.only.split(","):
        candidate = builders[name]()
        seconds, same, answers, texts = 0.0, [], 0, []
        for question in questions:
            messages = [{"role": "user", "content": question}]
            inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                   return_dict=True)  # fmt: skip
            spent, tokens = decode(candidate, inputs, args.tokens, args.reps)
            seconds += spent
            reference.setdefault(question, tokens)
            same.append(agreement(tokens, reference[question]))
            mine = answer(candidate, inputs, args.tokens)
            answers += reference_answers.setdefault(question, mine) == mine
            texts.append(tokenizer.decode(mine, skip_special_tokens=True).strip())
        whole = sum(n == args.tokens for n in same)
        rows[name] = {"tokens_per_s": args.tokens * len(questions) / seconds, "same_as_fp32": same,
                      "answers_equal_to_fp32": answers, "all_tokens_equal_to_fp32": whole,
                      "questions": len(questions)}  # fmt: skip
        if args.held_out:  # what the changed answers do to the score: ROUGE-L against the held-out references
            from tuneforge.evaluation.metrics import rouge

            references = [messages[-1]["content"] for messages in held_out_rows(args.adapter, args.held_out)]
            rows[name]["rouge_l"] = rouge(texts, references)["rougeL"]
        print(f"{name:5s} {rows[name]['tokens_per_s']:6.1f} tokens/s   answers equal to fp32's: {answers} of "
              f"{len(questions)} up to the end of turn, {whole} over all {args.tokens} tokens; tokens equal before "
              f"the first difference: {same}"
              + (f"; ROUGE-L {rows[name]['rouge_l']:.3f}" if "rouge_l" in rows[name] else ""), flush=True)  # fmt: skip
        del candidate
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
