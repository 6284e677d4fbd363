"""Load what `tuneforge serve` was asked to serve: one base model and its LoRA adapters.

Only safetensors weights load. A pickled `.bin` can run code when it is unpickled, so a
downloaded results folder must not be able to do that. `trust_remote_code` stays off for the
same reason. The base comes from each adapter's `tuneforge.yaml` (what the user trained on),
and all adapters must share it, because they are attached to a single copy.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.errors import UserError
from tuneforge.runs.folder import is_full_model
from tuneforge.serving.engine import BASE, Engine

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    path: Path


def parse_adapter_specs(values: list[str], checksums: bool = True) -> list[AdapterSpec]:
    """'results' or 'medical=runs/medical'; the name defaults to the folder's name.

    Every adapter's folder is checked whole first (runs/folder.py: check_folder): a damaged one
    stops the server before it starts, naming it, never a server quietly missing an adapter.
    """
    specs: list[AdapterSpec] = []
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not _NAME.match(name):
            name, path = Path(value).expanduser().resolve().name, value
        spec = AdapterSpec(name, Path(path).expanduser())
        _check_adapter(spec, {s.name for s in specs}, checksums)
        specs.append(spec)
    full = [spec for spec in specs if is_full_model(spec.path)]
    if full and len(specs) > 1:
        raise UserError(
            f"'{full[0].path}' holds a full fine-tune (--finetune full), which is a whole model, not an adapter "
            "on a shared base. Serve it alone with `tuneforge serve --adapter "
            f"{full[0].path}`, and the other folders with another `tuneforge serve` process."
        )
    return specs


def _check_adapter(spec: AdapterSpec, taken: set[str], checksums: bool) -> None:
    from tuneforge.runs.folder import check_folder

    where = f"--adapter {spec.name}={spec.path}"
    if not _NAME.match(spec.name):
        raise UserError(
            f"The adapter name '{spec.name}' ({where}) may use letters, digits, '.', '_' and '-' only. Name it with --adapter NAME=FOLDER."
        )
    if spec.name == BASE or spec.name in taken:
        why = "is reserved for the base model" if spec.name == BASE else "is used twice"
        raise UserError(f"The adapter name '{spec.name}' {why}. Pick another with --adapter NAME=FOLDER.")
    if spec.path.is_dir():
        check_folder(spec.path, checksums)
    if is_full_model(spec.path) and (spec.path / "model.safetensors").is_file():
        return  # a full fine-tune: served alone, as the model itself (parse_adapter_specs checks that)
    if not (spec.path / "adapter_config.json").is_file():
        raise UserError(
            f"'{spec.path}' ({where}) is not a results folder: it has no adapter_config.json. "
            "Point --adapter at the output folder of `tuneforge train` (default: results)."
        )
    if not (spec.path / "adapter_model.safetensors").is_file():
        raise UserError(
            f"'{spec.path}' has no adapter_model.safetensors. Only safetensors adapters are served, because "
            "pickled .bin weights can run code when loaded. Re-save the adapter with safe_serialization=True."
        )


def base_model_name(specs: list[AdapterSpec], override: str | None) -> str:
    """--model, or the base every adapter was trained on (runs/folder.py's one rule); all must share it."""
    from tuneforge.runs.folder import base_model_for, model_key, read_run_config

    if not specs:
        if override:
            return override
        raise UserError(
            "Nothing to serve: give --adapter FOLDER (a results folder), or --model to serve a base model alone."
        )
    bases = {spec.name: base_model_for(spec.path, read_run_config(spec.path), override) for spec in specs}
    if len({model_key(source) for source in bases.values()}) > 1:
        listing = "; ".join(f"{name}: {source.name}" for name, source in bases.items())
        raise UserError(
            f"These adapters were trained on different base models ({listing}). Serve them with separate `tuneforge serve` processes."
        )
    return override or next(iter(bases.values())).name


def load_engine(
    specs: list[AdapterSpec], base_name: str, log: Callable[[str], None] = print, merge: bool = True,
    precision: str = "auto", compile_decode: bool = False,
) -> Engine:  # fmt: skip
    """One base model on the inference device, the adapters attached to it, and the run's tokenizer.

    `merge`: a lone adapter is merged into the base weights (adapters.py says why).
    `precision`: "bf16" casts the weights after the merge, "fp16" and "int8" add copies for decode
    steps (`to_precision` says why). `compile_decode`: a lone request's decode step is compiled
    before the engine is returned (compiled_decode.py).
    The work runs on a thread that ends with it, so the thread that decodes later is the only one
    with an OpenMP team (machine/threads.py: 57 vs 33 tokens/s for 8 clients on 2 cores).
    """
    from tuneforge.machine.threads import on_passing_thread

    return on_passing_thread(_load_engine, specs, base_name, log, merge, precision, compile_decode)


def _load_engine(specs: list[AdapterSpec], base_name: str, log: Callable[[str], None], merge: bool,
                 precision: str, compile_decode: bool) -> Engine:  # fmt: skip
    from tuneforge.machine.devices import inference_device
    from tuneforge.models.loading import load_for_inference, model_path, resolve_model
    from tuneforge.models.tokenizer import load_tokenizer_from

    source = resolve_model(base_name)
    log(f"base model: {source.description} on {inference_device()[0]}")
    model = load_for_inference(source)
    # The results folder's tokenizer first: training may have added the pad token or chat template.
    first = specs[0].path if specs and (specs[0].path / "tokenizer_config.json").is_file() else None
    tokenizer = load_tokenizer_from(first or model_path(source), with_chat_template=True)
    if specs and is_full_model(specs[0].path):
        model = _full_model(model, specs[0], log)
    elif specs:
        model = _attach_adapters(model, specs, log)
    model.eval()
    context = _context_length(model.config, tokenizer)
    engine = Engine(model, tokenizer, [s.name for s in specs], context, tokenizer.chat_template, merge=merge)
    to_precision(engine, precision, log)
    if compile_decode:
        from tuneforge.serving.compiled_decode import compile_decode as compile_step

        compile_step(engine, log)
    return engine


def check_precision(precision: str, compile_decode: bool = False, max_batch: int = 8) -> None:
    """Before any model loads: int8's and int4's kernels and measured gains are the CPU's; --compile needs g++."""
    from tuneforge.machine.devices import inference_device
    from tuneforge.serving.compiled_decode import check_compile

    device = inference_device()[0]
    check_compile(compile_decode, device, max_batch)
    if precision in ("int8", "int4") and device != "cpu":
        raise UserError(
            f"serve.precision is {precision}, which is for serving on a CPU, and this server would run on {device}. "
            "Use --precision bf16, or leave it at auto, on a GPU."
        )


def to_precision(engine: Engine, precision: str, log: Callable[[str], None]) -> None:
    """serve --precision bf16, fp16, int8 or int4: fewer bytes read per decoded token, fp32 stays the default.

    bf16 casts every weight, after the adapter is merged in fp32 so its small deltas are not
    rounded twice. It cuts the server's memory (RSS 697 vs 987 MB for the 135M model), but on an
    AVX2 CPU (no AVX-512 BF16, no AMX) a prompt's prefill takes about 2.7x as long as in fp32, and
    13 of 24 held-out greedy answers changed. fp16 and int8 keep the fp32 weights for prompts and
    add copies that decode steps of few rows read (decode_copies.py says why): fp16 gave one client
    1.40x the tokens/s on the AVX2 CPU with 22 of 24 answers as fp32's; int8 is for CPUs with
    AVX-512 BF16 or AMX, where fp16 and bf16 gain nothing; int4 puts int8's MLP copies in 4 bits
    (faster again, more answers change). All are opt-in because answers can change; the figures
    and commands are in docs/PERFORMANCE.md.
    """
    import torch

    if precision == "bf16" and engine.model.dtype != torch.bfloat16:
        engine.model.to(torch.bfloat16)
        log("weights: bf16 (serve --precision bf16)")
        return
    from tuneforge.serving.decode_copies import COPIES

    if precision in COPIES:
        check_precision(precision)
        copies = COPIES[precision](engine.model)
        engine.router.after_merge = copies.refresh
        which = "one request's decode steps" if copies.rows == 1 else f"decode steps of up to {copies.rows} requests"
        log(f"weights: fp32, and an {precision} copy ({copies.nbytes / 1e6:.0f} MB) for {which} "
            f"(serve --precision {precision})")  # fmt: skip


def _attach_adapters(base: Any, specs: list[AdapterSpec], log: Callable[[str], None]) -> Any:
    """One base in memory; each extra adapter adds only its LoRA matrices (peft multi-adapter)."""
    from peft import PeftModel

    model = None
    for spec in specs:
        try:
            if model is None:
                model = PeftModel.from_pretrained(base, str(spec.path), adapter_name=spec.name, is_trainable=False)
            else:
                model.load_adapter(str(spec.path), adapter_name=spec.name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise UserError(
                f"The adapter '{spec.name}' in '{spec.path}' does not fit this base model: "
                f"{str(exc).splitlines()[0][:240]}. Was it trained on another model? Set --model to its base."
            ) from None
        log(f"adapter '{spec.name}': {spec.path}")
    return model


def _full_model(base: Any, spec: AdapterSpec, log: Callable[[str], None]) -> Any:
    """A full fine-tune answers as the named model; the base already loaded answers as 'base'."""
    from tuneforge.models.loading import ModelSource, load_for_inference
    from tuneforge.models.with_base import WithBase

    tuned = load_for_inference(ModelSource(str(spec.path), str(spec.path), "local", f"full fine-tune in {spec.path}"))
    log(f"full fine-tune '{spec.name}': {spec.path}")
    return WithBase(tuned, lambda: base)


def _context_length(config: Any, tokenizer: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0)
    return limit if 0 < limit < 1_000_000 else 2048
