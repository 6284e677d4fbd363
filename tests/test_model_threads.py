"""Guards where the model's CPU work runs: the passing load thread, and the head's plain-row input."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import AutoModelForCausalLM

from tuneforge.machine.threads import on_passing_thread
from tuneforge.models.positions import dense_head_input


def test_on_passing_thread_returns_or_raises_from_a_thread_that_has_ended():
    seen = []

    def work(a, b=0):
        seen.append(threading.current_thread())
        return a + b

    assert on_passing_thread(work, 2, b=3) == 5
    assert seen[0] is not threading.current_thread() and not seen[0].is_alive()

    def fails():
        raise ValueError("bad adapter")

    with pytest.raises(ValueError, match="bad adapter"):
        on_passing_thread(fails)


def test_the_server_loads_its_model_off_the_calling_thread(tiny_results, monkeypatch):
    """load_engine's torch work (load, merge, cast) happens on a thread that is gone when it returns."""
    import tuneforge.models.loading as loading
    from tuneforge.serving.loading import base_model_name, load_engine, parse_adapter_specs

    threads = []
    real = loading.load_for_inference
    monkeypatch.setattr(
        loading, "load_for_inference", lambda *a, **k: threads.append(threading.current_thread()) or real(*a, **k)
    )
    specs = parse_adapter_specs([str(tiny_results)])
    engine = load_engine(specs, base_model_name(specs, None), log=lambda _: None, precision="bf16")
    assert threads and threads[0] is not threading.current_thread() and not threads[0].is_alive()
    assert engine.model.dtype == torch.bfloat16


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_head_gets_the_last_position_as_a_plain_row_with_the_same_logits(tiny_model_dir, dtype):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype).eval().requires_grad_(False)
    ids = torch.randint(5, 200, (2, 11))
    with torch.no_grad():
        before = model(input_ids=ids, logits_to_keep=1).logits
    strides = []
    dense_head_input(model)
    dense_head_input(model)  # once is enough: a second call adds nothing
    model.get_output_embeddings().register_forward_pre_hook(lambda m, args: strides.append(args[0].stride()))
    with torch.no_grad():
        after = model(input_ids=ids, logits_to_keep=1).logits
        whole = model(input_ids=ids).logits
    hidden = model.config.hidden_size
    assert strides == [(hidden, hidden, 1), (11 * hidden, hidden, 1)], "the sliced row is re-laid; a whole batch is not"
    assert len(model.get_output_embeddings()._forward_pre_hooks) == 2
    close = {"rtol": 1e-2, "atol": 1e-2} if dtype == torch.bfloat16 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(after, before, **close)  # the same logits; only the kernel's path changed
    torch.testing.assert_close(after[:, -1], whole[:, -1], **close)
