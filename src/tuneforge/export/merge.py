"""Fold a LoRA adapter into its base weights (peft's `merge_and_unload`) and save a plain model folder.

The merged model is what every export format starts from: `--format hf` saves it as
safetensors, `--format gguf` hands its weights to the GGUF writer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.models.loading import ModelSource


def load_merged(adapter_dir: Path, source: ModelSource) -> tuple[Any, Any]:
    """The base model with the adapter merged in, in fp32, and the tokenizer the run trained with."""
    import torch
    from peft import PeftModel

    from tuneforge.models.loading import ModelSource, load_model
    from tuneforge.models.tokenizer import load_tokenizer_from
    from tuneforge.runs.folder import is_full_model

    # Training rendered conversations with ChatML when the tokenizer had no template of its own
    # (encode.render); the export must carry the template the model actually learned.
    tokenizer = load_tokenizer_from(adapter_dir, with_chat_template=True)
    if is_full_model(adapter_dir):  # a full fine-tune: its own weights are the model, nothing to merge
        full = ModelSource(str(adapter_dir), str(adapter_dir), "local", f"full fine-tune in {adapter_dir}")
        return load_model(full, torch.float32, "cpu").eval(), tokenizer
    # fp32 for the merge: adding a small LoRA update to bf16 weights would round much of it away.
    base = load_model(source, torch.float32, "cpu")
    merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
    return merged.eval(), tokenizer


def save_hf(model: Any, tokenizer: Any, folder: Path, dtype_name: str) -> None:
    """safetensors weights in the base model's own dtype, config, generation config, tokenizer, chat template."""
    import torch

    model.to(getattr(torch, dtype_name))
    if tokenizer.eos_token_id is not None and model.generation_config.eos_token_id is None:
        model.generation_config.eos_token_id = tokenizer.eos_token_id  # so generate() stops at the end of a turn
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
