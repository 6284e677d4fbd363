"""Write a merged llama-architecture model as one GGUF file with the gguf package's GGUFWriter.

Names, layout and metadata follow llama.cpp's convert_hf_to_gguf.py for `LlamaModel`, so
llama.cpp, LM Studio, Ollama and transformers' `gguf_file=` loader read the file:
- tensor names come from gguf's own table (`get_tensor_name_map`);
- the q and k projections are permuted the way llama.cpp's rope kernel expects (readers undo it);
- 1-D tensors (norms) stay f32; a matrix whose rows don't split into 32-value blocks falls back
  from q8_0 to f16, as llama.cpp's converter does;
- a tied output layer is left out: llama.cpp and transformers reuse `token_embd` when
  `output.weight` is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

# HF model types that llama.cpp runs as its "llama" architecture.
GGUF_MODEL_TYPES = ("llama", "mistral")
QUANTS = ("f16", "q8_0")


def unsupported_reason(config: Any) -> str | None:
    """Why this base model can't be written as llama-architecture GGUF, or None when it can."""
    arch = f"{config.model_type} ({', '.join(config.architectures or ['?'])})"
    if config.model_type not in GGUF_MODEL_TYPES:
        return arch
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return f"{arch} with bias terms in attention or MLP"
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type != "default":
        return f"{arch} with '{rope_type}' rope scaling"
    return None


def write_gguf(model: Any, tokenizer: Any, tokenizer_dir: Path, path: Path, quant: str, name: str, pre: str) -> int:
    """Write the whole file; returns the number of tensors written."""
    import gguf

    from tuneforge.export.gguf_tokenizer import add_tokenizer

    config = model.config
    writer = gguf.GGUFWriter(path, gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA])
    try:
        add_model_metadata(writer, config, quant, name)
        add_tokenizer(writer, tokenizer, tokenizer_dir, model.get_input_embeddings().weight.shape[0], pre)
        count = 0
        for tensor_name, data, raw_dtype in gguf_tensors(model.state_dict(), config, quant):
            writer.add_tensor(tensor_name, data, raw_dtype=raw_dtype)
            count += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return count


def add_model_metadata(writer: Any, config: Any, quant: str, name: str) -> None:
    """The `llama.*` hyperparameters llama.cpp needs to build the graph, plus general.* labels."""
    import gguf

    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.num_key_value_heads or heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)
    if head_dim != config.hidden_size // heads:  # e.g. Mistral Nemo: llama.cpp can't derive it then
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    file_type = gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def gguf_tensors(state_dict: dict[str, Any], config: Any, quant: str) -> Iterator[tuple[str, Any, Any]]:
    """(GGUF name, numpy data, raw GGML type or None) for every weight, in llama.cpp's layout."""
    import gguf

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    for hf_name, tensor in state_dict.items():
        if hf_name == "lm_head.weight" and config.tie_word_embeddings:
            continue  # tied: readers take token_embd when output.weight is absent
        name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise RuntimeError(f"No GGUF name for the tensor {hf_name}; this model is not plain llama.")
        data = tensor.detach().to("cpu").float().numpy()
        if name.endswith("attn_q.weight"):
            data = permute_for_rope(data, heads, heads)
        elif name.endswith("attn_k.weight"):
            data = permute_for_rope(data, heads, kv_heads)
        yield (name, *encode(data, quant))


def permute_for_rope(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """Reorder q/k rows from HF's rotate-half layout to llama.cpp's interleaved rope pairs.

    Copied from llama.cpp's `LlamaModel.permute`; transformers' GGUF loader applies the inverse.
    """
    if n_head != n_head_kv:
        n_head = n_head_kv
    return (
        weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def encode(data: Any, quant: str) -> tuple[Any, Any]:
    """Norms stay f32; matrices become f16 or q8_0 (via gguf.quants), f16 where rows don't fit q8_0 blocks."""
    import gguf
    import numpy as np

    if data.ndim == 1:
        return data.astype(np.float32), None
    q8_0 = gguf.GGMLQuantizationType.Q8_0
    block = gguf.GGML_QUANT_SIZES[q8_0][0]
    if quant == "q8_0" and data.shape[-1] % block == 0:
        return gguf.quants.quantize(data, q8_0), q8_0
    return data.astype(np.float16), None
