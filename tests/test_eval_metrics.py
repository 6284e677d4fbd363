"""Guards the evaluation's parts: metrics against hand-worked values, loss on answer tokens only, batched generation."""

from __future__ import annotations

import json
import math

import pytest

from tuneforge.errors import UserError
from tuneforge.evaluation.dataset import load_eval_set, to_examples
from tuneforge.evaluation.metrics import bleu, differences, exact_match, rouge, score_answers

REF = "the cat sat on the mat"


def test_rouge_matches_hand_counts():
    # "the cat sat" vs REF: P 3/3, R 3/6 -> F1 2/3; bigrams 2 of 2 vs 5 -> F1 4/7; LCS 3 -> 2/3.
    # Reversed REF: every unigram matches (F1 1), no bigram does (0), LCS is 3 of 6 -> 1/2.
    scores = rouge(["the cat sat", "mat the on sat cat the"], [REF, REF])
    assert scores["rouge1"] == pytest.approx((2 / 3 + 1) / 2)
    assert scores["rouge2"] == pytest.approx((4 / 7 + 0) / 2)
    assert scores["rougeL"] == pytest.approx((2 / 3 + 1 / 2) / 2)


def test_bleu_matches_hand_counts():
    # n-gram precisions 5/6, 3/5, 2/4, 1/3 and equal lengths (no brevity penalty): (1/12) ** (1/4).
    assert bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(100 * (1 / 12) ** 0.25, abs=0.01)
    assert bleu([REF], [REF]) == pytest.approx(100)
    assert bleu(["dog"], [REF]) == 0


def test_exact_match_ignores_case_and_spacing_only():
    predictions = ["The  cat sat on the mat", "the cat sat on the mat.", "a dog"]
    assert exact_match(predictions, [REF] * 3) == pytest.approx(1 / 3)


def test_score_answers_averages_length_and_stop_rate():
    scores = score_answers([REF, "dog", "cat"], [REF, REF, "cat"], lengths=[6, 1, 2], stopped=[True, False, True])
    assert scores["answer_tokens"] == pytest.approx(3.0)
    assert scores["stop_rate"] == pytest.approx(2 / 3)
    assert scores["exact_match"] == pytest.approx(2 / 3)
    assert differences({"rougeL": 0.25}, {"rougeL": 0.5, "bleu": 3.0}) == {"rougeL": 0.25}


def test_eval_set_reading(tmp_path):
    good = tmp_path / "good.jsonl"
    rows = [{"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]},
            {"messages": [{"role": "user", "content": "Q2"}]},  # no answer: skipped
            {"messages": [{"role": "assistant", "content": "plain text"}]},  # no question: skipped
            {"instruction": "Q3", "output": "A3"}]  # fmt: skip
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    examples = load_eval_set(good, limit=None)
    assert [(e.question, e.reference) for e in examples] == [("Q1", "A1"), ("Q3", "A3")]
    assert len(load_eval_set(good, limit=1)) == 1
    unanswered = tmp_path / "unanswered.jsonl"
    unanswered.write_text(json.dumps(rows[1]) + "\n")
    with pytest.raises(UserError, match="no answers"):
        load_eval_set(unanswered, limit=None)
    with pytest.raises(UserError, match="--limit is 0"):
        load_eval_set(good, limit=0)


def _conversations():
    return [
        [{"role": "user", "content": "Please tell me about Bursitis."},
         {"role": "assistant", "content": "Inflammation of a bursa."}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Please tell me about the heart."},
         {"role": "assistant", "content": "A muscular organ that pumps blood through the body."}],
    ]  # fmt: skip


def test_heldout_loss_scores_answer_tokens_only(tiny_model_dir):
    """Equal to transformers' own loss with the prompt masked; a loss over all tokens would differ."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.data.encode import IGNORE, encode_conversation
    from tuneforge.evaluation.heldout_loss import answer_loss

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    sums, counts, unmasked = [], [], []
    for messages in _conversations():
        row = encode_conversation(tokenizer, messages, 512)
        ids, labels = torch.tensor([row["input_ids"]]), torch.tensor([row["labels"]])
        with torch.no_grad():
            masked = model(input_ids=ids, labels=labels).loss.item()
            unmasked.append(model(input_ids=ids, labels=ids).loss.item())
        answer_tokens = sum(label != IGNORE for label in row["labels"])
        counts.append(answer_tokens)
        sums.append(masked * answer_tokens)
        single = answer_loss(model, tokenizer, [messages])
        assert single.tokens == answer_tokens < len(row["input_ids"]) - 1
        assert single.loss == pytest.approx(masked, abs=1e-5)
        assert abs(single.loss - unmasked[-1]) > 1e-3
    both = answer_loss(model, tokenizer, _conversations(), batch_size=2)  # padded batch: pads must not count
    assert both.tokens == sum(counts)
    assert both.loss == pytest.approx(sum(sums) / sum(counts), abs=1e-5)
    assert both.perplexity == pytest.approx(math.exp(both.loss))


def test_batched_generation_equals_one_at_a_time(tiny_results, tiny_model_dir):
    """Left padding must not change a greedy answer; lengths and stops must agree with the text."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.evaluation.generation import generate_answers

    tokenizer = AutoTokenizer.from_pretrained(tiny_results)
    tokenizer.padding_side = "right"  # as training pads; generation needs left padding and must put this back
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)  # adapter_config.json names only its folder name
    model = PeftModel.from_pretrained(base, tiny_results).eval()
    conversations = [
        json.loads(line)["messages"] for line in (tiny_results / "eval_set.jsonl").read_text().splitlines()[:6]
    ]
    prompts = [e.prompt for e in to_examples(conversations)]
    single = generate_answers(model, tokenizer, prompts, max_new_tokens=12, batch_size=1)
    batched = generate_answers(model, tokenizer, prompts, max_new_tokens=12, batch_size=4)
    assert [a.text for a in batched] == [a.text for a in single]
    assert [(a.tokens, a.stopped) for a in batched] == [(a.tokens, a.stopped) for a in single]
    assert all(a.tokens <= 12 and (a.stopped or a.tokens == 12) for a in batched)
    assert tokenizer.padding_side == "right", "generation must put the tokenizer's padding side back"


def test_answer_ends_at_the_first_end_of_turn_token(tiny_model_dir):
    from transformers import AutoTokenizer

    from tuneforge.evaluation.generation import _decode

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    words = tokenizer("Bursitis", add_special_tokens=False).input_ids
    end, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stopped = _decode(tokenizer, words + [end, pad, pad], [end])
    assert (stopped.text, stopped.tokens, stopped.stopped) == ("Bursitis", len(words), True)
    cut = _decode(tokenizer, words, [end])
    assert (cut.text, cut.tokens, cut.stopped) == ("Bursitis", len(words), False)
