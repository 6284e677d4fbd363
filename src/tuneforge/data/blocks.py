"""Raw text for continued pre-training: documents joined with the end-of-text token, cut into blocks.

Cutting each document to max_seq_length threw away 99.8% of a 1 MB article file. Here every
token is kept: documents are tokenized, each is followed by the EOS token (so the model learns
where a document ends), the stream is cut into blocks of exactly `block` tokens, and only the
last block may be shorter. Labels are the inputs: every token is trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tuneforge.data.formats import TEXT_ROLE


@dataclass(frozen=True)
class BlockStats:
    documents: int
    tokens: int  # with one EOS per document
    blocks: int
    block: int

    def line(self) -> str:
        return (f"{self.documents} documents, {self.tokens} tokens (EOS after each document), "
                f"{self.blocks} blocks of {self.block} tokens (the last may be shorter); nothing cut off")  # fmt: skip

    def as_dict(self) -> dict[str, int]:
        return {"documents": self.documents, "tokens": self.tokens, "blocks": self.blocks, "block": self.block}


def document_text(tokenizer: Any, conversation: list[dict[str, Any]], template: str | None = None) -> str:
    """A raw-text row's text; a chat row (with --method pretrain) as its template renders it."""
    if conversation and conversation[0]["role"] == TEXT_ROLE:
        return str(conversation[0]["content"])
    from tuneforge.data.encode import render

    return render(tokenizer, conversation, False, template, getattr(conversation, "tools", None))


def pack_documents(token_lists: Any, eos_id: int | None, block: int) -> tuple[list[dict[str, list[int]]], BlockStats]:
    """Join token lists (EOS after each) and cut the stream into blocks; labels equal inputs."""
    stream: list[int] = []
    documents = 0
    for ids in token_lists:
        stream.extend(ids)
        if eos_id is not None:
            stream.append(eos_id)
        documents += 1
    rows = [{"input_ids": stream[i : i + block], "labels": stream[i : i + block]} for i in range(0, len(stream), block)]
    rows = [row for row in rows if len(row["input_ids"]) > 1]  # one token predicts nothing
    return rows, BlockStats(documents, len(stream), len(rows), block)


def encode_documents(tokenizer: Any, conversations: list[Any], block: int,
                     template: str | None = None) -> tuple[list[dict[str, list[int]]], BlockStats]:  # fmt: skip
    texts = [document_text(tokenizer, c, template) for c in conversations]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return pack_documents(ids, tokenizer.eos_token_id, block)
