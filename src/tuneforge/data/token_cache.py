"""Tokenized rows on disk as Arrow, memory-mapped, and reused when nothing that shapes them changed.

A 200,000-row file tokenized into Python lists of ints took gigabytes (about 36 bytes per
token, twice: ids and labels). Here rows are written to an Arrow file in batches as they are
encoded (`datasets.arrow_writer.ArrowWriter`) and read back with `Dataset.from_file`, which maps
the file instead of loading it, so memory stays flat whatever the size.

The cache lives in `$TUNEFORGE_CACHE/tokenized/<key>/`. The key is a SHA-256 of everything that
shapes the rows: the examples themselves (so a changed file, split, mapping or mixture gives a
new key), the tokenizer's full definition and chat template, and the settings (max length,
template, drop_long, method). A changed file or tokenizer is never served stale rows. The folder
is written under a temporary name, fsynced and renamed when complete, so a killed run leaves no
half cache; its marker records the rows file's size, so a torn entry (a power cut) is rebuilt,
never read. A full disk while writing is one paragraph (tuneforge.disk_faults), not a traceback.
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
ROWS_BYTES = "rows_file_bytes"  # in the marker: a rows file of another size is a torn entry


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
    root: Path, key: str, produce: Callable[[dict[str, Any]], Iterator[dict[str, Any]]],
    then: Callable[[], str] | None = None, expected_rows: int = 0,
) -> tuple[Any, dict[str, Any], bool]:  # fmt: skip
    """(memory-mapped Dataset, the stats `produce` filled in, whether it came from the cache).

    A full disk or a read-only cache while writing is one DiskFault paragraph (`then` says how to
    carry on); the half-written staging folder is removed whatever stops the write.
    """
    from datasets import Dataset

    from tuneforge.disk_faults import writing

    folder = root / "tokenized" / key
    if (saved := whole_entry(folder)) is not None:
        return Dataset.from_file(str(folder / ROWS_FILE)), saved, True
    staging = folder.with_name(f".{key}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    tally = [0, 0]  # rows and tokens written so far: the space estimate if the disk fills
    stats: dict[str, Any] = {}
    try:
        with writing("the tokenized training rows", folder.parent, then,
                     lambda: estimate_bytes(tally, expected_rows), cleanup=staging):  # fmt: skip
            staging.mkdir(parents=True)
            _write(staging / ROWS_FILE, counted(produce(stats), tally))
            marker = {**stats, ROWS_BYTES: (staging / ROWS_FILE).stat().st_size}
            (staging / STATS_FILE).write_text(json.dumps(marker), encoding="utf-8")  # last: it marks the cache whole
            commit(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # Ctrl-C or a bad row: no half entry left behind either
    return Dataset.from_file(str(folder / ROWS_FILE)), stats, False


def whole_entry(folder: Path) -> dict[str, Any] | None:
    """The stats of a complete cache entry, or None. An entry that is not whole is removed, never read.

    Only a finished entry is renamed into place, but a power cut can still leave a rows file
    shorter than its marker says (the rename reached the disk, the data did not).
    """
    if not (folder / STATS_FILE).is_file():
        shutil.rmtree(folder, ignore_errors=True)  # no marker: not a finished entry (nothing renames one in half)
        return None
    try:
        saved = json.loads((folder / STATS_FILE).read_text(encoding="utf-8"))
        size = saved.pop(ROWS_BYTES, None)  # absent in entries written before the size was recorded
        whole = size is None or (folder / ROWS_FILE).stat().st_size == size
    except (OSError, ValueError, AttributeError):
        whole = False
    if not whole:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return saved


def commit(staging: Path, folder: Path) -> None:
    """fsync the entry, then rename it into place; another process that finished the same key first wins."""
    for name in (ROWS_FILE, STATS_FILE):
        with open(staging / name, "rb") as handle:
            os.fsync(handle.fileno())
    try:
        staging.rename(folder)
    except OSError:
        if whole_entry(folder) is None:  # not a finished twin: a real failure (a full or read-only disk)
            raise


def counted(rows: Iterator[dict[str, Any]], tally: list[int]) -> Iterator[dict[str, Any]]:
    for row in rows:
        tally[0] += 1
        tally[1] += len(row["input_ids"])
        yield row


def estimate_bytes(tally: list[int], expected_rows: int) -> int:
    """About what the whole rows file takes: ids and labels as int32 plus offsets, from the rows written so far."""
    rows, tokens = tally
    return int(expected_rows * (8 * tokens / rows + 16)) if rows else 0


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
    template: str | None = None, drop_long: bool = False, then: Callable[[], str] | None = None,
) -> tuple[Any, Any, bool]:  # fmt: skip
    """SFT rows (prompt masked) as a memory-mapped Dataset, their EncodeStats, and whether the cache had them.

    `then`: how to carry on after a full disk (a training run names its checkpoint to resume from).
    """
    from dataclasses import asdict

    from tuneforge.data.encode import EncodeStats, iter_encoded

    settings = {"rows": "sft-v1", "max_length": max_length, "template": template, "drop_long": drop_long}
    key = fingerprint(tokenizer, conversations, settings)

    def produce(out: dict[str, Any]) -> Iterator[dict[str, Any]]:
        stats = EncodeStats()
        yield from iter_encoded(tokenizer, conversations, max_length, stats, template, drop_long)
        out.update(asdict(stats))

    dataset, raw, hit = cached_rows(root, key, produce, then, len(conversations))
    return dataset, EncodeStats(**raw), hit
