"""Guards portable results: adapters name their base so it is found elsewhere, cards carry Hub metadata, no local paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from typer.testing import CliRunner

from tests.conftest import tiny_train_values
from tuneforge.errors import UserError

SMOLLM2_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def assert_no_local_path(text: str, *paths: Path) -> None:
    from tuneforge.runs.hub_card import local_paths

    assert local_paths(text) == [], local_paths(text)
    for path in (*paths, Path.home()):
        assert str(path) not in text, path


def test_a_local_base_is_recorded_by_its_folder_name(tiny_results, tiny_model_dir):
    adapter_config = (tiny_results / "adapter_config.json").read_text()
    assert json.loads(adapter_config)["base_model_name_or_path"] == tiny_model_dir.name
    assert f"  name: {tiny_model_dir}  #" in (tiny_results / "tuneforge.yaml").read_text()  # what was used stays
    card_text = (tiny_results / "README.md").read_text()
    for text in (adapter_config, card_text):
        assert_no_local_path(text, tiny_model_dir, tiny_results)
    card = ModelCard(card_text)
    assert card.data.library_name == "peft" and card.data.pipeline_tag == "text-generation"
    assert "tuneforge" in card.data.tags and "lora" in card.data.tags
    assert card.data.base_model is None, "the Hub refuses a base_model that is not a Hub id"
    for needle in (f"local folder `{tiny_model_dir.name}`", f"--model path/to/{tiny_model_dir.name}",
                   "local data `terms.jsonl` (not published)", "held-out loss", "## Use it", "PeftModel",
                   "## Licences", "check its licence"):  # fmt: skip
        assert needle in card_text, needle


def test_the_embedded_default_is_recorded_by_its_hub_id(tmp_path):
    from tuneforge.models.loading import portable_name, resolve_model
    from tuneforge.runs.results import write_portable_base

    (tmp_path / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/home/me/.cache/x"}))
    write_portable_base(tmp_path, resolve_model("smollm2-135m"))
    assert json.loads((tmp_path / "adapter_config.json").read_text())["base_model_name_or_path"] == SMOLLM2_HUB_ID
    assert portable_name(resolve_model("org/model")) == "org/model"


def preset_run(folder: Path, recorded: str, named: str | None = "smollm2-135m") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": recorded}))
    if named:
        (folder / "tuneforge.yaml").write_text(f"model:\n  name: {named}\n")
    return folder


def test_a_hub_id_of_a_preset_maps_back_to_the_preset_offline(tmp_path, monkeypatch):
    """tuneforge opens a preset run by its Hub id without any network: the embedded copy, in this cache."""
    from tuneforge.runs.folder import base_model_for, read_run_config

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path / "other-cache"))
    for folder in (preset_run(tmp_path / "with-yaml", SMOLLM2_HUB_ID),
                   preset_run(tmp_path / "peft-only", SMOLLM2_HUB_ID, named=None),
                   preset_run(tmp_path / "older", "/home/someone/.cache/tuneforge/models/smollm2-135m")):  # fmt: skip
        source = base_model_for(folder, read_run_config(folder))
        assert (source.kind, source.name) == ("preset", "smollm2-135m"), folder
        assert source.path == str(tmp_path / "other-cache" / "models" / "smollm2-135m")
        assert base_model_for(folder, read_run_config(folder), "smollm2-135m").kind == "preset"
    with pytest.raises(UserError, match="trained on base model 'smollm2-135m', but --model is 'org/other'"):
        base_model_for(tmp_path / "with-yaml", read_run_config(tmp_path / "with-yaml"), "org/other")
    mismatch = preset_run(tmp_path / "mismatch", "org/other-model")
    with pytest.raises(UserError, match="does not match the adapter's: adapter_config.json"):
        base_model_for(mismatch, read_run_config(mismatch))


def resolved_default(**values):
    from tuneforge.config_resolve import resolve_config

    return resolve_config(values, use_profile=False)


METRICS = {"steps": 2, "precision": "fp32", "device": "cpu", "eval_loss_before": 2.5, "eval_loss_after": 2.25,
           "final_train_loss": 2.0, "tokens_per_s": 100.0, "wall_time_s": 3.0}  # fmt: skip


def test_a_preset_runs_card_links_the_hub_base_with_its_licence(tmp_path):
    from tuneforge.models.loading import resolve_model
    from tuneforge.runs.results import write_model_card

    write_model_card(tmp_path, resolved_default(), resolve_model("smollm2-135m"), METRICS)
    text = (tmp_path / "README.md").read_text()
    data = ModelCard(text).data
    assert (data.base_model, data.base_model_relation, data.license) == (SMOLLM2_HUB_ID, "adapter", "apache-2.0")
    assert data.library_name == "peft" and data.datasets is None and "tuneforge" in data.tags
    assert "AutoPeftModelForCausalLM" in text and "Q4_1 GGUF" in text and "Human Phenotype Ontology" in text
    assert "2.5000 (base) -> 2.2500 (tuned)" in text
    assert_no_local_path(text)
    online = tmp_path / "online"
    online.mkdir()
    write_model_card(online, resolved_default(**{"data.dataset": "wiki-medical-terms"}), resolve_model("smollm2-135m"),
                     METRICS)  # fmt: skip
    assert ModelCard((online / "README.md").read_text()).data.datasets == ["aboonaji/wiki_medical_terms_llam2_format"]


def test_a_local_bases_licence_comes_from_its_own_card(tmp_path, tiny_model_dir):
    from tuneforge.models.loading import resolve_model
    from tuneforge.runs.hub_card import base_facts

    base = tmp_path / "my-base"
    shutil.copytree(tiny_model_dir, base)
    (base / "README.md").write_text("---\nlicense: mit\n---\n# my base\n")
    facts = base_facts(resolve_model(str(base)))
    assert (facts.name, facts.hub_id, facts.licence_id) == ("my-base", None, "mit")


def cli(*args: str):
    from tuneforge.cli import app

    return CliRunner().invoke(app, list(args))


@pytest.fixture
def copied_run(tmp_path, tiny_model_dir, tiny_dataset, monkeypatch) -> tuple[Path, Path]:
    """A run trained on machine A, its folder and its base copied to machine B, then machine A is gone."""
    from tuneforge.commands.train import run_train

    machine_a, machine_b = tmp_path / "machine-a", tmp_path / "machine-b"
    base_a = machine_a / "models" / "tiny-llama"
    shutil.copytree(tiny_model_dir, base_a)
    fast = {"train.max_steps": 4, "train.save_steps": 100, "train.eval_examples": 4}
    run_train(tiny_train_values(base_a, tiny_dataset, machine_a / "results", **fast))
    shutil.copytree(machine_a / "results", machine_b / "from-a")
    shutil.copytree(base_a, machine_b / "my-models" / "tiny-llama")
    shutil.rmtree(machine_a)
    monkeypatch.setenv("HOME", str(machine_b / "home"))
    monkeypatch.setenv("TUNEFORGE_CACHE", str(machine_b / "cache"))
    monkeypatch.chdir(machine_b)
    return machine_b / "from-a", machine_b / "my-models" / "tiny-llama"


def test_a_copied_run_opens_on_another_machine_with_chat_eval_serve_and_export(copied_run, tmp_path):
    from fastapi.testclient import TestClient

    from tuneforge.serving.app import create_app
    from tuneforge.serving.loading import base_model_name, load_engine, parse_adapter_specs

    run, base = copied_run
    missing = cli("chat", "--adapter", str(run), "Please tell me about the heart.")
    assert missing.exit_code == 2 and "not on this machine" in missing.output
    assert "--model path/to/tiny-llama" in " ".join(missing.output.split())
    answered = cli("chat", "--adapter", str(run), "--model", str(base), "--max-new-tokens", "4", "Hello?")
    assert answered.exit_code == 0, answered.output
    evaluated = cli("eval", "--adapter", str(run), "--model", str(base), "--limit", "2", "--max-new-tokens", "4",
                    "--json")  # fmt: skip
    assert evaluated.exit_code == 0, evaluated.output
    assert (run / "eval" / "report.md").is_file()
    specs = parse_adapter_specs([f"tuned={run}"])
    with pytest.raises(UserError, match="not on this machine"):
        base_model_name(specs, None)
    engine = load_engine(specs, base_model_name(specs, str(base)), log=lambda _: None)
    with TestClient(create_app(engine)) as client:
        body = {"model": "tuned", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3}
        assert client.post("/v1/chat/completions", json=body).status_code == 200
    exported = cli("export", "--adapter", str(run), "--model", str(base), "--format", "hf", "--out", "exported")
    assert exported.exit_code == 0, exported.output
    card = (Path("exported") / "README.md").read_text()
    assert ModelCard(card).data.library_name == "transformers"
    assert_no_local_path(card, run, base)


def test_the_local_path_check_has_teeth():
    from tuneforge.runs.hub_card import local_paths

    text = "see /home/me/.cache/tuneforge/models/x, ~/runs/a and C:\\Users\\me\\model"
    assert local_paths(text) == ["/home/me/.cache/tuneforge/models/x,", "~/runs/a", "C:\\Users\\me\\model"]
    assert local_paths('from_pretrained("results") https://huggingface.co/datasets/org/x hf.co/me/tiny') == []


def test_a_hub_dataset_is_named_in_the_cards_datasets():
    from tuneforge.runs.hub_card import data_facts

    assert data_facts({"data": {"dataset": "org/some-data"}}).hub_ids == ["org/some-data"]
    local = data_facts({"data": {"dataset": "/home/me/private/notes.jsonl"}})
    assert (local.hub_ids, local.shown) == ([], "local data `notes.jsonl` (not published)")
