"""Several sweep processes on one study: two on a shared SQLite file, two on a real PostgreSQL server."""

from __future__ import annotations

import csv
import glob
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.test_sweep import SPACE, sweep_args


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    return subprocess.Popen([sys.executable, "-m", "tuneforge", *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip


def run_together(tmp_path: Path, model: Path, data: Path, storage: str, trials: int, *workers: str) -> list[Path]:
    """One sweep process per entry of `workers` (its --workers), all on `storage`; each must exit 0."""
    space = tmp_path / "space.yaml"
    space.write_text(SPACE, encoding="utf-8")
    folders = [tmp_path / f"machine-{i}" for i in range(len(workers))]
    procs = [start(sweep_args(model, data, folder, space, "--trials", str(trials), "--pruner", "none",
                              "--storage", storage, "--study-name", "shared", "--workers", n), tmp_path)
             for folder, n in zip(folders, workers)]  # fmt: skip
    for proc in procs:
        output, _ = proc.communicate(timeout=400)
        assert proc.returncode == 0, output
    return folders


def finished_trials(folder: Path) -> list[dict[str, str]]:
    with (folder / "trials.csv").open(encoding="utf-8") as handle:
        return [r for r in csv.DictReader(handle) if r["state"] == "complete"]


@pytest.mark.slow
def test_two_processes_share_one_sqlite_study(tmp_path, tiny_model_dir, tiny_dataset):
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    folders = run_together(tmp_path, tiny_model_dir, tiny_dataset, storage, 3, "2", "1")
    assert_shared(folders, 3)


def assert_shared(folders: list[Path], trials: int) -> None:
    """The last process to finish sees the whole study; every process ran trials of its own."""
    done = max((finished_trials(folder) for folder in folders), key=len)
    assert len(done) >= trials, done
    ran = {folder.name: len(list((folder / "trials").glob("trial-*.yaml"))) for folder in folders}
    assert all(ran.values()), ran


def _postgres_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))[-1:]
    return found if isinstance(found, str) else (found[0] if found else None)


@pytest.fixture()
def postgres_url():
    """A throwaway PostgreSQL cluster on a unix socket (Debian's server; run as a non-root user when root)."""
    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed; apt-get install postgresql")
    pytest.importorskip("psycopg", reason="the PostgreSQL driver: pip install 'tuneforge[postgres]'")
    root = Path(tempfile.mkdtemp(prefix="tuneforge-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        user = "postgres" if shutil.which("runuser") and _has_user("postgres") else "nobody"
        shutil.chown(root, user)
        prefix = ["runuser", "-u", user, "--"]
    data, log = root / "data", root / "server.log"
    subprocess.run([*prefix, initdb, "-D", str(data), "-A", "trust", "-U", "tuneforge", "--no-sync"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-k {root} -c listen_addresses='' -F"
    subprocess.run([*prefix, pg_ctl, "-D", str(data), "-o", options, "-l", str(log), "-w", "start"],
                   check=True, capture_output=True)  # fmt: skip
    try:
        yield f"postgresql://tuneforge@/postgres?host={root}"  # plain: SQLAlchemy 2.1's default driver, psycopg 3
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.mark.slow
def test_two_workers_share_one_study_on_a_real_postgresql_server(tmp_path, tiny_model_dir, tiny_dataset, postgres_url):
    from tuneforge.sweep.study import open_storage

    folders = run_together(tmp_path, tiny_model_dir, tiny_dataset, postgres_url, 2, "1", "1")
    assert_shared(folders, 2)
    if importlib.util.find_spec("psycopg2") is not None:  # the older driver, named in the URL, reads the same study
        storage = open_storage(postgres_url.replace("postgresql:", "postgresql+psycopg2:"))
        study_id = storage.get_study_id_from_name("shared")
        complete = [t.number for t in storage.get_all_trials(study_id) if t.state.name == "COMPLETE"]
        assert len(complete) == max(len(finished_trials(folder)) for folder in folders) >= 2
