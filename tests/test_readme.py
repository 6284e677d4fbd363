"""Guards what a new user meets first: the README's two commands, the file map in docs/, and CI running them."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UNMAPPED = {"README.md", ".gitignore", ".dockerignore", "src/tuneforge/py.typed"}


def first_commands(readme: Path) -> list[str]:
    block = re.search(r"```bash\n(.*?)```", readme.read_text(encoding="utf-8"), re.S).group(1)
    return [line.split("#")[0].strip() for line in block.strip().splitlines()]


def test_both_readmes_open_with_the_same_two_commands():
    assert first_commands(ROOT / "README.md") == ["./run.sh", "./run.sh test"]
    assert first_commands(ROOT / "README.ko.md") == ["./run.sh", "./run.sh test"]
    assert (ROOT / "README.md").read_text().lstrip().startswith("# tuneforge\n\n```bash")


def test_ci_runs_the_readme_test_command():
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert "./run.sh test" in lines


def project_files() -> list[str]:
    """Every file git would ship (tracked or new, not ignored), except package markers."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return sorted(f for f in listed if (ROOT / f).is_file() and not f.endswith("__init__.py") and f not in UNMAPPED)


def test_file_map_names_every_file():
    architecture = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    missing = [f for f in project_files() if f"`{f}`" not in architecture]
    assert not missing, f"add these to the file map in docs/ARCHITECTURE.md: {missing}"


def test_the_readme_stays_a_short_guide():
    """The design and the file map live in docs/; the README is what a user does."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 330, len(lines)  # room for one short section per feature; details go to docs/
    assert "docs/ARCHITECTURE.md" in "\n".join(lines)
