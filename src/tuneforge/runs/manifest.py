"""Files listed with their size and SHA-256: how a checkpoint or a results folder proves it is whole.

One home for the primitives both use (describe, check, fsync, an atomic write), and for the
results folder's own manifest, `tuneforge-results.json`, written at the end of training after
every file it lists and before the run is marked finished. A reader checks the folder against
it: sizes always, checksums unless asked not to (they take milliseconds for a LoRA adapter,
seconds only for a full fine-tune's weights).

Not listed: the model card `README.md` (it is the user's to edit before sharing, and an edited
card is not damage), the training log (still written after the manifest), the run marker,
hidden files, and the `checkpoints/` and `eval/` folders (checkpoints have their own manifests;
`eval` writes its report later).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

RESULTS_MANIFEST = "tuneforge-results.json"
NOT_LISTED = ("README.md", "tuneforge-run.json", RESULTS_MANIFEST)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def describe(path: Path) -> dict[str, Any]:
    return {"bytes": path.stat().st_size, "sha256": sha256(path)}


def check_file(path: Path, name: str, expected: dict[str, Any], checksum: bool = True) -> str | None:
    """None when the file is there with its size (and checksum), else what is wrong, in words."""
    if not path.is_file():
        return f"{name} is missing"
    size = path.stat().st_size
    if size != expected["bytes"]:
        state = "empty" if size == 0 else f"truncated or changed ({size:,} of {expected['bytes']:,} bytes)"
        return f"{name} is {state}"
    if checksum and sha256(path) != expected["sha256"]:
        return f"{name} does not match its checksum (same size, different content)"
    return None


def fsync_tree(root: Path) -> None:
    """Data first, then the folders that name it: after a power cut the rename can't point at nothing."""
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for folder in sorted({p.parent for p in root.rglob("*")} | {root}):
        fsync_dir(folder)


def fsync_dir(folder: Path) -> None:
    if os.name == "nt":  # Windows can't open a folder for fsync; NTFS journals the rename itself
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """A temporary file, fsynced, then one rename: readers see the old file or the new one, whole."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with temporary.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fsync_dir(path.parent)


def listed_files(out: Path) -> list[str]:
    """The results files a manifest covers (see the module docstring for what is left out, and why)."""
    return sorted(
        p.name
        for p in out.iterdir()
        if p.is_file()
        and not p.name.startswith(".")
        and p.name not in NOT_LISTED
        and not (p.name.startswith("training_log_") and p.suffix == ".log")
    )


def write_results_manifest(out: Path, step: int) -> Path:
    files = {name: describe(out / name) for name in listed_files(out)}
    manifest = {"format": 1, "step": step, "saved_at": datetime.now(timezone.utc).isoformat(), "files": files}
    path = out / RESULTS_MANIFEST
    write_atomically(path, json.dumps(manifest, indent=1).encode("utf-8"))
    return path


def read_results_manifest(out: Path) -> dict[str, Any] | None:
    """The manifest, None when the folder has none (older runs, adapters made elsewhere); ValueError if damaged."""
    path = out / RESULTS_MANIFEST
    if not path.exists():
        return None
    try:
        manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(manifest.get("files"), dict):
            raise ValueError("no file list")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"{RESULTS_MANIFEST} is unreadable ({type(exc).__name__})") from None
    return manifest


def problems(out: Path, manifest: dict[str, Any], checksums: bool = True) -> dict[str, str]:
    """{file: what is wrong} for every listed file that is not as it was written."""
    found = {}
    for name, expected in manifest["files"].items():
        problem = check_file(out / name, name, expected, checksums)
        if problem:
            found[name] = problem
    return found
