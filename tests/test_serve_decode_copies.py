"""Guards serve --precision fp16, int8 and int4: decode steps of few rows read the copies, everything else the fp32 weights."""

from __future__ import annotations

import socket

import pytest
import torch

from tuneforge.serving.decode_copies import INT4_GROUP, DecodeCopies, HalfDecode, Int4Decode, Int8Decode
from tuneforge.serving.loading import base_model_name, load_engine, parse_adapter_specs, to_precision


def engines(tiny_results, precision="fp16"):
    specs = parse_adapter_specs([f"tuned={tiny_results}"])
    load = lambda: load_engine(specs, base_model_name(specs, None), log=lambda _: None)  # noqa: E731
    plain, copied = load(), load()
    to_precision(copied, precision, log=lambda _: None)
    return plain, copied


def logits(engine, rows, name="tuned"):
    """One forward, no cache, for rows that want the model `name`."""
    with torch.inference_mode():
        return engine.model(input_ids=torch.tensor(rows), **engine.router.prepare([name] * len(rows))).logits


def copies(engine) -> DecodeCopies:
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
    pairs = copies(half).layers
    assert half.router.merged
    assert all(torch.equal(h[0], m.weight.half()) for m, h in pairs)
    token = [[plain.chat_ids([{"role": "user", "content": "Hi"}])[-1]]]
    for name in ["base", "tuned", "base"]:
        one, reference = logits(half, token, name), logits(plain, token, name)
        assert half.router.merged == (name != "base")
        assert all(torch.equal(h[0], m.weight.half()) for m, h in pairs)
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
    for precision, kind in [("fp16", HalfDecode), ("int8", Int8Decode), ("int4", Int4Decode)]:
        result = CliRunner().invoke(
            app, ["serve", "--adapter", str(tiny_results), "--port", port, "--precision", precision]
        )
        assert result.exit_code == 0, result.output
        assert f"an {precision} copy" in result.output
        assert isinstance(copies(served[-1]), kind)
    result = CliRunner().invoke(app, ["serve", "--adapter", str(tiny_results), "--precision", "fp8"])
    assert result.exit_code == 2 and "serve.precision" in result.output and "fp16" in result.output


def test_int8_steps_of_up_to_8_rows_read_the_8_bit_copy_and_longer_ones_the_fp32_weights(tiny_results):
    plain, int8 = engines(tiny_results, "int8")
    assert int8.model.dtype == torch.float32 and isinstance(copies(int8), Int8Decode)
    prompt = plain.chat_ids([{"role": "user", "content": "Please tell me about the heart."}])
    assert len(prompt) > 8
    # a prompt's prefill (more than 8 rows) and a step of 9 requests run on the fp32 weights: exact
    assert torch.equal(logits(int8, [prompt]), logits(plain, [prompt]))
    nine = [[token] for token in prompt[:9]]
    assert torch.equal(logits(int8, nine), logits(plain, nine))
    # a decode step of 8 requests, or of one: the int8 copy, close to fp32 but rounded
    for rows in ([[token] for token in prompt[:8]], [[prompt[0]]]):
        got, reference = logits(int8, rows), logits(plain, rows)
        assert not torch.equal(got, reference)
        assert torch.allclose(got, reference, rtol=0, atol=5e-2 * reference.abs().max())


def test_int8_copies_round_each_weight_to_its_rows_step_and_follow_a_merge(tiny_results):
    plain, int8 = engines(tiny_results, "int8")
    layers = copies(int8).layers
    assert layers and copies(int8).nbytes < sum(m.weight.numel() for m, _ in layers) * 1.1  # ~1 byte a weight

    def within_a_step():
        for module, (q, scale) in layers:
            step = scale.float()[:, None]
            assert q.dtype == torch.int8 and int(q.abs().max()) <= 127
            assert ((q.float() * step - module.weight).abs() <= step * 0.51).all()
            assert (module.weight.abs().amax(dim=1) / 127 - scale.float()).abs().max() <= 1e-2 * scale.float().max()

    within_a_step()
    token = [[plain.chat_ids([{"role": "user", "content": "Hi"}])[-1]]]
    for name in ["base", "tuned"]:
        got, reference = logits(int8, token, name), logits(plain, token, name)
        assert int8.router.merged == (name != "base")
        within_a_step()  # the copies were made again from the (un)merged weights
        assert torch.allclose(got, reference, rtol=0, atol=5e-2 * reference.abs().max())


def test_int8_leaves_a_layer_the_kernel_cannot_take_in_fp32():
    """_weight_int8pack_mm needs an input width that is a multiple of 16; it crashes on others."""
    model = torch.nn.Sequential(torch.nn.Linear(48, 8), torch.nn.Linear(8, 40), torch.nn.Linear(40, 5))
    reference = [layer.weight.clone() for layer in model]
    x = torch.randn(1, 48)
    with torch.inference_mode():
        want = model(x)
        decode = Int8Decode(model)
        got = model(x)
    assert [module for module, _ in decode.layers] == [model[0]]
    assert all(torch.equal(layer.weight, w) for layer, w in zip(model, reference, strict=True))
    assert not torch.equal(got, want) and torch.allclose(got, want, rtol=0, atol=5e-2 * want.abs().max())


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_int8_and_int4_on_a_gpu_stop_before_the_model_loads(tiny_results, monkeypatch, precision):
    from typer.testing import CliRunner

    from tuneforge.cli import app
    from tuneforge.machine import devices
    from tuneforge.serving import loading

    monkeypatch.setattr(devices, "inference_device", lambda: ("cuda", "bf16"))
    monkeypatch.setattr(loading, "load_engine", lambda *a, **k: pytest.fail("the model loaded"))
    result = CliRunner().invoke(app, ["serve", "--adapter", str(tiny_results), "--precision", precision])
    assert result.exit_code == 2, result.output
    assert f"serve.precision is {precision}" in result.output and "cuda" in result.output and "bf16" in result.output


def four_bit(weight):
    """What the int4 copy should multiply by: each group of 32 inputs rounded to 16 levels between its extremes."""
    out_f, in_f = weight.shape
    groups = weight.reshape(out_f, in_f // INT4_GROUP, INT4_GROUP)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = ((high - low) / 15).to(torch.bfloat16).float()
    zero = (low + 8 * scale).to(torch.bfloat16).float()
    levels = torch.round((groups - zero) / scale + 8).clamp(0, 15)
    return ((levels - 8) * scale + zero).reshape(out_f, in_f)


def test_int4_puts_the_mlp_in_4_bits_and_the_rest_in_8_and_follows_a_merge(tiny_results):
    plain, int4 = engines(tiny_results, "int4")
    layers = copies(int4).layers
    mlp = [(m, c) for m, c in layers if c[0].dtype == torch.uint8]
    assert len(mlp) == 2 * 3 and len(layers) > len(mlp)  # gate, up and down of both layers in 4 bits
    named = {id(m): name for name, m in int4.model.named_modules()}
    assert all((".mlp." in named[id(m)]) == (c[0].dtype == torch.uint8) for m, c in layers)  # the rest in 8 bits
    assert copies(int4).nbytes < copies(engines(tiny_results, "int8")[1]).nbytes
    for name in ["base", "tuned"]:
        token = [[plain.chat_ids([{"role": "user", "content": "Hi"}])[-1]]]
        got, reference = logits(int4, token, name), logits(plain, token, name)
        assert int4.router.merged == (name != "base")
        assert not torch.equal(got, reference)
        assert torch.allclose(got, reference, rtol=0, atol=0.15 * reference.abs().max())
        for module, _ in mlp:  # the 4-bit product is the rounded weights' product (made again after the merge)
            x = torch.randn(3, module.in_features)
            with torch.inference_mode():
                want = x.to(torch.bfloat16).float() @ four_bit(module.weight).t() + (
                    0 if module.bias is None else module.bias
                )
                assert torch.allclose(module(x), want, rtol=0, atol=2e-2 * want.abs().max())
    prompt = plain.chat_ids([{"role": "user", "content": "Please tell me about the heart."}])
    assert torch.equal(logits(int4, [prompt]), logits(plain, [prompt]))  # prefill: the fp32 weights
