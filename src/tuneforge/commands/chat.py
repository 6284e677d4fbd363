"""`tuneforge chat`: ask the tuned model (or the base model) and watch the answer stream in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXIT_WORDS = {"/exit", "/quit"}


def run_chat(
    adapter: Path,
    prompt: str | None = None,
    use_base: bool = False,
    max_new_tokens: int = 200,
    checksums: bool = True,
    base_model: str | None = None,
) -> None:
    """base_model: --model, for a run copied from a machine whose base folder is not here."""
    from tuneforge.runs.folder import load_tuned, open_run

    model, tokenizer = load_tuned(open_run(adapter, base_model, checksums=checksums))
    if prompt is not None:
        answer(model, tokenizer, [{"role": "user", "content": prompt}], use_base, max_new_tokens)
        return
    interactive(model, tokenizer, use_base, max_new_tokens)


def interactive(model: Any, tokenizer: Any, use_base: bool, max_new_tokens: int) -> None:
    who = "base model" if use_base else "tuned model"
    print(f"Chatting with the {who}. /reset clears the history, /exit quits.")
    history: list[dict[str, str]] = []
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return
        if line in EXIT_WORDS:
            return
        if line == "/reset":
            history.clear()
            print("(history cleared)")
            continue
        if not line:
            continue
        history.append({"role": "user", "content": line})
        history.append({"role": "assistant", "content": answer(model, tokenizer, history, use_base, max_new_tokens)})


def answer(model: Any, tokenizer: Any, messages: list[dict[str, str]], use_base: bool, max_new_tokens: int) -> str:
    """Greedy answer, printed token by token (TextStreamer) and returned for the history."""
    import contextlib

    import torch
    from transformers import TextStreamer

    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    adapter_off = model.disable_adapter() if use_base else contextlib.nullcontext()
    with adapter_off, torch.no_grad():
        out = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            streamer=streamer,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0][enc["input_ids"].shape[1] :], skip_special_tokens=True).strip()
