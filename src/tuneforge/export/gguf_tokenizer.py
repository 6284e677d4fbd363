"""The tokenizer as GGUF metadata: tokens, token types, merges, special ids, chat template.

A GGUF file carries no tokenizer.json. llama.cpp (and transformers' `gguf_file=` loader)
rebuild the tokenizer from llama.cpp's keys: `tokenizer.ggml.model` (the algorithm),
`tokenizer.ggml.pre` (how text is split before BPE), the token list with a type per token,
the merges and the special token ids. Byte-level BPE (GPT-2 style, what SmolLM2 uses) is
covered; other tokenizers get a "not supported yet" message instead of a file that would
tokenize differently.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

# The split regex of llama.cpp's "llama-bpe" pre-tokenizer (Llama 3), as tokenizer.json spells it.
_LLAMA3_SPLIT = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}"
    "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


def pre_tokenizer_name(tokenizer_json: Path) -> str:
    """llama.cpp's name for how this tokenizer splits text, or a UserError when there is none yet.

    llama.cpp's own converter fingerprints the token ids of a probe text; reading the
    pre-tokenizer's structure gives the same answer for the layouts below without needing
    its hash table.
    """
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    model, decoder = data.get("model") or {}, data.get("decoder") or {}
    if model.get("type") != "BPE" or model.get("byte_fallback") or decoder.get("type") != "ByteLevel":
        raise _unsupported(f"a {model.get('type')} tokenizer that is not byte-level BPE (sentencepiece-style)")
    if data.get("normalizer") is not None:
        raise _unsupported(f"a tokenizer with a {data['normalizer'].get('type')} normalizer")
    name = _match_pre_tokenizer(data.get("pre_tokenizer") or {})
    if name is None:
        raise _unsupported(f"the pre-tokenizer {json.dumps(data.get('pre_tokenizer'))[:200]}")
    return name


def _match_pre_tokenizer(pre: dict[str, Any]) -> str | None:
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [step.get("type") for step in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"  # the GPT-2 split regex, then bytes
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # every digit alone, then the GPT-2 regex (SmolLM's original tokenizer)
    if kinds == ["Split", "ByteLevel"] and (steps[0].get("pattern") or {}).get("Regex") == _LLAMA3_SPLIT:
        return "llama-bpe"
    return None


def _unsupported(what: str) -> UserError:
    return UserError(
        f"GGUF export is not supported yet: {what}. tuneforge writes GGUF for byte-level BPE "
        "tokenizers (SmolLM2, Llama 3 style). Export with --format hf and convert that folder with "
        "llama.cpp's convert_hf_to_gguf.py instead."
    )


def add_tokenizer(writer: Any, tokenizer: Any, tokenizer_dir: Path, n_vocab: int, pre: str) -> None:
    """Write the tokenizer keys; merges and special ids come from gguf's own SpecialVocab reader."""
    import gguf

    tokens, types = vocab_tokens(tokenizer, n_vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(tokenizer_dir, load_merges=True, n_vocab=n_vocab)
    ids = tokenizer("a")["input_ids"]
    # Written always: llama.cpp's default for a missing flag differs between tokenizer kinds.
    special.add_special_token["bos"] = tokenizer.bos_token_id is not None and ids[0] == tokenizer.bos_token_id
    special.add_special_token["eos"] = tokenizer.eos_token_id is not None and ids[-1] == tokenizer.eos_token_id
    special.chat_template = tokenizer.chat_template  # the one training used, even if no file holds it
    special.add_to_gguf(writer, quiet=True)


def vocab_tokens(tokenizer: Any, n_vocab: int) -> tuple[list[str], list[int]]:
    """Every id's token text and llama.cpp token type, as llama.cpp's convert_hf_to_gguf.py lists them.

    Written by hand because gguf's `BpeVocab` marks special tokens that sit in the base
    vocabulary (SmolLM2's <|im_start|>) as NORMAL; llama.cpp then splits them in prompts and
    never stops at <|im_end|>. Ids past the tokenizer (embedding rows padded to a round
    number) become UNUSED placeholders, as llama.cpp's converter writes them.
    """
    import gguf

    if len(tokenizer) > n_vocab:
        raise _unsupported(f"a tokenizer with {len(tokenizer)} tokens for {n_vocab} embedding rows")
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(n_vocab):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(int(gguf.TokenType.UNUSED))
        elif index in added:
            tokens.append(by_id[index])
            types.append(int(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED))
        else:
            tokens.append(by_id[index])
            types.append(int(gguf.TokenType.NORMAL))
    return tokens, types
