"""`tuneforge repair`: put back the damaged files of a finished results folder from its checkpoints.

Only files that a checkpoint holds with the exact checksum the results manifest recorded are
restored (runs/repair.py), so the repaired folder is the one training wrote, bit for bit. The
folder's lock is held meanwhile: a repair never races a `train` or another repair.
"""

from __future__ import annotations

from pathlib import Path

from rich.console import Console


def run_repair(folder: Path) -> list[str]:
    from tuneforge.errors import UserError
    from tuneforge.runs.folder import check_folder
    from tuneforge.runs.lock import holding
    from tuneforge.runs.repair import repair
    from tuneforge.runs.resume import run_status

    folder = folder.expanduser()
    if run_status(folder) != "finished":
        raise UserError(
            f"'{folder}' holds no finished run to repair. An unfinished run needs no repair: run the same "
            "`tuneforge train` command again and it resumes from its newest whole checkpoint."
        )
    console = Console(highlight=False)
    with holding(folder, fix="wait until it has finished"):
        restored = repair(folder)
        check_folder(folder)  # proven whole now, checksums and all
    if restored:
        console.print(
            f"Restored {', '.join(restored)} in {folder} from its checkpoints; every file matches the manifest."
        )
    else:
        console.print(f"Nothing to repair: every file in {folder} matches its manifest.")
    return restored
