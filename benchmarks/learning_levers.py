"""Learning levers that no flag of `tuneforge train` sets (issues 16 and 17): measured, not shipped.

Runs `tuneforge train` in this process with one change patched in, so `benchmarks/learning.py
--lever NAME` can train and score it like the default (docs/PERFORMANCE.md and docs/PREFERENCES.md
have the figures; none of the levers won, which is why they live here and not in the recipe):

- `synonyms`: HPO's EXACT synonyms as more phrasings of a training term's question. After the
  held-out terms are cut off (so none of theirs leaks in), each training term that has synonyms gets
  one more row, "Please tell me about <a synonym>.", with the term's own answer.
- `eos-weight:W`: the loss of each end-of-turn target scaled by W (0.2: the model learns a fifth
  of the pull towards stopping). Asks whether longer answers alone raise ROUGE-L.
- `dpo-sft-weight:W`: `--method dpo`'s SFT term weighted W instead of 5 (0: plain DPO), for
  `benchmarks/preference_fit.py`'s question: how far DPO fits the very pairs it trained on.
- `dpo-reference-free`: `--method dpo` against a reference of log-probability 0 (CPO's loss).

    python benchmarks/learning_levers.py synonyms train --output-dir /tmp/syn
    python benchmarks/learning_levers.py dpo-sft-weight:0 train --method dpo --adapter results-sft
    python benchmarks/learning.py --out /tmp/eos --lever eos-weight:0.2
"""

from __future__ import annotations

import random
import re
import sys
from typing import Any

SYNONYM = re.compile(r'synonym: "(.*?)" EXACT')


def exact_synonyms() -> dict[str, list[str]]:
    """Term name -> its EXACT synonyms, from the hp.obo the preset reads."""
    from tuneforge.data.hpo import hpo_obo_path

    found: dict[str, list[str]] = {}
    name = None
    for line in hpo_obo_path().read_text(encoding="utf-8").splitlines():
        if line.startswith("[Term]"):
            name = None
        elif line.startswith("name: "):
            name = line[6:].strip()
        elif name and (match := SYNONYM.match(line)):
            found.setdefault(name, []).append(match.group(1))
    return found


def synonym_rows(train: list[Any], synonyms: dict[str, list[str]], seed: int = 0) -> list[Any]:
    """One more row per training question whose term has a synonym: the synonym asked, the same answer."""
    from tuneforge.data.hpo import QUESTION

    prefix, suffix = QUESTION.split("{name}")
    rng = random.Random(seed)
    rows = []
    for messages in train:
        question = messages[0]["content"]
        if not (question.startswith(prefix) and question.endswith(suffix)):
            continue
        names = synonyms.get(question[len(prefix) : len(question) - len(suffix)])
        if names:
            rows.append([{"role": "user", "content": QUESTION.format(name=rng.choice(names))}, *messages[1:]])
    return rows


def add_synonyms() -> None:
    from tuneforge.data import split

    original, synonyms = split.split_heldout, exact_synonyms()

    def patched(conversations: Any, *args: Any, **kwargs: Any) -> tuple[list[Any], list[Any]]:
        train, held = original(conversations, *args, **kwargs)
        extra = synonym_rows(train, synonyms)
        print(f"learning_levers: {len(extra)} synonym rows added to {len(train)}", file=sys.stderr)
        return train + extra, held

    split.split_heldout = patched  # train.py imports it at call time, so it gets this one


def weighted_cross_entropy(stop_id: int, weight: float) -> Any:
    """F.cross_entropy, with the per-token losses (reduction='none') of `stop_id` targets times `weight`."""
    import torch
    import torch.nn.functional as F

    original = F.cross_entropy

    def cross_entropy(logits: Any, target: Any, *args: Any, reduction: str = "mean", **kwargs: Any) -> Any:
        loss = original(logits, target, *args, reduction=reduction, **kwargs)
        if reduction == "none" and target.dim() == 1 and logits.dim() == 2:  # the answer head's per-token losses
            loss = torch.where(target == stop_id, loss * weight, loss)
        return loss

    return cross_entropy


def weight_end_of_turn(weight: float) -> None:
    import torch.nn.functional as F

    stop_id = 2  # SmolLM2's <|im_end|>, the embedded default's end of turn
    F.cross_entropy = weighted_cross_entropy(stop_id, weight)  # recipe/answer_head.py calls F.cross_entropy


def reference_free_dpo() -> None:
    """DPO's loss against a reference of log-probability 0: the margin it pushes is the absolute one.

    That is CPO's loss (Xu et al. 2024; TRL's trl.experimental.cpo) with the SFT term DPO already
    has: pairs are pulled by how far the policy itself ranks them wrong, which is what held-out
    preference accuracy counts, instead of by their change from the starting model. Done by
    handing TRL "precomputed" reference scores of 0 for every pair.
    """
    import trl

    from tuneforge.recipe.methods import dpo

    config = trl.DPOConfig

    def zero_reference(**kwargs: Any) -> Any:
        return config(**{**kwargs, "precompute_ref_log_probs": True})

    def scores(self: Any, dataset: Any, name: str, batch_size: int) -> Any:
        zeros = [0.0] * len(dataset)
        return dataset.add_column("ref_chosen_logps", zeros).add_column("ref_rejected_logps", zeros)

    trl.DPOConfig = zero_reference  # build_trainer imports it from trl when it runs
    dpo.CheckpointingDPOTrainer._precompute_ref_logps = scores


def apply(lever: str) -> None:
    """Patch one lever in, before `tuneforge train` runs in this process."""
    if lever == "synonyms":
        add_synonyms()
    elif lever.startswith("eos-weight:"):
        weight_end_of_turn(float(lever.split(":", 1)[1]))
    elif lever.startswith("dpo-sft-weight:"):
        from tuneforge.recipe.methods import dpo

        dpo.SFT_WEIGHT = float(lever.split(":", 1)[1])  # read when the trainer is built
    elif lever == "dpo-reference-free":
        reference_free_dpo()
    else:
        raise SystemExit(f"unknown lever {lever!r}: synonyms, eos-weight:W, dpo-sft-weight:W or dpo-reference-free")


def main() -> None:
    lever, *cli = sys.argv[1:]
    apply(lever)
    from tuneforge.cli import main as tuneforge

    sys.argv = ["tuneforge", *cli]
    tuneforge()


if __name__ == "__main__":
    main()
