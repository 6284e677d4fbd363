"""Guards `tuneforge serve` as users run it: a real process, the openai SDK, a browser, dropped clients."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.browser import console_errors, headless_chromium
from tuneforge.serving.engine import Engine, Job, Result

KEY = "e2e-key-456"
QUESTION = "Please tell me about the heart."


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_health(
    url: str, process: subprocess.Popen | None = None, log: Path | None = None, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"tuneforge serve exited with {process.returncode}:\n{log.read_text() if log else ''}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"no answer from {url}/health after {timeout} s")


@pytest.fixture(scope="module")
def served(tiny_results, tmp_path_factory):
    """`tuneforge serve` in its own process on a free loopback port, the key from the environment."""
    port = free_port()
    script = Path(sys.executable).with_name("tuneforge")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tuneforge"]
    env = {**os.environ, "TUNEFORGE_API_KEY": KEY, "TUNEFORGE_CACHE": str(tmp_path_factory.mktemp("cache"))}
    log = tmp_path_factory.mktemp("serve") / "serve.log"  # a file, not a pipe: a full pipe would stall the server
    with log.open("w") as sink:
        process = subprocess.Popen(
            [*command, "serve", "--adapter", str(tiny_results), "--port", str(port), "--max-tokens-cap", "64"],
            env=env, stdout=sink, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()


def test_openai_sdk_plain_and_streaming(served):
    from openai import OpenAI

    client = OpenAI(base_url=f"{served}/v1", api_key=KEY, max_retries=0)
    assert [m.id for m in client.models.list()] == ["base", "results"]
    messages = [{"role": "user", "content": QUESTION}]
    whole = client.chat.completions.create(model="results", messages=messages, max_tokens=12, temperature=0)
    answer = whole.choices[0].message.content
    assert answer and whole.usage.completion_tokens <= 12
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    stream = client.chat.completions.create(
        model="results", messages=messages, max_tokens=12, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == answer
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    text = client.completions.create(model="base", prompt="Abnormality of the", max_tokens=5, temperature=0)
    assert text.choices[0].finish_reason in ("stop", "length") and text.usage.completion_tokens <= 5


def test_openai_sdk_reports_our_errors(served):
    import openai

    wrong = openai.OpenAI(base_url=f"{served}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key"):
        wrong.models.list()
    client = openai.OpenAI(base_url=f"{served}/v1", api_key=KEY, max_retries=0)
    messages = [{"role": "user", "content": QUESTION}]
    with pytest.raises(openai.NotFoundError, match="base, results"):
        client.chat.completions.create(model="gpt-4o", messages=messages)
    with pytest.raises(openai.BadRequestError, match="cap of 64"):
        client.chat.completions.create(model="results", messages=messages, max_tokens=500)


def test_chat_page_streams_an_answer_in_chromium(served):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with headless_chromium() as driver:
        driver.get(f"{served}/")
        wait = WebDriverWait(driver, 30)
        assert "API key" in wait.until(lambda d: d.find_element(By.ID, "status").text)  # no key yet: 401, said plainly
        driver.find_element(By.ID, "api-key").send_keys(KEY + Keys.TAB)
        wait.until(lambda d: Select(d.find_element(By.ID, "model")).first_selected_option.text == "results")
        driver.find_element(By.ID, "temperature").clear()
        driver.find_element(By.ID, "temperature").send_keys("0")
        # note the answer's length each time the DOM changes: a partial answer on screen means it streamed in
        driver.execute_script("""
            window.seenLengths = [];
            new MutationObserver(() => {
              const answer = document.querySelector('.msg.assistant .text');
              if (answer) window.seenLengths.push(answer.textContent.length);
            }).observe(document.getElementById('log'), {subtree: true, childList: true, characterData: true});
        """)  # fmt: skip
        driver.find_element(By.ID, "prompt").send_keys(QUESTION)
        driver.find_element(By.ID, "send").click()
        done = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant.done .text"))
        answer = done[0].get_attribute("textContent")
        assert answer.strip(), "the answer stayed empty"
        assert driver.find_element(By.CSS_SELECTOR, ".msg.user .text").text == QUESTION
        seen = driver.execute_script("return window.seenLengths")
        assert any(0 < n < len(answer) for n in seen), f"no partial answer was shown: {seen}"
        assert driver.find_element(By.ID, "status").text == ""
        driver.find_element(By.ID, "clear").click()
        assert driver.find_elements(By.CSS_SELECTOR, ".msg") == []
        # the first model list was refused (401, no key yet); anything else is a script or CSP error
        assert [e for e in console_errors(driver) if "401" not in e] == []


# --- a client that goes away frees its place in the queue ---


class SlowEngine(Engine):
    """No model: 'generates' one word every 50 ms, and records how far each job got."""

    def __init__(self, tokenizer) -> None:
        super().__init__(None, tokenizer, [], context_length=1024, chat_template=tokenizer.chat_template)
        self.produced: list[int] = []

    def generate(self, job: Job) -> Result:
        count = 0
        while count < job.max_new_tokens and not job.cancelled.is_set():
            time.sleep(0.05)
            count += 1
            if job.streamer is not None:
                job.streamer.on_finalized_text("word ")
        if job.streamer is not None:
            job.streamer.on_finalized_text("", stream_end=True)
        self.produced.append(count)
        return Result("word " * count, len(job.input_ids), count, "length")


@contextmanager
def live_server(app):
    """The app under a real uvicorn on a free loopback port, in a thread of this process."""
    import uvicorn

    from tuneforge.commands.serve import bind

    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        wait_for_health(url, timeout=20)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def test_a_dropped_client_frees_its_slot(tiny_results):
    from transformers import AutoTokenizer

    from tuneforge.serving.app import create_app
    from tuneforge.serving.limits import Limits

    engine = SlowEngine(AutoTokenizer.from_pretrained(tiny_results))
    body = {"model": "base", "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 400}
    with live_server(create_app(engine, limits=Limits(max_tokens_cap=400, queue_size=0, max_batch=1))) as url:
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=10) as response:
            lines = response.iter_lines()
            assert sum(1 for _, line in zip(range(6), lines) if line.startswith("data: ")) >= 3
        # the stream is closed after a few words: the job must stop and the one slot come back
        _eventually(lambda: httpx.get(f"{url}/health").json()["queue"] == {"running": 0, "waiting": 0, "limit": 1})
        assert engine.produced[-1] < 60, engine.produced  # 400 words would take 20 s
        with pytest.raises(httpx.ReadTimeout):  # a plain request whose client gives up
            httpx.post(f"{url}/v1/chat/completions", json=body, timeout=0.5)
        _eventually(lambda: httpx.get(f"{url}/health").json()["queue"]["running"] == 0)
        assert engine.produced[-1] < 60, engine.produced
        quick = httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": 3}, timeout=10)
        assert quick.status_code == 200 and quick.json()["usage"]["completion_tokens"] == 3


def _eventually(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server did not free the slot in time"
        time.sleep(0.05)
