"""Guards `tuneforge push`: the dry run lists every file, and every refusal comes before any upload (the Hub is faked)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import ModelCard, constants
from typer.testing import CliRunner

REPO = "me/tiny-adapter"


class FakeHub:
    """Stands in for huggingface_hub.HfApi: records each call; nothing leaves the machine."""

    calls: list[tuple[str, tuple, dict]] = []
    user: dict = {"name": "me", "orgs": [{"name": "my-lab"}]}
    existing: object | None = None  # what repo_info returns; None: the repo does not exist
    fail: dict[str, Exception] = {}

    def __init__(self, token=None):
        self.token = token

    def _record(self, name, *args, **kwargs):
        FakeHub.calls.append((name, args, kwargs))
        if name in FakeHub.fail:
            raise FakeHub.fail[name]

    def whoami(self):
        self._record("whoami")
        return FakeHub.user

    def repo_info(self, repo_id):
        self._record("repo_info", repo_id)
        if FakeHub.existing is None:
            import httpx2
            from huggingface_hub.errors import RepositoryNotFoundError

            request = httpx2.Request("GET", f"https://huggingface.co/api/models/{repo_id}")
            raise RepositoryNotFoundError("404", response=httpx2.Response(404, request=request))
        return FakeHub.existing

    def create_repo(self, repo_id, **kwargs):
        self._record("create_repo", repo_id, **kwargs)

    def create_commit(self, repo_id, operations, **kwargs):
        self._record("create_commit", repo_id, list(operations), **kwargs)

    def upload_folder(self, *args, **kwargs):  # tuneforge must never upload a whole folder blindly
        self._record("upload_folder", *args, **kwargs)


@pytest.fixture(autouse=True)
def fake_hub(monkeypatch, tmp_path):
    FakeHub.calls, FakeHub.existing, FakeHub.fail = [], None, {}
    FakeHub.user = {"name": "me", "orgs": [{"name": "my-lab"}]}
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHub)
    monkeypatch.setattr(ModelCard, "validate", lambda self, repo_type=None: FakeHub.calls.append(("validate", (), {})))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))  # no saved login is found
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    return FakeHub


def push(*args: str):
    from tuneforge.cli import app

    return CliRunner().invoke(app, ["push", *args])


def uploads() -> list[str]:
    return [name for name, _, _ in FakeHub.calls if name in ("create_repo", "create_commit", "upload_folder")]


def flat(output: str) -> str:
    return " ".join(output.split())


def test_dry_run_lists_every_file_with_its_size_and_prints_the_card(tiny_results):
    from tuneforge.commands.push import _size

    result = push("--repo", REPO, "--adapter", str(tiny_results), "--dry-run")
    assert result.exit_code == 0, result.output
    assert FakeHub.calls == [], "a dry run needs no token and no network"
    listed = {line.split()[-1] for line in result.output.splitlines() if line.startswith("  ")}
    left_out = ("checkpoints", "tuneforge-run.json")
    kept = [p for p in tiny_results.rglob("*") if p.is_file() and p.relative_to(tiny_results).parts[0] not in left_out
            and not p.name.startswith(("training_log_", "."))]  # fmt: skip
    assert len(kept) >= 10
    for path in kept:
        name = path.relative_to(tiny_results).as_posix()
        assert name in listed, name
        if name != "README.md":  # the card goes up pointed at the repo, so its size is the uploaded one
            assert f"{_size(path.stat().st_size):>10}  {name}" in result.output, name
    assert "left out checkpoints/: resume state" in flat(result.output)
    assert f"to {REPO}, private:" in result.output and "Dry run: nothing was uploaded" in result.output
    card = result.output.split("README.md as it will be uploaded:")[1]
    assert f"hf download {REPO} --local-dir tiny-adapter" in card
    assert f'PeftModel.from_pretrained(base, "{REPO}")' in card
    assert ModelCard(card.strip().split("\nDry run:")[0]).data.library_name == "peft"


def test_offline_stops_before_any_upload(tiny_results, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    result = push("--repo", REPO, "--adapter", str(tiny_results))
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "HF_HUB_OFFLINE is set, so nothing was uploaded" in flat(result.output)
    assert FakeHub.calls == []


def test_no_token_stops_before_any_upload(tiny_results):
    result = push("--repo", REPO, "--adapter", str(tiny_results))
    assert result.exit_code == 2
    assert "needs a Hugging Face token with write access, and none was found" in flat(result.output)
    assert FakeHub.calls == []


def test_an_unreachable_hub_stops_before_any_upload(tiny_results, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    FakeHub.fail = {"whoami": ConnectionError("Failed to resolve 'huggingface.co'")}
    result = push("--repo", REPO, "--adapter", str(tiny_results))
    assert result.exit_code == 2
    assert "Could not check the token for me/tiny-adapter (ConnectionError" in flat(result.output)
    assert "no files were committed" in flat(result.output) and uploads() == []


def test_push_creates_a_private_repo_and_commits_the_listed_files_once(tiny_results, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    dry = push("--repo", REPO, "--adapter", str(tiny_results), "--dry-run")
    result = push("--repo", REPO, "--adapter", str(tiny_results))
    assert result.exit_code == 0, result.output
    assert [name for name, _, _ in FakeHub.calls] == ["whoami", "validate", "repo_info", "create_repo", "create_commit"]
    assert FakeHub.calls[3][2]["private"] is True
    operations = FakeHub.calls[4][1][1]
    listed = [line.split()[-1] for line in dry.output.splitlines() if line.startswith("  ") and "left out" not in line]
    assert [op.path_in_repo for op in operations] == listed
    card = next(op for op in operations if op.path_in_repo == "README.md").path_or_fileobj
    assert isinstance(card, bytes) and f'from_pretrained(base, "{REPO}")'.encode() in card
    weights = next(op for op in operations if op.path_in_repo == "adapter_model.safetensors")
    assert Path(weights.path_or_fileobj) == tiny_results / "adapter_model.safetensors"
    assert (tiny_results / "README.md").read_text().count(REPO) == 0, "the local card is left as it was"


def test_an_existing_public_repo_needs_public(tiny_results, monkeypatch):
    from types import SimpleNamespace

    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    FakeHub.existing = SimpleNamespace(private=False)
    result = push("--repo", REPO, "--adapter", str(tiny_results))
    assert result.exit_code == 2 and "already exists and is public" in flat(result.output) and uploads() == []
    assert push("--repo", REPO, "--adapter", str(tiny_results), "--public").exit_code == 0
    assert uploads() == ["create_commit"]


def test_a_repo_the_token_cannot_write_to_is_refused(tiny_results, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    result = push("--repo", "someone-else/tiny", "--adapter", str(tiny_results))
    assert result.exit_code == 2 and "belongs to 'me', which cannot write to 'someone-else'" in flat(result.output)
    assert "my-lab" in result.output and uploads() == []


def copy_run(tiny_results: Path, folder: Path) -> Path:
    shutil.copytree(tiny_results, folder, ignore=shutil.ignore_patterns("checkpoints"))
    return folder


@pytest.mark.parametrize(
    "damage, needle",
    [
        ("unfinished", "has not finished, so there is nothing to push yet"),
        ("no-weights", "adapter_model.safetensors"),  # missing, or damaged once the folder has a manifest
        ("older-card", "written by an older tuneforge: README.md has no Hub metadata"),
        ("older-adapter", "written by an older tuneforge: adapter_config.json names its base by a local path"),
        ("bad-repo", "--repo 'not a repo' is not a Hugging Face repo id"),
        ("both", "Pass --adapter (a results folder) or --export"),
    ],
)
def test_a_results_folder_that_is_not_ready_is_refused(tiny_results, tiny_model_dir, tmp_path, damage, needle):
    run = copy_run(tiny_results, tmp_path / "run")
    repo, extra = REPO, []
    if damage == "unfinished":
        marker = json.loads((run / "tuneforge-run.json").read_text())
        (run / "tuneforge-run.json").write_text(json.dumps({**marker, "status": "running"}))
    elif damage == "no-weights":
        (run / "adapter_model.safetensors").unlink()
    elif damage == "older-card":
        (run / "README.md").write_text("# LoRA adapter made with tuneforge\n")
    elif damage == "older-adapter":
        config = json.loads((run / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(tiny_model_dir)  # what tuneforge recorded before portable names
        (run / "adapter_config.json").write_text(json.dumps(config))
        (run / "tuneforge-results.json").unlink(missing_ok=True)  # an older run has no results manifest either
    elif damage == "bad-repo":
        repo = "not a repo"
    elif damage == "both":
        extra = ["--export", str(tmp_path)]
    result = push("--repo", repo, "--adapter", str(run), "--dry-run", *extra)
    assert result.exit_code == 2, result.output
    assert needle in flat(result.output) and "Traceback" not in result.output
    assert FakeHub.calls == []


@pytest.fixture(scope="module")
def gguf_export(tiny_results, tmp_path_factory) -> Path:
    from tuneforge.commands.export import run_export

    out = tmp_path_factory.mktemp("push-export") / "exported"
    run_export(tiny_results, out, fmt="gguf", quant="q8_0")
    return out


def test_an_export_dry_run_points_the_card_at_the_repo(gguf_export, tmp_path):
    result = push("--repo", "me/tiny-gguf", "--export", str(gguf_export), "--dry-run")
    assert result.exit_code == 0, result.output
    listed = [line.split()[-1] for line in result.output.splitlines() if line.startswith("  ")]
    assert listed == sorted(p.name for p in gguf_export.iterdir())
    for needle in ("ollama run hf.co/me/tiny-gguf", "llama-cli -hf me/tiny-gguf", "hf download me/tiny-gguf"):
        assert needle in result.output, needle
    torn = tmp_path / "torn"
    shutil.copytree(gguf_export, torn)
    gguf = next(torn.glob("*.gguf"))
    gguf.write_bytes(gguf.read_bytes()[:2000])
    refused = push("--repo", "me/tiny-gguf", "--export", str(torn), "--dry-run")
    assert refused.exit_code == 2 and "is not a readable GGUF file" in flat(refused.output)
    assert push("--repo", REPO, "--export", str(tmp_path / "nothing")).exit_code == 2
