"""Held-out preference figures: how often the model prefers the chosen answer, and by how much.

For each pair we sum the log-probability of each answer's tokens given the prompt:
- preference accuracy: the share of pairs where chosen gets more probability than rejected;
- mean margin: the mean of log p(chosen) - log p(rejected), in nats. DPO's reward margin is
  beta times the change of this figure from the reference model, so before/after shows it;
- chosen loss: the mean loss per token of the chosen answers, the SFT loss on those answers,
  which says whether preference tuning made the model forget what it knew.
- two figures that say how much of the accuracy is length: a sum over more tokens is lower, so
  the shorter answer tends to win. The accuracy on the pairs whose chosen answer is the longer
  one, and the accuracy per token (mean log-probability per answer token compared). On 128
  held-out medical-preferences pairs the default SFT adapter ranks 26% of the 57 whose chosen
  answer is longer right and 92% of the others (62.5% in all; 70.3% per token).
One forward pass per side gives them all. The pairs come tokenized once (`encode_pairs`).
"""

from __future__ import annotations

from typing import Any

from tuneforge.models.positions import takes_position_mask

PAIRS_SCORED = 128  # held-out pairs scored before and after: ±4 points of accuracy, ~30 s each on 2 CPU cores


def encode_pairs(tokenizer: Any, pairs: list[dict[str, Any]], max_length: int, template: str | None) -> list[dict]:
    """{'prompt_ids', 'chosen_ids', 'rejected_ids'} per pair; the prompt ends where generation would start."""
    from tuneforge.data.encode import render

    rows = []
    for pair in pairs:
        if "chosen" not in pair:
            continue  # unpaired KTO rows have nothing to compare
        prompt = render(tokenizer, pair["prompt"], True, template)
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"][: max_length // 2]
        row = {"prompt_ids": ids}
        for side in ("chosen", "rejected"):
            full = render(tokenizer, [*pair["prompt"], {"role": "assistant", "content": pair[side]}], False, template)
            answer = full[len(prompt) :] if full.startswith(prompt) else pair[side]
            row[f"{side}_ids"] = tokenizer(answer, add_special_tokens=False)["input_ids"][: max_length - len(ids)]
        rows.append(row)
    return rows


def score_pairs(model: Any, rows: list[dict], batch_size: int = 8, bf16: bool = False) -> dict[str, Any] | None:
    """{'accuracy', 'margin', 'loss', 'pairs', and the length figures} of the model as it is now; None without pairs."""
    import torch

    if not rows:
        return None
    rows = rows[:PAIRS_SCORED]
    was_training, device = model.training, next(model.parameters()).device
    model.eval()
    chosen_sum: list[float] = []
    rejected_sum: list[float] = []
    lengths: list[tuple[int, int]] = []  # (chosen, rejected) answer tokens of each pair
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            for start in range(0, len(rows), batch_size):
                batch = rows[start : start + batch_size]
                sums, counts = _answer_logps(model, batch, device)
                chosen_sum += sums[: len(batch)].tolist()
                rejected_sum += sums[len(batch) :].tolist()
                lengths += zip(counts[: len(batch)].tolist(), counts[len(batch) :].tolist(), strict=True)
    finally:
        model.train(was_training)
    margins = [c - r for c, r in zip(chosen_sum, rejected_sum)]
    per_token = [c / max(n, 1) > r / max(m, 1) for c, r, (n, m) in zip(chosen_sum, rejected_sum, lengths)]
    longer = [margin > 0 for margin, (n, m) in zip(margins, lengths) if n > m]
    return {
        "pairs": len(rows),
        "accuracy": sum(m > 0 for m in margins) / len(margins),
        "margin": sum(margins) / len(margins),
        "loss": -sum(chosen_sum) / max(sum(n for n, _ in lengths), 1),
        "accuracy_per_token": sum(per_token) / len(per_token),
        "pairs_chosen_longer": len(longer),
        "accuracy_chosen_longer": sum(longer) / len(longer) if longer else None,
    }


def length_note(figures: dict[str, Any]) -> str:
    """The length figures in words, for the log: how much of the accuracy the shorter answer's advantage explains."""
    longer = figures.get("accuracy_chosen_longer")
    where = (f"{100 * longer:.1f}% where the chosen answer is the longer ({figures['pairs_chosen_longer']} pairs)"
             if longer is not None else "no pair's chosen answer is the longer")  # fmt: skip
    return f"accuracy per token {100 * figures['accuracy_per_token']:.1f}%, {where}"


def _answer_logps(model: Any, batch: list[dict], device: Any) -> tuple[Any, Any]:
    """Summed log-probabilities and token counts of each answer: the chosen sides first, then the rejected."""
    import torch

    seqs = [r["prompt_ids"] + r[f"{side}_ids"] for side in ("chosen", "rejected") for r in batch]
    starts = [len(r["prompt_ids"]) for _ in ("chosen", "rejected") for r in batch]
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    answer = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, (seq, start) in enumerate(zip(seqs, starts)):
        ids[i, : len(seq)], mask[i, : len(seq)], answer[i, start : len(seq)] = torch.tensor(seq), 1, True
    ids, mask, scored = ids.to(device), mask.to(device), answer[:, 1:].to(device)
    if takes_position_mask(model):
        # only the positions before an answer token reach the vocabulary projection: on a CPU the
        # prompt's and the padding's logits cost as much as the rest of the forward
        keep = torch.zeros_like(answer, device=device)
        keep[:, :-1] = scored
        logits = model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits.float()  # [answer tokens, V]
        gold = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:][scored].unsqueeze(-1)).squeeze(-1)
        logps = torch.zeros(scored.shape, device=device).masked_scatter(scored, gold)
    else:
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (logps * scored).sum(dim=1).cpu(), scored.sum(dim=1).cpu()
