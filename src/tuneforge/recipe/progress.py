"""Live progress for the Trainer loop: a rich bar on screen, and one log line per logged step."""

from __future__ import annotations

import json
import time
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from transformers import TrainerCallback

from tuneforge.runs.runlog import RunLog

HELDOUT_CURVE = "heldout_curve.jsonl"  # mid-run held-out losses, one JSON line per evaluation


class ProgressCallback(TrainerCallback):
    """Shows step/total, loss, learning rate, tokens/s, ETA and elapsed time while training runs.

    Tokens/s counts real (non-padding) tokens: the Trainer tracks them when
    `include_num_input_tokens_seen="non_padding"`.
    """

    def __init__(self, log: RunLog) -> None:
        self.log = log
        self.history: list[dict[str, float]] = []
        self.bar = Progress(
            TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=log.console, transient=False,
        )  # fmt: skip
        self.task: Any = None
        self._last = (0.0, 0)  # (time, tokens) at the previous log
        self.tokens_at_start = 0
        self.training = False  # between on_train_begin and on_train_end: mid-run evaluations print a line
        self.curve_steps: list[int] = []
        self.last_heldout: tuple[int, float] | None = None  # (step, loss) of the latest mid-run evaluation

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.training = True
        self.adopt(state)
        self.bar.start()
        self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step, stats="")
        self._last = (time.monotonic(), state.num_input_tokens_seen)

    def adopt(self, state: Any) -> None:
        """A resumed run carries the earlier steps' log in its state: the curve and metrics stay whole.

        Also called without training when the checkpoint already holds the last step (recipe/recovery.py).
        """
        self.history = [entry for entry in self.history if entry["step"] <= state.global_step]
        if not self.history:
            self.history = [resumed_entry(e) for e in state.log_history if "loss" in e]
        self.tokens_at_start = state.num_input_tokens_seen  # a resumed run counts only its own tokens/s

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.bar.update(self.task, completed=state.global_step)
        if state.global_step == state.max_steps:
            control.should_log = True  # the final loss always reaches the log and metrics.json

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None, **kwargs: Any) -> None:
        if not logs or "loss" not in logs:
            return
        now, tokens = time.monotonic(), state.num_input_tokens_seen
        speed = (tokens - self._last[1]) / max(now - self._last[0], 1e-9)
        self._last = (now, tokens)
        entry = {"step": state.global_step, "loss": float(logs["loss"]),
                 "learning_rate": float(logs.get("learning_rate", 0.0)), "tokens_per_s": speed,
                 "tokens_seen": tokens, "elapsed_s": now - self.log.started}  # fmt: skip
        self.history.append(entry)
        stats = f"loss {entry['loss']:.4f}  lr {entry['learning_rate']:.2e}  {speed:,.0f} tok/s"
        self.bar.update(self.task, stats=stats)
        self.log.info(f"step {state.global_step}/{state.max_steps}  {stats}", show=not self.log.console.is_terminal)

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    **kwargs: Any) -> None:  # fmt: skip
        """Mid-run held-out loss (train.eval_steps): logged, and appended to heldout_curve.jsonl for a sweep's pruner."""
        if not metrics or "eval_loss" not in metrics or state.global_step == 0:
            return
        entry = {"step": state.global_step, "eval_loss": float(metrics["eval_loss"])}
        if self.training:  # every rank keeps it: all of them skip the after-training measure alike (no hang)
            self.last_heldout = (state.global_step, entry["eval_loss"])
        if not state.is_world_process_zero:
            return
        if self.training:
            self.log.info(f"step {state.global_step}/{state.max_steps}  held-out loss {entry['eval_loss']:.4f}")
        elif self.curve_steps and self.curve_steps[-1] == state.global_step:
            return  # the after-training measure of a step the loop already evaluated: said once
        # the after-training measure prints its own line ("held-out loss, tuned model"); the curve still gets it
        self.curve_steps.append(state.global_step)
        with (self.log.path.parent / HELDOUT_CURVE).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")  # one whole line per write: a reader never sees half

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.log.info(f"checkpoint saved: {args.output_dir}/checkpoint-{state.global_step}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.training = False
        self.stop_display()

    def stop_display(self) -> None:
        self.bar.stop()


def resumed_entry(logged: dict[str, Any]) -> dict[str, float]:
    """A history line rebuilt from the Trainer's saved log; speed and time were not saved there."""
    return {"step": logged["step"], "loss": float(logged["loss"]),
            "learning_rate": float(logged.get("learning_rate", 0.0)), "tokens_per_s": 0.0,
            "tokens_seen": logged.get("num_input_tokens_seen", 0), "elapsed_s": 0.0}  # fmt: skip
