"""Score generated answers against references: ROUGE, BLEU, exact match, length, stop rate.

ROUGE comes from Google's `rouge-score` (the package the ROUGE numbers in papers use) and BLEU
from `sacrebleu` (the standard, comparable BLEU). Only exact match, mean length and stop rate
are written here: each is one line and no library adds anything to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import fmean


@dataclass(frozen=True)
class MetricInfo:
    key: str
    label: str
    higher_is_better: bool | None  # None: neither direction is better (answer length)
    digits: int


# The order of this table is the order of every report's rows.
METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("heldout_loss", "held-out loss (answer tokens)", False, 4),
    MetricInfo("perplexity", "perplexity", False, 2),
    MetricInfo("rouge1", "ROUGE-1", True, 4),
    MetricInfo("rouge2", "ROUGE-2", True, 4),
    MetricInfo("rougeL", "ROUGE-L", True, 4),
    MetricInfo("bleu", "BLEU (0-100)", True, 2),
    MetricInfo("exact_match", "exact match", True, 4),
    MetricInfo("answer_tokens", "answer length (tokens)", None, 1),
    MetricInfo("stop_rate", "stops by itself", True, 4),
)


def rouge(predictions: list[str], references: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 over examples, with Porter stemming as in the ROUGE papers."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    return {name: fmean(s[name].fmeasure for s in scores) for name in ("rouge1", "rouge2", "rougeL")}


def bleu(predictions: list[str], references: list[str]) -> float:
    """Corpus BLEU on sacrebleu's 0-100 scale, one reference per answer."""
    import sacrebleu

    return float(sacrebleu.corpus_bleu(predictions, [references]).score)


def normalise(text: str) -> str:
    """Case and spacing differences don't make an answer wrong; punctuation and words do."""
    return " ".join(text.split()).casefold()


def exact_match(predictions: list[str], references: list[str]) -> float:
    return fmean(normalise(p) == normalise(r) for p, r in zip(predictions, references, strict=True))


def score_answers(
    predictions: list[str], references: list[str], lengths: list[int], stopped: list[bool]
) -> dict[str, float]:
    """Every generation-based figure for one model: the metric keys of METRICS except the loss."""
    if not predictions:
        raise ValueError("no answers to score")
    return {
        **rouge(predictions, references),
        "bleu": bleu(predictions, references),
        "exact_match": exact_match(predictions, references),
        "answer_tokens": fmean(lengths),
        "stop_rate": fmean(stopped),
    }


def differences(base: dict[str, float], tuned: dict[str, float]) -> dict[str, float]:
    """tuned minus base, for every figure both have."""
    return {key: tuned[key] - base[key] for key in tuned if key in base}
