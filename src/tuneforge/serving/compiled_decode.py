"""serve --compile: a lone request's decode steps run through torch.compile (inductor).

Why: on a CPU, a decode step of one row of the 135M model does about 11 ms of weight reads
(int8) but takes 25-26 ms, because it is some 2,000 small operations, each a few µs of
dispatch. Inductor fuses the norms, the rotary embedding and the activations into a few
generated C++ kernels. Measured on the 2-core AMX Xeon, one row with --precision int8: 26.4 ms
a step eager, 19.4 ms compiled, 17.5 once dynamo checks only the inputs' guards
(`_input_guards_only`); one greedy client of the server: 33.7 -> 46.6 tokens/s, and fp32 24.6 -> 29.7
(docs/PERFORMANCE.md).

Why only one row, and one model: compiling takes about 85 s the first time and 30 s once
inductor's on-disk cache holds the kernels, for each shape and each adapter state dynamo sees. The batch-of-one graph is
the one that gains most (8 rows gained 1.0-1.16x: their step is mostly weight reads already,
shared by the rows), so only it is compiled, for the model the server was started for (the
lone adapter, or the first one), before the server takes requests. Everything else, prompts
(prefill), batches of several rows, other adapters and 'base' rows of a merged adapter, runs
eagerly as before, so no request ever waits for a compile. Inductor's kernels add in another
order than eager PyTorch, so a greedy answer may change in a near-tie token; that is why it is
opt-in.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from typing import Any

from tuneforge.errors import UserError

# inductor's CPU backend builds its kernels with the C++ compiler it finds first (torch._inductor.cpp_builder)
_CXX = ("g++", "c++", "clang++", "cl")


def check_compile(compile_decode: bool, device: str, max_batch: int) -> None:
    """Before any model loads: the batched path, a C++ compiler for inductor on a CPU, and no MPS."""
    if not compile_decode:
        return
    if max_batch == 1:
        raise UserError(
            "serve.compile is true with serve.max_batch 1, but --max-batch 1 serves each request through "
            "transformers' generate(), which --compile does not touch: it would only add start-up time. Leave "
            "--max-batch at its default (8), or drop --compile."
        )
    if device == "mps":
        raise UserError(
            "serve.compile is true, but this server would run on Apple's GPU (mps), where torch.compile does not "
            "build decode kernels yet. Leave --compile off on a Mac."
        )
    if device == "cpu" and not any(shutil.which(name) for name in _CXX):
        raise UserError(
            "serve.compile is true, but no C++ compiler was found, and torch.compile builds its CPU kernels with "
            "one. Install g++ (Debian/Ubuntu: sudo apt install g++; macOS: xcode-select --install), or leave "
            "--compile off."
        )


class CompiledDecode:
    """The compiled model, and which decode steps use it: one row, the model it was compiled for."""

    def __init__(self, model: Any, name: str) -> None:
        import torch

        self.name = name
        # dynamic=True: the cache grows by a column every step; one graph serves every length
        self.model = torch.compile(model, dynamic=True, options=_input_guards_only())

    def takes(self, names: list[str], inputs: dict[str, Any]) -> bool:
        """A decode step of one row for the compiled model; a prompt's last token (logits_to_keep) is not one."""
        one_token = inputs["input_ids"].shape[1] == 1 and "logits_to_keep" not in inputs
        return len(names) == 1 and names[0] == self.name and one_token


def _input_guards_only() -> dict[str, Any] | None:
    """Dynamo checks only the call's own inputs before running the graph: not module state, not globals.

    Why: before every call, dynamo checks some 11,000 facts it read while tracing (each module's
    attributes and weights, the globals transformers reads): ~2 ms of a 19.6 ms step (int8, the
    2-core AMX Xeon; 17.5 ms with this filter, docs/PERFORMANCE.md). The server changes none of
    them between calls that reach the compiled model: `takes` lets through only a step of one row
    for the model it was compiled for, and the adapter router puts the weights in that model's
    state (merged, active adapter) before the call. The guards on the inputs (the token, mask,
    positions and cache: their shapes, dtypes and the symbolic shapes' bounds) stay, so an input
    the graph was not built for still compiles again rather than running a wrong graph.
    torch.compiler's filters for this are in torch 2.8 and later; before, every guard stays.
    """
    import torch.compiler as compiler

    modules = getattr(compiler, "skip_guard_on_all_nn_modules_unsafe", None)
    globals_ = getattr(compiler, "skip_guard_on_globals_unsafe", None)
    if modules is None or globals_ is None:
        return None

    def keep(entries: list[Any]) -> list[bool]:
        return [a and b for a, b in zip(modules(entries), globals_(entries), strict=True)]

    return {"guard_filter_fn": keep}


def compile_decode(engine: Any, log: Callable[[str], None]) -> None:
    """Compile the lone-request decode step now, with a short greedy decode, so no client waits for it."""
    import torch

    from tuneforge.serving.decoding import Batch
    from tuneforge.serving.jobs import Job

    name = engine.adapters[0] if engine.adapters else engine.names[0]
    engine.compiled = CompiledDecode(engine.model, name)
    log(
        f"compiling the decode step of one request to '{name}' (serve --compile; 1.5 minutes the first time, "
        "about 30 s after)"
    )
    start = time.perf_counter()
    batch = Batch(engine.model, engine.tokenizer, [])  # no stop tokens: the warm-up decodes every step it asks for
    # a prompt of several tokens: dynamo would take a cache of length 1 for a constant and compile again later
    job = Job(model=name, input_ids=engine.text_ids("Hello there. " * 4), max_new_tokens=4, temperature=0.0)
    try:
        with torch.inference_mode():
            batch.join(job, engine.forward)
            for _ in range(2):  # the first step compiles; the second checks the graph is reused for a longer cache
                batch.step(engine.forward)
    # Why so broad: inductor fails in many ways outside our hands (the C++ compiler or Python's headers
    # missing or broken, an operator a model's code uses that it cannot trace, its own bugs), each its own
    # exception type. A server that would run fine without --compile should not refuse to start for it.
    except Exception as exc:  # noqa: BLE001
        engine.compiled = None
        torch._dynamo.reset()  # drop what was traced: nothing may reach the half-built graph
        reason = (str(exc).strip().splitlines() or [""])[0][:300]
        log(
            f"warning: --compile failed ({type(exc).__name__}: {reason}); serving without it, as without the flag. "
            "torch.compile builds its kernels with g++ and Python's headers (Debian/Ubuntu: sudo apt install g++ "
            "python3-dev); or drop --compile."
        )
        return
    log(f"decode step compiled in {time.perf_counter() - start:.0f} s")
