"""A damaged results folder: say what is wrong and the way back; `tuneforge repair` takes it.

The way back, best first: a file the manifest lists can come back from a checkpoint only when
that checkpoint holds a file with the very checksum the manifest recorded. The checkpoint saved
at the last step holds the same adapter weights and config as the results, so this restores
them bit for bit, proven, never guessed. Anything else (tuneforge.yaml, metrics.json, …) exists
only in the results folder: the way back is to train again, and the message names the command.

Readers (chat, eval, serve, export) only ever describe the damage; `repair` alone writes, under
the folder's lock, each file through a temporary copy and a rename.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.runs import checkpoint_store
from tuneforge.runs.manifest import RESULTS_MANIFEST, fsync_dir, problems, read_results_manifest, sha256


def sources_in_checkpoints(folder: Path, manifest: dict[str, Any] | None, names: list[str]) -> dict[str, Path]:
    """{damaged file: the checkpoint copy with the exact recorded checksum}, for those that have one."""
    if manifest is None:
        return {}
    found: dict[str, Path] = {}
    for checkpoint in checkpoint_store.committed(folder / "checkpoints"):
        saved, problem = checkpoint_store.verify(checkpoint)
        if problem is not None:
            continue
        for name in names:
            recorded = manifest["files"].get(name, {}).get("sha256")
            if name not in found and recorded and saved["files"].get(name, {}).get("sha256") == recorded:
                found[name] = checkpoint / name
    return found


def damaged(folder: Path, found: dict[str, str], manifest: dict[str, Any] | None) -> UserError:
    """One paragraph: the folder, each file and what is wrong with it, then the way back."""
    what = "; ".join(found.values())
    restorable = sources_in_checkpoints(folder, manifest, list(found))
    lost = [name for name in found if name not in restorable]
    quoted = shlex.quote(str(folder))
    if not lost:
        where = sorted({path.parent.name for path in restorable.values()})
        way_back = (
            f"{' and '.join(where)} holds the same {', '.join(restorable)} (the checksum recorded when the run "
            f"finished), so `tuneforge repair {quoted}` puts {'it' if len(restorable) == 1 else 'them'} back."
        )
    else:
        missing = f"no checkpoint holds the same {', '.join(lost)}"
        head = (
            f"`tuneforge repair {quoted}` can restore {', '.join(restorable)}, but {missing}"
            if restorable
            else (missing[0].upper() + missing[1:])
        )
        way_back = (
            f"{head}. Train the run again: the same `tuneforge train` command with --overwrite (this folder is "
            "moved aside, not deleted), or with another --output-dir."
        )
    return UserError(
        f"The results folder '{folder}' is damaged: {what}. Nothing was loaded and nothing was changed. {way_back}"
    )


def repair(folder: Path) -> list[str]:
    """Restore every damaged file that a checkpoint holds unchanged; returns their names. Caller holds the lock."""
    try:
        manifest = read_results_manifest(folder)
    except ValueError as exc:
        raise UserError(
            f"The results folder '{folder}' has a damaged {RESULTS_MANIFEST} ({exc}), so nothing in it can be "
            "proven whole or restored. Train the run again with --overwrite, or with another --output-dir."
        ) from None
    if manifest is None:
        raise UserError(
            f"'{folder}' has no {RESULTS_MANIFEST} (a run from an older tuneforge, or an adapter made elsewhere), "
            "so there is no record to restore it to. Train the run again to get one."
        )
    found = problems(folder, manifest)
    if not found:
        return []
    sources = sources_in_checkpoints(folder, manifest, list(found))
    if len(sources) < len(found):
        raise damaged(folder, found, manifest)
    for name, source in sources.items():
        temporary = folder / f".{name}.repair"
        shutil.copyfile(source, temporary)
        if sha256(temporary) != manifest["files"][name]["sha256"]:  # the copy itself must be right
            temporary.unlink()
            raise UserError(f"Copying {source} to '{folder}' did not give the recorded file. Check the disk.")
        temporary.replace(folder / name)
    fsync_dir(folder)
    return sorted(sources)
