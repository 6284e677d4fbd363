"""Guards what a new user meets first: the README's two commands, its file map, and CI running them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", ".venv", "__pycache__", ".pytest_cache", "results", ".hypothesis"}


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
    found = []
    for path in ROOT.rglob("*"):
        parts = set(path.relative_to(ROOT).parts)
        if path.is_file() and not parts & SKIP_DIRS and not any(p.endswith(".egg-info") for p in parts):
            rel = path.relative_to(ROOT).as_posix()
            if not rel.startswith(".git") and rel not in ("README.md", ".gitignore") and not rel.endswith("__init__.py") or rel == "src/tuneforge/data/__init__.py":
                found.append(rel)
    return sorted(found)


def test_file_map_names_every_file():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [f for f in project_files() if f"`{f}`" not in readme and f not in ("src/tuneforge/py.typed",)]
    assert not missing, f"add these to the README's file map: {missing}"
