"""Tokenized rows on disk as Arrow, memory-mapped, and reused when nothing that shapes them changed.

A 200,000-row file tokenized into Python lists of ints took gigabytes (about 36 bytes per
token, twice: ids and labels). Here rows are written to an Arrow file in batches as they are
encoded (`datasets.arrow_writer.ArrowWriter`) and read back with `Dataset.from_file`, which maps
the file instead of loading it, so memory stays flat whatever the size.

The cache lives in `$TUNEFORGE_CACHE/tokenized/<key>/`. The key is a SHA-256 of everything that
shapes the rows: the examples themselves (so a changed file, split, mapping or mixture gives a
new key), the tokenizer's full definition and chat template, and the settings (max length,
template, drop_long, method). A changed file or tokenizer is never served stale rows. The folder
is written under a temporary name and renamed when complete, so a killed run leaves no half cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

BATCH = 1000  # rows per Arrow write: a few MB in memory at a time
ROWS_FILE, STATS_FILE = "rows.arrow", "stats.json"


def fingerprint(tokenizer: Any, conversations: Iterable[Any], settings: dict[str, Any]) -> str:
    """SHA-256 of the examples, the tokenizer (vocabulary, merges, specials, template) and the settings."""
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(tokenizer_identity(tokenizer).encode())
    for conversation in conversations:
        row = {"m": list(conversation), "t": getattr(conversation, "tools", None)}
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False, default=str).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:32]


def tokenizer_identity(tokenizer: Any) -> str:
    """The tokenizer's whole definition as text: a fast tokenizer's JSON, else its vocabulary."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    core = backend.to_str() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True)
    specials = json.dumps(getattr(tokenizer, "special_tokens_map", {}), sort_keys=True, default=str)
    return f"{core}\n{specials}\n{tokenizer.chat_template or ''}"


def cached_rows(
    root: Path, key: str, produce: Callable[[dict[str, Any]], Iterator[dict[str, Any]]]
) -> tuple[Any, dict[str, Any], bool]:
    """(memory-mapped Dataset, the stats `produce` filled in, whether it came from the cache)."""
    from datasets import Dataset

    folder = root / "tokenized" / key
    if (folder / STATS_FILE).is_file():
        saved = json.loads((folder / STATS_FILE).read_text(encoding="utf-8"))
        return Dataset.from_file(str(folder / ROWS_FILE)), saved, True
    staging = folder.with_name(f".{key}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    stats: dict[str, Any] = {}
    _write(staging / ROWS_FILE, produce(stats))
    (staging / STATS_FILE).write_text(json.dumps(stats), encoding="utf-8")  # last: it marks the cache whole
    try:
        staging.rename(folder)
    except OSError:  # another process finished the same key first: theirs is the same rows
        shutil.rmtree(staging, ignore_errors=True)
    return Dataset.from_file(str(folder / ROWS_FILE)), stats, False


def _write(path: Path, rows: Iterator[dict[str, Any]]) -> None:
    from datasets import Features, Sequence, Value
    from datasets.arrow_writer import ArrowWriter

    features = Features({"input_ids": Sequence(Value("int32")), "labels": Sequence(Value("int32"))})
    with ArrowWriter(features=features, path=str(path)) as writer:
        batch: dict[str, list[Any]] = {"input_ids": [], "labels": []}
        for row in rows:
            batch["input_ids"].append(row["input_ids"])
            batch["labels"].append(row["labels"])
            if len(batch["input_ids"]) >= BATCH:
                writer.write_batch(batch)
                batch = {"input_ids": [], "labels": []}
        if batch["input_ids"]:
            writer.write_batch(batch)
        writer.finalize()


def encode_cached(
    tokenizer: Any, conversations: list[Any], max_length: int, root: Path,
    template: str | None = None, drop_long: bool = False,
) -> tuple[Any, Any, bool]:  # fmt: skip
    """SFT rows (prompt masked) as a memory-mapped Dataset, their EncodeStats, and whether the cache had them."""
    from dataclasses import asdict

    from tuneforge.data.encode import EncodeStats, iter_encoded

    settings = {"rows": "sft-v1", "max_length": max_length, "template": template, "drop_long": drop_long}
    key = fingerprint(tokenizer, conversations, settings)

    def produce(out: dict[str, Any]) -> Iterator[dict[str, Any]]:
        stats = EncodeStats()
        yield from iter_encoded(tokenizer, conversations, max_length, stats, template, drop_long)
        out.update(asdict(stats))

    dataset, raw, hit = cached_rows(root, key, produce)
    return dataset, EncodeStats(**raw), hit
