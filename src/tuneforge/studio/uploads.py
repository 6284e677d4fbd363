"""Uploaded data files: size-capped, stored under the studio's data folder with names it chooses.

The name the browser sends is never used as a path: only its extension survives, from a short
list of the formats `tuneforge train` reads, so `../../.bashrc` can't land anywhere but
`<data>/uploads/upload-<random>.jsonl`. The body streams to a hidden file and is renamed into
place only when whole and under the cap, so an oversized or broken upload leaves nothing.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt")


class UploadError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def stored_name(sent_name: str) -> str:
    """A fresh name with the sent name's extension, if it is one the data readers know."""
    base = sent_name.replace("\\", "/").rsplit("/", 1)[-1].lower()
    extension = next((ext for ext in EXTENSIONS if base.endswith(ext)), None)
    if extension is None:
        raise UploadError(400, f"'{sent_name}' is not a data file tuneforge reads; use one of {', '.join(EXTENSIONS)}.")
    return f"upload-{uuid.uuid4().hex[:12]}{extension}"


async def save_upload(folder: Path, sent_name: str, declared: int | None, body: AsyncIterator[bytes], cap: int) -> Path:
    """Stream the body into `folder`; refuse over `cap` bytes before reading (Content-Length) or while reading."""
    if declared is not None and declared > cap:
        raise UploadError(413, f"The file is {declared:,} bytes; the studio takes at most {cap:,} per upload.")
    folder.mkdir(parents=True, exist_ok=True)
    target = (folder / stored_name(sent_name)).resolve()
    if target.parent != folder.resolve():  # cannot happen with stored_name; kept as the last line of defence
        raise UploadError(400, "That file name would leave the uploads folder.")
    partial = target.with_name(f".{target.name}.part")
    size = 0
    try:
        with partial.open("wb") as handle:
            async for chunk in body:
                size += len(chunk)
                if size > cap:
                    raise UploadError(413, f"The file is over {cap:,} bytes, the most the studio takes per upload.")
                handle.write(chunk)
        if size == 0:
            raise UploadError(400, "The file is empty.")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
