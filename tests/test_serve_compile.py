"""Guards serve --compile: a lone request's decode steps run compiled, answer as eager, and no request waits for a compile."""

from __future__ import annotations

import socket

import pytest

from tuneforge.serving import compiled_decode
from tuneforge.serving.compiled_decode import CompiledDecode
from tuneforge.serving.loading import base_model_name, load_engine, parse_adapter_specs

from .test_serve_batching import answers, jobs_for, run_batched, scaled_adapter


def graphs() -> int:
    """How many graphs dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


@pytest.mark.slow
def test_lone_requests_decode_compiled_and_answer_as_eager_with_no_compile_while_serving(tiny_results, monkeypatch):
    specs = parse_adapter_specs([f"tuned={tiny_results}"])
    eager = load_engine(specs, base_model_name(specs, None), log=lambda _: None)
    before = graphs()
    lines: list[str] = []
    compiled = load_engine(specs, base_model_name(specs, None), log=lines.append, compile_decode=True)
    assert graphs() > before, "the decode step was not compiled at load"
    assert any("compiled in" in line for line in lines)
    loaded = graphs()

    used: list[bool] = []
    takes = CompiledDecode.takes
    monkeypatch.setattr(CompiledDecode, "takes", lambda self, *a: used.append(takes(self, *a)) or used[-1])
    models = ["tuned", "base"]
    expected = [eager.generate(job) for job in jobs_for(eager, models)]
    one_at_a_time = [run_batched(compiled, [job], 8)[0] for job in jobs_for(compiled, models)]
    assert answers(one_at_a_time) == answers(expected)
    together = run_batched(compiled, jobs_for(compiled, models), 8)  # several rows, and 'base' rows: eager
    assert answers(together) == answers(expected)
    assert any(used) and not all(used), "lone 'tuned' steps run compiled, the rest eager"
    assert graphs() == loaded, "a request made dynamo compile again: a client waited for it"

    # the guards on a call's inputs stay (compiled_decode._input_guards_only): rows of a batch sent to
    # the one-row graph make dynamo compile a graph for them, never run the wrong one
    monkeypatch.setattr(CompiledDecode, "takes", lambda self, names, inputs: takes(self, names[:1], inputs))
    expected = [eager.generate(job) for job in jobs_for(eager, ["tuned"])]
    assert answers(run_batched(compiled, jobs_for(compiled, ["tuned"]), 8)) == answers(expected)
    assert graphs() > loaded, "several rows ran through the one-row graph: the guards on the inputs were dropped"


@pytest.mark.slow
def test_with_two_adapters_the_first_decodes_compiled_and_switching_adapters_never_compiles_again(
    tiny_results, tmp_path
):
    other = scaled_adapter(tiny_results, tmp_path / "other", -3.0)
    specs = parse_adapter_specs([f"tuned={tiny_results}", f"other={other}"])
    eager = load_engine(specs, base_model_name(specs, None), log=lambda _: None)
    compiled = load_engine(specs, base_model_name(specs, None), log=lambda _: None, compile_decode=True)
    assert compiled.compiled.name == "tuned"
    loaded = graphs()
    models = ["tuned", "other", "base"]  # one request at a time, the adapter switching at every request
    expected = [eager.generate(job) for job in jobs_for(eager, models)]
    assert len({r.text for r in expected[:3]}) == 3, "the three models must answer differently for this test to bite"
    assert answers([run_batched(compiled, [job], 8)[0] for job in jobs_for(compiled, models)]) == answers(expected)
    assert graphs() == loaded, "switching adapters made dynamo compile again: a client waited for it"


def test_compile_without_a_cxx_compiler_with_max_batch_1_or_on_mps_stops_before_the_model_loads(
    tiny_results, monkeypatch
):
    from typer.testing import CliRunner

    from tuneforge.cli import app
    from tuneforge.machine import devices
    from tuneforge.serving import loading

    monkeypatch.setattr(loading, "load_engine", lambda *a, **k: pytest.fail("the model loaded"))
    monkeypatch.setattr(compiled_decode.shutil, "which", lambda name: None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    result = CliRunner().invoke(app, ["serve", "--adapter", str(tiny_results), "--port", port, "--compile"])
    assert result.exit_code == 2, result.output
    assert "serve.compile" in result.output and "g++" in result.output and "--compile off" in result.output

    result = CliRunner().invoke(app, ["serve", "--adapter", str(tiny_results), "--compile", "--max-batch", "1"])
    assert result.exit_code == 2 and "serve.max_batch 1" in result.output and "generate()" in result.output

    monkeypatch.setattr(devices, "inference_device", lambda: ("mps", "fp16"))
    result = CliRunner().invoke(app, ["serve", "--adapter", str(tiny_results), "--port", port, "--compile"])
    assert result.exit_code == 2 and "mps" in result.output, result.output


def test_a_compile_that_fails_leaves_a_server_that_answers_as_eager_and_says_why(tiny_results, monkeypatch):
    specs = parse_adapter_specs([f"tuned={tiny_results}"])
    eager = load_engine(specs, base_model_name(specs, None), log=lambda _: None)
    expected = [eager.generate(job) for job in jobs_for(eager, ["tuned"])]

    def broken(self, model, name):  # what inductor raises when g++ cannot build its kernels
        self.name = name
        self.model = lambda **_: (_ for _ in ()).throw(RuntimeError("CppCompileError: C++ compile error\nmore"))

    monkeypatch.setattr(CompiledDecode, "__init__", broken)
    lines: list[str] = []
    engine = load_engine(specs, base_model_name(specs, None), log=lines.append, compile_decode=True)
    assert engine.compiled is None
    warning = next(line for line in lines if "--compile failed" in line)
    assert "CppCompileError: C++ compile error" in warning and "more" not in warning and "g++" in warning
    assert answers([run_batched(engine, [job], 8)[0] for job in jobs_for(engine, ["tuned"])]) == answers(expected)
