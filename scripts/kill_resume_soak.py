"""Fault injection: SIGKILL real training processes at random moments, restart them, and check nothing was lost.

Each life of the run is a fresh `python -m tuneforge train` on a tiny local model, saving a
checkpoint every step. Half the kills land while a checkpoint is being written (the script
waits for a staging folder to appear), half at a random moment after a logged step. After
every kill the same command is run again, with no cleanup by hand. At the end:
- each restart resumed from the newest checkpoint committed before its kill (0 lost steps);
- the final adapter equals an uninterrupted run's (max absolute difference);
- every logged per-step loss equals the uninterrupted run's;
- no staging or trash folder remains.

    python scripts/kill_resume_soak.py --kills 10            # what CI runs (about 2 minutes)
    python scripts/kill_resume_soak.py --kills 50 --json soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.conftest builds the tiny model and data
STEP_LINE = re.compile(r"step (\d+)/\d+\s+loss ([0-9.]+)")
RESUME_LINE = re.compile(r"from checkpoint-(\d+) \(step")
SETTINGS = """\
lora: {r: 8, alpha: 16, dropout: 0.1}
train:
  max_steps: %d
  batch_size: 4
  learning_rate: 0.005
  max_seq_length: 128
  precision: fp32
  eval_examples: 0
  save_steps: 1
  save_total_limit: 2
  logging_steps: 1
"""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=10, help="SIGKILLs before the run may finish")
    parser.add_argument("--steps", type=int, default=0, help="training steps (default: enough for the kills)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the kill moments")
    parser.add_argument("--workdir", type=Path, help="keep files here instead of a temporary folder")
    parser.add_argument("--json", type=Path, help="write the result here too")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    steps = args.steps or 10 * args.kills + 20  # a life trains about 5 steps before its kill
    with tempfile.TemporaryDirectory(prefix="tuneforge-soak-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        result = soak(workdir, args.kills, steps, random.Random(args.seed))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")
    return 0 if result["ok"] else 1


def soak(workdir: Path, kills: int, steps: int, rng: random.Random) -> dict:
    command = setup(workdir, steps)
    started = time.monotonic()
    reference = workdir / "reference"
    finish(command + ["--output-dir", str(reference)], workdir / "reference.out")
    out = workdir / "soak"
    lives, history = [], []
    while len(lives) < kills:
        lives.append(
            one_life(command + ["--output-dir", str(out)], out, workdir / f"life-{len(lives)}.out", rng, len(lives))
        )
        if lives[-1]["finished"]:
            break  # the run ended before this kill; the lives so far still count
    if not lives[-1]["finished"]:
        finish(command + ["--output-dir", str(out)], workdir / "final.out")
    else:
        (workdir / "final.out").write_text("")
    history = [workdir / f"life-{i}.out" for i in range(len(lives))] + [workdir / "final.out"]
    return verdict(reference, out, lives, history, time.monotonic() - started)


def setup(workdir: Path, steps: int) -> list[str]:
    from tests.conftest import build_tiny_model, build_tiny_tokenizer, write_tiny_dataset

    model = workdir / "model"
    if not model.is_dir():
        model.mkdir()
        build_tiny_model(model, build_tiny_tokenizer(model))
    data = write_tiny_dataset(workdir / "data.jsonl")
    config = workdir / "soak.yaml"
    config.write_text(SETTINGS % steps, encoding="utf-8")
    return [
        sys.executable,
        "-m",
        "tuneforge",
        "train",
        "--model",
        str(model),
        "--dataset",
        str(data),
        "--config",
        str(config),
    ]


def environment() -> dict[str, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    return env


def finish(command: list[str], log: Path) -> None:
    with log.open("w") as handle:
        code = subprocess.call(command, stdout=handle, stderr=subprocess.STDOUT, env=environment())
    if code != 0:
        raise SystemExit(f"{' '.join(command)} exited {code}; see {log}")


def one_life(command: list[str], out: Path, log: Path, rng: random.Random, index: int) -> dict:
    """Start the run, kill it at a chosen moment, and note what was committed at the kill."""
    during_save = index % 2 == 0
    with log.open("w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=environment())
        staging_seen = wait_for_moment(process, out, log, during_save, rng)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        code = process.wait()
    from tuneforge.runs.checkpoint_store import newest_usable

    committed = newest_usable(out / "checkpoints")
    return {
        "mode": "during-save" if during_save else "random",
        "killed_while_staging": staging_seen,
        "exit_code": code,
        "finished": code == 0,
        "committed_step": committed.manifest.get("step") if committed.folder else 0,
    }


def wait_for_moment(process: subprocess.Popen, out: Path, log: Path, during_save: bool, rng: random.Random) -> bool:
    """Block until the kill moment; True when a checkpoint was being staged at that moment."""
    checkpoints = out / "checkpoints"
    first_step = wait_for_new_step(process, log)
    if during_save:
        skip = rng.randint(0, 2)  # not always the first save of a life
        seen = 0
        while process.poll() is None:
            if checkpoints.is_dir() and any(p.name.startswith(".staging-") for p in os.scandir(checkpoints)):
                if seen >= skip:
                    return True
                seen += 1
                while any(p.name.startswith(".staging-") for p in os.scandir(checkpoints)) and process.poll() is None:
                    time.sleep(0.0002)
            time.sleep(0.0002)
        return False
    time.sleep(rng.uniform(0, 0.3) if first_step else 0)
    return checkpoints.is_dir() and any(p.name.startswith(".staging-") for p in os.scandir(checkpoints))


def wait_for_new_step(process: subprocess.Popen, log: Path) -> bool:
    while process.poll() is None:
        if STEP_LINE.search(log.read_text(errors="replace")):
            return True
        time.sleep(0.01)
    return False


def logged_losses(path: Path) -> list[tuple[int, float]]:
    return [(int(m.group(1)), float(m.group(2))) for m in STEP_LINE.finditer(path.read_text(errors="replace"))]


def verdict(reference: Path, out: Path, lives: list[dict], history: list[Path], seconds: float) -> dict:
    from safetensors.torch import load_file

    printed = dict(logged_losses(reference.parent / "reference.out"))  # 4 decimals, also from killed lives
    mismatches = [(step, loss) for path in history for step, loss in logged_losses(path) if printed.get(step) != loss]
    exact = [(e["step"], e["loss"]) for e in json.loads((reference / "metrics.json").read_text())["loss_history"]]
    resumed_exact = [(e["step"], e["loss"]) for e in json.loads((out / "metrics.json").read_text())["loss_history"]]
    if exact != resumed_exact:
        mismatches.append(("metrics.json loss_history differs", len(exact), len(resumed_exact)))
    resumed = [
        int(m.group(1)) if (m := RESUME_LINE.search(path.read_text(errors="replace"))) else 0 for path in history[1:]
    ]
    lost = [life["committed_step"] - start for life, start in zip(lives, resumed) if start != life["committed_step"]]
    a, b = load_file(reference / "adapter_model.safetensors"), load_file(out / "adapter_model.safetensors")
    diff = max(float((a[k] - b[k]).abs().max()) for k in a)
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith((".staging-", ".trash-"))]
    killed = [life for life in lives if life["exit_code"] == -signal.SIGKILL]
    result = {
        "kills": len(killed),
        "kills_while_staging": sum(life["killed_while_staging"] for life in killed),
        "restarts_without_cleanup": len(history) - 1,
        "resumed_from_steps": resumed,
        "lost_steps": sum(lost),
        "max_abs_adapter_diff": diff,
        "loss_mismatches": mismatches[:10],
        "staging_left": leftovers,
        "seconds": round(seconds, 1),
    }
    result["ok"] = not lost and diff <= 1e-6 and not mismatches and not leftovers
    return result


if __name__ == "__main__":
    sys.exit(main())
