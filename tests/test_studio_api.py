"""The studio's API through FastAPI's TestClient: each security rule, uploads, and the run list read from folders."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tuneforge.runs import lock
from tuneforge.studio import i18n
from tuneforge.studio.app import create_app
from tuneforge.studio.settings import StudioSettings

TOKEN = "studio-test-token"
BASE = "http://127.0.0.1:7860"


# What a finished DPO run writes into metrics.json (recipe/train.py: held_out_figures), by hand.
PREFERENCE_METRICS = {
    "method": "dpo", "final_train_loss": 0.69, "eval_loss_before": 3.2, "eval_loss_after": 3.3,
    "preference": {"before": {"pairs": 8, "accuracy": 0.5, "margin": 0.01},
                   "after": {"pairs": 8, "accuracy": 0.875, "margin": 0.42}},
}  # fmt: skip


def fake_run(folder, status: str, steps: list[int], max_steps: int = 10, metrics: dict | None = None) -> None:
    """The files `tuneforge train` writes, by hand: the marker, a log with step lines, metrics when finished."""
    folder.mkdir(parents=True)
    metrics = metrics or {"final_train_loss": 4.0, "eval_loss_after": 4.1, "method": "sft"}
    config = {
        "model": {"name": "tiny"},
        "data": {"dataset": "terms.jsonl"},
        "train": {"method": metrics["method"], "max_steps": max_steps},
    }
    (folder / "tuneforge-run.json").write_text(json.dumps({"status": status, "config": config}))
    lines = ["2026-01-01 10:00:00 == tuneforge train =="]
    lines += [
        f"2026-01-01 10:00:{s:02d} step {s}/{max_steps}  loss {5 - s / 10:.4f}  lr 1.00e-03  1,234 tok/s" for s in steps
    ]
    (folder / "training_log_20260101_100000.log").write_text("\n".join(lines) + "\n")
    (folder / "checkpoints" / f"checkpoint-{steps[-1]}").mkdir(parents=True)
    (folder / "checkpoints" / ".staging-99").mkdir()
    if status == "finished":
        (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture
def studio(tmp_path):
    settings = StudioSettings(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", token=TOKEN, upload_cap=1000)
    fake_run(settings.runs_dir / "done", "finished", [2, 4, 6, 8, 10])
    fake_run(settings.runs_dir / "halfway", "running", [2, 4])
    fake_run(settings.runs_dir / "prefs", "finished", [3, 6], max_steps=6, metrics=PREFERENCE_METRICS)
    with TestClient(create_app(settings), base_url=BASE) as client:
        yield client, settings


def test_foreign_host_origin_and_missing_token_are_refused(studio):
    client, _ = studio
    assert client.get("/api/runs").status_code == 200
    rebinding = client.get("/api/runs", headers={"Host": "evil.example:7860"})
    assert rebinding.status_code == 403 and "evil.example" in rebinding.json()["error"]
    assert client.get("/", headers={"Host": "127.0.0.1:9999"}).status_code == 403  # another port is another site
    cross = client.post("/api/runs", json={}, headers={"Origin": "http://evil.example", "X-Studio-Token": TOKEN})
    assert cross.status_code == 403 and "evil.example" in cross.json()["error"]
    assert client.get("/api/runs", headers={"Origin": "https://evil.example"}).status_code == 403
    for headers in ({}, {"X-Studio-Token": "wrong"}):
        refused = client.post("/api/runs/done/stop", headers=headers)
        assert refused.status_code == 403 and "token" in refused.json()["error"]
    own = {"Origin": "http://localhost:7860", "Host": "localhost:7860", "X-Studio-Token": TOKEN}
    assert client.post("/api/runs/done/stop", headers=own).status_code == 409  # passes the guard; nothing to stop
    page = client.get("/")
    assert page.status_code == 200 and f'content="{TOKEN}"' in page.text and page.headers["x-frame-options"] == "DENY"


def test_beyond_loopback_every_request_needs_the_token(tmp_path):
    settings = StudioSettings(runs_dir=tmp_path / "r", data_dir=tmp_path / "d", host="0.0.0.0", port=7861, token=TOKEN)
    with TestClient(create_app(settings), base_url="http://0.0.0.0:7861") as client:
        assert client.get("/api/runs").status_code == 403
        assert client.get("/").status_code == 403
        page = client.get(f"/?token={TOKEN}")  # the printed address: sets the cookie the page's requests carry
        assert page.status_code == 200
        assert client.get("/api/runs").status_code == 200


def test_uploads_are_capped_and_never_leave_the_uploads_folder(studio, tmp_path):
    client, settings = studio
    auth = {"X-Studio-Token": TOKEN}
    row = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
    saved = client.post("/api/uploads", params={"name": "../../escape.jsonl"}, content=row, headers=auth)
    assert saved.status_code == 201
    path = settings.uploads / saved.json()["name"]
    assert path.read_bytes() == row and path.parent == settings.uploads and "escape" not in path.name
    assert saved.json()["name"].startswith("upload-") and not list(tmp_path.rglob("escape*"))
    assert client.post("/api/uploads", params={"name": "..\\..\\x.sh"}, content=row, headers=auth).status_code == 400
    assert (
        client.post("/api/uploads", params={"name": "big.jsonl"}, content=b"x" * 1001, headers=auth).status_code == 413
    )

    def chunks():  # no Content-Length: the cap holds while reading
        yield b"x" * 600
        yield b"x" * 600

    streamed = client.post("/api/uploads", params={"name": "big.jsonl"}, content=chunks(), headers=auth)
    assert streamed.status_code == 413 and "1,000" in streamed.json()["error"]
    assert sorted(p.name for p in settings.uploads.iterdir()) == [path.name]  # nothing half-written left
    assert client.post("/api/uploads", params={"name": "a.jsonl"}, content=row).status_code == 403


def test_the_run_list_comes_from_the_folders(studio):
    client, settings = studio
    runs = {run["id"]: run for run in client.get("/api/runs").json()["runs"]}
    assert runs["done"]["status"] == "finished" and runs["done"]["figures"]["final_train_loss"] == 4.0
    assert runs["halfway"]["status"] == "stopped"  # unfinished, and no process holds its lock
    assert (runs["done"]["model"], runs["done"]["data"], runs["done"]["method"]) == ("tiny", "terms.jsonl", "sft")
    held = lock.acquire(settings.runs_dir / "halfway")
    try:
        assert lock.holder_of(settings.runs_dir / "halfway")["pid"] > 0
        assert client.get("/api/runs/halfway").json()["status"] == "running"  # e.g. a `tuneforge train` in a terminal
    finally:
        held.release()
    assert lock.holder_of(settings.runs_dir / "halfway") is None
    detail = client.get("/api/runs/halfway").json()
    assert [p["step"] for p in detail["points"]] == [2, 4] and detail["points"][0]["loss"] == 4.8
    assert detail["progress"]["step"] == 4 and detail["progress"]["eta_s"] == pytest.approx(6.0)
    assert detail["checkpoints"] == ["checkpoint-4"] and "step 4/10" in detail["log_tail"][-1]
    assert client.get("/api/runs/nope").status_code == 404
    assert client.get("/api/runs/..%2Fetc").status_code == 404
    events = client.get("/api/runs/done/events")  # a finished run: one full state, then the stream ends
    assert json.loads(events.text.split("data: ", 1)[1].split("\n\n")[0])["status"] == "finished"
    assert "content-encoding" not in events.headers  # gzip would hold back the live view's events


def test_a_preference_run_shows_its_accuracy_and_two_runs_compare(studio):
    client, _ = studio
    prefs = client.get("/api/runs/prefs").json()
    assert prefs["method"] == "dpo" and prefs["status"] == "finished"
    assert prefs["figures"] == {  # where an SFT run shows its losses: accuracy first; DPO's own loss is left out
        "preference_accuracy_before": 0.5, "preference_accuracy_after": 0.875, "preference_margin_before": 0.01,
        "preference_margin_after": 0.42, "eval_loss_before": 3.2, "eval_loss_after": 3.3,
    }  # fmt: skip
    listed = {run["id"]: run for run in client.get("/api/runs").json()["runs"]}
    assert listed["prefs"]["figures"] == prefs["figures"] and listed["done"]["method"] == "sft"
    compared = client.get("/api/compare", params={"runs": ["done", "prefs"]}).json()
    done, pref = compared["runs"]
    assert (done["id"], pref["id"]) == ("done", "prefs") and (done["method"], pref["method"]) == ("sft", "dpo")
    assert [p["step"] for p in done["points"]] == [2, 4, 6, 8, 10] and [p["step"] for p in pref["points"]] == [3, 6]
    assert done["figures"]["final_train_loss"] == 4.0 and pref["figures"]["preference_accuracy_after"] == 0.875
    assert compared["figures"][:2] == ["final_train_loss", "eval_loss_after"]  # every run's figures, one row each
    assert "preference_accuracy_after" in compared["figures"]
    assert client.get("/api/compare", params={"runs": ["done"]}).status_code == 400
    assert client.get("/api/compare", params={"runs": ["done", "nope"]}).status_code == 404


def test_bad_starts_get_one_paragraph_errors(studio):
    client, _ = studio
    auth = {"X-Studio-Token": TOKEN}
    typo = client.post("/api/runs", json={"settings": {"train.max_stepz": 3}}, headers=auth)
    assert typo.status_code == 400 and "'train.max_stepz'" in typo.json()["error"]
    assert client.post("/api/runs", json={"name": "done"}, headers=auth).status_code == 409
    assert client.post("/api/runs", json={"name": "../x"}, headers=auth).status_code == 400
    assert client.post("/api/runs/halfway/resume", headers=auth).status_code == 409  # not started by this studio


def test_korean_when_the_browser_asks_and_both_languages_complete(studio):
    client, _ = studio
    assert '<html lang="ko">' in client.get("/", headers={"Accept-Language": "ko-KR,ko;q=0.9,en;q=0.8"}).text
    assert '<html lang="en">' in client.get("/", headers={"Accept-Language": "en-US,en;q=0.9,ko;q=0.5"}).text
    assert set(i18n.STRINGS["ko"]) == set(i18n.STRINGS["en"])
    assert client.get("/api/i18n").json()["ko"]["stop"] == "중지"
    assert "medical-preferences" in i18n.STRINGS["ko"]["method_hint"]
    for asset in ("studio.js", "studio.css"):
        served = client.get(f"/static/{asset}")  # the client asks for gzip, as browsers do
        assert served.status_code == 200 and served.headers["content-encoding"] == "gzip"
    defaults = client.get("/api/defaults").json()
    assert defaults["methods"] == ["sft", "pretrain", "dpo", "orpo", "kto"]
    assert defaults["method_datasets"] == {"sft": "medical-terms", "pretrain": "medical-terms",
                                           "dpo": "medical-preferences", "orpo": "medical-preferences",
                                           "kto": "medical-preferences"}  # fmt: skip


FAKE_TUNEFORGE = """
import json, pathlib, sys
kind, args = sys.argv[1], sys.argv[2:]
if kind == "eval":
    out = pathlib.Path(args[args.index("--adapter") + 1]) / "eval"
    out.mkdir()
    report = {"base": {"rougeL": 0.1}, "tuned": {"rougeL": 0.3}, "samples": [{"question": "q", "base": "b", "tuned": "t"}]}
    (out / "metrics.json").write_text(json.dumps(report))
elif kind == "export":
    out = pathlib.Path(args[args.index("--out") + 1])
    out.mkdir(parents=True)
    (out / "done-f16.gguf").write_bytes(b"GGUF")
    (out / "Modelfile").write_text("FROM ./done-f16.gguf")
else:
    print("Error: The data file 'x.jsonl' has no rows. Fix --dataset.")
    sys.exit(2)
"""


def test_eval_export_and_a_failed_run_through_the_job_queue(tmp_path, monkeypatch):
    """The routes' plumbing with a stand-in for the `tuneforge` command (the real one runs in the browser test)."""
    import sys
    import time

    import yaml

    fake = tmp_path / "fake_tuneforge.py"
    fake.write_text(FAKE_TUNEFORGE)
    settings = StudioSettings(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", token=TOKEN, poll_s=0.05,
                              tuneforge=(sys.executable, str(fake)))  # fmt: skip
    fake_run(settings.runs_dir / "done", "finished", [2, 4])
    auth = {"X-Studio-Token": TOKEN}

    def settle(client, run):
        for _ in range(200):
            if client.get(f"/api/runs/{run}").json()["job"] is None:
                return
            time.sleep(0.05)

    with TestClient(create_app(settings), base_url=BASE) as client:
        assert client.get("/api/runs/done/eval").status_code == 404
        assert client.post("/api/runs/done/eval", json={"limit": 4}, headers=auth).status_code == 201
        settle(client, "done")
        report = client.get("/api/runs/done/eval").json()
        assert report["tuned"]["rougeL"] == 0.3 and report["samples"][0]["tuned"] == "t"
        assert (
            client.post("/api/runs/done/export", json={"format": "gguf", "quant": "q4"}, headers=auth).status_code
            == 400
        )
        assert client.post("/api/runs/done/export", json={"format": "gguf"}, headers=auth).status_code == 201
        settle(client, "done")
        (export,) = client.get("/api/exports").json()["exports"]
        assert export["name"] == "done-gguf-f16" and export["ollama"].startswith("ollama create done -f ")
        assert client.get(f"/api/exports/{export['name']}/done-f16.gguf").content == b"GGUF"
        assert client.get(f"/api/exports/{export['name']}/..%2F..%2Fjobs.json").status_code == 404
        assert client.post("/api/runs/halfway/chat", json={"messages": []}, headers=auth).status_code == 404
        # a typed path is resolved as `train` resolves it, and the child is given exactly what the page showed
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("HOME", str(tmp_path))
        (tmp_path / "mine.jsonl").write_text("{}\n")
        mine = {"typed": "mine.jsonl", "path": str((tmp_path / "mine.jsonl").resolve()), "kind": "file", "size": 3}
        assert client.get("/api/resolve", params={"path": "mine.jsonl"}).json() == mine
        assert client.get("/api/resolve", params={"path": "~/mine.jsonl"}).json()["path"] == mine["path"]
        assert client.get("/api/resolve", params={"path": "./"}).json()["kind"] == "folder"
        missing = client.get("/api/resolve", params={"path": "gone/../nope.jsonl"}).json()
        assert missing["kind"] == "missing" and missing["path"] == str(tmp_path.resolve() / "nope.jsonl")
        kinds = {typed: client.get("/api/resolve", params={"path": typed, "field": field}).json()["kind"]
                 for typed, field in (("medical-preferences", "data"), ("smollm2-135m", "model"), ("org/name", "data"))}  # fmt: skip
        assert kinds == {"medical-preferences": "preset", "smollm2-135m": "preset", "org/name": "hub"}
        assert client.get("/api/resolve", params={"path": "x", "field": "secrets"}).status_code == 400
        typed = {"train.max_steps": 2, "train.method": "dpo", "data.dataset": "mine.jsonl", "model.name": "org/name"}
        client.post("/api/runs", json={"name": "broken", "settings": typed}, headers=auth)
        job_yaml = yaml.safe_load((settings.jobs_dir / "broken.yaml").read_text())
        assert job_yaml["data"] == {"dataset": mine["path"]} and job_yaml["model"] == {"name": "org/name"}
        assert job_yaml["train"] == {"max_steps": 2, "method": "dpo"}  # the method the form chose, to the child
        settle(client, "broken")
        broken = client.get("/api/runs/broken").json()
        assert broken["status"] == "failed" and broken["error"].startswith("Error: The data file 'x.jsonl' has no rows")
        assert client.post("/api/runs/broken/resume", headers=auth).status_code == 201  # the same command, --resume
        settle(client, "broken")
        assert client.get("/api/runs/broken").json()["jobs"][-1]["command"].endswith("--resume")
