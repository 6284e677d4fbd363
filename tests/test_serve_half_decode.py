"""Guards serve --precision fp16: one-row decode steps read fp16 copies, everything else the fp32 weights."""

from __future__ import annotations

import socket

import torch

from tuneforge.serving.half_decode import HalfDecode
from tuneforge.serving.loading import base_model_name, load_engine, parse_adapter_specs, to_precision


def engines(tiny_results):
    specs = parse_adapter_specs([f"tuned={tiny_results}"])
    load = lambda: load_engine(specs, base_model_name(specs, None), log=lambda _: None)  # noqa: E731
    plain, half = load(), load()
    to_precision(half, "fp16", log=lambda _: None)
    return plain, half


def logits(engine, rows, name="tuned"):
    """One forward, no cache, for rows that want the model `name`."""
    with torch.inference_mode():
        return engine.model(input_ids=torch.tensor(rows), **engine.router.prepare([name] * len(rows))).logits


def copies(engine) -> HalfDecode:
    return engine.router.after_merge.__self__


def test_one_row_reads_the_fp16_copy_and_several_rows_the_fp32_weights(tiny_results):
    plain, half = engines(tiny_results)
    assert half.model.dtype == torch.float32  # the weights themselves stay fp32
    assert copies(half).nbytes > 0
    prompt = plain.chat_ids([{"role": "user", "content": "Please tell me about the heart."}])
    # a prompt of several tokens (prefill) runs on the fp32 weights: exactly the fp32 logits
    assert torch.equal(logits(half, [prompt]), logits(plain, [prompt]))
    # two rows of one token (a batched decode step without cache): fp32 as well
    assert torch.equal(logits(half, [[prompt[0]], [prompt[1]]]), logits(plain, [[prompt[0]], [prompt[1]]]))
    # one row of one token: the fp16 copy, so close to fp32 but rounded
    one, reference = logits(half, [[prompt[0]]]), logits(plain, [[prompt[0]]])
    assert not torch.equal(one, reference)
    assert torch.allclose(one, reference, rtol=0, atol=2e-2 * reference.abs().max())
    assert one.argmax(-1).tolist() == reference.argmax(-1).tolist()


def test_the_copies_follow_a_merge_and_an_unmerge(tiny_results):
    """A 'base' request unmerges the lone adapter: the fp16 copies must hold the base weights then."""
    plain, half = engines(tiny_results)
    pairs = copies(half).pairs
    assert half.router.merged
    assert all(torch.equal(h, m.weight.half()) for m, h in pairs)
    token = [[plain.chat_ids([{"role": "user", "content": "Hi"}])[-1]]]
    for name in ["base", "tuned", "base"]:
        one, reference = logits(half, token, name), logits(plain, token, name)
        assert half.router.merged == (name != "base")
        assert all(torch.equal(h, m.weight.half()) for m, h in pairs)
        assert torch.allclose(one, reference, rtol=0, atol=2e-2 * reference.abs().max())
    assert not torch.equal(logits(plain, token, "tuned"), logits(plain, token, "base")), "the adapter must bite"


def test_the_cli_flag_reaches_the_engine_and_a_wrong_value_is_refused(tiny_results, monkeypatch):
    from typer.testing import CliRunner

    from tuneforge.cli import app
    from tuneforge.commands import serve

    served = []
    monkeypatch.setattr(serve, "_serve", lambda engine, *rest: served.append(engine))
    with socket.socket() as probe:  # a free loopback port: serve binds it before the model loads
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    result = CliRunner().invoke(app, ["serve", "--adapter", str(tiny_results), "--port", port, "--precision", "fp16"])
    assert result.exit_code == 0, result.output
    assert "an fp16 copy" in result.output
    assert isinstance(copies(served[0]), HalfDecode)
    result = CliRunner().invoke(app, ["serve", "--adapter", str(tiny_results), "--precision", "fp8"])
    assert result.exit_code == 2 and "serve.precision" in result.output and "fp16" in result.output
