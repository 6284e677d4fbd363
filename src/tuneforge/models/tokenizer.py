"""The one tokenizer fallback every command shares: a pad token, and a chat template when asked.

Many base tokenizers (Llama, SmolLM2's GGUF copy) have no pad token; batching needs one, and the
end-of-sequence token is the usual stand-in because its label is masked or it ends the answer.
A tokenizer without a chat template was trained with ChatML (data/templates.chat_template), so
chatting, serving and exporting must render prompts the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def fix_tokenizer(tokenizer: Any, with_chat_template: bool = False) -> Any:
    from tuneforge.data.templates import CHATML

    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if with_chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = CHATML
    return tokenizer


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """The end-of-turn ids generation stops at: the tokenizer's EOS plus any the model's generation config lists."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def load_tokenizer_from(path: str | Path, trust_remote_code: bool = False, with_chat_template: bool = False) -> Any:
    """A tokenizer from a folder or hub id (a results folder holds the one training used), fixed."""
    from transformers import AutoTokenizer

    from tuneforge.quiet import hide_load_progress

    hide_load_progress()
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    return fix_tokenizer(tokenizer, with_chat_template)
