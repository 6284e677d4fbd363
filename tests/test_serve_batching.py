"""Guards batched serving: answers equal one-at-a-time ones token for token, mixed adapters, freed slots."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import wait

import httpx
import pytest
import torch

from tuneforge.serving.batching import BatchScheduler
from tuneforge.serving.engine import Job
from tuneforge.serving.loading import base_model_name, load_engine, parse_adapter_specs, to_precision

PROMPTS = ["Please tell me about the heart.", "Bursitis", "What is an abnormality of the kidney, in short?", "Hi"]


def scaled_adapter(results, folder, factor: float):
    """A copy of the tuned adapter with every lora_B times `factor`: a second adapter that answers differently."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(results, folder, ignore=shutil.ignore_patterns("checkpoints", "*.png", "*.log"))
    weights = load_file(folder / "adapter_model.safetensors")
    save_file({k: v * factor if "lora_B" in k else v for k, v in weights.items()}, folder / "adapter_model.safetensors")
    (folder / "tuneforge-results.json").unlink()
    return folder


@pytest.fixture(scope="module")
def two_adapters(tiny_results, tmp_path_factory):
    other = scaled_adapter(tiny_results, tmp_path_factory.mktemp("other") / "other", -3.0)
    specs = parse_adapter_specs([f"tuned={tiny_results}", f"other={other}"])
    return load_engine(specs, base_model_name(specs, None), log=lambda _: None)


def jobs_for(engine, models, max_new_tokens=(24, 7, 40, 1)):
    """Greedy jobs of different prompt lengths and answer lengths, one per (prompt, model)."""
    out = []
    for index, (prompt, model) in enumerate((p, m) for p in PROMPTS for m in models):
        ids = engine.chat_ids([{"role": "user", "content": prompt}])
        out.append(Job(model=model, input_ids=ids, max_new_tokens=max_new_tokens[index % 4], temperature=0.0))
    return out


def run_batched(engine, jobs, max_batch, stagger=0.0):
    """Submit every job to one scheduler, some while others already decode; their results in order."""
    scheduler = BatchScheduler(engine, max_batch)
    try:
        futures = []
        for job in jobs:
            futures.append(scheduler.submit(job, lambda: None, lambda: None))
            time.sleep(stagger)
        wait(futures, timeout=60)
        return [f.result() for f in futures]
    finally:
        scheduler.shutdown()


def answers(results):
    return [(r.text, r.completion_tokens, r.finish_reason) for r in results]


def test_batched_answers_equal_one_at_a_time_with_mixed_adapters(two_adapters, monkeypatch):
    """base, tuned and other rows share batches (peft adapter_names); each answer is the solo answer."""
    jobs = jobs_for(two_adapters, ["base", "tuned", "other"])
    solo = [two_adapters.generate(job) for job in jobs]
    assert len({r.text for r in solo[:3]}) == 3, "the three models must answer differently for this test to bite"
    steps: list[list[str]] = []
    forward = two_adapters.forward
    monkeypatch.setattr(
        two_adapters, "forward", lambda names, **inputs: steps.append(names) or forward(names, **inputs)
    )
    batched = run_batched(two_adapters, jobs_for(two_adapters, ["base", "tuned", "other"]), 5, stagger=0.002)
    assert answers(batched) == answers(solo)
    assert max(len(names) for names in steps) == 5  # the batch filled up, and rows joined as others left
    assert any(len(set(names)) == 3 for names in steps), "no step mixed base and both adapters"


def test_a_lone_adapter_is_merged_and_still_answers_as_before(tiny_results):
    """One adapter: merged into the base at load; its answers and the base's equal the unmerged ones; bf16 batches too."""
    specs = parse_adapter_specs([f"tuned={tiny_results}"])
    plain = load_engine(specs, base_model_name(specs, None), log=lambda _: None, merge=False)
    merged = load_engine(specs, base_model_name(specs, None), log=lambda _: None)
    assert merged.router.merged and not plain.router.merged
    models = ["tuned", "base"]
    expected = [plain.generate(job) for job in jobs_for(plain, models)]
    assert answers(run_batched(merged, jobs_for(merged, models), 8)) == answers(expected)
    assert answers([merged.generate(job) for job in jobs_for(merged, models)]) == answers(expected)

    to_precision(merged, "bf16", log=lambda _: None)  # serve --precision bf16: cast after the merge
    assert merged.model.dtype == torch.bfloat16  # the last rows were 'base': the adapter is unmerged now
    # bf16 rounding may differ between a batch of one and of eight, so only the answers' shape is checked
    bf16 = run_batched(merged, jobs_for(merged, models), 8)
    assert len(bf16) == len(expected) and all(r.completion_tokens >= 1 for r in bf16)


def test_a_client_that_disconnects_mid_stream_frees_its_batch_slot(two_adapters, monkeypatch):
    """Over real HTTP: the stream is dropped after a few pieces; its row leaves the batch at the next step."""
    import uvicorn

    from tuneforge.commands.serve import bind
    from tuneforge.serving.app import create_app
    from tuneforge.serving.limits import Limits

    steps = threading.Semaphore(0)
    forward = two_adapters.forward
    monkeypatch.setattr(two_adapters, "forward", lambda names, **inputs: steps.release() or forward(names, **inputs))
    app = create_app(two_adapters, limits=Limits(max_tokens_cap=900, queue_size=0, max_batch=2))
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    body = {"model": "tuned", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 900, "temperature": 0}
    try:
        _eventually(lambda: _health(url) is not None)
        # greedy, the tiny model doesn't stop by itself: alone this answer runs all 900 tokens (measured)
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}, timeout=30) as stream:
            pieces = [line for _, line in zip(range(8), stream.iter_lines()) if line.startswith("data: ")]
            assert len(pieces) >= 3
        _eventually(lambda: _health(url) == {"running": 0, "waiting": 0, "limit": 2})
        taken = 0
        while steps.acquire(blocking=False):
            taken += 1
        assert taken < 200, f"{taken} forwards: the dropped stream kept decoding"
        quick = httpx.post(f"{url}/v1/chat/completions", json={**body, "max_tokens": 3}, timeout=30)
        assert quick.status_code == 200 and quick.json()["usage"]["completion_tokens"] <= 3
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _health(url):
    try:
        return httpx.get(f"{url}/health", timeout=5).json()["queue"]
    except httpx.HTTPError:
        return None


def _eventually(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not in time"
        time.sleep(0.05)


def test_prompts_with_a_shared_opening_prefill_only_the_rest_and_answer_the_same(two_adapters, monkeypatch):
    """The chat template's opening is prefilled once per model; later prompts prefill their own part only."""
    from tuneforge.serving import prefix_cache

    def with_system_turn():  # the same opening before each question, as a template's system turn gives
        system = {"role": "system", "content": "You explain medical terms to patients in plain words."}
        jobs = jobs_for(two_adapters, ["tuned", "other"])
        for job, (prompt, _) in zip(jobs, ((p, m) for p in PROMPTS for m in ("tuned", "other"))):
            job.input_ids = two_adapters.chat_ids([system, {"role": "user", "content": prompt}])
        return jobs

    jobs = with_system_turn()
    solo = [two_adapters.generate(job) for job in jobs]
    widths: list[tuple[str, int]] = []
    forward = two_adapters.forward
    monkeypatch.setattr(two_adapters, "forward",
                        lambda names, **inputs: widths.append((names[0], inputs["input_ids"].shape[1])) or forward(names, **inputs))  # fmt: skip
    batched = run_batched(two_adapters, with_system_turn(), 3, stagger=0.002)
    assert answers(batched) == answers(solo)
    prefills = [(name, width) for name, width in widths if width > 1]
    shared = prefix_cache._shared_length(jobs[0].input_ids, jobs[2].input_ids)
    assert shared >= prefix_cache.MIN_SHARED, "the template's opening is shared"
    assert [w for n, w in prefills if n == "tuned"][0] == len(jobs[0].input_ids), "a model's first prompt: whole"
    assert [w for n, w in prefills if n == "tuned"][1] == len(jobs[2].input_ids) - shared, "then only the rest"
    assert [w for n, w in prefills if n == "other"][0] == len(jobs[1].input_ids), "each model keeps its own opening"


def test_a_prompt_started_from_a_kept_opening_gets_the_whole_prefills_logits(two_adapters):
    """The logits that pick a prompt's first token equal those of prefilling it whole."""
    import torch
    from transformers import DynamicCache

    from tuneforge.serving.decoding import Batch

    system = {"role": "system", "content": "You explain medical terms to patients in plain words."}
    first, second = (two_adapters.chat_ids([system, {"role": "user", "content": p}]) for p in PROMPTS[:2])
    seen = []

    def forward(names, **inputs):
        logits = two_adapters.forward(names, **inputs)
        seen.append((inputs["input_ids"].shape[1], logits[:, -1]))
        return logits

    batch = Batch(two_adapters.model, two_adapters.tokenizer, two_adapters.stop_ids)
    with torch.inference_mode():
        for ids in (first, second):
            batch.join(Job(model="tuned", input_ids=ids, max_new_tokens=8, temperature=0.0), forward)
        whole = two_adapters.forward(["tuned"], input_ids=torch.tensor([second]), attention_mask=torch.ones(1, len(second)),
                                     cache=DynamicCache(config=two_adapters.model.config), logits_to_keep=1)[:, -1]  # fmt: skip
    assert seen[0][0] == len(first) and seen[1][0] < len(second) - 8, "the second prompt reused the first's opening"
    assert whole.std() > 1e-2, "logits that vary, so a wrong position or key would show"
    torch.testing.assert_close(seen[1][1], whole, rtol=1e-4, atol=1e-5)
