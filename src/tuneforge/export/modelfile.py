"""The Ollama Modelfile next to a GGUF: FROM, the chat template in Ollama's Go syntax, stop tokens.

Ollama templates are Go templates, not Jinja, so a Jinja chat template can't be copied over.
Instead of parsing Jinja we render it on probe conversations and check the output: when it is
ChatML (what SmolLM2, Qwen and tuneforge's fallback template write), the Go template below
gives the same text, and a default system prompt the Jinja template adds on its own becomes
the Modelfile's SYSTEM line. Other templates get no TEMPLATE line: Ollama then picks one
from the GGUF's chat-template metadata itself.
"""

from __future__ import annotations

import re
from typing import Any

CHATML_GO_TEMPLATE = """{{- range .Messages }}<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ end }}<|im_start|>assistant
"""

_PROBE = [
    {"role": "system", "content": "SYS-1"},
    {"role": "user", "content": "USER-1"},
    {"role": "assistant", "content": "ASSISTANT-1"},
    {"role": "user", "content": "USER-2"},
]
_CHATML_PROBE = (
    "<|im_start|>system\nSYS-1<|im_end|>\n<|im_start|>user\nUSER-1<|im_end|>\n"
    "<|im_start|>assistant\nASSISTANT-1<|im_end|>\n<|im_start|>user\nUSER-2<|im_end|>\n<|im_start|>assistant\n"
)
_CHATML_ALONE = "<|im_start|>user\nUSER-1<|im_end|>\n<|im_start|>assistant\n"
_DEFAULT_SYSTEM = re.compile(
    r"^<\|im_start\|>system\n(.*)<\|im_end\|>\n<\|im_start\|>user\nUSER-1<\|im_end\|>\n<\|im_start\|>assistant\n$", re.S
)


def chatml_system(tokenizer: Any) -> tuple[bool, str | None]:
    """(is the chat template ChatML?, the system prompt it adds when a conversation has none)."""
    try:
        full = _render(tokenizer, _PROBE)
        alone = _render(tokenizer, _PROBE[1:2])
    except Exception:  # noqa: BLE001 - templates that refuse a system turn (any jinja error) are not ChatML anyway
        return False, None
    if full != _CHATML_PROBE:
        return False, None
    if alone == _CHATML_ALONE:
        return True, None
    match = _DEFAULT_SYSTEM.match(alone)
    return (True, match.group(1)) if match else (False, None)


def _render(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def stop_tokens(tokenizer: Any, chatml: bool) -> list[str]:
    """End-of-turn markers Ollama should stop at: ChatML's two markers and the tokenizer's eos."""
    stops = ["<|im_start|>", "<|im_end|>"] if chatml else []
    if tokenizer.eos_token and tokenizer.eos_token not in stops:
        stops.append(tokenizer.eos_token)
    return stops


def build_modelfile(gguf_name: str, tokenizer: Any, ollama_name: str) -> str:
    chatml, system = chatml_system(tokenizer)
    lines = [
        "# Ollama Modelfile written by tuneforge. Create the model from this folder with:",
        f"#   ollama create {ollama_name} -f Modelfile",
        f"FROM ./{gguf_name}",
    ]
    if chatml:
        lines.append(f'TEMPLATE """{CHATML_GO_TEMPLATE}"""')
    else:
        lines.append("# No TEMPLATE: the chat template is not ChatML, so Ollama reads it from the GGUF metadata.")
    if system and '"""' not in system:
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stop_tokens(tokenizer, chatml)]
    return "\n".join(lines) + "\n"
