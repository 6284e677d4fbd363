"""The studio's job queue with a real `tuneforge train` child: restart mid-run reattaches, Stop saves, DPO check."""

from __future__ import annotations

import json
import time

from fastapi.testclient import TestClient

from tuneforge.studio.app import create_app
from tuneforge.studio.settings import StudioSettings

TOKEN = "jobs-test-token"
AUTH = {"X-Studio-Token": TOKEN}


def tiny_settings(model_dir, dataset, steps: int) -> dict:
    return {"model.name": str(model_dir), "data.dataset": str(dataset), "train.max_steps": steps,
            "train.batch_size": 2, "train.max_seq_length": 64, "train.learning_rate": 5e-3, "lora.r": 4,
            "train.precision": "fp32", "train.eval_examples": 0, "train.logging_steps": 1, "train.save_steps": 5}  # fmt: skip


def wait_for(client: TestClient, run: str, check, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = client.get(f"/api/runs/{run}").json()
        if check(state):
            return state
        time.sleep(0.2)
    raise AssertionError(f"run {run} never got there: {json.dumps(state)[-3000:]}")


def test_a_restarted_studio_reattaches_to_the_running_child_and_stop_saves(tmp_path, tiny_model_dir, tiny_dataset):
    settings = StudioSettings(runs_dir=tmp_path / "runs", data_dir=tmp_path / "data", token=TOKEN, poll_s=0.2)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:7860") as first:
        started = first.post(
            "/api/runs",
            json={"name": "long", "settings": tiny_settings(tiny_model_dir, tiny_dataset, 2000)},
            headers=AUTH,
        )
        assert started.status_code == 201, started.text
        pid = started.json()["job"]["pid"]
        waiting = first.post("/api/runs", json={"name": "next", "settings": {}}, headers=AUTH).json()
        assert waiting["job"]["state"] == "queued"  # one run trains at a time; the rest wait in line
        assert first.get("/api/runs/next").json()["job"]["queue_position"] == 1
        assert first.post("/api/runs/next/stop", headers=AUTH).json()["stopping"]  # a queued job is dropped
        # the page's check, with the real commands, while "long" trains: the method chosen on the form, and DPO
        # without data reads medical-preferences, as `tuneforge train --method dpo` does
        check = first.post("/api/check", json={"settings": {"model.name": str(tiny_model_dir), "train.method": "dpo"}},
                           headers=AUTH).json()  # fmt: skip
        assert check["data"]["method"] == "dpo" and check["data"]["dataset"] == "medical-preferences", check
        assert check["data"]["pair"]["chosen"]["tokens"] > 0 and check["data"]["pair"]["rejected"]["text"]
        assert check["settings"]["sources"]["data.dataset"] == "default for --method dpo"
        wait_for(first, "long", lambda s: len(s["points"]) >= 2)
    # the first studio is gone; its child is not
    with TestClient(create_app(settings), base_url="http://127.0.0.1:7860") as second:
        state = wait_for(second, "long", lambda s: len(s["points"]) >= 3)
        assert state["status"] == "running" and state["job"]["pid"] == pid and state["job"]["state"] == "running"
        assert state["progress"]["max_steps"] == 2000 and state["model"] == str(tiny_model_dir)
        with second.stream("GET", "/api/runs/long/events") as events:  # the live view reattaches too
            line = next(line for line in events.iter_lines() if line.startswith("data: "))
        assert json.loads(line[6:])["status"] == "running"
        assert {r["id"]: r["status"] for r in second.get("/api/runs").json()["runs"]} == {
            "long": "running",
            "next": "stopped",
        }
        assert second.post("/api/runs/long/stop", headers=AUTH).status_code == 200  # SIGINT, as Ctrl-C
        stopped = wait_for(second, "long", lambda s: s["status"] != "running", timeout=60)
    assert stopped["status"] == "stopped" and stopped["error"] is None, stopped
    assert stopped["checkpoints"] and stopped["progress"]["step"] < 2000
    output = (settings.jobs_dir / f"{stopped['jobs'][0]['id']}.out").read_text()
    assert "Run the same command again to resume" in output and "Traceback" not in output
