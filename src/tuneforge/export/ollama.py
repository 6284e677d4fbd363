"""`export --ollama NAME`: hand the finished GGUF and its Modelfile to `ollama create`, or say the command.

The export is complete before this runs, so a missing or failing Ollama never costs the export:
without the `ollama` binary the exact command is printed; when `ollama create` fails, its own
message is shown with the command to run again.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tuneforge.errors import UserError

# Ollama's names: [namespace/]model[:tag], lower-case letters, digits, '.', '_' and '-'.
_NAME = re.compile(r"^(?:[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*(?::[a-z0-9][a-z0-9._-]*)?$")
CREATE_TIMEOUT_S = 1800  # ollama copies the GGUF into its store: minutes for a 7B f16


def check_request(name: str | None, fmt: str) -> None:
    """Before the export starts: --ollama needs a GGUF and a name Ollama accepts."""
    if name is None:
        return
    if fmt != "gguf":
        raise UserError(
            f"--ollama {name} needs --format gguf (Ollama runs GGUF files); --format is '{fmt}'. "
            "Drop --ollama, or export with --format gguf."
        )
    if len(name) > 200 or not _NAME.match(name):
        raise UserError(
            f"--ollama '{name}' is not a name Ollama accepts: use lower-case letters, digits, '.', '_' and '-', "
            "optionally with a tag (e.g. --ollama smollm2-medical or --ollama smollm2-medical:q8)."
        )


def create_command(name: str, folder: Path) -> list[str]:
    return ["ollama", "create", name, "-f", str(folder / "Modelfile")]


def create_in_ollama(name: str, folder: Path, print_line=print) -> bool:
    """Run `ollama create` when Ollama is installed; print the command otherwise. True if the model was created."""
    command = create_command(name, folder)
    shown = " ".join(command)
    binary = shutil.which("ollama")
    if binary is None:
        print_line(f"Ollama is not installed here (no `ollama` on PATH). Once it is, run: {shown}")
        print_line(f"Then chat:           ollama run {name}")
        return False
    print_line(f"Creating the Ollama model {name}: {shown}")
    try:
        done = subprocess.run(
            [binary, *command[1:]], cwd=folder, capture_output=True, text=True, timeout=CREATE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise _failed(name, folder, shown, f"{type(exc).__name__}: {exc}") from None
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or "").strip().splitlines()
        raise _failed(name, folder, shown, lines[-1] if lines else f"exit code {done.returncode}")
    print_line(f"Ollama model {name} created. Chat with it: ollama run {name}")
    return True


def _failed(name: str, folder: Path, shown: str, why: str) -> UserError:
    return UserError(
        f"The export in {folder} is complete, but `ollama create {name}` failed: {why[:300]}. Check that the "
        f"Ollama server is running (`ollama serve`), then run: {shown}"
    )
