"""Guards the package's shape: imports follow the layers, and a wheel install carries its config files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_imports_follow_the_layers():
    """import-linter's layers contract in pyproject.toml: commands -> recipe -> ... -> errors, never upwards."""
    result = subprocess.run([str(BIN / "lint-imports")], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_the_layer_check_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a data module importing the recipe breaks it."""
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "src", copy / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    bad = copy / "src" / "tuneforge" / "data" / "split.py"
    bad.write_text(bad.read_text() + "\nfrom tuneforge.recipe import train  # noqa: E402\n")
    env = {**os.environ, "PYTHONPATH": str(copy / "src")}
    result = subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"], cwd=copy, capture_output=True, text=True, env=env
    )
    assert result.returncode != 0 and "tuneforge.data.split -> tuneforge.recipe.train" in result.stdout


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_finds_its_strategy_files(tmp_path):
    """configs/ ships as package data: `--strategy fsdp` works from a non-editable install outside the checkout."""
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)], check=True)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    # The libraries (torch, transformers, ...) come from this test's environment, appended after the
    # new venv's own folder; the checkout's editable tuneforge is not seen (nested .pth files aren't read).
    (Path(site) / "libraries.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", site,
                    str(next(wheels.glob("tuneforge-*.whl")))], check=True)  # fmt: skip
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.run([str(python), "-c", "import tuneforge; print(tuneforge.__file__)"],
                           cwd=outside, capture_output=True, text=True, check=True, env=env).stdout  # fmt: skip
    assert where.startswith(site), where  # the wheel's copy, not the checkout
    dry = subprocess.run([str(python), "-m", "tuneforge", "train", "--strategy", "fsdp", "--nproc", "2", "--dry-run"],
                         cwd=outside, capture_output=True, text=True, env=env)  # fmt: skip
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "train.strategy = fsdp" in dry.stdout and "Would launch:" in dry.stdout
    found = subprocess.run(
        [str(python), "-c", "from tuneforge.recipe.distributed import strategy_file; print(strategy_file('fsdp'))"],
        cwd=outside, capture_output=True, text=True, check=True, env=env,
    ).stdout.strip()  # fmt: skip
    assert found.startswith(site) and Path(found).is_file(), found
