"""Continued pre-training: raw text joined with EOS and cut into full blocks, every token trained.

The loop is SFT's (TRL's SFTTrainer over rows that already carry labels); only the rows
differ, so `build_trainer` is shared. Chosen by `--method pretrain`, or by itself when the
data is raw text (a .txt file, a jsonl of {"text": ...}, or --data-format text).
"""

from __future__ import annotations

from typing import Any

from tuneforge.config import TuneforgeConfig
from tuneforge.errors import UserError
from tuneforge.recipe.methods import Method, sft


def encode(
    tokenizer: Any, train_set: list[Any], eval_set: list[Any], cfg: TuneforgeConfig, log: Any
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Blocks of max_seq_length tokens from the training documents; held-out documents likewise."""
    from tuneforge.data.blocks import encode_documents

    block = cfg.train.max_seq_length
    train_rows, stats = encode_documents(tokenizer, train_set, block, cfg.data.template)
    eval_rows, held = encode_documents(tokenizer, eval_set, block, cfg.data.template)
    if not train_rows:
        raise UserError("The training text holds no tokens to learn from. Check the file (`tuneforge data check`).",
                        field="data.dataset")  # fmt: skip
    log.section("data (continued pre-training)")
    log.info(f"training text: {stats.line()}")
    log.info(f"held out: {held.documents} documents, {held.blocks} blocks (eval_set.jsonl)")
    return train_rows, eval_rows


def report(model: Any, tokenizer: Any, eval_set: list[Any], cfg: TuneforgeConfig, log: Any) -> dict[str, Any] | None:
    """Raw text has no questions to answer: the held-out loss before and after is the figure."""
    return None


METHOD = Method("pretrain", encode, sft.build_trainer, report)
