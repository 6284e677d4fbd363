"""Chat templates for base models whose tokenizer has none: chatml, llama2, alpaca, plain.

Each ends every assistant turn with the EOS token (or ChatML's end-of-turn token), so that
token falls inside the trained span and the tuned model learns to stop by itself; base-model
tunes that never see EOS in the labels ramble on forever (a known failure of other tools).
Every template renders earlier turns identically when a turn is added, which `encode` needs
to find each assistant span.
"""

from __future__ import annotations

from typing import Any

from tuneforge.errors import UserError

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content']"
    " + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA2 = (
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{% set system_text = '<<SYS>>\n' + messages[0]['content'] + '\n<</SYS>>\n\n' %}{% set turns = messages[1:] %}"
    "{% else %}{% set system_text = '' %}{% set turns = messages %}{% endif %}"
    "{% for message in turns %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + (system_text if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}"
)
ALPACA = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n### Response:\n' }}"
    "{% else %}{{ message['content'] + eos_token + '\n\n' }}{% endif %}{% endfor %}"
)
PLAIN = (
    "{% for message in messages %}{% if message['role'] == 'assistant' %}{{ message['content'] + eos_token + '\n' }}"
    "{% else %}{{ message['content'] + '\n' }}{% endif %}{% endfor %}"
)
TEMPLATES = {"chatml": CHATML, "llama2": LLAMA2, "alpaca": ALPACA, "plain": PLAIN}
CHOICES = ("auto", *TEMPLATES)


def chat_template(tokenizer: Any, name: str | None = None) -> str:
    """'auto' (or None): the tokenizer's own template, else ChatML; a name picks that template."""
    if name in (None, "auto"):
        return tokenizer.chat_template or CHATML
    if name not in TEMPLATES:
        raise UserError(
            f"Unknown template '{name}' for data.template. Choose one of: {', '.join(CHOICES)}.", field="data.template"
        )
    return TEMPLATES[name]


def template_label(tokenizer: Any, name: str | None = None) -> str:
    """For reports: which template will really be used."""
    if name in (None, "auto"):
        return (
            "the tokenizer's chat template"
            if tokenizer.chat_template
            else "chatml (the tokenizer has no chat template)"
        )
    return name
