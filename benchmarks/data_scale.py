"""Big data files: peak memory of checking and tokenizing a 200,000-row jsonl, and the cache's second run.

Writes a generated messages-format jsonl (synthetic questions and answers, nothing copied),
then runs `tuneforge data check` on it twice in fresh processes with an empty
$TUNEFORGE_CACHE/tokenized: the first run reads, checks and tokenizes every row into the Arrow
cache; the second finds the same key and maps the cached rows. Prints rows, seconds and peak
RSS of each run (the child's ru_maxrss, so the figure is the tool's alone).

    .venv/bin/python benchmarks/data_scale.py                  # 200,000 rows, the embedded model's tokenizer
    .venv/bin/python benchmarks/data_scale.py --rows 2000 --model tiny --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.conftest's tiny tokenizer builder
WORDS = ("heart lung kidney liver bone muscle nerve blood skin brain joint vessel cell tissue gland "
         "acute chronic mild severe rare common early late inflamed enlarged reduced increased").split()  # fmt: skip


def write_rows(path: Path, count: int) -> None:
    """Generated chats of 20-60 words: varied enough that the tokenizer does real work."""
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            words = [WORDS[(i * 7 + k * 13) % len(WORDS)] for k in range(20 + i % 40)]
            question = f"Please explain case {i}: {' '.join(words[:8])}?"
            row = {"messages": [{"role": "user", "content": question},
                                {"role": "assistant", "content": " ".join(words).capitalize() + "."}]}  # fmt: skip
            handle.write(json.dumps(row) + "\n")


def one_run(data: Path, model: str, cache: Path) -> dict[str, float]:
    """`tuneforge data check` in a fresh process: wall seconds and the peak RSS of that process."""
    env = dict(os.environ, TUNEFORGE_CACHE=str(cache), PYTHONPATH=str(ROOT / "src"))
    started = time.monotonic()
    code = ("import resource, sys\nfrom tuneforge.cli import app\n"
            "try:\n    app(sys.argv[1:])\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('PEAK_RSS_MB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code, "data", "check", "--dataset", str(data), "--model", model,
                           "--json"], env=env, capture_output=True, text=True)  # fmt: skip
    if done.returncode:
        raise SystemExit(done.stderr[-3000:])
    peak = float(done.stdout.rsplit("PEAK_RSS_MB", 1)[1])
    report = json.loads(done.stdout[done.stdout.index("{") : done.stdout.rindex("}") + 1])
    return {"seconds": round(time.monotonic() - started, 1), "peak_rss_mb": round(peak),
            "examples": report["examples"], "trainable_examples": report["trainable_examples"]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--model", default="smollm2-135m", help="a model name, or 'tiny' for the test tokenizer")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="data-scale-") as folder:
        work = Path(folder)
        model = args.model
        if model == "tiny":
            from tests.conftest import build_tiny_model, build_tiny_tokenizer

            build_tiny_model(work / "tiny", build_tiny_tokenizer(work / "tiny"))
            model = str(work / "tiny")
        data = work / "rows.jsonl"
        write_rows(data, args.rows)
        cache = Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge"))
        scratch = work / "cache"  # a fresh tokenized cache, with the user's converted models linked in
        scratch.mkdir()
        if (cache / "models").is_dir():
            (scratch / "models").symlink_to(cache / "models")
        figures = {"rows": args.rows, "file_mb": round(data.stat().st_size / 2**20, 1), "model": args.model,
                   "first": one_run(data, model, scratch), "second (cache)": one_run(data, model, scratch)}  # fmt: skip
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
