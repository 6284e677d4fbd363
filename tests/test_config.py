"""Guards the config: precedence of its layers, the sources it reports, and plain errors on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tuneforge.config import TuneforgeConfig, field_help
from tuneforge.config_resolve import resolve_config
from tuneforge.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def tuneforge(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k not in ("BATCH_SIZE", "MAX_STEPS", "TUNEFORGE_DEBUG")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", *args], capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=120
    )


def dry_run(*args: str, env: dict | None = None) -> dict:
    result = tuneforge("train", "--dry-run", "--json", *args, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_cli_beats_env_beats_yaml_beats_profile(tmp_path):
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("train:\n  batch_size: 5\n  max_steps: 7\n")
    with_flag = dry_run("--batch-size", "3", env={"BATCH_SIZE": "2"})
    assert with_flag["config"]["train"]["batch_size"] == 3
    assert with_flag["sources"]["train.batch_size"] == "cli --batch-size"
    from_env = dry_run(env={"BATCH_SIZE": "2"})
    assert from_env["config"]["train"]["batch_size"] == 2
    assert from_env["sources"]["train.batch_size"] == "env BATCH_SIZE"
    from_yaml = dry_run("--config", str(yaml_file))
    assert from_yaml["config"]["train"]["batch_size"] == 5
    assert from_yaml["sources"]["train.batch_size"] == f"config {yaml_file}"
    env_over_yaml = dry_run("--config", str(yaml_file), env={"BATCH_SIZE": "2"})
    assert env_over_yaml["config"]["train"]["batch_size"] == 2
    assert env_over_yaml["config"]["train"]["max_steps"] == 7
    plain = dry_run()
    assert plain["sources"]["train.batch_size"].startswith("profile: ")
    assert plain["sources"]["train.learning_rate"] == "default"


def test_every_guide_variable_reaches_its_field():
    env = {"MODEL": "smollm2-135m", "DATASET": "medical-terms", "OUTPUT_DIR": "out-x", "BATCH_SIZE": "2",
           "GRAD_ACCUM": "3", "MAX_STEPS": "9", "MAX_SEQ_LENGTH": "256", "LEARNING_RATE": "0.001",
           "LORA_R": "8", "LORA_ALPHA": "32", "LORA_DROPOUT": "0.1", "SEED": "7"}  # fmt: skip
    resolved = resolve_config({}, env=env, use_profile=False)
    cfg = resolved.config
    assert (cfg.train.output_dir.name, cfg.train.batch_size, cfg.train.grad_accum, cfg.train.max_steps) == (
        "out-x",
        2,
        3,
        9,
    )
    assert (cfg.train.max_seq_length, cfg.train.learning_rate, cfg.train.seed) == (256, 0.001, 7)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 32, 0.1)
    assert all(resolved.sources[k].startswith("env ") for k in ("model.name", "data.dataset", "lora.r"))


def test_a_source_names_the_flag_that_was_typed():
    """Flags not named after their field (--model, --packing, --lora-r) are shown as typed, not as --name."""
    typed = dry_run("--model", "smollm2-135m", "--packing", "--lora-r", "4", "--dataset-split", "train",
                    "--data-format", "messages", "--no-load-in-4bit")  # fmt: skip
    sources = {key: value for key, value in typed["sources"].items() if value.startswith("cli ")}
    assert sources == {
        "model.name": "cli --model", "train.padding_free": "cli --packing", "lora.r": "cli --lora-r",
        "data.split": "cli --dataset-split", "data.format": "cli --data-format", "model.load_in_4bit": "cli --load-in-4bit",
    }  # fmt: skip
    assert dry_run(env={"LOAD_IN_4BIT": "1"})["config"]["model"]["load_in_4bit"] is True


def test_dry_run_prints_every_value_with_its_source():
    result = tuneforge("train", "--dry-run", "--max-steps", "3")
    assert result.returncode == 0, result.stderr
    assert "train.max_steps = 3  (cli --max-steps)" in result.stdout
    assert "train.learning_rate = 0.001  (default)" in result.stdout
    assert "Dry run" in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (["--batch-size", "0"], {}, ["train.batch_size", "0", "--batch-size"]),
        (["--max-steps", "-3"], {}, ["train.max_steps", "-3", "--max-steps"]),
        ([], {"MAX_STEPS": "0"}, ["train.max_steps", "'0'", "MAX_STEPS"]),
        (["--learning-rate", "0"], {}, ["train.learning_rate", "0.0", "--learning-rate"]),
        ([], {"LEARNING_RATE": "-1e-4"}, ["train.learning_rate", "LEARNING_RATE"]),
        ([], {"BATCH_SIZE": "four"}, ["train.batch_size", "'four'", "BATCH_SIZE", "integer"]),
        (["--config", "/nonexistent/run.yaml"], {}, ["/nonexistent/run.yaml", "does not exist"]),
    ],
)
def test_bad_values_exit_2_with_one_paragraph(args, env, needles):
    result = tuneforge("train", "--dry-run", *args, env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    for needle in needles:
        assert needle in message, (needle, message)


def test_unknown_yaml_key_suggests_the_right_one(tmp_path):
    yaml_file = tmp_path / "typo.yaml"
    yaml_file.write_text("train:\n  batchsize: 4\n")
    result = tuneforge("train", "--dry-run", "--config", str(yaml_file))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "train.batchsize" in message and "Did you mean 'train.batch_size'?" in message
    yaml_file.write_text("trian:\n  max_steps: 4\n")
    message = " ".join(tuneforge("train", "--dry-run", "--config", str(yaml_file)).stderr.split())
    assert "Did you mean 'train'?" in message


def test_yaml_that_does_not_parse_names_the_line(tmp_path):
    yaml_file = tmp_path / "broken.yaml"
    yaml_file.write_text("train:\n  max_steps: 4\n   batch_size: [\n")
    result = tuneforge("train", "--dry-run", "--config", str(yaml_file))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "line 3" in " ".join(result.stderr.split())


def test_wrong_type_in_yaml_names_file_and_key(tmp_path):
    yaml_file = tmp_path / "types.yaml"
    yaml_file.write_text("lora:\n  r: lots\n")
    with pytest.raises(UserError) as info:
        resolve_config({}, config_file=yaml_file, env={}, use_profile=False)
    assert "lora.r" in str(info.value) and "'lots'" in str(info.value) and str(yaml_file) in str(info.value)


def test_debug_shows_the_traceback():
    result = tuneforge("train", "--dry-run", "--batch-size", "0", "--debug")
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_help_text_is_the_field_description():
    result = tuneforge("train", "--help")
    assert result.returncode == 0
    flat = " ".join(result.stdout.replace("│", " ").split())
    assert " ".join(field_help("train.grad_accum").split()) in flat
    assert "--lora-dropout" in flat and "--max-seq-length" in flat


def test_help_works_without_torch(tmp_path):
    """`tuneforge --help` and `doctor` must work even when torch is broken."""
    fake = tmp_path / "torch"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('torch is broken on purpose')\n")
    result = tuneforge("--help", env={"PYTHONPATH": f"{tmp_path}{os.pathsep}{ROOT / 'src'}"})
    assert result.returncode == 0 and "train" in result.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    resolved = resolve_config({}, config_file=path, env={}, use_profile=False)
    assert isinstance(resolved.config, TuneforgeConfig)
