"""First load of the studio page: bytes (raw, gzip, and as sent), HTTP time, and Chromium's load and usable time.

It starts `tuneforge studio` on a free loopback port with an empty runs folder (or uses --url),
fetches what the page fetches on first load (the HTML, its JS and CSS, and the three API calls
the page makes before it is usable), and then loads it in headless Chromium (Debian's, through
selenium, as the tests do). "Usable" is when the page's script has filled the form and set
`data-ready` on <body>; Chromium's figure comes from the page's own performance clock.

    python benchmarks/studio_load.py --repeats 5
    python benchmarks/studio_load.py --url http://127.0.0.1:7860/ --json out.json
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

FIRST_LOAD = ["/", "/static/studio.css", "/static/studio.js", "/api/i18n", "/api/defaults", "/api/runs"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running loopback studio, e.g. http://127.0.0.1:7860/")
    parser.add_argument("--repeats", type=int, default=5, help="loads to time; the median is reported")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def start_studio(folder: Path) -> tuple[subprocess.Popen, str]:
    log = folder / "studio.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "tuneforge", "studio", "--port", "0", "--runs-dir", str(folder / "runs")],
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"http://127\.0\.0\.1:\d+/", log.read_text())
        if found:
            return process, found.group(0)
        if process.poll() is not None:
            raise SystemExit(f"tuneforge studio exited:\n{log.read_text()}")
        time.sleep(0.1)
    raise SystemExit("tuneforge studio never printed its address")


def measure_http(url: str, repeats: int) -> dict[str, float]:
    """Every first-load request in turn, on one keep-alive connection, as a browser would."""
    sizes, times = {}, []
    with httpx.Client(base_url=url.rstrip("/")) as client:
        for _ in range(repeats):
            started = time.perf_counter()
            for path in FIRST_LOAD:
                response = client.get(path).raise_for_status()  # httpx asks for gzip, as browsers do
                body = response.content
                sizes[path] = (len(body), len(gzip.compress(body, 6)), response.num_bytes_downloaded)
            times.append(time.perf_counter() - started)
    return {"bytes_raw": sum(s[0] for s in sizes.values()), "bytes_gzip": sum(s[1] for s in sizes.values()),
            "bytes_sent": sum(s[2] for s in sizes.values()),  # what came over the wire: the studio gzips
            "http_ms_median": round(1000 * statistics.median(times), 1), "requests": len(FIRST_LOAD)}  # fmt: skip


def measure_chromium(url: str, repeats: int) -> dict[str, float]:
    """loadEventEnd and data-ready-ms, on the page's own clock, for fresh loads (no cache between them)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.browser import headless_chromium

    loads, usable = [], []
    with headless_chromium() as driver:
        driver.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
        for _ in range(repeats):
            driver.get("about:blank")
            driver.get(url)
            deadline = time.monotonic() + 30
            while not driver.execute_script("return document.body && document.body.dataset.readyMs"):
                if time.monotonic() > deadline:
                    raise SystemExit("the page never became usable")
                time.sleep(0.02)
            nav = driver.execute_script("return performance.getEntriesByType('navigation')[0].toJSON()")
            loads.append(nav["loadEventEnd"])
            usable.append(float(driver.execute_script("return document.body.dataset.readyMs")))
    return {"chromium_load_ms_median": round(statistics.median(loads), 1),
            "chromium_usable_ms_median": round(statistics.median(usable), 1)}  # fmt: skip


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="studio-load-") as tmp:
        process, url = (None, args.url) if args.url else start_studio(Path(tmp))
        try:
            figures = {**measure_http(url, args.repeats), **measure_chromium(url, args.repeats)}
        finally:
            if process is not None:
                process.terminate()
                process.wait(15)
    figures["repeats"] = args.repeats
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
