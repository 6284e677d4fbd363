"""Read a local file of any supported type into raw rows, each tagged 'file:line' for error messages.

We read with the standard library (json, csv) and pyarrow instead of `datasets.load_dataset`:
that one caches a copy of every file on disk and reports a broken line as an arrow traceback
without the line number, and users need "train.jsonl:812: not valid JSON" to fix their data.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError

MAX_LINE_BYTES = 10 * 2**20  # a longer line is almost surely a file that lost its newlines
Row = tuple[str, Any]  # ('data.jsonl:12', {...})
SUFFIXES = (".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt")


def read_rows(path: Path) -> list[Row]:
    """Every row of the file with its location; errors name the file and the line."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(
            f"{path}: unknown file type '{suffix or '(none)'}'. Use one of {', '.join(SUFFIXES)}, "
            "or a folder holding train.* and optionally validation.*."
        )
    if suffix == ".parquet":
        return _parquet_rows(path)
    raw = path.read_bytes()
    _check_line_lengths(path, raw)
    text = decode_text(path, raw)
    if not text.strip():
        raise UserError(
            f"{path}: the file is empty. Put at least one example in it (see `tuneforge data check --help`)."
        )
    if suffix == ".json":
        return _json_rows(path, text)
    if suffix in (".csv", ".tsv"):
        return _table_rows(path, text, "\t" if suffix == ".tsv" else ",")
    if suffix == ".txt":
        return _text_rows(path, text)
    return _jsonl_rows(path, text)


def decode_text(path: Path, raw: bytes) -> str:
    """UTF-8 (with or without a BOM); UTF-16 and Latin-1 files are named as such, with the fix."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) or raw[:200].count(b"\x00") > 10:
        raise UserError(
            f"{path}:1: the file is UTF-16 encoded (Windows 'Unicode'), but tuneforge reads UTF-8. "
            f"Save it as UTF-8, e.g. iconv -f UTF-16 -t UTF-8 '{path}' > fixed{path.suffix}"
        )
    try:
        return raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise UserError(
            f"{path}:{line}: the file is not UTF-8 (byte 0x{raw[exc.start]:02x}); it looks like Latin-1 / "
            f"Windows-1252. Save it as UTF-8, e.g. iconv -f LATIN1 -t UTF-8 '{path}' > fixed{path.suffix}"
        ) from None


def _check_line_lengths(path: Path, raw: bytes) -> None:
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if len(line) > MAX_LINE_BYTES:
            raise UserError(
                f"{path}:{number}: the line is {len(line) / 2**20:.0f} MB long, over the 10 MB limit. "
                "Put one example per line, and split very long documents into several examples."
            )


def _jsonl_rows(path: Path, text: str) -> list[Row]:
    rows = []
    # split on "\n" only: splitlines() also breaks at U+2028 inside a JSON string and miscounts lines
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rows.append((f"{path}:{number}", json.loads(line)))
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno}). "
                "Each line of a .jsonl file must be one complete JSON object."
            ) from None
    return rows


def _json_rows(path: Path, text: str) -> list[Row]:
    """An array of rows, or an object holding one such array ({"data": [...]}), with line numbers."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # JSON Lines saved as .json: common, and unambiguous
            return _jsonl_rows(path, text)
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno}).") from None
    start = text.index("[") if isinstance(data, list) else None
    if isinstance(data, dict):
        lists = [key for key, value in data.items() if isinstance(value, list)]
        if len(lists) != 1:
            return [(f"{path}:1", data)]
        start, data = _member_offset(text, lists[0]), data[lists[0]]
    if not isinstance(data, list):
        raise UserError(f"{path}:1: expected a JSON array of examples, found {type(data).__name__}.")
    return [(f"{path}:{text.count(chr(10), 0, offset) + 1}", row) for offset, row in _array_items(text, start or 0)]


def _member_offset(text: str, key: str) -> int:
    """Where the value of a top-level key starts, found by decoding the object member by member."""
    decoder, pos = json.JSONDecoder(), text.index("{") + 1
    while True:
        pos = _skip(text, pos, ",")
        name, pos = decoder.raw_decode(text, pos)
        pos = _skip(text, pos, ":")
        if name == key:
            return pos
        _, pos = decoder.raw_decode(text, pos)


def _array_items(text: str, start: int) -> list[tuple[int, Any]]:
    """(offset, value) of each element of the array at `start`; json gives no positions itself."""
    decoder, pos, items = json.JSONDecoder(), _skip(text, start + 1, ""), []
    while text[pos] != "]":
        value, end = decoder.raw_decode(text, pos)
        items.append((pos, value))
        pos = _skip(text, end, ",")
    return items


def _skip(text: str, pos: int, separator: str) -> int:
    while text[pos].isspace() or (separator and text[pos] == separator):
        pos += 1
    return pos


def _table_rows(path: Path, text: str, delimiter: str) -> list[Row]:
    """CSV/TSV with a header row; the line number counts the header as line 1."""
    csv.field_size_limit(MAX_LINE_BYTES)
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows = []
    try:
        for row in reader:
            where = f"{path}:{reader.line_num}"
            if None in row:
                raise UserError(f"{where}: the row has more values than the header has columns "
                                f"({', '.join(reader.fieldnames or [])}). Quote values that hold a '{delimiter}'.")  # fmt: skip
            missing = [key for key, value in row.items() if value is None]
            if missing:
                raise UserError(f"{where}: field '{missing[0]}': the row has fewer values than the header.")
            rows.append((where, row))
    except csv.Error as exc:
        raise UserError(f"{path}:{reader.line_num}: not valid {path.suffix[1:].upper()} ({exc}).") from None
    return rows


def _text_rows(path: Path, text: str) -> list[Row]:
    """Plain text: one example per paragraph (blocks separated by a blank line)."""
    rows, block, first = [], [], 0
    for number, line in enumerate(text.split("\n") + [""], start=1):
        line = line.rstrip("\r")
        if line.strip():
            first = first or number
            block.append(line)
        elif block:
            rows.append((f"{path}:{first}", {"text": "\n".join(block)}))
            block, first = [], 0
    return rows


def _parquet_rows(path: Path) -> list[Row]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a broken file
        raise UserError(f"{path}:1: not a readable Parquet file ({str(exc).splitlines()[0][:160]}).") from None
    rows = [(f"{path}:{index + 1}", row) for index, row in enumerate(table.to_pylist())]
    if not rows:
        raise UserError(f"{path}: the file is empty (no rows). Put at least one example in it.")
    return rows
