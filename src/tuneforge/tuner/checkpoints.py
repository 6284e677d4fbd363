"""Checkpoint hygiene: results hold JSON and safetensors, never a pickled training_args.bin."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback


class JsonTrainingArgsCallback(TrainerCallback):
    """The Trainer pickles its arguments into every checkpoint; we keep a JSON copy instead.

    Nothing reads that file back on resume, and a pickle is code that runs when loaded: a
    results folder someone shares should not carry one.
    """

    def on_save(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return  # under DDP only rank 0 owns the checkpoint folder
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        pickled = folder / "training_args.bin"
        if pickled.exists():
            (folder / "training_args.json").write_text(args.to_json_string(), encoding="utf-8")
            pickled.unlink()
