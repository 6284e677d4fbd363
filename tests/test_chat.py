"""Guards `tuneforge chat`: it prints the tuned (or --base) model's own greedy answer; its loop keeps, resets history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

TUNED_HEADER = "Chatting with the tuned model. /reset clears the history, /exit quits.\n"
BASE_HEADER = "Chatting with the base model. /reset clears the history, /exit quits.\n"
HEART, GOUT = "Please tell me about the heart.", "What is gout?"

# The real CLI, with every `generate` call's prompt and new tokens logged to $PROMPT_LOG (one JSON line each).
SPY = """
import json, os, sys
from transformers.generation.utils import GenerationMixin

real = GenerationMixin.generate

def generate(self, *args, **kwargs):
    out = real(self, *args, **kwargs)
    prompt = kwargs["input_ids"][0].tolist()
    with open(os.environ["PROMPT_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"prompt": prompt, "new": out[0][len(prompt):].tolist()}) + "\\n")
    return out

GenerationMixin.generate = generate
sys.argv = ["tuneforge", *sys.argv[1:]]
from tuneforge.cli import main
main()
"""


def chat(*args: str, stdin: str = "", log: Path | None = None) -> subprocess.CompletedProcess:
    """Run `tuneforge chat`; with `log`, through SPY, so the test sees what reached the model."""
    env = os.environ.copy()
    command = [sys.executable, "-m", "tuneforge", "chat", *args]
    if log is not None:
        env["PROMPT_LOG"] = str(log)
        command = [sys.executable, "-c", SPY, "chat", *args]
    return subprocess.run(command, input=stdin, capture_output=True, text=True, env=env, timeout=180)


def logged(log: Path) -> list[dict[str, list[int]]]:
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.exists() else []


@dataclass
class Answer:
    prompt: list[int]  # the chat-template tokens the model saw
    new: list[int]  # what it generated after them
    text: str  # as chat streams it: the new tokens decoded without special tokens


@dataclass
class Reference:
    """The run's models loaded straight with transformers + peft, on the device and dtype chat answers with."""

    tuned: Any  # the base model with the run's adapter
    base: Any  # the base model alone
    tokenizer: Any
    device: str

    def answer(self, messages: list[dict[str, str]], max_new_tokens: int, use_base: bool = False) -> Answer:
        import torch

        enc = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(self.device)
        model = self.base if use_base else self.tuned
        with torch.no_grad():
            out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=self.tokenizer.pad_token_id)  # fmt: skip
        prompt = enc["input_ids"][0].tolist()
        new = out[0][len(prompt) :].tolist()
        assert 0 < len(new) <= max_new_tokens
        return Answer(prompt, new, self.tokenizer.decode(new, skip_special_tokens=True))


@pytest.fixture(scope="module")
def reference(tiny_results, tiny_model_dir) -> Reference:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneforge.machine.devices import inference_device, torch_dtype

    device, precision = inference_device()

    def load():
        model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch_dtype(precision))
        return model.to(device).eval()

    tokenizer = AutoTokenizer.from_pretrained(tiny_results)
    assert tokenizer.chat_template, "the run saved its tokenizer with the chat template"
    return Reference(PeftModel.from_pretrained(load(), tiny_results).eval(), load(), tokenizer, device)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def test_one_question_gets_the_tuned_models_answer(tiny_results, reference, tmp_path):
    expected = reference.answer([user("Please tell me about Bursitis.")], 8)
    log = tmp_path / "prompts.jsonl"
    result = chat("--adapter", str(tiny_results), "--max-new-tokens", "8", "Please tell me about Bursitis.", log=log)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected.text + "\n", "stdout holds the streamed answer and nothing else"
    assert logged(log) == [{"prompt": expected.prompt, "new": expected.new}]


def test_base_answers_with_the_adapter_off(tiny_results, reference):
    tuned = reference.answer([user(HEART)], 12)
    base = reference.answer([user(HEART)], 12, use_base=True)
    with reference.tuned.disable_adapter():
        assert reference.answer([user(HEART)], 12).new == base.new, "adapter off is the plain base model"
    assert tuned.new != base.new, "the trained adapter changes this answer, so --base can be told apart"

    result = chat("--adapter", str(tiny_results), "--base", "--max-new-tokens", "12", HEART)
    assert result.returncode == 0, result.stderr
    assert result.stdout == base.text + "\n"
    assert result.stdout != tuned.text + "\n"


def test_interactive_history_reset_and_exit(tiny_results, reference, tmp_path):
    first = reference.answer([user(HEART)], 6)
    second = reference.answer([user(HEART), {"role": "assistant", "content": first.text.strip()}, user(GOUT)], 6)
    after_reset = reference.answer([user(GOUT)], 6)
    log = tmp_path / "prompts.jsonl"
    stdin = f"{HEART}\n{GOUT}\n\n/reset\n{GOUT}\n/exit\nnever asked\n"
    result = chat("--adapter", str(tiny_results), "--max-new-tokens", "6", stdin=stdin, log=log)
    assert result.returncode == 0, result.stderr
    # a blank line asks again without answering; /exit ends the loop before "never asked"
    assert result.stdout == (
        TUNED_HEADER + f"you> {first.text}\n" + f"you> {second.text}\n" + "you> "
        + "you> (history cleared)\n" + f"you> {after_reset.text}\n" + "you> "
    )  # fmt: skip

    prompts = [call["prompt"] for call in logged(log)]
    assert prompts == [first.prompt, second.prompt, after_reset.prompt]
    seen = [reference.tokenizer.decode(p) for p in prompts]
    assert seen[1].startswith(seen[0]) and first.text.strip() in seen[1] and GOUT in seen[1], "turn 2 sees turn 1"
    assert HEART not in seen[2], "/reset dropped the first turn"


def test_base_interactive_quits(tiny_results, reference):
    base = reference.answer([user(HEART)], 4, use_base=True)
    assert base.new != reference.answer([user(HEART)], 4).new, "the adapter changes this answer"
    result = chat(
        "--adapter", str(tiny_results), "--base", "--max-new-tokens", "4", stdin=f"{HEART}\n/quit\nnever asked\n"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == BASE_HEADER + f"you> {base.text}\n" + "you> "


def test_end_of_input_ends_the_chat(tiny_results, reference):
    tuned = reference.answer([user(GOUT)], 4)
    result = chat("--adapter", str(tiny_results), "--max-new-tokens", "4", stdin=f"{GOUT}\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == TUNED_HEADER + f"you> {tuned.text}\n" + "you> \n"  # Ctrl-D: a newline, then exit 0


def test_missing_results_folder_exits_2(tmp_path):
    result = chat("--adapter", str(tmp_path / "nope"), "hello")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stdout == ""
    assert f"The adapter folder '{tmp_path / 'nope'}' does not exist" in " ".join(result.stderr.split())
