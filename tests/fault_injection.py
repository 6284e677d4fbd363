"""Filesystem faults injected into real training processes: one write site raises ENOSPC (or the folder vanishes).

The machine that runs the tests can't mount a small tmpfs (no root in CI, and root ignores
permissions here), so each fault is the error the OS gives, raised at one named write site.
A child process gets the fault through `child_env(site, step)`: a `sitecustomize.py` on its
PYTHONPATH calls `install()` at start-up, before tuneforge is imported by the command.

Sites, each the place a real full disk fails first:
- `checkpoint`: staging checkpoint-N (the JSON copy of the training arguments, written after
  the Trainer's own files, so the staging folder is half full when it fails);
- `log`: the training log line announcing checkpoint-N;
- `eval_set`: eval_set.jsonl, written before the model loads;
- `tokenized`: the tokenized training rows in $TUNEFORGE_CACHE/tokenized, after a few batches
  of rows.arrow are on disk (a half-written cache entry);
- `metrics`: metrics.json in the final results;
- `plot`: loss.png;
- `card`: the model card README.md;
- `rename`: not a write: the results folder is renamed away after step N, as a user cleaning
  up in another window would.

Not training runs, so not sites here (tests/test_disk_faults.py patches them in-process): an
export's files, and the model cache's first conversion of a preset's GGUF.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE_ENV, STEP_ENV = "TUNEFORGE_TEST_FAULT", "TUNEFORGE_TEST_FAULT_STEP"
SITES = ("checkpoint", "log", "eval_set", "tokenized", "metrics", "plot", "card", "rename")


def disk_full(path: object) -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def child_env(
    site: str | None, step: int = 0, base: dict[str, str] | None = None, hook_dir: Path | None = None
) -> dict:
    """The environment of a child `python -m tuneforge train` that meets `site`'s fault (None: no fault)."""
    env = dict(base if base is not None else os.environ)
    env.pop(SITE_ENV, None)
    if site is None:
        return env
    assert site in SITES, site
    assert hook_dir is not None
    hook_dir.mkdir(parents=True, exist_ok=True)
    (hook_dir / "sitecustomize.py").write_text(
        f"import sys\nsys.path.insert(0, {str(ROOT)!r})\nfrom tests.fault_injection import install\ninstall()\n"
    )
    env["PYTHONPATH"] = os.pathsep.join([str(hook_dir), env.get("PYTHONPATH", "")])
    env[SITE_ENV], env[STEP_ENV] = site, str(step)
    return env


def install(site: str | None = None, step: int | None = None, patch=setattr) -> None:  # noqa: B010
    """Patch the write site named by the arguments or the environment; a no-op without one.

    `patch` is setattr in a child process, pytest's monkeypatch.setattr in-process (undone after the test).
    """
    site = site or os.environ.get(SITE_ENV)
    if not site:
        return
    step = int(os.environ.get(STEP_ENV, "0")) if step is None else step
    INSTALLERS[site](step, patch)


def _checkpoint(step: int, patch) -> None:
    from tuneforge.recipe import checkpointing

    original = checkpointing.json_training_args

    def failing(folder: Path, args: object) -> None:
        if folder.name == f"checkpoint-{step}":
            raise disk_full(folder / "training_args.json")
        original(folder, args)

    patch(checkpointing, "json_training_args", failing)


def _log(step: int, patch) -> None:
    from tuneforge.runs.runlog import RunLog

    original = RunLog.info

    class FullOnce:
        """The log's file object, whose next write fails: the paragraph after it still gets in, as space frees."""

        def __init__(self, handle, path: Path) -> None:
            self.handle, self.path = handle, path

        def write(self, text: str) -> int:
            raise disk_full(self.path)

        def __getattr__(self, name: str):
            return getattr(self.handle, name)

    def failing(self: RunLog, message: str, show: bool = True) -> None:
        if message.startswith("checkpoint saved") and message.endswith(f"checkpoint-{step}"):
            self._file = FullOnce(self._file, self.path)
            try:
                original(self, message, show)
            finally:
                self._file = self._file.handle
        original(self, message, show)

    patch(RunLog, "info", failing)


def _results_file(name: str, patch) -> None:
    from tuneforge.runs import results

    if name == "metrics.json":
        original = results.write_json

        def failing_json(path: Path, data: object) -> None:
            if path.name == name:
                raise disk_full(path)
            original(path, data)

        patch(results, "write_json", failing_json)
    elif name == "loss.png":
        patch(results, "plot_loss", lambda path, *args: (_ for _ in ()).throw(disk_full(path)))
    else:
        patch(results, "write_model_card", lambda folder, *args: (_ for _ in ()).throw(disk_full(folder / "README.md")))


def _eval_set(step: int, patch) -> None:
    from tuneforge.data import split

    def failing(path: Path, conversations: object) -> None:
        raise disk_full(path)

    patch(split, "write_jsonl", failing)


def _tokenized(step: int, patch) -> None:
    from tuneforge.data import token_cache

    original = token_cache._write

    def failing(path: Path, rows) -> None:  # type: ignore[no-untyped-def]
        def then_full():  # type: ignore[no-untyped-def]
            for count, row in enumerate(rows):
                if count == 8:  # two batches of 4 rows are in the file by now
                    raise disk_full(path)
                yield row

        original(path, then_full())

    patch(token_cache, "BATCH", 4)
    patch(token_cache, "_write", failing)


def _rename(step: int, patch) -> None:
    from tuneforge.recipe.progress import ProgressCallback

    original = ProgressCallback.on_step_end

    def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
        if state.global_step == step:
            out = Path(args.output_dir).parent
            out.rename(out.with_name(out.name + ".moved"))
        return original(self, args, state, control, **kwargs)

    patch(ProgressCallback, "on_step_end", on_step_end)


INSTALLERS = {
    "checkpoint": _checkpoint,
    "log": _log,
    "eval_set": _eval_set,
    "tokenized": _tokenized,
    "metrics": lambda step, patch: _results_file("metrics.json", patch),
    "plot": lambda step, patch: _results_file("loss.png", patch),
    "card": lambda step, patch: _results_file("README.md", patch),
    "rename": _rename,
}
