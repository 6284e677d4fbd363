"""Load test for `tuneforge serve`: N clients, T seconds, loopback only.

It starts `tuneforge serve` on a free loopback port (or uses --url, which must be loopback),
and runs N clients that send chat completions back to back until T seconds have passed. It
reports requests per second, p50 and p95 latency, errors by status, and the server's
resident memory (RSS) before, at peak and after.

    python benchmarks/serve_load.py --adapter results --clients 8 --seconds 20
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --server-pid 1234 --stream

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


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    port = free_port()
    script = Path(sys.executable).with_name("tuneforge")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tuneforge"]
    command += ["serve", "--port", str(port), "--queue-size", str(args.clients)]
    command += [flag for a in args.adapter or [] for flag in ("--adapter", a)]
    command += ["--model", args.model] if args.model else []
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


async def client(http: httpx.AsyncClient, body: dict, deadline: float, stream: bool, out: dict) -> None:
    while time.monotonic() < deadline:
        started = time.monotonic()
        try:
            if stream:
                first = None
                async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                    async for line in response.aiter_lines():
                        # the first chunk only names the role (content ""); time the first text
                        if first is None and '"content":"' in line and '"content":""' not in line:
                            first = time.monotonic() - started
                    status = response.status_code
                if first is not None:
                    out["first_token"].append(first)
            else:
                status = (await http.post("/v1/chat/completions", json=body)).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        if status == 200:
            out["latencies"].append(time.monotonic() - started)
        else:
            out["errors"][str(status)] = out["errors"].get(str(status), 0) + 1


async def sample_peak(pid: int | None, deadline: float, out: dict) -> None:
    while pid is not None and time.monotonic() < deadline:
        out["rss_peak_mb"] = max(out.get("rss_peak_mb") or 0, rss_mb(pid) or 0)
        await asyncio.sleep(0.5)


async def run_load(url: str, args: argparse.Namespace, model: str, pid: int | None) -> dict:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": QUESTION}],
        "max_tokens": args.max_tokens,
        "stream": args.stream,
    }
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    out: dict = {"latencies": [], "first_token": [], "errors": {}}
    started = time.monotonic()
    deadline = started + args.seconds
    limits = httpx.Limits(max_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as http:
        await asyncio.gather(
            sample_peak(pid, deadline, out),
            *(client(http, body, deadline, args.stream, out) for _ in range(args.clients)),
        )
    out["elapsed_s"] = time.monotonic() - started
    return out


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(out: dict, args: argparse.Namespace, model: str, before: float | None, after: float | None) -> dict:
    done = len(out["latencies"])

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else round(seconds * 1000, 1)

    return {
        "clients": args.clients, "seconds": round(out["elapsed_s"], 1), "model": model, "stream": args.stream,
        "max_tokens": args.max_tokens, "requests_ok": done, "requests_per_s": round(done / out["elapsed_s"], 2),
        "p50_ms": ms(percentile(out["latencies"], 0.5)), "p95_ms": ms(percentile(out["latencies"], 0.95)),
        "first_token_p50_ms": ms(percentile(out["first_token"], 0.5)), "errors": out["errors"],
        "rss_before_mb": before and round(before, 1), "rss_peak_mb": out.get("rss_peak_mb") and round(out["rss_peak_mb"], 1),
        "rss_after_mb": after and round(after, 1), "cpu_cores": os.cpu_count(),
    }  # fmt: skip


def main() -> None:
    args = parse_args()
    process, url = (None, args.url) if args.url else start_server(args)
    pid = process.pid if process else args.server_pid
    try:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        names = [m["id"] for m in httpx.get(f"{url}/v1/models", headers=headers).json()["data"]]
        model = args.served_model or next((n for n in names if n != "base"), "base")
        before = rss_mb(pid)
        out = asyncio.run(run_load(url, args, model, pid))
        result = report(out, args, model, before, rss_mb(pid))
    finally:
        if process:
            process.terminate()
            process.wait(15)
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
