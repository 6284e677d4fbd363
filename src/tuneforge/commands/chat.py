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
    tools_file: Path | None = None,
) -> None:
    """base_model: --model, for a run copied from a machine whose base folder is not here; tools_file: --tools."""
    from tuneforge.runs.folder import load_tuned, open_run

    tools = read_tools(tools_file) if tools_file else None  # a bad file fails before the model loads
    model, tokenizer = load_tuned(open_run(adapter, base_model, checksums=checksums))
    if prompt is not None:
        answer(model, tokenizer, [{"role": "user", "content": prompt}], use_base, max_new_tokens, tools)
        return
    interactive(model, tokenizer, use_base, max_new_tokens, tools)


def read_tools(path: Path) -> list[dict[str, Any]]:
    """--tools FILE: a JSON list of tools in the OpenAI shape (or {"tools": [...]})."""
    import json

    from tuneforge.errors import UserError

    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: --tools needs a readable JSON file of tools ({exc}).", field="--tools") from None
    tools = value.get("tools") if isinstance(value, dict) else value
    if not isinstance(tools, list) or not all(isinstance(t, dict) and ("function" in t or "name" in t) for t in tools):
        raise UserError(f"{path}: --tools expects a JSON list of tools such as [{{\"type\": \"function\", "
                        "\"function\": {\"name\": ..., \"parameters\": {...}}}].", field="--tools")  # fmt: skip
    return tools


def interactive(
    model: Any, tokenizer: Any, use_base: bool, max_new_tokens: int, tools: list[Any] | None = None
) -> None:
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
        history.append(
            {"role": "assistant", "content": answer(model, tokenizer, history, use_base, max_new_tokens, tools)}
        )


def answer(model: Any, tokenizer: Any, messages: list[dict[str, str]], use_base: bool, max_new_tokens: int,
           tools: list[Any] | None = None) -> str:  # fmt: skip
    """Greedy answer, printed token by token (TextStreamer) and returned for the history.

    With tools, the prompt is rendered as training rendered it, and the tool calls the model
    makes are printed afterwards in the OpenAI shape, as `serve` returns them.
    """
    import contextlib

    import torch
    from transformers import TextStreamer

    if tools:
        from tuneforge.data.encode import render

        text = render(tokenizer, messages, True, None, tools)
        enc = tokenizer(text, add_special_tokens=False, return_tensors="pt")
    else:
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
    reply = str(tokenizer.decode(out[0][enc["input_ids"].shape[1] :], skip_special_tokens=True)).strip()
    if tools:
        import json

        from tuneforge.serving.tool_calls import split_tool_calls

        calls = split_tool_calls(reply)[1]
        if calls:
            print("tool_calls: " + json.dumps(calls, ensure_ascii=False))
    return reply
