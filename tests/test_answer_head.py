"""Guards the answer-only LM head: TRL's loss, metrics and gradients, from the answer positions alone."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling
from trl.trainer.utils import add_fused_lm_head

from tuneforge.data.encode import encode_all
from tuneforge.data.hpo import hpo_obo_path, read_terms, term_to_messages
from tuneforge.recipe import answer_head


def lora_model(folder, head: str):
    """The tiny model with LoRA, the way SFTTrainer sets it up: TRL's fused head, then ours when asked."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    for param in model.parameters():  # larger weights than the fixture's, so the logits are far from uniform
        param.data.normal_(0, 0.3)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "is_top1"))  # what SFTTrainer.__init__ does
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    if head == "answers":
        assert answer_head.score_answers_only(model)
    return model


def packed_batch(folder, padding_free: bool = True) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    rows, _ = encode_all(tokenizer, [term_to_messages(t) for t in read_terms(hpo_obo_path())[20:26]], 96)
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, padding_free=padding_free)
    out = collator([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    return {k: v for k, v in out.items() if k in ("input_ids", "labels", "attention_mask", "position_ids")}


def fused_pass(model, batch: dict, **extra):
    out = model(**copy.deepcopy(batch), use_cache=False, fused_lm_head=True, **extra)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("padding_free", [True, False])
def test_same_loss_metrics_and_gradients_as_trls_head(tiny_model_dir, padding_free):
    batch = packed_batch(tiny_model_dir, padding_free)
    answers = int((batch["labels"][:, 1:] != -100).sum())
    assert 0 < answers < batch["labels"].numel() - 40, "the prompts are not scored"
    with torch.no_grad():  # every other label becomes the model's own top token, so top-1 has hits to compare
        guess = lora_model(tiny_model_dir, "trl")(**batch, use_cache=False).logits.argmax(-1)
    where = (batch["labels"][:, 1:] != -100).nonzero()[::2]
    batch["labels"][where[:, 0], where[:, 1] + 1] = guess[where[:, 0], where[:, 1]]
    trl_out, trl_grads = fused_pass(lora_model(tiny_model_dir, "trl"), batch)
    ours, our_grads = fused_pass(lora_model(tiny_model_dir, "answers"), batch)
    torch.testing.assert_close(ours.loss, trl_out.loss, rtol=1e-5, atol=1e-5)
    for field in ("log_probs", "entropy"):
        torch.testing.assert_close(getattr(ours, field), getattr(trl_out, field), rtol=1e-4, atol=1e-4)
    assert torch.equal(ours.label_mask, trl_out.label_mask)
    assert torch.equal(ours.is_top1, trl_out.is_top1) and int(ours.is_top1.sum()) >= len(where)
    assert set(our_grads) == set(trl_grads) and any(".lora_A." in n for n in our_grads)
    for name, grad in trl_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-4, atol=1e-5)
    with torch.no_grad():  # num_items_in_batch (gradient accumulation) divides the summed loss, as in TRL
        count = torch.tensor(answers * 3)
        trl_share = lora_model(tiny_model_dir, "trl")(**batch, fused_lm_head=True, num_items_in_batch=count).loss
        our_share = lora_model(tiny_model_dir, "answers")(**batch, fused_lm_head=True, num_items_in_batch=count).loss
    torch.testing.assert_close(our_share, trl_share, rtol=1e-5, atol=1e-5)


def test_only_the_answer_positions_reach_the_head(tiny_model_dir, monkeypatch):
    batch = packed_batch(tiny_model_dir)
    model = lora_model(tiny_model_dir, "answers")
    head = model.get_base_model().lm_head
    rows = []
    head.register_forward_hook(lambda module, args, out: rows.append(args[0].shape[0]))
    with torch.no_grad():
        model(**batch, use_cache=False, fused_lm_head=True)
    answers = int((batch["labels"][:, 1:] != -100).sum())
    bucket = answer_head.BUCKET
    assert rows == [min(-(-answers // bucket) * bucket, batch["labels"].numel())], "the answers, rounded up to a bucket"
    assert rows[0] < batch["labels"].numel(), "fewer than every position"
    rows.clear()  # over the cap: TRL's chunked head, which projects every position of the row
    monkeypatch.setattr(answer_head, "MAX_LOGITS", 1)
    with torch.no_grad():
        out = model(**batch, use_cache=False, fused_lm_head=True)
    assert rows == [] and out.log_probs.shape == batch["labels"][:, 1:].shape
    with torch.no_grad():  # without fused_lm_head: the model's own forward and full logits, as generate() needs
        logits = model(input_ids=batch["input_ids"][:, :8]).logits
    assert logits.shape[:2] == (1, 8)


def test_the_sft_trainer_uses_it(tiny_model_dir, tmp_path, monkeypatch):
    """Wired in build_trainer: the held-out loss goes through the answer-only head."""
    from tuneforge.config import TuneforgeConfig
    from tuneforge.recipe.trainer_setup import build_trainer, training_arguments

    calls = []
    real = answer_head._answer_logprobs
    monkeypatch.setattr(answer_head, "_answer_logprobs", lambda *a: calls.append(1) or real(*a))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows, _ = encode_all(tokenizer, [term_to_messages(t) for t in read_terms(hpo_obo_path())[:8]], 96)
    args = training_arguments(TuneforgeConfig(), "cpu", "fp32", tmp_path / "checkpoints")
    trainer = build_trainer(lora_model(tiny_model_dir, "trl"), tokenizer, args, rows, rows, [])
    assert trainer.evaluate()["eval_loss"] > 0 and calls


def preference_trainer(folder, tmp_path, method: str, head: str):
    """TRL's DPO or KTO trainer on a tiny LoRA model, with our head in front of TRL's when asked."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    from tuneforge.data.hpo_pairs import load_medical_preferences
    from tuneforge.recipe.trainer_setup import lighter_steps

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder)
    for param in model.parameters():
        param.data.normal_(0, 0.3)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    pairs = load_medical_preferences()[0][:8]
    common = {"output_dir": str(tmp_path / method / head), "per_device_train_batch_size": 4, "report_to": [],
              "use_cpu": True, "max_length": 96}  # fmt: skip
    if method == "dpo":
        rows = [{"prompt": p["prompt"][0]["content"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
        trainer = DPOTrainer(model=model, args=DPOConfig(**common), train_dataset=Dataset.from_list(rows),
                             processing_class=AutoTokenizer.from_pretrained(folder))  # fmt: skip
    else:
        rows = [{"prompt": p["prompt"][0]["content"], "completion": p[side], "label": side == "chosen"}
                for p in pairs for side in ("chosen", "rejected")]  # fmt: skip
        trainer = KTOTrainer(model=model, args=KTOConfig(**common), train_dataset=Dataset.from_list(rows),
                             processing_class=AutoTokenizer.from_pretrained(folder))  # fmt: skip
    return lighter_steps(trainer, mean_logits=True) if head == "answers" else trainer


@pytest.mark.parametrize("method", ["dpo", "kto"])
def test_preference_trainers_get_the_same_loss_and_metrics(tiny_model_dir, tmp_path, monkeypatch, method):
    """DPO's and KTO's loss, gradients and logged metrics through the answer head equal TRL's own."""
    calls = []
    real = answer_head._answer_logprobs
    monkeypatch.setattr(answer_head, "_answer_logprobs", lambda *a: calls.append(1) or real(*a))
    results = {}
    for head in ("trl", "answers"):
        trainer = preference_trainer(tiny_model_dir, tmp_path, method, head)
        batch = next(iter(trainer.get_train_dataloader()))
        trainer.model.train()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
        metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
        results[head] = (loss.detach(), grads, metrics)
        if head == "trl":
            assert not calls, "TRL's own head for the comparison"
    assert len(calls) >= 2, "the policy and the reference (adapter disabled) both went through the answer head"
    (trl_loss, trl_grads, trl_metrics), (our_loss, our_grads, our_metrics) = results["trl"], results["answers"]
    torch.testing.assert_close(our_loss, trl_loss, rtol=1e-4, atol=1e-5)
    assert set(our_grads) == set(trl_grads) and trl_grads
    for name, grad in trl_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-3, atol=1e-5)
    assert set(our_metrics) == set(trl_metrics) and any(k.startswith("logits/") for k in trl_metrics)
    for key, value in trl_metrics.items():
        assert our_metrics[key] == pytest.approx(value, rel=1e-3, abs=1e-6), key


def test_held_out_pairs_score_the_same_from_the_answer_positions(tiny_model_dir, monkeypatch):
    """evaluation/preference.py projects only the answer positions; the figures equal the full logits'."""
    from tuneforge.data.hpo_pairs import load_medical_preferences
    from tuneforge.evaluation import preference

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = preference.encode_pairs(tokenizer, load_medical_preferences()[0][:6], 96, None)
    model = lora_model(tiny_model_dir, "plain")
    rows_seen = []
    model.get_base_model().lm_head.register_forward_hook(lambda m, a, out: rows_seen.append(a[0].shape))
    ours = preference.score_pairs(model, rows, batch_size=3)
    answers = sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    assert sum(shape[0] for shape in rows_seen) == answers and all(len(s) == 2 for s in rows_seen)
    monkeypatch.setattr(preference, "takes_position_mask", lambda model: False)
    full = preference.score_pairs(model, rows, batch_size=3)
    assert 0 < ours["accuracy"] < 1 or ours["margin"] != 0
    for key in ("accuracy", "margin", "loss", "pairs"):
        assert ours[key] == pytest.approx(full[key], rel=1e-5, abs=1e-5), key


@pytest.mark.parametrize("multiple", [64, 1])
def test_preference_batches_are_padded_like_sfts(tiny_model_dir, tmp_path, multiple):
    """DPO's pair batches round their length up to train.pad_to_multiple_of (1: as long as the longest pair)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from tuneforge.config import TuneforgeConfig
    from tuneforge.data.hpo_pairs import load_medical_preferences
    from tuneforge.recipe.methods.preference import padded

    cfg = TuneforgeConfig.model_validate({"train": {"pad_to_multiple_of": multiple}})
    pairs = load_medical_preferences()[0][:8]
    rows = [{"prompt": p["prompt"][0]["content"], "chosen": p["chosen"], "rejected": p["rejected"]} for p in pairs]
    args = DPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, report_to=[], use_cpu=True, **padded(cfg))
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                         train_dataset=Dataset.from_list(rows), processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))  # fmt: skip
    widths = [batch["input_ids"].shape[1] for batch in trainer.get_train_dataloader()]
    if multiple == 64:
        assert all(w % 64 == 0 for w in widths), widths
    else:
        assert any(w % 64 for w in widths), widths
