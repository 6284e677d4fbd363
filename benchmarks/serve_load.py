"""Load test for `tuneforge serve`: N clients, T seconds, loopback only.

It starts `tuneforge serve` on a free loopback port (or uses --url, which must be loopback),
and runs N clients that send chat completions back to back until T seconds have passed. It
reports requests per second, generated tokens per second (all clients together), p50 and p95
latency, the time to the first streamed token, errors by status, and the server's resident
memory (RSS) before, at peak and after.

    python benchmarks/serve_load.py --adapter results --clients 8 --seconds 20
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --server-pid 1234 --stream

Side by side, one server after the other under the same load (issue 20's figures): the
one-request-at-a-time path (`--max-batch 1`) against step-level batching (`--max-batch 8`),
half the clients streaming:

    python benchmarks/serve_load.py --adapter results --clients 8 --seconds 120 --max-tokens 24 \
        --half-stream --max-batch 1 --max-batch 8
    python benchmarks/serve_load.py --adapter results --clients 1 --seconds 60 --max-tokens 64 \
        --max-batch 1 --max-batch 8        # single-stream decoding speed

Per streamed request it also times decoding alone: the tokens after the first over the time
after the first (`stream_decode_tokens_per_s_p50`), without the request's own overhead and
prefill. `--temperature 0` asks for greedy answers, as issue 20's single-stream figure did.

`--prompt TEXT` sends that text as a plain completion (/v1/completions) instead of the chat
question, so another OpenAI-compatible server (llama-cpp-python's, given with --url) gets the
same tokens whatever its chat template; streamed chunks are counted as tokens where a server
sends no usage. docs/PERFORMANCE.md compares llama.cpp this way.

`--precision` and `--compile on|off` are repeatable the same way (one value applies to every
server), and `--warmup S`
reports the RSS when the first S seconds are over beside the RSS at the end: a soak.

    python benchmarks/serve_load.py --adapter results --clients 8 --seconds 300 --warmup 60 --max-batch 8

Bounded on purpose: at most 64 clients and 600 seconds, and never another machine. It is a
measurement tool, not a way to flood a server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import psutil

MAX_CLIENTS, MAX_SECONDS = 64, 600
Server = tuple[int | None, str | None, str | None]  # serve --max-batch, --precision, --compile (on/off)
QUESTION = "Please tell me about Bursitis."


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--adapter", action="append", help="results folder(s) for the server this script starts")
    parser.add_argument("--model", help="base model for the server this script starts (default: the adapter's)")
    parser.add_argument("--url", help="use a running loopback server instead, e.g. http://127.0.0.1:8000")
    parser.add_argument("--server-pid", type=int, help="with --url: the server's process id, for RSS")
    parser.add_argument("--api-key", default=os.environ.get("TUNEFORGE_API_KEY"))
    parser.add_argument("--served-model", help="the 'model' field to send (default: the first adapter, else base)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--stream", action="store_true", help="stream the answers (also measures time to first token)")
    parser.add_argument("--half-stream", action="store_true", help="half the clients stream, half do not")
    parser.add_argument(
        "--max-batch",
        type=int,
        action="append",
        help="serve --max-batch for the server this script starts; repeat to compare, one after another",
    )
    parser.add_argument(
        "--precision",
        action="append",
        help="serve --precision (fp32, bf16, fp16, int8, int4); repeat to compare, paired with --max-batch",
    )
    parser.add_argument(
        "--compile",
        action="append",
        choices=["on", "off"],
        help="serve --compile (on) or not (off); repeat to compare, paired with --max-batch",
    )
    parser.add_argument(
        "--temperature", type=float, help="sent with each request (0: greedy); the API's default 1.0 when not given"
    )
    parser.add_argument(
        "--prompt", help="send this text as a plain completion (/v1/completions) instead of the chat question"
    )
    parser.add_argument("--warmup", type=float, default=0, help="seconds of warm-up: RSS growth is counted after it")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if not 1 <= args.clients <= MAX_CLIENTS or not 0 < args.seconds <= MAX_SECONDS:
        parser.error(f"--clients must be 1..{MAX_CLIENTS} and --seconds 0..{MAX_SECONDS}")
    if args.url and urlparse(args.url).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--url must be a loopback address (127.0.0.1, localhost or ::1)")
    if not args.url and not (args.adapter or args.model):
        parser.error("give --adapter (or --model) to start a server, or --url for a running one")
    return args


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(
    args: argparse.Namespace, max_batch: int | None, precision: str | None, compiled: str | None
) -> tuple[subprocess.Popen, str]:
    port = free_port()
    script = Path(sys.executable).with_name("tuneforge")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tuneforge"]
    command += ["serve", "--port", str(port), "--queue-size", str(args.clients)]
    command += [flag for a in args.adapter or [] for flag in ("--adapter", a)]
    command += ["--model", args.model] if args.model else []
    command += ["--max-batch", str(max_batch)] if max_batch else []
    command += ["--precision", precision] if precision else []
    command += ["--compile"] if compiled == "on" else []
    env = {**os.environ, **({"TUNEFORGE_API_KEY": args.api_key} if args.api_key else {})}
    log = tempfile.NamedTemporaryFile("w+", prefix="serve-load-", suffix=".log", delete=False)  # noqa: SIM115
    # a file, not a pipe: nobody drains a pipe during the run, and a full one would stall the server
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"tuneforge serve exited with {process.returncode}:\n{Path(log.name).read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    sys.exit("the server did not come up in 300 s")


def rss_mb(pid: int | None) -> float | None:
    if pid is None:
        return None
    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def chunk_text(chunk: dict) -> str:
    """The text a streamed chunk adds: a chat delta's content, or a completion's text."""
    return "".join((c.get("delta") or {}).get("content") or c.get("text") or "" for c in chunk.get("choices") or [])


async def client(http: httpx.AsyncClient, path: str, body: dict, deadline: float, stream: bool, out: dict) -> None:
    body = {**body, "stream": stream, **({"stream_options": {"include_usage": True}} if stream else {})}
    while time.monotonic() < deadline:
        started, tokens = time.monotonic(), 0
        try:
            if stream:
                first, pieces = None, 0
                async with http.stream("POST", path, json=body) as response:
                    async for line in response.aiter_lines():
                        if not line.startswith("data: {"):
                            continue
                        chunk = json.loads(line.removeprefix("data: "))
                        if chunk_text(chunk):  # the first chat chunk only names the role: time the first text
                            pieces += 1
                            first = time.monotonic() - started if first is None else first
                        if chunk.get("usage"):  # the last chunk, asked for with include_usage
                            tokens = chunk["usage"]["completion_tokens"]
                    status = response.status_code
                tokens = tokens or pieces  # a server that ignores include_usage (llama-cpp-python): one piece a token
                if first is not None:
                    out["first_token"].append(first)
                    if status == 200 and tokens > 1:  # decoding alone: the tokens after the first, over their time
                        out["decode_each"].append((tokens - 1) / max(time.monotonic() - started - first, 1e-9))
            else:
                response = await http.post(path, json=body)
                status = response.status_code
                tokens = response.json()["usage"]["completion_tokens"] if status == 200 else 0
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        if status == 200:
            out["latencies"].append(time.monotonic() - started)
            out["tokens"] += tokens
            out["tokens_per_s_each"].append(tokens / max(time.monotonic() - started, 1e-9))
        else:
            out["errors"][str(status)] = out["errors"].get(str(status), 0) + 1


async def sample_peak(pid: int | None, deadline: float, warm: float, out: dict) -> None:
    """The peak RSS, and the RSS when the warm-up ends (the soak's baseline)."""
    while pid is not None and time.monotonic() < deadline:
        rss = rss_mb(pid) or 0
        out["rss_peak_mb"] = max(out.get("rss_peak_mb") or 0, rss)
        if "rss_warm_mb" not in out and time.monotonic() >= warm:
            out["rss_warm_mb"] = rss
        await asyncio.sleep(0.5)


async def run_load(url: str, args: argparse.Namespace, model: str, pid: int | None) -> dict:
    # --prompt: a plain completion of that text (/v1/completions), the same tokens whatever the chat template
    path, asked = ("/v1/completions", {"prompt": args.prompt}) if args.prompt else (
        "/v1/chat/completions", {"messages": [{"role": "user", "content": QUESTION}]})  # fmt: skip
    body = {
        "model": model,
        **asked,
        "max_tokens": args.max_tokens,
        **({} if args.temperature is None else {"temperature": args.temperature}),
    }
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    out: dict = {
        "latencies": [],
        "first_token": [],
        "errors": {},
        "tokens": 0,
        "tokens_per_s_each": [],
        "decode_each": [],
    }
    started = time.monotonic()
    deadline = started + args.seconds
    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as http:
        await asyncio.gather(
            sample_peak(pid, deadline, started + args.warmup, out),
            *(
                client(http, path, body, deadline, args.stream or (args.half_stream and i % 2 == 0), out)
                for i in range(args.clients)
            ),
        )
    out["elapsed_s"] = time.monotonic() - started
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(out: dict, args: argparse.Namespace, model: str, before: float | None, after: float | None,
           server: Server) -> dict:  # fmt: skip
    done = len(out["latencies"])
    warm = out.get("rss_warm_mb") if args.warmup else None

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 1)

    return {
        "max_batch": server[0], "precision": server[1] or "auto",
        "compile": server[2] == "on", "clients": args.clients, "seconds": round(out["elapsed_s"], 1), "model": model,
        "stream": "half" if args.half_stream else args.stream, "max_tokens": args.max_tokens,
        "requests_ok": done, "requests_per_s": round(done / out["elapsed_s"], 2),
        "tokens_per_s": round(out["tokens"] / out["elapsed_s"], 1),
        "tokens_per_s_per_request_p50": percentile(out["tokens_per_s_each"], 0.5) and round(
            percentile(out["tokens_per_s_each"], 0.5) or 0, 1),
        "p50_ms": ms(percentile(out["latencies"], 0.5)), "p95_ms": ms(percentile(out["latencies"], 0.95)),
        "stream_decode_tokens_per_s_p50": percentile(out["decode_each"], 0.5) and round(
            percentile(out["decode_each"], 0.5) or 0, 1),
        "first_token_p50_ms": ms(percentile(out["first_token"], 0.5)),
        "first_token_p95_ms": ms(percentile(out["first_token"], 0.95)), "errors": out["errors"],
        "rss_before_mb": before and round(before, 1), "rss_peak_mb": out.get("rss_peak_mb") and round(out["rss_peak_mb"], 1),
        "rss_after_mb": after and round(after, 1),
        "rss_after_warmup_mb": warm and round(warm, 1),
        "rss_growth_after_warmup_pct": warm and after and round(100 * (after - warm) / warm, 1),
        "cpu_cores": os.cpu_count(),
    }  # fmt: skip


def measure(args: argparse.Namespace, server: Server) -> dict:
    process, url = (None, args.url) if args.url else start_server(args, *server)
    pid = process.pid if process else args.server_pid
    try:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        names = [m["id"] for m in httpx.get(f"{url}/v1/models", headers=headers).json()["data"]]
        model = args.served_model or next((n for n in names if n != "base"), "base")
        before = rss_mb(pid)
        out = asyncio.run(run_load(url, args, model, pid))
        return report(out, args, model, before, rss_mb(pid), server)
    finally:
        if process:
            process.terminate()
            process.wait(15)


def servers(args: argparse.Namespace) -> list[Server]:
    """(max_batch, precision, compile) per server: repeated flags pair up in order; a single value goes with each."""
    lists = [args.max_batch or [None], args.precision or [None], args.compile or [None]]
    count = max(len(values) for values in lists)
    if {len(values) for values in lists} - {1, count}:
        sys.exit("--max-batch, --precision and --compile: give each once, or all the same number of times")
    return [tuple(values[i % len(values)] for values in lists) for i in range(count)]  # type: ignore[misc]


def main() -> None:
    args = parse_args()
    results = [measure(args, server) for server in servers(args)]
    if args.json:
        print(json.dumps(results if len(results) > 1 else results[0]))
        return
    keys = list(results[0])
    print(
        f"{'':>30}"
        + "".join(
            f"{'batch ' + str(r['max_batch']) + ' ' + r['precision'] + (' +c' if r['compile'] else ''):>22}"
            for r in results
        )
    )
    for key in keys[1:]:
        print(f"{key:>30}" + "".join(f"{str(r[key]):>22}" for r in results))
    first = results[0]["tokens_per_s"]
    if len(results) > 1 and first:
        print(f"{'tokens/s vs the first':>30}" + "".join(f"{r['tokens_per_s'] / first:>21.2f}x" for r in results))


if __name__ == "__main__":
    main()
