"""Guards `tuneforge chat`: one streamed answer, the interactive loop, --base, and a plain error for a bad folder."""

from __future__ import annotations

import os
import subprocess
import sys


def chat(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneforge", "chat", *args],
        input=stdin, capture_output=True, text=True, env=os.environ.copy(), timeout=180,
    )  # fmt: skip


def test_one_question_gets_an_answer(tiny_results):
    result = chat("--adapter", str(tiny_results), "--max-new-tokens", "8", "Please tell me about Bursitis.")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "an answer was printed"


def test_interactive_reset_and_exit(tiny_results):
    result = chat("--adapter", str(tiny_results), "--max-new-tokens", "4", stdin="What is gout?\n/reset\n/exit\nnever asked\n")
    assert result.returncode == 0, result.stderr
    assert "Chatting with the tuned model" in result.stdout
    assert "(history cleared)" in result.stdout
    assert result.stdout.count("you> ") == 3, "the loop stops at /exit"


def test_base_model_answers_differ_from_tuned(tiny_results):
    tuned = chat("--adapter", str(tiny_results), "--max-new-tokens", "12", "Please tell me about the heart.")
    base = chat("--adapter", str(tiny_results), "--base", "--max-new-tokens", "12", "Please tell me about the heart.")
    assert tuned.returncode == base.returncode == 0
    assert "Chatting" not in base.stdout
    assert tuned.stdout != base.stdout, "--base must switch the adapter off"


def test_missing_results_folder_exits_2(tmp_path):
    result = chat("--adapter", str(tmp_path / "nope"), "hello")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "does not exist" in " ".join(result.stderr.split())
