"""Guards packing (padding-free batches): examples share one row, but attention never crosses them."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from tuneforge.data.encode import encode_all
from tuneforge.data.hpo import hpo_obo_path, read_terms, term_to_messages

MODEL_INPUTS = ("input_ids", "labels", "attention_mask", "position_ids")


def batch(tokenizer, rows, padding_free: bool) -> dict:
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)
    out = collator([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    return {k: v for k, v in out.items() if k in MODEL_INPUTS}


def sharp_model(folder):
    """The tiny model with larger weights: its attention is sharp enough that a leak would show."""
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
    torch.manual_seed(0)
    for param in model.parameters():
        param.data.normal_(0, 0.3)
    return model


def test_packed_row_gives_each_example_its_own_logits(tiny_model_dir):
    """use_cache=False as in training: the packed-sequence mask is only built without a KV cache."""
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = sharp_model(tiny_model_dir)
    rows, _ = encode_all(tokenizer, [term_to_messages(t) for t in read_terms(hpo_obo_path())[:4]], 96)
    packed = batch(tokenizer, rows, padding_free=True)
    assert packed["input_ids"].shape[0] == 1, "one row, no padding"
    starts = (packed["position_ids"][0] == 0).nonzero().flatten().tolist()
    assert starts == [0] + [sum(len(r["input_ids"]) for r in rows[:i]) for i in range(1, 4)]
    with torch.no_grad():
        packed_logits = model(
            input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False
        ).logits[0]
        for row, start in zip(rows, starts):
            alone = model(input_ids=torch.tensor([row["input_ids"]])).logits[0]
            torch.testing.assert_close(
                packed_logits[start : start + len(row["input_ids"])], alone, rtol=1e-4, atol=1e-4
            )


def test_packed_loss_equals_padded_loss(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = sharp_model(tiny_model_dir)
    rows, _ = encode_all(tokenizer, [term_to_messages(t) for t in read_terms(hpo_obo_path())[10:16]], 96)
    with torch.no_grad():
        padded = model(**batch(tokenizer, rows, padding_free=False), use_cache=False).loss
        packed = model(**batch(tokenizer, rows, padding_free=True), use_cache=False).loss
    torch.testing.assert_close(packed, padded, rtol=1e-4, atol=1e-4)
