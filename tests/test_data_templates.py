"""Guards the loss mask: every template trains exactly the assistant turns plus the stop token, multi-turn included."""

from __future__ import annotations

import pytest

from tests.conftest import trained_pieces
from tuneforge.data.encode import IGNORE, encode_all, encode_conversation, render
from tuneforge.data.formats import to_conversation

CONVERSATION = [
    {"role": "system", "content": "You explain medical terms."},
    {"role": "user", "content": "Please tell me about Bursitis."},
    {"role": "assistant", "content": "Inflammation of a bursa."},
    {"role": "user", "content": "And the heart?"},
    {"role": "assistant", "content": "A muscle that pumps blood."},
]


@pytest.fixture(scope="module")
def base_tokenizer(tiny_model_dir):
    """The tiny tokenizer as a base model has it: no chat template, Llama-style <s> and </s>."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = None
    tokenizer.add_special_tokens({"bos_token": "<s>", "eos_token": "</s>"})
    return tokenizer


EXPECTED = {
    "chatml": ["Inflammation of a bursa.<|im_end|>\n", "A muscle that pumps blood.<|im_end|>\n"],
    "llama2": [" Inflammation of a bursa. </s>", " A muscle that pumps blood. </s>"],
    "alpaca": ["Inflammation of a bursa.</s>\n\n", "A muscle that pumps blood.</s>\n\n"],
    "plain": ["Inflammation of a bursa.</s>\n", "A muscle that pumps blood.</s>\n"],
}


@pytest.mark.parametrize("template", list(EXPECTED))
def test_each_template_trains_every_answer_and_its_stop_token_only(base_tokenizer, template):
    row = encode_conversation(base_tokenizer, CONVERSATION, 512, template)
    assert trained_pieces(base_tokenizer, row) == EXPECTED[template]
    stop = "<|im_end|>" if template == "chatml" else "</s>"
    trained_ids = [t for t, label in zip(row["input_ids"], row["labels"]) if label != IGNORE]
    assert base_tokenizer.convert_tokens_to_ids(stop) in trained_ids, "the model must learn to stop"
    masked = base_tokenizer.decode([t for t, label in zip(row["input_ids"], row["labels"]) if label == IGNORE])
    assert "Bursitis" in masked and "medical terms" in masked and "Inflammation" not in masked


def test_llama2_template_renders_the_guides_format_and_parses_back(base_tokenizer):
    text = render(base_tokenizer, CONVERSATION, False, "llama2")
    assert text == ("<s>[INST] <<SYS>>\nYou explain medical terms.\n<</SYS>>\n\nPlease tell me about Bursitis. [/INST]"
                    " Inflammation of a bursa. </s><s>[INST] And the heart? [/INST] A muscle that pumps blood. </s>")  # fmt: skip
    assert to_conversation({"text": text}, "llama2-text", "x.jsonl:1") == CONVERSATION


def test_auto_uses_the_tokenizers_own_template_else_chatml(tiny_model_dir, base_tokenizer):
    from transformers import AutoTokenizer

    chat_tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat_tokenizer.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '|' }}{% endfor %}"
    assert (
        render(chat_tokenizer, CONVERSATION[1:3], False)
        == "user: Please tell me about Bursitis.|assistant: Inflammation of a bursa.|"
    )
    assert render(base_tokenizer, CONVERSATION[1:3], False) == render(
        base_tokenizer, CONVERSATION[1:3], False, "chatml"
    )


def test_plain_text_rows_train_every_token_and_eos(base_tokenizer):
    row = encode_conversation(base_tokenizer, [{"role": "text", "content": "Bursitis is an inflammation."}], 512)
    assert IGNORE not in row["labels"]
    assert base_tokenizer.decode(row["input_ids"]) == "Bursitis is an inflammation.</s>"


def test_truncation_is_counted_and_drop_long_drops(base_tokenizer):
    short = CONVERSATION[1:3]
    long = [CONVERSATION[1], {"role": "assistant", "content": "word " * 200}]
    conversations = [short, long, short, long, long]
    rows, stats = encode_all(base_tokenizer, conversations, 64)
    assert (len(rows), stats.truncated, stats.dropped_long) == (5, 3, 0)
    assert all(len(r["input_ids"]) <= 64 for r in rows)
    assert stats.length_summary(64) == "3 examples (60.0%) truncated to 64 tokens"
    rows, stats = encode_all(base_tokenizer, conversations, 64, drop_long=True)
    assert (len(rows), stats.truncated, stats.dropped_long) == (2, 0, 3)
    assert stats.length_summary(64) == "3 examples (60.0%) over 64 tokens dropped (drop_long)"
