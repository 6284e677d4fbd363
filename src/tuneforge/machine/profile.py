"""Turn a machine (Hardware) and a model size into training settings, each with its reason.

Pure: no I/O, no torch. Tests feed it fake machines, and `doctor` and `train` show the same
reasons to the user. The rules of thumb, in the order they are applied:

1. Device: CUDA if torch sees an NVIDIA GPU, else MPS on Apple Silicon, else CPU.
2. Memory the run may use: the smallest GPU's VRAM; on a Mac about 2/3 of unified memory
   (macOS keeps the rest from the GPU); on a CPU 3/4 of RAM (the OS and other programs).
3. Weights = params × bytes/param: fp32 4, bf16/fp16 2, 4-bit ~0.55 (with its scales).
   Weights are "comfortable" up to 60% of that memory; beyond it we step down a precision.
   - CUDA: bf16 if compute capability ≥ 8.0, else fp16; 4-bit (bitsandbytes, CUDA only)
     when half-precision weights are not comfortable.
   - MPS and CPU: fp32 (the reliable choice there); bf16 only when fp32 weights won't fit.
4. Gradient checkpointing: on when memory is tight (4-bit, or weights > 50% of memory),
   otherwise off, because recomputing activations costs about 30% speed.
5. Batch × length: what is left after a fixed reserve and the weights (+10% for LoRA state),
   times 0.8 for fragmentation, divided by activation memory per token (see
   `_mb_per_token`). We take the first (batch, length) of a ladder that fits: big GPUs get
   long sequences and big batches; Apple GPUs stop at 1024 tokens; a CPU stays at the
   guide's 4 × 512, because there speed, not memory, is the limit.
6. Gradient accumulation brings one update to 16 sequences (4 on a CPU, whose batch of 4
   already is one); several GPUs each add a batch, so they need less of it.
7. Strategy for several GPUs: DDP when the model fits on one of them, FSDP when it doesn't.

Weights are counted in GB (10^9 bytes) and capacities in GiB (what a "24 GB" card reports),
which leaves a deliberate ~7% of slack.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel

from tuneforge.machine.hardware import Hardware

Value = bool | int | str

BYTES_PER_PARAM = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "4bit": 0.55}
COMFORTABLE = 0.60  # weights above this share leave too little for activations
TIGHT = 0.50  # weights above this share: turn gradient checkpointing on
RESERVE_GB = 1.5  # CUDA context or Python + torch, LoRA optimizer state, allocator slack
MPS_SHARE = 2 / 3  # macOS lets the GPU wire roughly 2/3 of unified memory by default
CPU_SHARE = 0.75
VOCAB = 64_000  # typical vocabulary (SmolLM2 49k, Llama-3 128k): the logits cost per token
SLOW_CPU_PARAMS = 1.5e9
LADDERS = {  # (batch, max length), best first
    "cuda": [(16, 2048), (8, 2048), (4, 2048), (4, 1024), (2, 1024), (2, 512), (1, 512), (1, 256)],
    "mps": [(8, 1024), (4, 1024), (4, 512), (2, 512), (1, 512), (1, 256)],
    "cpu": [(4, 512), (2, 512), (1, 512), (1, 256)],
}
TARGET_SEQUENCES_PER_UPDATE = {"cuda": 16, "mps": 16, "cpu": 4}


class Setting(BaseModel):
    key: str  # dotted config field, e.g. "train.batch_size"
    value: Value
    reason: str  # plain English with the numbers behind it, shown to the user


class Profile(BaseModel):
    device: str
    settings: list[Setting]
    warnings: list[str] = []

    def overrides(self) -> dict[str, tuple[Value, str]]:
        """{dotted key: (value, reason)}: the hardware layer of the config precedence."""
        return {s.key: (s.value, s.reason) for s in self.settings}

    def value(self, key: str) -> Value:
        return self.overrides()[key][0]


@dataclass
class _Plan:
    """The memory arithmetic, kept together so every reason can quote the same numbers."""

    hw: Hardware
    params: int
    device: str
    usable_gb: float
    where: str  # "the 24 GB GPU", "your 8 GB RAM"…: what `usable_gb` is part of
    precision: str = "fp32"
    four_bit: bool = False
    precision_reason: str = ""
    four_bit_reason: str = ""

    @property
    def weights_gb(self) -> float:
        return self.params * BYTES_PER_PARAM["4bit" if self.four_bit else self.precision] / 1e9

    @property
    def share(self) -> float:
        return self.weights_gb / self.usable_gb if self.usable_gb > 0 else math.inf

    @property
    def activation_gb(self) -> float:
        return max(0.0, (self.usable_gb - RESERVE_GB - self.weights_gb * 1.1) * 0.8)


def recommend_profile(hw: Hardware, model_params: int) -> Profile:
    """Settings for training a `model_params` model on `hw`, and what to warn the user about."""
    device, device_reason = _device(hw)
    plan = _memory(hw, model_params, device)
    _choose_precision(plan)
    checkpointing, ckpt_reason = _checkpointing(plan)
    tokens = plan.activation_gb * 1e3 / _mb_per_token(plan, checkpointing)
    batch, length = _batch_and_length(device, tokens)
    fits = batch * length <= tokens
    accum, accum_reason = _grad_accum(device, batch, len(hw.cuda_gpus))
    settings = [
        Setting(key="train.device", value=device, reason=device_reason),
        Setting(key="train.precision", value=plan.precision, reason=plan.precision_reason),
        Setting(key="model.load_in_4bit", value=plan.four_bit, reason=plan.four_bit_reason),
        Setting(key="train.batch_size", value=batch, reason=_batch_reason(plan, batch, length, tokens, fits)),
        Setting(key="train.grad_accum", value=accum, reason=accum_reason),
        Setting(key="train.max_seq_length", value=length, reason=_length_reason(device, batch, length, fits)),
        Setting(key="train.gradient_checkpointing", value=checkpointing, reason=ckpt_reason),
    ]
    if len(hw.cuda_gpus) > 1:  # one device: nothing to share, so no strategy to explain
        settings.append(Setting(key="train.strategy", **_strategy(plan, fits)))
    warnings = _warnings(plan, fits, batch * length)
    return Profile(device=device, settings=settings, warnings=warnings)


def serve_precision(hw: Hardware) -> Setting:
    """What `tuneforge serve --precision` to try on this machine, with the measured reason.

    Advice only, never applied: serve's default stays `auto` (fp32 on a CPU, the answers as
    trained), because the faster formats change some greedy answers (docs/PERFORMANCE.md).
    """
    if hw.kind != "cpu":
        how = ("on the GPU in bf16 (fp16 where it has none)" if hw.kind == "cuda" else
               "on Apple's GPU in fp32; the int8 and fp16 copies are measured on CPUs only")  # fmt: skip
        return Setting(key="serve.precision", value="auto", reason=f"auto: answers {how}")
    if hw.cpu_bf16:
        return Setting(key="serve.precision", value="int8", reason=(
            "int8: this CPU has AVX-512 BF16 or AMX, where 8-bit weight copies make decode steps faster "
            "(2-core Xeon: one greedy client 33.9 instead of 24.6 tokens/s, 46.6 adding --compile; 8 clients 99.9 "
            "instead of 73.8); some greedy answers change, so the default stays fp32"))  # fmt: skip
    return Setting(key="serve.precision", value="fp16", reason=(
        "fp16: on a CPU without AVX-512 BF16 or AMX, fp16 weight copies make one client's decode steps faster "
        "(2-core AVX2 EPYC: 1.57x in generate); a few greedy answers change, so the default stays fp32"))  # fmt: skip


def _device(hw: Hardware) -> tuple[str, str]:
    gpus = hw.cuda_gpus
    if gpus:
        smallest = min(g.vram_gb for g in gpus)
        if len(gpus) == 1:
            return "cuda", f"cuda: {gpus[0].name} ({_gb(smallest)}) is usable by torch"
        names = ", ".join(sorted({g.name for g in gpus}))
        return "cuda", (
            f"cuda: {len(gpus)} NVIDIA GPUs ({names}); each trains its own batch, "
            f"planned for the smallest ({_gb(smallest)})"
        )
    if hw.mps_available:
        return "mps", f"mps: the {hw.apple_chip or 'Apple Silicon'} GPU is available through Metal (MPS)"
    if hw.torch_version is None:
        return "cpu", "cpu: torch could not be imported, so no GPU can be used (see warnings)"
    if hw.nvidia_smi_gpus:
        return (
            "cpu",
            f"cpu: nvidia-smi lists {hw.nvidia_smi_gpus} NVIDIA GPU(s) but torch cannot use them (see warnings)",
        )
    if _is_apple(hw):
        return "cpu", "cpu: this torch cannot use the Apple GPU (see warnings)"
    return "cpu", "cpu: no GPU that torch can use was found"


def _memory(hw: Hardware, params: int, device: str) -> _Plan:
    if device == "cuda":
        vram = min(g.vram_gb for g in hw.cuda_gpus)
        return _Plan(hw, params, device, vram, f"the {_gb(vram)} GPU")
    if device == "mps":
        usable = hw.ram_gb * MPS_SHARE
        return _Plan(
            hw, params, device, usable, f"the ~{_gb(usable)} of your {_gb(hw.ram_gb)} unified memory the GPU may use"
        )
    usable = hw.ram_gb * CPU_SHARE
    return _Plan(hw, params, device, usable, f"the ~{_gb(usable)} of your {_gb(hw.ram_gb)} RAM training may use")


def _choose_precision(plan: _Plan) -> None:
    """Fill in precision and 4-bit, each with its reason (rule 3 in the module docstring)."""
    size, need = params_label(plan.params), lambda p: _gb(plan.params * BYTES_PER_PARAM[p] / 1e9)
    if plan.device == "cuda":
        _choose_cuda_precision(plan, size, need)
        return
    plan.four_bit_reason = "off: 4-bit needs bitsandbytes, which runs only on NVIDIA GPUs"
    if plan.device == "cpu" and plan.hw.cpu_bf16:
        # Measured (benchmarks/train_throughput.py, SmolLM2-135M, 2-core EPYC with AMX/AVX512-BF16):
        # bf16 autocast 1.67x the fp32 speed, held-out loss within 1% of fp32 after the same steps.
        plan.precision = "bf16"
        plan.precision_reason = (
            f"bf16: this CPU has bf16 instructions (avx512_bf16/amx_bf16); measured 1.7x faster than fp32 "
            f"with the same loss; the {size} model's weights stay in fp32 ({need('fp32')})"
        )
        return
    if plan.params * 4 / 1e9 <= COMFORTABLE * plan.usable_gb:
        plan.precision = "fp32"
        plan.precision_reason = _fp32_reason(plan) + f"; the {size} model needs {need('fp32')} in fp32"
        return
    plan.precision = "bf16"
    plan.precision_reason = (
        f"bf16: the {size} model needs {need('fp32')} in fp32, too much for {plan.where}; "
        f"bf16 halves it to {need('bf16')}" + (" (MPS bf16 needs macOS 14+)" if plan.device == "mps" else "")
    )


def _choose_cuda_precision(plan: _Plan, size: str, need) -> None:
    gpu = min(plan.hw.cuda_gpus, key=lambda g: g.vram_gb)
    if all(g.bf16 for g in plan.hw.cuda_gpus):
        plan.precision = "bf16"
        plan.precision_reason = (
            f"bf16: {gpu.name} (compute capability {gpu.compute_capability}) supports it; "
            "half the memory of fp32, no loss scaling"
        )
    else:
        plan.precision = "fp16"
        plan.precision_reason = (
            f"fp16: {gpu.name} (compute capability {gpu.compute_capability}) has no bf16 (needs 8.0+); "
            "fp16 is its fast half precision"
        )
    half_gb = plan.params * 2 / 1e9
    if half_gb <= COMFORTABLE * plan.usable_gb:
        plan.four_bit_reason = (
            f"off: the {size} model needs {need('bf16')} in {plan.precision}, {_pct(half_gb, plan.usable_gb)} of "
            f"{plan.where}; 4-bit would cost quality and speed for nothing"
        )
        return
    plan.four_bit = True
    plan.four_bit_reason = (
        f"on: the {size} model needs {need('bf16')} in {plan.precision}, you have {_gb(plan.usable_gb)}; "
        f"4-bit needs about {need('4bit')}"
    )


def _fp32_reason(plan: _Plan) -> str:
    if plan.device == "mps":
        return "fp32: the most reliable precision for training on Apple GPUs (MPS)"
    return "fp32: this CPU has no bf16 instructions (avx512_bf16/amx_bf16), so bf16 would be slower, not faster"


def _checkpointing(plan: _Plan) -> tuple[bool, str]:
    used = f"the weights take {_gb(plan.weights_gb)} of {_gb(plan.usable_gb)} ({_pct(plan.weights_gb, plan.usable_gb)})"
    if plan.four_bit:
        return True, f"on: 4-bit means memory is tight: {used}; recomputing activations saves memory at ~30% speed cost"
    if plan.share > TIGHT:
        return True, f"on: {used}; recomputing activations saves memory at ~30% speed cost"
    return False, f"off: {used}; checkpointing would cost ~30% speed for memory you don't need"


def _strategy(plan: _Plan, fits: bool) -> dict[str, str]:
    """Rule 7: DDP (a full copy per GPU, the fastest) unless the model can't fit on one GPU; then FSDP shards it."""
    gpus, size = len(plan.hw.cuda_gpus), params_label(plan.params)
    if fits:
        return {"value": "ddp", "reason": (
            f"ddp: the {size} model fits on {plan.where}, so each of the {gpus} GPUs keeps a full copy "
            "and trains its own batch, the fastest way to use them")}  # fmt: skip
    return {"value": "fsdp", "reason": (
        f"fsdp: the {size} model does not fit on {plan.where}; FSDP shards it over the {gpus} GPUs, "
        f"about {_gb(plan.weights_gb / gpus)} of weights each")}  # fmt: skip


def _mb_per_token(plan: _Plan, checkpointing: bool) -> float:
    """Activation memory per token in MB, for LoRA training.

    About 0.4 MB/token for a 135M model in half precision (≈23 bytes × layers × hidden;
    LoRA saves fewer activations than full fine-tuning), growing with √params because
    layers × hidden does; fp32 doubles it; checkpointing keeps ~1/10. Plus the logits,
    which dominate for small models.
    """
    compute_bytes = 4 if plan.precision == "fp32" else 2
    activations = 0.2 * compute_bytes * math.sqrt(plan.params / 135e6)
    # Logits and their gradient: fp32 8 bytes per vocab entry; half precision 12, because
    # the loss upcasts a copy to fp32. Checkpointing does not shrink these.
    logits = VOCAB * (8 if plan.precision == "fp32" else 12) / 1e6
    return activations * (0.1 if checkpointing else 1.0) + logits


def _batch_and_length(device: str, tokens: float) -> tuple[int, int]:
    for batch, length in LADDERS[device]:
        if batch * length <= tokens:
            return batch, length
    return LADDERS[device][-1]


def _batch_reason(plan: _Plan, batch: int, length: int, tokens: float, fits: bool) -> str:
    if not fits:
        return f"{batch}: the smallest setting; the model does not fit in memory anyway (see warnings)"
    if plan.device == "cpu" and (batch, length) == LADDERS["cpu"][0]:
        return f"{batch}: on a CPU, speed and not memory is the limit; {batch} × {length} tokens per step keeps steps short"
    return (
        f"{batch}: about {_gb(plan.activation_gb)} is left for activations after the {_gb(plan.weights_gb)} of "
        f"weights, room for ~{_round(tokens)} tokens; {batch} × {length} = {batch * length:,} fits"
    )


def _length_reason(device: str, batch: int, length: int, fits: bool) -> str:
    longest = LADDERS[device][0][1]
    if not fits:
        return f"{length}: the shortest setting, to save memory; longer examples are cut"
    if device == "cpu" and length == longest:
        return f"{length}: enough for most instruction examples; on a CPU every extra token slows each step; longer examples are cut"
    if device == "mps" and length == longest:
        return f"{length}: the most this profile uses on Apple GPUs, which are slower than NVIDIA ones; longer examples are cut"
    if length == longest:
        return f"{length}: memory has room for long examples at batch {batch}; longer ones are cut"
    return f"{length}: {longest} tokens would not fit next to the weights; longer examples are cut at {length}"


def _grad_accum(device: str, batch: int, gpus: int) -> tuple[int, str]:
    per_step = batch * max(1, gpus)
    accum = max(1, TARGET_SEQUENCES_PER_UPDATE[device] // per_step)
    if gpus > 1:
        if accum == 1:
            return 1, f"1: {gpus} GPUs × batch {batch} already make {per_step} sequences per update"
        return accum, (
            f"{accum}: {gpus} GPUs × batch {batch} × {accum} = {per_step * accum} sequences per update; "
            "more GPUs need less accumulation"
        )
    if device == "cpu" and accum == 1:
        return 1, f"1: batch {batch} already is the update; accumulating would only make slow CPU updates rarer"
    if accum == 1:
        return 1, f"1: batch {batch} already gives {batch} sequences per update"
    return (
        accum,
        f"{accum}: {batch} × {accum} = {batch * accum} sequences per update, steadier than {batch}, at no extra memory",
    )


def _warnings(plan: _Plan, fits: bool, step_tokens: int) -> list[str]:
    hw, size, found = plan.hw, params_label(plan.params), []
    if hw.torch_version is None:
        found.append(
            f"torch could not be imported ({hw.torch_error or 'unknown error'}), so nothing can train. "
            "Fix: rerun ./run.sh, or reinstall torch (pip install --force-reinstall torch)."
        )
    else:
        found += _gpu_warnings(hw)
    if not fits:
        found.append(
            f"The {size} model will not fit: its weights need about {_gb(plan.weights_gb)} even in "
            f"{'4-bit' if plan.four_bit else plan.precision}, plus room to train, too much for {plan.where}. "
            "Pick a smaller model, e.g. smollm2-135m, or a machine with more memory."
        )
    if plan.four_bit and hw.bitsandbytes != "works":
        found.append(
            f"4-bit loading needs bitsandbytes, which is {hw.bitsandbytes} here. "
            "Fix: pip install 'tuneforge[cuda]' (or pip install bitsandbytes)."
        )
    if fits and plan.device == "cpu" and plan.params > SLOW_CPU_PARAMS:
        tflop = 4 * plan.params * step_tokens / 1e12
        found.append(
            f"A {size} model on CPU is very slow: each step needs about {tflop:.0f} TFLOP, which takes "
            f"minutes on {hw.cpu_cores} cores. A model under 1B params, or a GPU, is a better fit."
        )
    need_disk = max(10.0, plan.params * 2 / 1e9 + 5)  # hub weights are usually 16-bit
    if hw.disk_free_gb < need_disk:
        found.append(
            f"Only {_gb(hw.disk_free_gb)} free on disk at {hw.disk_path}; the {size} model download and "
            f"checkpoints need about {_gb(need_disk)}. Free some space or choose another output folder."
        )
    return found


def _gpu_warnings(hw: Hardware) -> list[str]:
    """The two classic traps: a GPU the driver sees but torch doesn't, and a Mac without MPS."""
    if hw.nvidia_smi_gpus and not hw.cuda_gpus:
        if hw.torch_cuda_build is None:
            return [
                f"nvidia-smi lists {hw.nvidia_smi_gpus} NVIDIA GPU(s), but torch {hw.torch_version} was built "
                "for CPU only, so training would run on the CPU. Fix: rerun ./run.sh (it installs the CUDA "
                "build of torch), or: pip install --force-reinstall torch --index-url https://download.pytorch.org/whl/cu126"
            ]
        return [
            f"nvidia-smi lists {hw.nvidia_smi_gpus} NVIDIA GPU(s) and torch has CUDA {hw.torch_cuda_build}, but "
            f"torch cannot use them ({hw.cuda_error or 'torch.cuda.is_available() is False'}). The driver may be "
            "older than that CUDA needs: update the NVIDIA driver, or rerun ./run.sh to pick a matching torch."
        ]
    if not _is_apple(hw) or hw.mps_available:
        return []
    chip = hw.apple_chip or "Apple Silicon"
    if hw.arch not in ("arm64", "aarch64"):
        return [
            f"Python runs as {hw.arch} (Rosetta) on an {chip}, so its GPU can't be used. "
            "Fix: install an arm64 Python and rerun ./run.sh."
        ]
    if not hw.mps_built:
        return [
            f"torch {hw.torch_version} was built without MPS, so the {chip} GPU can't be used. "
            "Fix: rerun ./run.sh, or pip install --force-reinstall torch."
        ]
    return [
        f"torch has MPS but the {chip} GPU is not available; "
        f"MPS needs macOS 12.3 or newer (this is {hw.os_version or 'unknown'})."
    ]


def _is_apple(hw: Hardware) -> bool:
    return hw.os == "Darwin" and (hw.apple_chip is not None or hw.arch == "arm64")


def params_label(params: int) -> str:
    """134_515_008 -> "135M", 7e9 -> "7B", 1.5e9 -> "1.5B"."""
    if params >= 1e9:
        return f"{params / 1e9:.1f}".rstrip("0").rstrip(".") + "B"
    return f"{params / 1e6:.0f}M"


def _gb(value: float) -> str:
    return f"{value:.1f} GB" if value < 10 else f"{value:.0f} GB"


def _pct(part: float, whole: float) -> str:
    if whole <= 0:
        return "all"
    share = 100 * part / whole
    return "<1%" if share < 1 else f"{share:.0f}%"


def _round(tokens: float) -> str:
    return f"{int(tokens // 100 * 100):,}"


def trial_memory_gb(hw: Hardware, params: int, precision: str, tokens_per_step: int,
                    checkpointing: bool) -> tuple[float, float, str]:  # fmt: skip
    """One training process's memory estimate, the memory such processes share, and what that is.

    The same arithmetic as the profile (weights, reserve, activations per token), so that a sweep's
    `--workers` check quotes the numbers `tuneforge doctor` explains.
    """
    device, _ = _device(hw)
    plan = _memory(hw, params, device)
    plan.precision = precision if precision in BYTES_PER_PARAM else "fp32"
    need = plan.weights_gb * 1.1 + RESERVE_GB + tokens_per_step * _mb_per_token(plan, checkpointing) / 1e3
    return need, plan.usable_gb, plan.where
