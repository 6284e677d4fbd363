"""Guards `--finetune full`: every weight trains, the results reload into the same logits and answer in chat, eval, serve and export; doctor's estimate; the too-big refusal."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import tiny_train_values, train_capturing_logits
from tuneforge.machine.hardware import Gpu, Hardware

FULL = {"train.finetune": "full", "train.max_steps": 8, "train.save_steps": 4, "train.eval_examples": 2}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_model_dir, tiny_dataset):
    """A finished full fine-tune of the tiny model, and the logits its trained model gave before saving."""
    out = tmp_path_factory.mktemp("full") / "results"
    metrics, captured = train_capturing_logits(tiny_train_values(tiny_model_dir, tiny_dataset, out, **FULL))
    return out, metrics, captured


def test_every_weight_trains_and_the_results_reload_into_the_same_logits(full_run, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from tuneforge.runs.folder import load_tuned, open_run

    out, metrics, captured = full_run
    losses = [h["loss"] for h in metrics["loss_history"]]
    assert losses[-1] < losses[0] and metrics["eval_loss_after"] < metrics["eval_loss_before"], metrics
    assert (out / "model.safetensors").is_file() and (out / "config.json").is_file()
    assert not (out / "adapter_config.json").exists()
    log = "\n".join(p.read_text() for p in out.glob("training_log_*.log"))
    assert "full fine-tuning:" in log and "(100.00%)" in log and "saved model, tokenizer" in log
    card = (out / "README.md").read_text()
    assert "fully fine-tuned with tuneforge" in card and "| fine-tuning | full: every weight trained |" in card
    assert "train.finetune = full" in log
    model, _ = load_tuned(open_run(out))
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(captured["ids"]).logits, captured["logits"], rtol=0, atol=1e-5)
        with model.disable_adapter():  # the base, loaded beside it, as chat --base and eval compare
            torch.testing.assert_close(model(captured["ids"]).logits, base(captured["ids"]).logits, rtol=0, atol=0)
    assert metrics["quick_eval"]["base"] != metrics["quick_eval"]["tuned"]  # the check after training saw both


def test_chat_eval_serve_export_and_push_understand_a_full_fine_tune(full_run, tmp_path, capsys):
    from fastapi.testclient import TestClient
    from transformers import AutoModelForCausalLM

    from tuneforge.commands.chat import run_chat
    from tuneforge.commands.evaluate import run_eval
    from tuneforge.commands.export import run_export
    from tuneforge.commands.push import plan_push
    from tuneforge.serving.app import create_app
    from tuneforge.serving.loading import base_model_name, load_engine, parse_adapter_specs

    out, _, captured = full_run
    run_chat(out, "Please tell me about fever.", max_new_tokens=4)
    run_chat(out, "Please tell me about fever.", use_base=True, max_new_tokens=4)
    result = run_eval(out, limit=2, max_new_tokens=4, out=tmp_path / "eval")
    assert result["examples"] == 2 and result["base"] != result["tuned"]
    specs = parse_adapter_specs([f"full={out}"])
    engine = load_engine(specs, base_model_name(specs, None), log=lambda _: None)
    with TestClient(create_app(engine)) as client:
        assert {m["id"] for m in client.get("/v1/models").json()["data"]} == {"full", "base"}
        body = {"messages": [{"role": "user", "content": "Fever?"}], "max_tokens": 4, "temperature": 0}
        for name in ("full", "base"):
            assert client.post("/v1/chat/completions", json={**body, "model": name}).status_code == 200
    exported = run_export(out, tmp_path / "hf", fmt="hf")
    with torch.no_grad():
        logits = AutoModelForCausalLM.from_pretrained(exported).eval()(captured["ids"]).logits
    torch.testing.assert_close(logits, captured["logits"], rtol=0, atol=1e-5)
    plan = plan_push("me/tiny-full", out, None, False)  # the dry run's plan: no network
    assert plan.kind == "full fine-tune" and 'AutoModelForCausalLM.from_pretrained("me/tiny-full")' in plan.card
    assert "model.safetensors" in {name for name, _ in plan.files} and "peft" not in plan.card


def test_serve_answers_each_request_from_the_model_it_names_whichever_ran_before(full_run):
    """serve --max-batch 1 (generate()) alternating 'full' and 'base' gives what the batched path gives for each."""
    from tests.test_serve_batching import answers, jobs_for, run_batched
    from tuneforge.serving.loading import base_model_name, load_engine, parse_adapter_specs

    out, _, _ = full_run
    specs = parse_adapter_specs([f"full={out}"])
    engine = load_engine(specs, base_model_name(specs, None), log=lambda _: None)
    jobs = jobs_for(engine, ["full", "base"], max_new_tokens=(8, 8, 8, 8))
    one_at_a_time = answers([engine.generate(job) for job in jobs])
    batched = answers([run_batched(engine, [job], 8)[0] for job in jobs])
    assert one_at_a_time[0::2] != one_at_a_time[1::2], "the tuned model and its base must answer differently"
    assert one_at_a_time == batched


def test_dpo_full_fine_tune_steps_down_on_oom_with_the_reference_scored_once(monkeypatch, tmp_path, tiny_model_dir,
                                                                            tiny_results):  # fmt: skip
    """SFT adapter -> DPO on every weight: TRL scores the reference once; a trainer rebuilt after an OOM keeps those scores."""
    from tests.test_oom import inject_oom
    from tests.test_preferences import preference_file
    from tuneforge.commands.evaluate import run_eval
    from tuneforge.commands.train import run_train
    from tuneforge.recipe.methods.dpo import DPOTrainer

    scored, original = [], DPOTrainer._precompute_ref_logps

    def count(self, dataset, name, batch_size):
        scored.append(name)
        return original(self, dataset, name, batch_size)

    monkeypatch.setattr(DPOTrainer, "_precompute_ref_logps", count)
    raised = inject_oom(monkeypatch, at_step=3, while_micro_batch_above=2)
    data, out = preference_file(tmp_path / "prefs.jsonl", count=40), tmp_path / "results"
    run = {
        "train.method": "dpo",
        "train.learning_rate": 5e-3,
        "data.val_size": 8,
        "train.logging_steps": 1,
        "model.adapter": str(tiny_results),
    }  # the SFT adapter, merged in: peft had frozen those weights
    metrics = run_train(tiny_train_values(tiny_model_dir, data, out, **FULL, **run))
    assert raised == [4] and metrics["oom_step_downs"] == [{"step": 4, "from": 4, "to": 2, "grad_accum": 2}]
    assert scored == ["train"]  # two trainers, one scoring: the starting model's
    losses = [h["loss"] for h in metrics["loss_history"]]
    assert [h["step"] for h in metrics["loss_history"]] == list(range(1, 9)) and losses[-1] < losses[0], losses
    before, after = metrics["preference"]["before"], metrics["preference"]["after"]
    assert after["margin"] > before["margin"], (before, after)
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    log = "\n".join(p.read_text() for p in out.glob("training_log_*.log"))
    assert "held-out preferences, starting model:" in log and "(100.00%)" in log
    result = run_eval(out, limit=1, max_new_tokens=2)  # held-out pairs: the plain base beside the tuned model
    assert result["preference"]["tuned"]["accuracy"] == pytest.approx(after["accuracy"])
    assert result["preference"]["base"]["pairs"] == after["pairs"]


def test_a_model_too_big_for_full_fine_tuning_exits_2_naming_the_estimate(monkeypatch, tmp_path, tiny_model_dir,
                                                                          tiny_dataset):  # fmt: skip
    from typer.testing import CliRunner

    from tuneforge import cli
    from tuneforge.machine import finetune_memory
    from tuneforge.models import loading

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: pytest.fail("a model loaded"))
    monkeypatch.setattr(finetune_memory, "FULL_BYTES_PER_PARAM", 1e7)  # as if each parameter took 10 MB
    args = ["train", "--finetune", "full", "--model", str(tiny_model_dir), "--dataset", str(tiny_dataset),
            "--output-dir", str(tmp_path / "r")]  # fmt: skip
    result = CliRunner().invoke(cli.app, args)
    message = " ".join(result.stderr.split())
    assert result.exit_code == 2 and "Traceback" not in message, message
    for needle in ("--finetune full on", "needs about", "16 bytes per parameter", "fp32 weights, gradients and "
                   "AdamW's two moments", "use --finetune lora (about", "tuneforge doctor"):  # fmt: skip
        assert needle in message, (needle, message)
    result = CliRunner().invoke(cli.app, [*args[:3], "--load-in-4bit", *args[3:]])
    assert result.exit_code == 2 and "can't train 4-bit weights" in " ".join(result.stderr.split())


def test_full_fine_tuning_defaults_to_trls_learning_rates():
    from tuneforge.config_resolve import resolve_config

    for method, rate in (("sft", 2e-5), ("dpo", 1e-6)):
        resolved = resolve_config({"train.finetune": "full", "train.method": method}, use_profile=False)
        assert resolved.config.train.learning_rate == rate
        assert resolved.sources["train.learning_rate"] == "default for --finetune full"
    typed = resolve_config({"train.finetune": "full", "train.learning_rate": 1e-4}, use_profile=False)
    assert typed.config.train.learning_rate == 1e-4


def machine(ram_gb: float, gpu_gb: float | None = None) -> Hardware:
    gpus = [Gpu(name="NVIDIA L4", vram_gb=gpu_gb, compute_capability="8.9", bf16=True)] if gpu_gb else []
    return Hardware(os="Linux", arch="x86_64", python="3.11", cpu_model="test", cpu_cores=8, ram_gb=ram_gb,
                    disk_free_gb=500, disk_path="/", torch_version="2.9", cuda_gpus=gpus,
                    bitsandbytes="works" if gpus else "not installed")  # fmt: skip


def test_doctor_shows_what_each_finetune_needs(monkeypatch, capsys):
    from tuneforge.commands import doctor
    from tuneforge.machine.finetune_memory import finetune_fits

    small, seven_b = 134_515_008, 7_000_000_000
    fits = {f.finetune: f for f in finetune_fits(machine(64, 24), seven_b, "bf16", 4 * 1024, True)}
    assert fits["lora"].fits and fits["qlora"].fits and not fits["full"].fits
    assert fits["full"].need_gb > 7 * 16 and "16 bytes per parameter = 112 GB" in fits["full"].reason
    cpu = {f.finetune: f for f in finetune_fits(machine(24), small, "fp32", 4 * 512, False)}
    assert cpu["full"].fits and not cpu["qlora"].fits and "NVIDIA GPU" in cpu["qlora"].reason
    assert cpu["lora"].need_gb < cpu["dora"].need_gb < cpu["full"].need_gb
    monkeypatch.setattr(doctor, "detect_hardware", lambda *a: machine(24))
    report = doctor.doctor_report()
    assert [f["finetune"] for f in report["finetune"]] == ["lora", "dora", "qlora", "full"]
    doctor.run_doctor()
    shown = " ".join(capsys.readouterr().out.split())
    assert "Memory for each --finetune (batch 4 × 512 tokens)" in shown
    assert f"full about {cpu['full'].need_gb:.1f} GB: fits" in shown and "qlora about" in shown
