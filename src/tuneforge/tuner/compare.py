"""Answer one held-out question with the base model and the tuned one, side by side."""

from __future__ import annotations

from typing import Any

from rich.table import Table


def generate_answer(model: Any, tokenizer: Any, messages: list[dict[str, str]], max_new_tokens: int = 96) -> str:
    import torch

    prompt = messages[:-1] if messages[-1]["role"] == "assistant" else messages
    enc = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    enc = {k: v.to(model.device) for k, v in enc.items()}
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0][enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()


def base_vs_tuned(model: Any, tokenizer: Any, messages: list[dict[str, str]]) -> dict[str, str]:
    """The peft model with its adapter switched off *is* the base model: no second load needed."""
    with model.disable_adapter():
        base = generate_answer(model, tokenizer, messages)
    tuned = generate_answer(model, tokenizer, messages)
    question = next(m["content"] for m in messages if m["role"] == "user")
    reference = messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""
    return {"question": question, "reference": reference, "base": base, "tuned": tuned}


def comparison_table(sample: dict[str, str]) -> Table:
    table = Table(title=f"Held-out question: {sample['question']}", show_lines=True, expand=True)
    for column in ("base model", "tuned model", "reference"):
        table.add_column(column, ratio=1)
    table.add_row(sample["base"], sample["tuned"], sample["reference"])
    return table
