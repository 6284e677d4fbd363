"""What the Hugging Face Hub reads in a model card: the YAML front matter, the data's licence, how to load it.

The results card (runs/results.py) and each export's card (export/model_card.py) are built from
here, so they name the base model, its licence and the data the same way. A card never holds a
local path: it is the first thing a colleague or the Hub sees, and a path under the trainer's
home is useless there (and says who trained it). `huggingface_hub.ModelCard` renders and parses
the metadata; the Hub's own validation needs the network, so `tuneforge push` runs it there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.config import split_weight
from tuneforge.models.loading import ModelSource, portable_name

PIPELINE_TAG = "text-generation"
USE_IT = "## Use it"  # the section `tuneforge push` points at the repo it uploads to
# Absolute paths: /home/..., ~/..., C:\... (a relative name like "results" is fine).
_LOCAL_PATH = re.compile(
    r"(?<![\w.:/])(/(?:home|Users|root|tmp|private|var|mnt|opt|srv|data)/\S+|~/\S+|[A-Za-z]:\\\S+)"
)


@dataclass(frozen=True)
class BaseFacts:
    """The base model as a card names it."""

    name: str  # its portable name: a Hub id, or a local folder's name
    hub_id: str | None  # for `base_model:`; None for a local folder (the Hub refuses a name it doesn't know)
    shown: str  # how the card's text names it
    licence_id: str | None  # for `license:`
    licence: str  # one line for the Licences section
    note: str  # how to get the base elsewhere, or how its weights differ from the Hub's


@dataclass(frozen=True)
class DataFacts:
    shown: str
    hub_ids: list[str]  # for `datasets:`
    licence: str


def base_facts(source: ModelSource) -> BaseFacts:
    from tuneforge.presets import MODEL_PRESETS

    name = portable_name(source)
    if source.kind == "preset":
        preset = MODEL_PRESETS[source.name]
        note = f"The tuneforge preset `{source.name}`: {preset.weights_note}." if preset.weights_note else ""
        return BaseFacts(name, preset.hub_id, f"[{name}](https://huggingface.co/{name})", preset.licence_id or None,
                         preset.licence, note)  # fmt: skip
    licence_id = _licence_of(source)
    licence = f"Base model {name}: {licence_id or 'see its own licence'}; this model is a derivative of it."
    if source.kind == "hub":
        return BaseFacts(name, name, f"[{name}](https://huggingface.co/{name})", licence_id, licence, "")
    note = f"The base is a local model folder named `{name}`, not a Hub model."
    return BaseFacts(name, None, f"local folder `{name}`", licence_id, licence, note)


def data_facts(run_config: dict[str, Any]) -> DataFacts:
    """The training data without local paths: a preset, a Hub dataset, or a local file's name."""
    from tuneforge.presets import DATASET_PRESETS, ONLINE_PRESETS

    specs = (run_config.get("data") or {}).get("dataset") or ""
    if isinstance(specs, list):  # a mixture: each source named the same way, without its weight
        facts = [data_facts({"data": {"dataset": split_weight(one)[0]}}) for one in specs]
        return DataFacts("; ".join(f.shown for f in facts), [i for f in facts for i in f.hub_ids],
                         " ".join(dict.fromkeys(f.licence for f in facts)))  # fmt: skip
    spec = str(specs)
    if spec in DATASET_PRESETS:
        preset = DATASET_PRESETS[spec]
        return DataFacts(f"tuneforge preset `{spec}`: {preset.description}", [], preset.licence)
    if spec in ONLINE_PRESETS:
        online = ONLINE_PRESETS[spec]
        shown = f"[{online.hub_id}](https://huggingface.co/datasets/{online.hub_id}) (preset `{spec}`)"
        return DataFacts(shown, [online.hub_id], online.licence)
    unknown = "Training data {}: check its licence before you share this model."
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")) and not Path(spec).expanduser().exists():
        return DataFacts(f"[{spec}](https://huggingface.co/datasets/{spec})", [spec], unknown.format(spec))
    name = Path(spec).name or "not recorded"
    return DataFacts(f"local data `{name}` (not published)", [], unknown.format(f"`{name}`"))


def metadata(base: BaseFacts, data: DataFacts, relation: str, library: str, tags: list[str]) -> dict[str, Any]:
    """The front matter: what makes the Hub list the model under its base, with its licence and data."""
    fields: dict[str, Any] = {"library_name": library, "pipeline_tag": PIPELINE_TAG}
    if base.hub_id:
        fields |= {"base_model": base.hub_id, "base_model_relation": relation}
    if base.licence_id:
        fields["license"] = base.licence_id
    if data.hub_ids:
        fields["datasets"] = data.hub_ids
    fields["tags"] = ["tuneforge", *tags]
    return fields


def render(fields: dict[str, Any], body: str) -> str:
    """The card as text, through huggingface_hub's ModelCard (which parses it back as a check)."""
    from huggingface_hub import ModelCard, ModelCardData

    card = ModelCard(f"---\n{ModelCardData(**fields).to_yaml()}\n---\n\n{body.lstrip()}")
    return str(card)


def local_paths(text: str) -> list[str]:
    """Absolute paths in a card or config: none may be there."""
    return _LOCAL_PATH.findall(text)


def licence_section(base: BaseFacts, data: DataFacts) -> str:
    lines = [base.licence, data.licence, "tuneforge itself is Apache-2.0; it adds no terms to the model."]
    return "## Licences\n\n" + "\n".join(f"- {line}" for line in lines if line) + "\n"


def replace_use_it(card_text: str, section: str) -> str:
    """The card with its "Use it" section swapped (push names the repo there instead of the folder)."""
    start = card_text.find(USE_IT)
    if start < 0:
        return card_text
    end = card_text.find("\n## ", start + len(USE_IT))
    return card_text[:start] + section.rstrip() + "\n" + (card_text[end:] if end >= 0 else "")


def _licence_of(source: ModelSource) -> str | None:
    """The base's licence id from its own card, read from the folder or the local Hub cache (never the network)."""
    from huggingface_hub import ModelCard

    readme: Any = Path(source.path) / "README.md"
    if source.kind == "hub":
        from huggingface_hub import try_to_load_from_cache

        readme = try_to_load_from_cache(source.name, "README.md")
    if not isinstance(readme, (str, Path)) or not Path(readme).is_file():
        return None
    try:
        licence = ModelCard.load(readme).data.license
    except Exception:  # noqa: BLE001 - someone else's card: a bad one only means "licence unknown"
        return None
    return licence if isinstance(licence, str) else None
