"""The offline preference default: for each HPO term, its own definition over a sibling's.

A sibling shares an `is_a` parent ("Atrial septal defect" and "Ventricular septal defect"
under "Abnormal cardiac septum morphology"), so its definition is plausible but wrong: a hard
negative. The 4.8% of terms with no sibling take a parent's sibling instead.

There is one pair per term, in the order and with the question of the `medical-terms`
preset, so the same seed holds out the same terms in both: an SFT run on medical-terms and a
DPO run on medical-preferences never train on the other's held-out terms.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from tuneforge.data.hpo import QUESTION, hpo_obo_path, hpo_release, read_terms

SEED = 0  # which sibling is the negative: fixed, so the preset is the same data on every machine


def parents_of(text: str) -> dict[str, list[str]]:
    """{term id: [is_a parent ids]} from the OBO text."""
    parents: dict[str, list[str]] = {}
    for stanza in text.split("\n[")[1:]:
        if not stanza.startswith("Term]"):
            continue
        term_id, found = "", []
        for line in stanza.splitlines()[1:]:
            tag, _, value = line.partition(": ")
            if tag == "id":
                term_id = value.strip()
            elif tag == "is_a":
                found.append(value.split("!")[0].strip())
        parents[term_id] = found
    return parents


def build_pairs(terms: list[dict[str, str]], parents: dict[str, list[str]]) -> list[dict[str, Any]]:
    """One {'prompt', 'chosen', 'rejected'} per term: its definition over a sibling's (or a parent's sibling's)."""
    defined = {t["id"]: t for t in terms}
    children: dict[str, list[str]] = defaultdict(list)
    for term_id in defined:
        for parent in parents.get(term_id, []):
            children[parent].append(term_id)
    rng, ids = random.Random(SEED), list(defined)
    pairs: list[dict[str, Any]] = []
    for term in terms:
        own = term["id"]
        siblings = sorted({c for p in parents.get(own, []) for c in children[p]} - {own})
        if not siblings:  # an only child: its parent's siblings are the nearest relatives
            ups = parents.get(own, [])
            siblings = sorted({c for p in ups for g in parents.get(p, []) for c in children[g]} - {own, *ups})
        candidates = [s for s in siblings if defined[s]["definition"] != term["definition"]]
        candidates = candidates or [i for i in ids if defined[i]["definition"] != term["definition"]]
        other = defined[rng.choice(candidates)]
        prompt = [{"role": "user", "content": QUESTION.format(name=term["name"])}]
        pairs.append({"prompt": prompt, "chosen": term["definition"], "rejected": other["definition"]})
    return pairs


def load_medical_preferences() -> tuple[list[dict[str, Any]], str]:
    """The preset's pairs and a source note naming the HPO release."""
    path = hpo_obo_path()
    pairs = build_pairs(read_terms(path), parents_of(path.read_text(encoding="utf-8")))
    note = "own definition chosen over a sibling term's (shared is_a parent)"
    return pairs, f"Human Phenotype Ontology ({hpo_release(path)}) from {path}: {note}"
