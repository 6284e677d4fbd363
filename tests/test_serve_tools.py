"""Guards tools at serving time: the request's tools reach the prompt, tool calls come back in the OpenAI shape."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tuneforge.serving.app import create_app
from tuneforge.serving.engine import Engine, Job, Result
from tuneforge.serving.tool_calls import split_tool_calls

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}  # fmt: skip
CALL_TEXT = 'Let me look.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Seoul"}}\n</tool_call>'


class ScriptedEngine(Engine):
    """The real engine's prompt path on the tiny model; the answer is scripted, as a tuned model would write it."""

    def __init__(self, model, tokenizer, reply: str) -> None:
        super().__init__(model, tokenizer, [], 1024, tokenizer.chat_template)
        self.reply, self.prompts = reply, []

    def generate(self, job: Job) -> Result:
        self.prompts.append(self.tokenizer.decode(job.input_ids))
        return Result(self.reply, len(job.input_ids), 9, "stop")


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)


def test_split_tool_calls_reads_blocks_and_leaves_the_rest():
    content, calls = split_tool_calls(CALL_TEXT)
    assert content == "Let me look." and len(calls) == 1
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")
    assert calls[0]["function"] == {"name": "get_weather", "arguments": '{"city": "Seoul"}'}
    assert split_tool_calls("<tool_call>{not json}</tool_call>") == ("<tool_call>{not json}</tool_call>", [])
    assert split_tool_calls("no calls here") == ("no calls here", [])


def test_serve_takes_tools_and_returns_tool_calls_to_the_openai_client(tiny):
    import openai

    from tuneforge.serving.limits import Limits

    engine = ScriptedEngine(*tiny, CALL_TEXT)
    # max_batch=1: the scripted generate() answers (batched decoding runs the model itself); tool calls
    # are split from the finished text in responses.py, the same for both paths
    with TestClient(create_app(engine, limits=Limits(max_batch=1))) as http:
        client = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http)
        messages = [{"role": "user", "content": "Weather in Busan?"},
                    {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
                     "function": {"name": "get_weather", "arguments": '{"city": "Busan"}'}}]},
                    {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 19}'},
                    {"role": "assistant", "content": "19 degrees."},
                    {"role": "user", "content": "And Seoul?"}]  # fmt: skip
        answer = client.chat.completions.create(model="base", messages=messages, tools=[WEATHER], max_tokens=8)
        choice = answer.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me look."
        call = choice.message.tool_calls[0]
        assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Seoul"}
        prompt = engine.prompts[-1]
        assert "<tools>" in prompt and '"name": "get_weather"' in prompt, "the tools list reaches the model"
        assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Busan"}}\n</tool_call>' in prompt
        assert '<tool_response>\n{"temp": 19}\n</tool_response>' in prompt
        plain = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "Hi"}], max_tokens=8)
        assert plain.choices[0].message.content == CALL_TEXT and plain.choices[0].message.tool_calls is None
        refused = http.post("/v1/chat/completions", json={"model": "base", "stream": True, "tools": [WEATHER],
                                                           "messages": [{"role": "user", "content": "Hi"}]})  # fmt: skip
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "stream"


def test_chat_with_tools_prints_the_call(tiny, tmp_path, capsys, monkeypatch):
    import torch

    from tuneforge.commands.chat import answer, read_tools

    model, tokenizer = tiny
    (tmp_path / "tools.json").write_text(json.dumps([WEATHER]))
    tools = read_tools(tmp_path / "tools.json")
    seen = {}

    def scripted(**kwargs):
        seen["prompt"] = tokenizer.decode(kwargs["input_ids"][0])
        reply = torch.tensor([tokenizer(CALL_TEXT, add_special_tokens=False)["input_ids"]])
        return torch.cat([kwargs["input_ids"], reply], dim=1)

    monkeypatch.setattr(model, "generate", scripted)
    answer(model, tokenizer, [{"role": "user", "content": "Weather in Seoul?"}], False, 16, tools)
    assert "<tools>" in seen["prompt"] and "get_weather" in seen["prompt"]
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if line.startswith("tool_calls: "))
    assert json.loads(line[len("tool_calls: ") :])[0]["function"]["name"] == "get_weather"
    (tmp_path / "bad.json").write_text('{"tools": "nope"}')
    with pytest.raises(Exception, match="--tools expects a JSON list"):
        read_tools(tmp_path / "bad.json")
