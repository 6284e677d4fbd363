"""What one studio launch knows: where it listens, its token, its folders and its limits."""

from __future__ import annotations

import ipaddress
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

UPLOAD_CAP_BYTES = 200 * 1024 * 1024  # a chat dataset of 200 MB is already far past a laptop's afternoon


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class StudioSettings:
    """`runs_dir` holds one results folder per run; `data_dir` the studio's own files (jobs, uploads, exports)."""

    runs_dir: Path
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 7860
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    upload_cap: int = UPLOAD_CAP_BYTES
    poll_s: float = 0.5  # how often the live view and the job queue look at the run folders
    tuneforge: tuple[str, ...] = (sys.executable, "-m", "tuneforge")  # how a child command starts

    @property
    def uploads(self) -> Path:
        return self.data_dir / "uploads"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def exports(self) -> Path:
        return self.data_dir / "exports"

    def own_hosts(self) -> set[str]:
        """Host header values that name this studio; anything else is DNS rebinding or a stray request."""
        names = {self.host}
        if is_loopback(self.host):
            names |= {"127.0.0.1", "localhost", "[::1]"}
        return names | {f"{name}:{self.port}" for name in names}

    def own_origins(self) -> set[str]:
        return {f"http://{host}" for host in self.own_hosts()}
