"""Guards the bf16 copies of frozen weights: autocast's exact results, fp32 outside it, one copy per layer."""

from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneforge.recipe import frozen_bf16


def lora_model(folder):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    return get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))


def loss_and_grads(model, ids, autocast: bool):
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    return out.logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_copies_give_autocasts_results_and_fp32_outside_it(tiny_model_dir):
    ids = torch.randint(0, 200, (2, 24))
    plain, copied = lora_model(tiny_model_dir), lora_model(tiny_model_dir)
    added = frozen_bf16.keep_bf16_copies(copied)
    frozen = [m for n, m in copied.named_modules() if type(m) is torch.nn.Linear and "lora_" not in n]
    assert added == sum(m.weight.numel() * 2 for m in frozen) and all(hasattr(m, frozen_bf16.MARK) for m in frozen)
    assert all(not hasattr(m, frozen_bf16.MARK) for n, m in copied.named_modules() if "lora_" in n)
    for autocast in (True, False):
        logits, grads = loss_and_grads(plain, ids, autocast)
        their_logits, their_grads = loss_and_grads(copied, ids, autocast)
        assert torch.equal(their_logits, logits), f"autocast={autocast}"
        assert grads.keys() == their_grads.keys() and all(torch.equal(their_grads[k], g) for k, g in grads.items())
    assert logits.dtype == torch.float32  # the last pass ran without autocast: the fp32 weights


def test_a_copy_is_read_under_autocast_not_made(tiny_model_dir):
    """The point of the copies: no fp32 -> bf16 cast of a frozen weight inside a step."""
    model = lora_model(tiny_model_dir)
    frozen_bf16.keep_bf16_copies(model)
    assert frozen_bf16.keep_bf16_copies(model) == 0, "a trainer rebuilt after a step-down adds no second copy"
    head = model.get_base_model().lm_head
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.profiler.profile(record_shapes=True) as prof:
        head(torch.randn(3, head.in_features))
    casts = [e for e in prof.events() if e.name == "aten::_to_copy" and head.weight.numel() in _sizes(e)]
    assert casts == []


def _sizes(event) -> set[int]:
    return {int(torch.tensor(shape).prod()) for shape in event.input_shapes if shape}


def test_cpu_bf16_training_gets_the_copies(tiny_model_dir, tmp_path):
    from tuneforge.config import TuneforgeConfig
    from tuneforge.recipe.trainer_setup import build_trainer, training_arguments

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = [{"input_ids": [1, 2, 3, 4], "labels": [-100, -100, 3, 4]}] * 4
    for precision, wanted in (("bf16", True), ("fp32", False)):
        args = training_arguments(TuneforgeConfig(), "cpu", precision, tmp_path / precision)
        trainer = build_trainer(lora_model(tiny_model_dir), tokenizer, args, rows, [], [])
        assert hasattr(trainer.model.get_base_model().lm_head, frozen_bf16.MARK) is wanted, precision


def test_no_copies_when_they_would_crowd_the_memory(tiny_model_dir, monkeypatch):
    model = lora_model(tiny_model_dir)
    monkeypatch.setattr(frozen_bf16, "SHARE_OF_FREE_MEMORY", 0.0)
    assert frozen_bf16.keep_bf16_copies(model) == 0
    assert not any(hasattr(m, frozen_bf16.MARK) for m in model.modules())
