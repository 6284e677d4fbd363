"""Guards `tuneforge export`: hf and GGUF exports give the tuned model back, bad input exits 2, nothing half-written remains."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import assert_plain_exit_2
from tuneforge.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
# Round-trip strings: prose, Korean, digits and whitespace runs, and a rendered chat turn with its specials.
TEST_STRINGS = [
    "Please tell me about the heart.",
    "안녕하세요, 의료 용어를 설명해 주세요.",
    "Bursitis 12345: inflammation of a bursa.",
    "  two spaces,\ttab and\n\nnew lines  ",
    "<|im_start|>user\nWhat is Gout?<|im_end|>\n<|im_start|>assistant\n",
]


def export(results: Path, out: Path, fmt: str, quant: str | None = None, **kwargs) -> Path:
    from tuneforge.commands.export import run_export

    return run_export(results, out, fmt=fmt, quant=quant, **kwargs)


@pytest.fixture(scope="module")
def sharp_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny llama at hidden 64 with weights drawn at std 0.05 instead of 0.02.

    At conftest's scale attention is nearly uniform, so a q/k layout bug in the GGUF moved the
    logits by less than f16 rounding does; here it moves them by ~0.4 while f16 moves them ~1e-3.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("sharp-llama")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.05, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def sharp_results(sharp_model_dir, tiny_dataset, tmp_path_factory) -> Path:
    from tests.conftest import tiny_train_values
    from tuneforge.commands.train import run_train

    out = tmp_path_factory.mktemp("sharp-run") / "results"
    fast = {"train.max_steps": 4, "train.save_steps": 100, "train.eval_examples": 4, "train.max_seq_length": 96}
    run_train(tiny_train_values(sharp_model_dir, tiny_dataset, out, **fast))
    return out


@pytest.fixture(scope="module")
def exports(sharp_results, tmp_path_factory) -> dict[str, Path]:
    """One hf export and two GGUF exports of the tuned model, shared by the round-trip tests."""
    root = tmp_path_factory.mktemp("exports")
    return {
        "hf": export(sharp_results, root / "hf", "hf"),
        "f16": export(sharp_results, root / "f16", "gguf", "f16"),
        "q8_0": export(sharp_results, root / "q8_0", "gguf", "q8_0"),
    }


@pytest.fixture(scope="module")
def tuned_logits(sharp_results, sharp_model_dir):
    """Logits of the peft model with the adapter active, on 400 tokens of held-out chats: what exports must reproduce."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(sharp_results)
    conversations = [json.loads(line)["messages"] for line in (sharp_results / "eval_set.jsonl").open()][:6]
    text = "".join(tokenizer.apply_chat_template(c, tokenize=False) for c in conversations)
    ids = tokenizer(text, return_tensors="pt").input_ids[:, :400]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sharp_model_dir), sharp_results).eval()
    base = AutoModelForCausalLM.from_pretrained(sharp_model_dir).eval()
    with torch.no_grad():
        tuned, untuned = model(ids).logits[0], base(ids).logits[0]
    assert (tuned - untuned).abs().max() > 0.05, "the adapter must change the model, or the proof proves nothing"
    return ids, tuned


def gguf_model_logits(path: Path, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(ids).logits[0]


def test_hf_export_equals_the_adapter_model(exports, tuned_logits, sharp_results):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = exports["hf"]
    ids, expected = tuned_logits
    model = AutoModelForCausalLM.from_pretrained(folder).eval()  # plain transformers, no peft
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits[0], expected, rtol=0, atol=1e-5)
    for name in ("model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "README.md"):
        assert (folder / name).stat().st_size > 0, name
    assert not list(folder.glob("adapter_*")) and not list(folder.rglob("*.bin"))
    exported, trained = AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(sharp_results)
    assert exported.chat_template == trained.chat_template
    assert model.generation_config.eos_token_id == trained.eos_token_id


def test_f16_gguf_round_trip_through_transformers(exports, tuned_logits, sharp_results):
    from transformers import AutoTokenizer

    path = exports["f16"]
    ids, expected = tuned_logits
    torch.testing.assert_close(gguf_model_logits(path, ids), expected, rtol=0, atol=5e-3)  # f16 weights: ~1e-3 off
    trained = AutoTokenizer.from_pretrained(sharp_results)
    loaded = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in TEST_STRINGS:
        assert loaded(text).input_ids == trained(text).input_ids, text
    assert loaded.chat_template == trained.chat_template
    assert (loaded.eos_token, loaded.bos_token) == (trained.eos_token, trained.bos_token)


def test_q8_0_gguf_keeps_the_top_token(exports, tuned_logits):
    from gguf import GGUFReader

    ids, expected = tuned_logits
    logits = gguf_model_logits(exports["q8_0"], ids)
    agreement = (logits.argmax(-1) == expected.argmax(-1)).float().mean().item()
    assert agreement >= 0.95, agreement
    assert not torch.allclose(logits, expected, atol=1e-4), "q8_0 should not be exact: was it quantized?"
    kinds = {t.name: t.tensor_type.name for t in GGUFReader(exports["q8_0"]).tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["token_embd.weight"] == "Q8_0"
    assert kinds["blk.0.attn_norm.weight"] == "F32" and "output.weight" not in kinds  # tied embeddings
    assert exports["q8_0"].stat().st_size < 0.7 * exports["f16"].stat().st_size


def test_llama_cpp_reads_the_gguf(exports, tuned_logits, sharp_results):
    """llama.cpp itself, where llama-cpp-python is installed (it compiles llama.cpp: not a CI dependency)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from transformers import AutoTokenizer

    ids, expected = tuned_logits
    trained = AutoTokenizer.from_pretrained(sharp_results)
    llm = llama_cpp.Llama(str(exports["f16"]), n_ctx=512, logits_all=True, verbose=False)
    for text in TEST_STRINGS:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == trained(text).input_ids, text
    llm.eval(ids[0].tolist())
    logits = torch.tensor(llm.scores[: ids.shape[1]])
    # llama.cpp also rounds activations to f16 in its f16 matmuls, so allow a little more than above.
    torch.testing.assert_close(logits, expected, rtol=0, atol=3e-2)
    assert (logits.argmax(-1) == expected.argmax(-1)).float().mean() >= 0.99


def test_gguf_metadata_modelfile_and_card(exports, sharp_results):
    from gguf import GGUFReader

    path = exports["f16"]
    fields = GGUFReader(path).fields
    value = lambda key: fields[key].contents()  # noqa: E731
    assert value("general.architecture") == "llama" and value("tokenizer.ggml.model") == "gpt2"
    assert value("tokenizer.ggml.pre") == "gpt-2" and value("general.file_type") == 1
    tokens, types = value("tokenizer.ggml.tokens"), value("tokenizer.ggml.token_type")
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert types[tokens.index(special)] == 3, special  # CONTROL: llama.cpp keeps it whole and stops on it
    assert tokens[value("tokenizer.ggml.eos_token_id")] == "<|im_end|>"
    assert value("tokenizer.ggml.add_bos_token") is False
    modelfile = (path.parent / "Modelfile").read_text()
    assert f"FROM ./{path.name}\n" in modelfile
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile and "SYSTEM" not in modelfile
    card = (path.parent / "README.md").read_text()
    metrics = json.loads((sharp_results / "metrics.json").read_text())
    for needle in ("base model", "terms.jsonl", "r=8, alpha=16", f"{metrics['eval_loss_after']:.4f}", "gguf f16",
                   "ollama create", "## Licences", "check its licence"):  # fmt: skip
        assert needle in card, needle
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(["Modelfile", "README.md", path.name])


def test_modelfile_translates_a_default_system_prompt(tiny_model_dir):
    from transformers import AutoTokenizer

    from tuneforge.export.modelfile import build_modelfile

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = (  # SmolLM2's template: ChatML plus a system prompt of its own
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n' }}{% endif %}"
        "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    assert 'SYSTEM """You are a helpful AI assistant."""' in build_modelfile("m.gguf", tokenizer, "m")
    tokenizer.chat_template = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    other = build_modelfile("m.gguf", tokenizer, "m")
    assert "TEMPLATE" not in other.replace("# No TEMPLATE", "") and 'PARAMETER stop "<|im_end|>"' in other


def test_pre_tokenizer_names_and_refusals(tmp_path):
    from tuneforge.export.gguf_tokenizer import pre_tokenizer_name

    def name_of(pre: dict, model: dict | None = None) -> str:
        data = {
            "model": model or {"type": "BPE"},
            "decoder": {"type": "ByteLevel"},
            "normalizer": None,
            "pre_tokenizer": pre,
        }
        (tmp_path / "tokenizer.json").write_text(json.dumps(data))
        return pre_tokenizer_name(tmp_path / "tokenizer.json")

    assert name_of({"type": "ByteLevel", "use_regex": True}) == "gpt-2"
    digits = {
        "type": "Sequence",
        "pretokenizers": [{"type": "Digits", "individual_digits": True}, {"type": "ByteLevel"}],
    }
    assert name_of(digits) == "smollm"
    with pytest.raises(UserError, match="not supported yet: a BPE tokenizer that is not byte-level"):
        name_of({"type": "Metaspace"}, {"type": "BPE", "byte_fallback": True})
    with pytest.raises(UserError, match="not supported yet: the pre-tokenizer"):
        name_of({"type": "Whitespace"})


def export_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", "export", *args],
        capture_output=True, text=True, env=dict(os.environ), cwd=ROOT, timeout=180,
    )  # fmt: skip


def test_unsupported_architecture_exits_2(tiny_results, tmp_path):
    from transformers import Qwen2Config

    base = tmp_path / "qwen-base"
    Qwen2Config(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        architectures=["Qwen2ForCausalLM"],
    ).save_pretrained(base)
    results = tmp_path / "results"
    shutil.copytree(tiny_results, results, ignore=shutil.ignore_patterns("checkpoints"))
    card = (results / "tuneforge.yaml").read_text().splitlines()
    card = [f"  name: {base}" if line.strip().startswith("name:") else line for line in card]
    (results / "tuneforge.yaml").write_text("\n".join(card) + "\n")
    peft_config = json.loads((results / "adapter_config.json").read_text())  # both records name the qwen base
    (results / "adapter_config.json").write_text(json.dumps({**peft_config, "base_model_name_or_path": str(base)}))
    (results / "tuneforge-results.json").unlink()  # as a run from before manifests: the edits aren't damage there
    result = export_cli("--adapter", str(results), "--out", str(tmp_path / "out"), "--format", "gguf")
    assert_plain_exit_2(result, "not supported yet: qwen2 (Qwen2ForCausalLM)", "--format hf")
    assert not (tmp_path / "out").exists()


def test_non_empty_output_needs_overwrite(tiny_results, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("an earlier export")
    result = export_cli("--adapter", str(tiny_results), "--out", str(out), "--format", "hf")
    assert_plain_exit_2(result, str(out), "not empty", "--overwrite")
    assert (out / "old.txt").read_text() == "an earlier export"
    export(tiny_results, out, "hf", overwrite=True)
    assert not (out / "old.txt").exists() and (out / "model.safetensors").is_file()


def test_not_enough_disk_is_refused_before_writing(tiny_results, tmp_path, monkeypatch):
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=10 * 1024**2))
    with pytest.raises(UserError, match="Not enough disk for the export .* 10 MB free, about 6[0-9] MB needed"):
        export(tiny_results, tmp_path / "out", "gguf")
    assert list(tmp_path.iterdir()) == []


def test_adapter_of_another_base_is_refused(tiny_results, tiny_model_dir, tmp_path):
    other = tmp_path / "other-base"
    other.mkdir()
    shutil.copy(tiny_model_dir / "config.json", other / "config.json")
    with pytest.raises(UserError, match=f"trained on base model '{tiny_model_dir}', but --model is '{other}'"):
        export(tiny_results, tmp_path / "out", "hf", model=str(other))
    with pytest.raises(UserError, match="--quant q8_0 applies to --format gguf only"):
        export(tiny_results, tmp_path / "out", "hf", quant="q8_0")
    with pytest.raises(UserError, match="--quant 'q4_k'"):
        export(tiny_results, tmp_path / "out", "gguf", quant="q4_k")
    with pytest.raises(UserError, match="holds the adapter folder"):
        export(tiny_results, tiny_results, "hf", overwrite=True)


def test_a_failed_write_leaves_no_half_export(tiny_results, tmp_path, monkeypatch):
    """The writer dies after the header and part of the tensors: neither a new nor a broken export remains."""
    import gguf

    def dies_midway(self, **kwargs):
        self.write_ti_data_to_file()
        self.fout[0].write(b"\0" * 1000)  # some tensor bytes, then the disk "fills up"
        raise OSError(28, "No space left on device")

    out = tmp_path / "out"
    export(tiny_results, out, "gguf")  # an earlier, good export
    before = {p.name: p.stat().st_size for p in out.iterdir()}
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", dies_midway)
    from tuneforge.disk_faults import DiskFault

    with pytest.raises(DiskFault, match="disk is full: writing the gguf q8_0 export"):  # the plain paragraph
        export(tiny_results, out, "gguf", "q8_0", overwrite=True)
    assert {p.name: p.stat().st_size for p in out.iterdir()} == before
    with pytest.raises(DiskFault):
        export(tiny_results, tmp_path / "fresh", "gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no partial folder may remain"


def test_every_exports_card_parses_with_hub_metadata_and_names_no_local_path(exports, sharp_results, sharp_model_dir):
    from huggingface_hub import ModelCard

    from tuneforge.runs.hub_card import local_paths

    expected = {"hf": ("transformers", "merged-lora"), "f16": ("gguf", "f16"), "q8_0": ("gguf", "q8_0")}
    for key, path in exports.items():
        folder = path if path.is_dir() else path.parent
        text = (folder / "README.md").read_text()
        card = ModelCard(text)
        library, tag = expected[key]
        assert card.data.library_name == library and card.data.pipeline_tag == "text-generation", key
        assert {"tuneforge", tag} <= set(card.data.tags), key
        assert local_paths(text) == [] and str(sharp_results) not in text and str(sharp_model_dir) not in text, key
        assert f"local folder `{sharp_model_dir.name}`" in text and "## Use it" in text, key
        assert "config.json" not in text or key == "hf"
    hf_config = (exports["hf"] / "config.json").read_text()
    assert local_paths(hf_config) == [] and str(sharp_model_dir) not in hf_config


def test_an_export_of_a_preset_run_names_its_hub_base_as_a_fine_tune(tmp_path):
    """The card of the embedded default's export, written without the 135M weights: base, relation, licence."""
    from huggingface_hub import ModelCard

    from tuneforge.export.model_card import write_export_card
    from tuneforge.models.loading import resolve_model

    adapter = tmp_path / "results"
    adapter.mkdir()
    (adapter / "metrics.json").write_text(json.dumps({"eval_loss_before": 2.5, "eval_loss_after": 2.0}))
    run_config = {"data": {"dataset": "medical-terms"}, "lora": {"r": 16}, "train": {"max_steps": 5}}
    files = {"format": "gguf", "quant": "q8_0", "file": "smollm2-135m-tuned-q8_0.gguf", "ollama": "smollm2-135m-tuned"}
    for fmt, library in (("gguf", "gguf"), ("hf", "transformers")):
        out = tmp_path / fmt
        out.mkdir()
        write_export_card(out, out, adapter, run_config, resolve_model("smollm2-135m"), {**files, "format": fmt})
        text = (out / "README.md").read_text()
        data = ModelCard(text).data
        assert (data.base_model, data.base_model_relation, data.license) == (
            "HuggingFaceTB/SmolLM2-135M-Instruct", "finetune", "apache-2.0")  # fmt: skip
        assert data.library_name == library and "2.5000 (base) -> 2.0000 (tuned)" in text
        assert "Human Phenotype Ontology" in text and "Gargano et al." in text, "the data's attribution"
    assert "ollama create smollm2-135m-tuned -f Modelfile" in (tmp_path / "gguf" / "README.md").read_text()


def fake_ollama(folder: Path, exit_code: int = 0) -> Path:
    """An `ollama` on PATH that records its arguments and working folder, then exits with `exit_code`."""
    folder.mkdir()
    script = folder / "ollama"
    log = folder / "calls.txt"
    script.write_text(
        f'#!/bin/sh\necho "$PWD|$*" >> "{log}"\n'
        + ('echo "Error: could not connect to ollama app, is it running?" >&2\n' if exit_code else "")
        + f"exit {exit_code}\n"
    )
    script.chmod(0o755)
    return log


def test_ollama_creates_the_model_from_the_finished_export(tiny_results, tmp_path, monkeypatch):
    log = fake_ollama(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    gguf = export(tiny_results, tmp_path / "out", "gguf", ollama="tiny-med:q8")
    where, args = log.read_text().strip().split("|")
    assert Path(where) == gguf.parent and args == f"create tiny-med:q8 -f {gguf.parent / 'Modelfile'}"
    assert (gguf.parent / "Modelfile").read_text().startswith("# Ollama Modelfile")


def test_ollama_missing_or_failing_keeps_the_export_and_says_the_command(tiny_results, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no ollama anywhere
    gguf = export(tiny_results, tmp_path / "without", "gguf", ollama="tiny-med")
    said = " ".join(capsys.readouterr().out.split())
    assert f"Once it is, run: ollama create tiny-med -f {gguf.parent / 'Modelfile'}" in said and gguf.is_file()
    fake_ollama(tmp_path / "bin", exit_code=1)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(UserError, match=r"is complete, but `ollama create tiny-med` failed: Error: could not connect"):
        export(tiny_results, tmp_path / "failing", "gguf", ollama="tiny-med")
    assert sorted(p.name for p in (tmp_path / "failing").iterdir())[0] == "Modelfile"


def test_ollama_needs_gguf_and_a_valid_name_before_anything_is_written(tiny_results, tmp_path):
    with pytest.raises(UserError, match="--ollama tiny needs --format gguf"):
        export(tiny_results, tmp_path / "hf", "hf", ollama="tiny")
    with pytest.raises(UserError, match="--ollama 'Tiny Model' is not a name Ollama accepts"):
        export(tiny_results, tmp_path / "bad", "gguf", ollama="Tiny Model")
    assert list(tmp_path.iterdir()) == []
