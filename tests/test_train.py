"""Guards the main job on a tiny model: the loss falls, results are complete, the adapter reloads exactly."""

from __future__ import annotations

import json

import pytest
import torch

from tuneforge.data.encode import IGNORE, encode_conversation


def test_loss_falls_and_results_are_complete(tiny_results):
    metrics = json.loads((tiny_results / "metrics.json").read_text())
    history = metrics["loss_history"]
    assert metrics["steps"] == 12
    assert history[-1]["loss"] < history[0]["loss"]
    assert metrics["eval_loss_after"] < metrics["eval_loss_before"]
    assert metrics["tokens_per_s"] > 0 and metrics["peak_memory_mb"] > 0
    quick = metrics["quick_eval"]
    # 6: at most 10% of the 64 rows are held out
    assert quick["examples"] == 6 and set(quick["tuned"]) >= {"rougeL", "bleu", "stop_rate"}
    assert quick["diff"]["rougeL"] == pytest.approx(quick["tuned"]["rougeL"] - quick["base"]["rougeL"])
    assert "Before/after on 6 held-out questions" in (tiny_results / "README.md").read_text()
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "tuneforge.yaml",
                 "training_args.json", "metrics.json", "loss.png", "eval_set.jsonl", "README.md"):  # fmt: skip
        assert (tiny_results / name).stat().st_size > 0, name
    assert not list(tiny_results.rglob("*.bin")), "results must not hold pickled .bin files"
    assert sorted(p.name for p in (tiny_results / "checkpoints").glob("checkpoint-*")) == [
        "checkpoint-12",
        "checkpoint-6",
    ]
    log = next(tiny_results.glob("training_log_*.log")).read_text()
    for needle in ("hardware:", "train.batch_size = 4  (cli --batch-size)", "tokens per example", "step 12/12",
                   "checkpoint saved", "held-out loss: base", "question:"):  # fmt: skip
        assert needle in log, needle


def test_the_run_ends_with_a_question_from_the_users_held_out_data(tiny_results):
    """Not a fixed example: the suggested chat uses a question that was held out of training."""
    import shlex

    log = next(tiny_results.glob("training_log_*.log")).read_text()
    line = next(line for line in log.splitlines() if "Try it: tuneforge chat --adapter" in line)
    suggested = shlex.split(line.split("Try it: ", 1)[1])[-1]
    held_out = [json.loads(row) for row in (tiny_results / "eval_set.jsonl").read_text().splitlines()]
    questions = [m["content"] for row in held_out for m in row["messages"] if m["role"] == "user"]
    assert suggested == " ".join(questions[0].split()), (suggested, questions[0])


def test_adapter_reloads_into_the_same_logits(tiny_results, tiny_model_dir):
    """Plain peft, as the README shows: PeftModel.from_pretrained(base, results)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_results)
    ids = tokenizer("Please tell me about the heart.", return_tensors="pt").input_ids
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        base_logits = base(ids).logits
    tuned = PeftModel.from_pretrained(base, tiny_results).eval()
    with torch.no_grad():
        tuned_logits = tuned(ids).logits
        again = (
            PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tiny_results)
            .eval()(ids)
            .logits
        )
    assert not torch.allclose(base_logits, tuned_logits, atol=1e-4), "the adapter changed nothing"
    torch.testing.assert_close(tuned_logits, again, rtol=0, atol=1e-6)


def test_adapter_logits_match_the_trained_model(tiny_model_dir, tiny_dataset, tmp_path):
    """The adapter saved at the end gives the logits the trained model gave before saving."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tests.conftest import tiny_train_values, train_capturing_logits

    out = tmp_path / "results"
    _, captured = train_capturing_logits(tiny_train_values(tiny_model_dir, tiny_dataset, out, **{"train.max_steps": 3}))
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), out).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(captured["ids"]).logits, captured["logits"], rtol=0, atol=1e-5)


def test_labels_mask_the_prompt(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Please tell me about Bursitis."},
        {"role": "assistant", "content": "Inflammation of a bursa."},
        {"role": "user", "content": "And Gout?"},
        {"role": "assistant", "content": "A form of arthritis."},
    ]
    row = encode_conversation(tokenizer, messages, max_length=512)
    trained = tokenizer.decode([t for t in row["labels"] if t != IGNORE])
    assert trained == "Inflammation of a bursa.<|im_end|>\nA form of arthritis.<|im_end|>\n"
    prompt_part = tokenizer.decode([i for i, t in zip(row["input_ids"], row["labels"]) if t == IGNORE])
    assert "Please tell me about Bursitis." in prompt_part and "Be brief." in prompt_part
    assert "Inflammation" not in prompt_part


def test_results_are_never_overwritten_silently(tiny_results, tiny_model_dir, tiny_dataset):
    from tests.conftest import tiny_train_values
    from tuneforge.commands.train import run_train
    from tuneforge.errors import UserError

    before = sorted(p.name for p in tiny_results.iterdir())
    with pytest.raises(UserError, match="--overwrite"):
        run_train(tiny_train_values(tiny_model_dir, tiny_dataset, tiny_results))
    assert sorted(p.name for p in tiny_results.iterdir()) == before
