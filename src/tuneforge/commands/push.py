"""`tuneforge push`: upload a results folder or an export to the Hugging Face Hub, private by default.

Read `run_push` top to bottom: check the folder → list what goes up and what stays here → the
card, pointed at the repo → stop there for --dry-run → offline, token, account and card checks →
the repo (created private) → one commit. Every refusal comes before the first byte leaves the
machine, and the upload is a single `create_commit`, so the repo gets all of the files or none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from tuneforge.errors import UserError

README = "README.md"
# What stays on this machine, and why: the dry run prints this for each file it leaves out.
LEFT_OUT = (
    (re.compile(r"^checkpoints(/|$)"), "resume state for this machine; not needed to use the model"),
    (re.compile(r"^training_log_.*\.log$"), "this machine's training log (paths, host)"),
    (re.compile(r"^tuneforge-run\.json$"), "this machine's run marker"),
    (re.compile(r"(^|/)\."), "hidden (locks, partial writes)"),
)
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


@dataclass(frozen=True)
class PushPlan:
    folder: Path
    repo: str
    kind: str  # "adapter", "full fine-tune", "hf" or "gguf"
    files: list[tuple[str, int]]  # (path in the repo, bytes), README.md as uploaded
    left_out: list[tuple[str, str]]  # (path, why)
    card: str  # README.md as uploaded: its "Use it" section names the repo
    private: bool
    naming_paths: list[str]  # uploaded files that name this machine's paths (tuneforge.yaml keeps them)


def run_push(
    repo: str,
    adapter: Path | None = None,
    export: Path | None = None,
    public: bool = False,
    dry_run: bool = False,
    message: str | None = None,
) -> PushPlan:
    console = Console(highlight=False, soft_wrap=True)
    plan = plan_push(repo, adapter, export, public)
    show_plan(console, plan, dry_run)
    if dry_run:
        console.print("Dry run: nothing was uploaded. Leave out --dry-run to push.")
        return plan
    api = hub_session(plan)
    upload(api, plan, message or f"Upload {plan.kind} with tuneforge")
    console.print(f"Pushed to https://huggingface.co/{plan.repo} ({'private' if plan.private else 'public'}).")
    return plan


def plan_push(repo: str, adapter: Path | None, export: Path | None, public: bool) -> PushPlan:
    """Every check that needs no network: the repo id, the folder and its card, the file list."""
    from tuneforge.runs.folder import is_full_model
    from tuneforge.runs.hub_card import base_facts, local_paths, replace_use_it
    from tuneforge.runs.results import adapter_usage, full_usage

    check_repo_id(repo)
    if adapter is not None and export is not None:
        raise UserError("Pass --adapter (a results folder) or --export (an export folder), not both.")
    folder = (export or adapter or Path("results")).expanduser()
    if export is not None:
        kind, card = check_export(folder)
        section = export_usage_for(folder, kind, repo)
    else:
        run = check_results(folder)
        full = is_full_model(folder)  # a full fine-tune: a whole model, loaded without peft
        kind, card = "full fine-tune" if full else "adapter", _card(folder)
        where = repo.split("/")[1]
        section = full_usage(where, repo) if full else adapter_usage(where, base_facts(run.source), repo)
    card = replace_use_it(card, section)
    files, left_out = upload_list(folder)
    sizes = [(name, len(card.encode("utf-8")) if name == README else size) for name, size in files]
    naming = [name for name, _ in files if name.endswith((".yaml", ".json")) and _names_paths(folder / name)]
    if local_paths(card):
        raise UserError(f"The model card {folder / README} names local paths ({local_paths(card)[0]}); remove them.")
    return PushPlan(folder, repo, kind, sizes, left_out, card, not public, naming)


def check_repo_id(repo: str) -> None:
    if not _REPO_ID.match(repo) or ".." in repo or repo.endswith((".git", "-", ".")):
        raise UserError(
            f"--repo '{repo}' is not a Hugging Face repo id. Use owner/name with letters, digits, '-', '_' or '.', "
            "e.g. --repo your-name/smollm2-medical-lora."
        )


def check_results(folder: Path) -> Any:
    """A finished run that passes open_run's checks, with an adapter config this version wrote."""
    import json

    from tuneforge.runs.folder import is_full_model, open_run
    from tuneforge.runs.hub_card import local_paths
    from tuneforge.runs.resume import run_status

    if folder.is_dir() and run_status(folder) == "unfinished":
        raise UserError(
            f"The run in '{folder}' has not finished, so there is nothing to push yet. Run the same "
            "`tuneforge train` command again to finish it (it resumes from its newest checkpoint), then push."
        )
    run = open_run(folder)  # the folder's files, its integrity checks and its base model, as chat and export see them
    if is_full_model(folder):
        return run  # a full fine-tune: its config.json names no base path
    base = str(json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("base_model_name_or_path"))
    if local_paths(base) or base.startswith(("/", "~")):
        raise _older_run(folder, f"adapter_config.json names its base by a local path ({base})")
    return run


def check_export(folder: Path) -> tuple[str, str]:
    """An export folder from `tuneforge export`: a GGUF that parses, or a model folder with safetensors."""
    if not folder.is_dir():
        raise UserError(f"--export '{folder}' does not exist. Pass the --out folder of `tuneforge export`.")
    ggufs = sorted(folder.glob("*.gguf"))
    if ggufs:
        from gguf import GGUFReader

        for path in ggufs:
            try:
                count = len(GGUFReader(path).tensors)
            except Exception as exc:  # noqa: BLE001 - gguf raises ValueError, struct.error or OSError on a torn file
                raise UserError(
                    f"{path} is not a readable GGUF file ({type(exc).__name__}). Export it again with "
                    "`tuneforge export --format gguf --overwrite`."
                ) from None
            if count == 0:
                raise UserError(f"{path} holds no tensors. Export it again with `tuneforge export --overwrite`.")
        return "gguf", _card(folder)
    if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
        return "hf", _card(folder)
    raise UserError(
        f"--export '{folder}' holds neither a .gguf file nor a model folder (config.json and .safetensors). "
        "Pass the --out folder of `tuneforge export`, or a results folder with --adapter."
    )


def upload_list(folder: Path) -> tuple[list[tuple[str, int]], list[tuple[str, str]]]:
    """Every file under `folder`, as (path in the repo, bytes), and those left out with the reason."""
    files: list[tuple[str, int]] = []
    left_out: list[tuple[str, str]] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = path.relative_to(folder).as_posix()
        why = next((reason for rule, reason in LEFT_OUT if rule.search(name)), None)
        if why is None:
            files.append((name, path.stat().st_size))
        elif not left_out or not (why == left_out[-1][1] and name.startswith("checkpoints/")):
            left_out.append(("checkpoints/" if name.startswith("checkpoints/") else name, why))
    return files, left_out


def export_usage_for(folder: Path, kind: str, repo: str) -> str:
    """The export card's "Use it" section, loading from the repo."""
    from tuneforge.export.model_card import export_usage

    files = {"format": kind, "file": "", "ollama": repo.split("/")[1].lower()}
    if kind == "gguf":
        files["file"] = sorted(folder.glob("*.gguf"))[0].name
    return export_usage(repo.split("/")[1], files, repo)


def show_plan(console: Console, plan: PushPlan, dry_run: bool) -> None:
    total = sum(size for _, size in plan.files)
    visibility = "private" if plan.private else "PUBLIC"
    console.print(f"{'Would push' if dry_run else 'Pushing'} {plan.folder} ({plan.kind}) to {plan.repo}, "
                  f"{visibility}: {len(plan.files)} files, {_size(total)}")  # fmt: skip
    for name, size in plan.files:
        console.print(f"  {_size(size):>10}  {name}")
    for name, why in plan.left_out:
        console.print(f"  {'left out':>10}  {name}: {why}")
    if any(name == "eval_set.jsonl" for name, _ in plan.files):
        console.print("Note: eval_set.jsonl holds held-out rows of your training data (`tuneforge eval` scores them).")
    if plan.naming_paths:
        console.print(f"Note: {', '.join(plan.naming_paths)} record paths on this machine (what the run used); "
                      "the model card names none.")  # fmt: skip
    if dry_run:
        console.print(f"\n{README} as it will be uploaded:\n")
        console.print(plan.card, markup=False)


def hub_session(plan: PushPlan) -> Any:
    """Offline mode, the token, the account and the card, checked with the Hub before anything is written."""
    from huggingface_hub import HfApi, ModelCard, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise UserError(
            f"Pushing to {plan.repo} needs the Hugging Face Hub, but HF_HUB_OFFLINE is set, so nothing was "
            "uploaded. Unset HF_HUB_OFFLINE when you are online, or check what would go up with --dry-run."
        )
    token = get_token()
    if not token:
        raise UserError(
            f"Pushing to {plan.repo} needs a Hugging Face token with write access, and none was found (HF_TOKEN, "
            "or a saved `hf auth login`), so nothing was uploaded. Create one at https://huggingface.co/settings/"
            "tokens, then run `hf auth login` or set HF_TOKEN."
        )
    api = HfApi(token=token)
    who = _hub_call(plan, "check the token", api.whoami)
    owner = plan.repo.split("/")[0]
    names = {who.get("name"), *(org.get("name") for org in who.get("orgs", []))}
    if owner not in names:
        raise UserError(
            f"The token belongs to '{who.get('name')}', which cannot write to '{owner}' (its organisations: "
            f"{', '.join(sorted(n for n in names if n and n != who.get('name'))) or 'none'}). Use --repo "
            f"{who.get('name')}/{plan.repo.split('/')[1]}, or log in as the owner."
        )
    try:
        ModelCard(plan.card).validate("model")
    except ValueError as exc:
        raise UserError(
            f"The Hub refused the model card for {plan.repo}: {str(exc)[:300]}. Nothing was uploaded."
        ) from None
    except Exception as exc:  # noqa: BLE001 - see _hub_call
        raise _unreachable(plan, "validate the model card", exc) from None
    return api


def upload(api: Any, plan: PushPlan, message: str) -> None:
    """The repo (private unless --public; an existing public one only with --public), then one commit."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        info = api.repo_info(plan.repo)
    except RepositoryNotFoundError:
        info = None
    except Exception as exc:  # noqa: BLE001 - the Hub client's transport errors vary by release
        raise _unreachable(plan, "look up the repo", exc) from None
    if info is None:
        _hub_call(plan, "create the repo", lambda: api.create_repo(plan.repo, private=plan.private, exist_ok=True))
    elif plan.private and not getattr(info, "private", True):
        raise UserError(
            f"{plan.repo} already exists and is public, so pushing would publish this model; nothing was uploaded. "
            "Pass --public to push to it anyway, or pick another --repo (new repos are private)."
        )
    operations = [
        CommitOperationAdd(name, plan.card.encode("utf-8") if name == README else plan.folder / name)
        for name, _ in plan.files
    ]
    _hub_call(plan, "upload", lambda: api.create_commit(plan.repo, operations, commit_message=message))


def _card(folder: Path) -> str:
    """The folder's README.md, if it carries the Hub metadata this version writes."""
    from huggingface_hub import ModelCard

    path = folder / README
    if not path.is_file():
        raise _older_run(folder, f"{README} (the model card) is missing")
    text = path.read_text(encoding="utf-8")
    try:
        data = ModelCard(text, ignore_metadata_errors=False).data.to_dict()
    except ValueError as exc:
        raise UserError(f"{path} has broken YAML metadata ({str(exc).splitlines()[0][:160]}); fix it.") from None
    if "tuneforge" not in (data.get("tags") or []) or not data.get("library_name"):
        raise _older_run(folder, f"{README} has no Hub metadata (library_name, tags)")
    return text


def _older_run(folder: Path, what: str) -> UserError:
    return UserError(
        f"'{folder}' was written by an older tuneforge: {what}, so the Hub could not link it to its base model. "
        "Train it again with this version (or export it again), then push."
    )


def _hub_call(plan: PushPlan, what: str, call: Any) -> Any:
    try:
        return call()
    except Exception as exc:  # noqa: BLE001 - requests, httpx and httpx2 errors across huggingface_hub releases
        raise _unreachable(plan, what, exc) from None


def _unreachable(plan: PushPlan, what: str, exc: Exception) -> UserError:
    from huggingface_hub.errors import HfHubHTTPError

    status = getattr(getattr(exc, "response", None), "status_code", None) if isinstance(exc, HfHubHTTPError) else None
    why = (
        f"the Hub answered {status}"
        if status
        else f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    )
    fix = "Check that the token may write there (`hf auth whoami`)." if status in (401, 403) else (
        "Check the network (the Hub must be reachable), then run the same command again.")  # fmt: skip
    return UserError(f"Could not {what} for {plan.repo} ({why}); no files were committed. {fix}")


def _names_paths(path: Path) -> bool:
    from tuneforge.runs.hub_card import local_paths

    try:
        return bool(local_paths(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError):
        return False


def _size(count: int) -> str:
    if count < 1000:
        return f"{count} B"
    for unit, scale in (("KB", 1e3), ("MB", 1e6)):
        if count < scale * 1000:
            return f"{count / scale:.1f} {unit}"
    return f"{count / 1e9:.2f} GB"
