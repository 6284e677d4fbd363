"""Guards the OpenAI-compatible server through FastAPI's TestClient: every route, every refusal."""

from __future__ import annotations

import json
import re
import shutil
import threading

import pytest
from fastapi.testclient import TestClient

from tuneforge.serving.app import create_app
from tuneforge.serving.engine import Engine, Job
from tuneforge.serving.limits import Limits
from tuneforge.serving.loading import base_model_name, load_engine, parse_adapter_specs

KEY = "test-key-123"
CAP = 64


def zero_adapter(results, folder):
    """A copy of the tuned adapter with every lora_B zeroed: it must answer exactly like the base."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(results, folder, ignore=shutil.ignore_patterns("checkpoints", "*.png", "*.log"))
    weights = load_file(folder / "adapter_model.safetensors")
    save_file({k: v.zero_() if "lora_B" in k else v for k, v in weights.items()}, folder / "adapter_model.safetensors")
    (folder / "tuneforge-results.json").unlink()  # an adapter made by hand, not the one training recorded
    return folder


@pytest.fixture(scope="module")
def engine(tiny_results, tmp_path_factory) -> Engine:
    zero = zero_adapter(tiny_results, tmp_path_factory.mktemp("zero") / "zero")
    specs = parse_adapter_specs([f"tuned={tiny_results}", str(zero)])
    return load_engine(specs, base_model_name(specs, None), log=lambda _: None)


def client_for(engine, **kwargs) -> TestClient:
    limits = kwargs.pop("limits", Limits(max_tokens_cap=CAP, queue_size=2, max_body_bytes=20_000))
    return TestClient(create_app(engine, limits=limits, **kwargs), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def client(engine):
    with client_for(engine) as test_client:
        yield test_client


def chat(client, content="Please tell me about the heart.", **fields):
    body = {"model": "tuned", "messages": [{"role": "user", "content": content}], "max_tokens": 12, "temperature": 0}
    return client.post("/v1/chat/completions", json={**body, **fields})


def sse_events(response) -> list:
    lines = [line for line in response.text.split("\n\n") if line.strip()]
    assert all(line.startswith("data: ") for line in lines), lines
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line[6:]) for line in lines[:-1]]


def assert_error(response, status, code=None, param=None, words=()):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and error["type"]
    if code:
        assert error["code"] == code, error
    if param:
        assert error["param"] == param, error
    for word in words:
        assert word in error["message"], (word, error["message"])
    return error


# --- the routes ---


def test_health_and_models(client):
    health = client.get("/health").json()
    assert health == {"status": "ok", "queue": {"running": 0, "waiting": 0, "limit": 8 + 2}}  # max_batch + queue
    listing = client.get("/v1/models").json()
    assert listing["object"] == "list"
    assert [m["id"] for m in listing["data"]] == ["base", "tuned", "zero"]
    assert all(m["object"] == "model" and isinstance(m["created"], int) for m in listing["data"])


def test_chat_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/chat.js"' in page.text
    for name in ("chat.js", "chat.css"):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200 and len(asset.text) > 200
    # offline: nothing is fetched from another host
    for text in (page.text, client.get("/static/chat.js").text, client.get("/static/chat.css").text):
        assert "http://" not in text and "https://" not in text
    script = client.get("/static/chat.js").text
    assert not re.search(r"\.(inner|outer)HTML\s*=|insertAdjacentHTML|document\.write", script)  # text only, no markup


def test_chat_completion_shape_and_usage(client, engine):
    data = chat(client, max_tokens=7).json()
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert data["model"] == "tuned"
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    usage = data["usage"]
    prompt_ids = engine.chat_ids([{"role": "user", "content": "Please tell me about the heart."}])
    assert usage["prompt_tokens"] == len(prompt_ids)
    assert 1 <= usage["completion_tokens"] <= 7
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert choice["finish_reason"] == ("length" if usage["completion_tokens"] == 7 else "stop")


def test_stream_sends_the_same_answer_in_chunks(client):
    whole = chat(client).json()["choices"][0]["message"]["content"]
    response = chat(client, stream=True, stream_options={"include_usage": True})
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response)
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(e["object"] == "chat.completion.chunk" and e["id"] == events[0]["id"] for e in events)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
    assert text == whole and len(events) > 3
    assert events[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] >= 1


def test_stream_without_usage_option_has_no_usage_chunk(client):
    events = sse_events(chat(client, stream=True))
    assert all(e["choices"] for e in events) and all(e.get("usage") is None for e in events)


def test_text_completions_plain_and_streamed(client):
    body = {"model": "tuned", "prompt": "Abnormality of the heart", "max_tokens": 6, "temperature": 0}
    data = client.post("/v1/completions", json=body).json()
    assert data["object"] == "text_completion" and data["id"].startswith("cmpl-")
    assert data["usage"]["completion_tokens"] <= 6
    events = sse_events(client.post("/v1/completions", json={**body, "stream": True}))
    assert "".join(e["choices"][0]["text"] for e in events) == data["choices"][0]["text"]
    assert events[-1]["choices"][0]["finish_reason"] == data["choices"][0]["finish_reason"]
    default = client.post("/v1/completions", json={"model": "base", "prompt": ["The heart"], "temperature": 0}).json()
    assert default["usage"]["completion_tokens"] <= 16  # OpenAI's default max_tokens for completions


def test_model_picks_the_adapter(client):
    """One base, three names: 'zero' (a zeroed adapter) must match 'base'; the tuned one must not."""
    answers = {
        m: chat(client, model=m, max_tokens=20).json()["choices"][0]["message"]["content"]
        for m in ("base", "zero", "tuned")
    }
    assert answers["zero"] == answers["base"]
    assert answers["tuned"] != answers["base"]


def test_seed_temperature_and_top_p(client):
    def sampled(seed, **fields):
        return chat(client, temperature=1.0, seed=seed, max_tokens=20, **fields).json()["choices"][0]["message"][
            "content"
        ]

    assert sampled(7) == sampled(7)
    assert sampled(7) != sampled(8)
    greedy = chat(client, max_tokens=20).json()["choices"][0]["message"]["content"]
    assert sampled(9, top_p=1e-6) == greedy  # top_p keeps only the likeliest token


def test_stop_sequences_are_cut_out(client):
    greedy = chat(client, model="base", max_tokens=20).json()["choices"][0]["message"]["content"]
    stop = greedy[4:7]
    expected = greedy[: greedy.find(stop)]
    data = chat(client, model="base", max_tokens=20, stop=[stop, "never-there"]).json()
    assert data["choices"][0]["message"]["content"] == expected
    assert data["choices"][0]["finish_reason"] == "stop"
    events = sse_events(chat(client, model="base", max_tokens=20, stop=stop, stream=True))
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == expected


def test_adapters_share_one_base(engine, tiny_model_dir):
    """Two adapters, one copy of the base weights: peft's multi-adapter, not a second model."""
    from transformers import AutoModelForCausalLM

    assert set(engine.model.peft_config) == {"tuned", "zero"}
    base_params = sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(tiny_model_dir).parameters())
    served = sum(p.numel() for n, p in engine.model.named_parameters() if "lora_" not in n)
    assert served == base_params


def test_chat_templates_render_in_a_sandbox(engine):
    """A template that reaches for Python internals is stopped by jinja's sandbox: a 400, not code."""
    from tuneforge.serving.errors import OpenAIError

    evil = "{{ ''.__class__.__mro__[1].__subclasses__() }}{% for m in messages %}{{ m.content }}{% endfor %}"
    sandboxed = Engine(engine.model, engine.tokenizer, engine.adapters, engine.context_length, evil)
    with pytest.raises(OpenAIError) as caught:
        sandboxed.chat_ids([{"role": "user", "content": "hi"}])
    assert caught.value.status == 400 and "template" in caught.value.message


# --- bad input: 4xx in the OpenAI error shape ---


def test_malformed_json(client):
    response = client.post(
        "/v1/chat/completions",
        content=b'{"model": "tuned", "messages": [',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, code="invalid_json", words=("not valid JSON",))
    assert_error(client.post("/v1/chat/completions", json=["not", "an", "object"]), 400)
    response = client.post("/v1/chat/completions", content=b"model=tuned", headers={"content-type": "text/plain"})
    assert_error(response, 400, words=("Content-Type: application/json",))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": "ten"}, "max_tokens"),
        ({"max_tokens": True}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"stream": "yes"}, "stream"),
        ({"messages": "hello"}, "messages"),
        ({"messages": [{"role": "user", "content": 42}]}, "messages.0.content.str"),
        ({"seed": 2**70}, "seed"),
        ({"stop": [""]}, "stop.str"),
    ],
)
def test_wrong_types_name_the_field(client, fields, param):
    error = assert_error(chat(client, **fields), 400)
    assert error["param"].startswith(param.split(".")[0]), error


def test_unknown_model_lists_the_real_ones(client):
    assert_error(
        chat(client, model="gpt-4"), 404, code="model_not_found", param="model", words=("gpt-4", "base, tuned, zero")
    )


def test_bad_role(client):
    response = chat(client, messages=[{"role": "wizard", "content": "hi"}])
    assert_error(response, 400, param="messages.0.role", words=("wizard",))


def test_empty_messages(client):
    assert_error(chat(client, messages=[]), 400, param="messages")


def test_prompt_longer_than_the_context(client, engine):
    long_text = "heart " * 1500
    tokens = len(engine.chat_ids([{"role": "user", "content": long_text}]))
    assert tokens > engine.context_length
    error = assert_error(chat(client, long_text), 400, code="context_length_exceeded")
    assert str(tokens) in error["message"] and str(engine.context_length) in error["message"]


def test_prompt_plus_max_tokens_over_the_context(client, engine):
    per_word = len(engine.text_ids(" heart" * 10)) // 10
    prompt = " heart" * ((engine.context_length - 20) // per_word)  # a few tokens short of the context
    tokens = len(engine.text_ids(prompt))
    want = engine.context_length - tokens + 1
    assert 0 < want <= CAP, "adjust the prompt so the request just overflows the context"
    response = client.post("/v1/completions", json={"model": "base", "prompt": prompt, "max_tokens": want})
    error = assert_error(response, 400, code="context_length_exceeded")
    for number in (engine.context_length, tokens, want, tokens + want):
        assert str(number) in error["message"]


def test_max_tokens_over_the_cap(client):
    assert_error(chat(client, max_tokens=CAP + 1), 400, param="max_tokens", words=(str(CAP + 1), f"cap of {CAP}"))
    assert_error(chat(client, max_completion_tokens=CAP + 1), 400, param="max_tokens")


def test_body_over_the_size_cap(client):
    big = "Please tell me about the heart. " * 2000  # about 60 kB; the test client's cap is 20 kB
    assert_error(chat(client, big), 413, code="request_too_large", words=("20000",))

    def chunks():  # no Content-Length: counted while it arrives
        yield b'{"model": "tuned", "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"}]}'

    response = client.post("/v1/chat/completions", content=chunks(), headers={"content-type": "application/json"})
    assert_error(response, 413, words=("20000",))


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"max_token": 5}, ("Unrecognized request argument supplied: max_token",)),
        ({"n": 2}, ("'n'",)),
        ({"presence_penalty": 0.5}, ("not supported",)),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}, ()),
    ],
)
def test_unsupported_fields_are_refused_not_ignored(client, fields, words):
    assert_error(chat(client, **fields), 400, words=words)


def test_sdk_defaults_and_content_parts_are_accepted(client):
    parts = [{"type": "text", "text": "Please tell me "}, {"type": "text", "text": "about the heart."}]
    response = chat(client, messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": parts}],
                    n=1, user="someone", presence_penalty=0, frequency_penalty=0.0)  # fmt: skip
    assert response.status_code == 200, response.text


def test_unknown_path_and_wrong_method(client):
    assert_error(client.get("/v1/nothing"), 404, code="not_found")
    assert_error(client.get("/v1/chat/completions"), 405, code="method_not_allowed")


def test_random_bodies_never_get_a_5xx(engine):
    """Whatever JSON arrives, the answer is a 2xx or a 4xx in the OpenAI shape, never a 500."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    fields = ["model", "messages", "prompt", "max_tokens", "temperature", "top_p", "stop", "seed", "stream", "n"]
    scalars = (
        st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=20)
    )
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )
    message = st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "bot"]), "content": st.text(max_size=30)}
    )
    near_valid = st.fixed_dictionaries(
        {"model": st.sampled_from(["base", "tuned", "nope"]), "messages": st.lists(message, max_size=3), "prompt": st.text(max_size=30)},
        optional={k: values for k in fields[3:]} | {"max_tokens": st.integers(-2, 6), "temperature": st.floats(0, 2)},
    )  # fmt: skip
    junk = st.none() | st.dictionaries(st.sampled_from(fields), values, max_size=6) | values

    with client_for(engine, limits=Limits(max_tokens_cap=4)) as fuzz_client:

        @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
        @given(path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]), body=near_valid, other=junk)
        def check(path, body, other):
            if other is not None:
                body = other
            else:  # a chat request has messages, a text completion a prompt
                body.pop("prompt" if path.endswith("chat/completions") else "messages")
            response = fuzz_client.post(path, content=json.dumps(body), headers={"content-type": "application/json"})
            assert response.status_code < 500, (body, response.text)
            if response.status_code >= 400:
                assert set(response.json()["error"]) == {"message", "type", "param", "code"}

        check()


# --- the API key ---


def test_api_key_guards_every_route_but_health_and_the_page(engine):
    with client_for(engine, api_key=KEY) as keyed:
        assert keyed.get("/health").status_code == 200
        assert keyed.get("/").status_code == 200 and keyed.get("/static/chat.js").status_code == 200
        for method, path in (("get", "/v1/models"), ("post", "/v1/chat/completions"), ("post", "/v1/completions"),
                             ("get", "/openapi.json"), ("get", "/v1/unknown")):  # fmt: skip
            response = getattr(keyed, method)(path)
            assert_error(response, 401, code="invalid_api_key", words=("Authorization: Bearer",))
            assert response.headers["www-authenticate"] == "Bearer"
        wrong = keyed.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert_error(wrong, 401, code="invalid_api_key", words=("Incorrect API key",))
        good = {"Authorization": f"Bearer {KEY}"}
        assert keyed.get("/v1/models", headers=good).status_code == 200
        assert chat(keyed, max_tokens=2).status_code == 401
        ok = keyed.post(
            "/v1/chat/completions",
            headers=good,
            json={"model": "base", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        )
        assert ok.status_code == 200


# --- the queue ---


class HeldEngine(Engine):
    """The real engine, but each generation waits for the test to let it go."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine.model, engine.tokenizer, engine.adapters, engine.context_length, engine.chat_template)
        self.started = threading.Semaphore(0)
        self.release = threading.Event()

    def generate(self, job: Job):
        self.started.release()
        assert self.release.wait(30), "the test never released the generation"
        return super().generate(job)


def test_full_queue_answers_429_at_once(engine):
    held = HeldEngine(engine)
    # max_batch=1: one generate() at a time, the path this test double holds
    with client_for(held, limits=Limits(max_tokens_cap=4, queue_size=1, max_batch=1)) as small:
        results: list = []
        threads = [threading.Thread(target=lambda: results.append(chat(small, max_tokens=2))) for _ in range(2)]
        threads[0].start()
        assert held.started.acquire(timeout=30)  # the first one runs
        threads[1].start()
        _wait_for(lambda: small.get("/health").json()["queue"] == {"running": 1, "waiting": 1, "limit": 2})
        assert_error(chat(small, max_tokens=2), 429, code="rate_limit_exceeded", words=("busy",))
        held.release.set()
        for thread in threads:
            thread.join(30)
        assert [r.status_code for r in results] == [200, 200]
        assert small.get("/health").json()["queue"] == {"running": 0, "waiting": 0, "limit": 2}
        assert chat(small, max_tokens=2).status_code == 200


def _wait_for(condition, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


# --- refusals at startup: exit 2 with one paragraph, before any model loads ---


def serve_cli(*args: str):
    from typer.testing import CliRunner

    from tuneforge.cli import app

    return CliRunner().invoke(app, ["serve", *args])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
     ("0.0.0.0", False), ("::", False), ("192.168.1.10", False), ("example.com", False)],
)  # fmt: skip
def test_loopback_detection(host, loopback):
    from tuneforge.commands.serve import is_loopback

    assert is_loopback(host) is loopback


def test_open_host_without_key_is_refused(tiny_results, monkeypatch):
    result = serve_cli("--adapter", str(tiny_results), "--host", "0.0.0.0")
    assert result.exit_code == 2
    assert "TUNEFORGE_API_KEY" in result.output and "--insecure-no-key" in result.output


def test_bad_adapter_folders_are_refused(tiny_results, tmp_path):
    assert serve_cli("--adapter", str(tmp_path / "missing")).exit_code == 2
    assert "no adapter_config.json" in serve_cli("--adapter", str(tmp_path)).output
    pickled = tmp_path / "pickled"
    shutil.copytree(tiny_results, pickled, ignore=shutil.ignore_patterns("checkpoints"))
    (pickled / "adapter_model.safetensors").rename(pickled / "adapter_model.bin")
    (pickled / "tuneforge-results.json").unlink()  # a .bin adapter made elsewhere, not a damaged run
    result = serve_cli("--adapter", str(pickled))
    assert result.exit_code == 2 and "Only safetensors" in result.output
    result = serve_cli("--adapter", f"base={tiny_results}")
    assert result.exit_code == 2 and "reserved" in result.output
    result = serve_cli("--adapter", f"a={tiny_results}", "--adapter", f"a={tiny_results}")
    assert result.exit_code == 2 and "used twice" in result.output


def test_adapters_on_different_bases_are_refused(tiny_results, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_results, other, ignore=shutil.ignore_patterns("checkpoints"))
    config = other / "tuneforge.yaml"
    config.write_text(re.sub(r"(?m)^  name: .*$", "  name: smollm2-135m", config.read_text()))
    peft_config = other / "adapter_config.json"  # both records of the copy name the other base, as after a real run
    peft_config.write_text(re.sub(r'"base_model_name_or_path": "[^"]*"', '"base_model_name_or_path": "smollm2-135m"',
                                  peft_config.read_text()))  # fmt: skip
    (other / "tuneforge-results.json").unlink()  # the edits stand for another run, not damage to this one
    result = serve_cli("--adapter", str(tiny_results), "--adapter", f"other={other}")
    assert result.exit_code == 2 and "different base models" in result.output


def test_pickled_base_weights_are_refused(tiny_model_dir, tmp_path):
    """A base model folder with only a pickled .bin is not loaded: unpickling can run code."""
    import torch
    from safetensors.torch import load_file

    pickled = tmp_path / "pickled-base"
    shutil.copytree(tiny_model_dir, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    result = serve_cli("--model", str(pickled), "--port", str(_free_port()))
    assert result.exit_code == 2 and "safetensors" in result.output


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_port_in_use_is_refused(tiny_results):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = serve_cli("--adapter", str(tiny_results), "--port", str(port))
    assert result.exit_code == 2
    assert f"127.0.0.1:{port}" in result.output and "--port" in result.output
