"""Slow: the studio page in headless Chromium on the tiny model: upload, train, stop, resume, chat, export."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.browser import console_errors, headless_chromium

EXTRA = {"train.max_seq_length": 64, "train.logging_steps": 1, "train.save_steps": 5, "train.eval_examples": 0,
         "train.precision": "fp32", "lora.r": 4, "train.learning_rate": 0.005}  # fmt: skip
STEPS = 40


def start_studio(tmp: Path) -> tuple[subprocess.Popen, str]:
    log = tmp / "studio.log"  # a file, not a pipe: a full pipe would stall the server
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "studio", "--port", "0", "--runs-dir", str(tmp / "runs")],
        stdout=log.open("w"), stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:\d+/", log.read_text())
        if found:
            return process, found.group(0)
        assert process.poll() is None, log.read_text()
        time.sleep(0.1)
    raise AssertionError(f"the studio never printed its address:\n{log.read_text()}")


def non_blank(png: Path) -> bool:
    from PIL import Image

    with Image.open(png) as image:
        colors = image.convert("RGB").getcolors(maxcolors=1 << 20)
    return colors is not None and len(colors) > 20


def wait(driver, script: str, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    shown = driver.execute_script("return document.querySelector('main').innerText")
    raise AssertionError(f"timed out on: {script}\npage:\n{shown[-3000:]}")


def status_is(name: str) -> str:
    return f"return document.querySelector('#run-status').dataset.status === '{name}'"


@pytest.mark.slow
def test_upload_train_stop_resume_chat_export_in_chromium(tmp_path, tiny_model_dir, tiny_dataset):
    shots = tmp_path / "screenshots"
    shots.mkdir()
    process, url = start_studio(tmp_path)
    try:
        with headless_chromium() as driver:
            driver.get(url)
            wait(driver, "return document.body.dataset.ready")
            find = driver.find_element
            find("css selector", "#f-name").send_keys("tiny")
            find("css selector", "#f-model").send_keys(str(tiny_model_dir))
            find("css selector", "#f-upload").send_keys(str(tiny_dataset))
            assert "upload-" in wait(driver, "return document.querySelector('#resolved').textContent")
            find("css selector", "#f-steps").send_keys(str(STEPS))
            find("css selector", "#f-batch").send_keys("2")
            find("css selector", "#f-extra").send_keys(json.dumps(EXTRA))
            driver.save_screenshot(str(shots / "1-new-run.png"))
            find("css selector", "#start").click()

            wait(driver, "return document.querySelectorAll('#chart circle.point').length >= 3")
            driver.save_screenshot(str(shots / "2-running.png"))
            find("css selector", "#stop").click()
            wait(driver, status_is("stopped"), timeout=60)
            assert "checkpoint-" in find("css selector", "#run-checkpoints").text
            stopped_at = len(driver.find_elements("css selector", "#chart circle.point"))
            assert stopped_at < STEPS
            find("css selector", "#resume").click()
            wait(driver, status_is("finished"))
            assert (
                len(driver.find_elements("css selector", "#chart circle.point")) == STEPS
            )  # the whole curve, both logs
            assert f"{STEPS}/{STEPS}" in find("css selector", "#run-progress").text

            find("css selector", "#chat-input").send_keys("What is a fever?")
            find("css selector", "#chat-form button[type=submit]").click()
            answer = wait(
                driver,
                "const b = document.querySelector('.bubble.answer.tuned'); return b && b.dataset.done && b.textContent",
            )
            assert answer.strip()

            driver.execute_script("document.querySelector('#export-format').value = 'hf:'")  # the cheapest export
            find("css selector", "#export").click()
            wait(
                driver,
                "return [...document.querySelectorAll('#export-out a')].some(a => a.textContent.includes('model.safetensors'))",
            )
            driver.execute_script("window.scrollTo(0, 0)")
            driver.save_screenshot(str(shots / "3-finished.png"))

            find("css selector", "#lang").click()
            assert find("css selector", "#stop").text == "중지"
            driver.get(url + "#runs")
            wait(driver, "return document.querySelector('#runs-table tr[data-run=tiny] .status.finished')")
            driver.save_screenshot(str(shots / "4-runs.png"))
            driver.get(url + "#exports")
            wait(driver, "return document.querySelector('#exports-out a')")
            driver.save_screenshot(str(shots / "5-exports.png"))
            assert not console_errors(driver)
    finally:
        process.terminate()
        process.wait(15)
    for png in sorted(shots.glob("*.png")):
        assert non_blank(png), png
    assert (tmp_path / "runs" / ".studio" / "exports" / "tiny-hf" / "model.safetensors").is_file()
