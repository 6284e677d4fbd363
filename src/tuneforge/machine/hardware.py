"""Detect what this machine can train on: OS, CPU, RAM, disk, torch build, GPUs, bitsandbytes.

Nothing here may raise. `tuneforge doctor` exists for the machines where torch or CUDA is
broken, so every probe catches its own failure and records it as text instead.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel, computed_field

GIB = 1024**3  # a "24 GB" laptop reports 24 GiB; decimal GB would print 25.8 and confuse users


class Gpu(BaseModel):
    """One CUDA device as torch sees it."""

    name: str
    vram_gb: float
    compute_capability: str  # "9.0"; bf16 needs 8.0 (Ampere) or newer
    bf16: bool


class Hardware(BaseModel):
    """A snapshot of the machine. Plain data, so tests can build fake machines by hand."""

    os: str
    os_version: str = ""
    python: str = ""
    arch: str = ""
    cpu_model: str = "unknown"
    cpu_cores: int = 1  # logical cores this process may use
    cpu_bf16: bool = False  # avx512_bf16 or amx_bf16 in /proc/cpuinfo
    ram_gb: float
    disk_free_gb: float
    disk_path: str = "."
    torch_version: str | None = None  # None when `import torch` fails
    torch_error: str | None = None
    torch_cuda_build: str | None = None  # torch.version.cuda; None on a CPU-only build
    cuda_error: str | None = None  # torch has CUDA but initialising it failed (old driver…)
    cuda_gpus: list[Gpu] = []
    nvidia_smi_gpus: int = 0  # GPUs the driver lists, whatever torch thinks
    apple_chip: str | None = None
    mps_built: bool = False
    mps_available: bool = False
    bitsandbytes: str = "not applicable (no CUDA)"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def kind(self) -> str:
        """The device torch would train on: "cuda", "mps" or "cpu"."""
        if self.cuda_gpus:
            return "cuda"
        return "mps" if self.mps_available else "cpu"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def label(self) -> str:
        """A short name for the machine class, for headings and logs."""
        if self.cuda_gpus:
            return f"NVIDIA GPU ×{len(self.cuda_gpus)}"
        return "Apple Silicon" if self.mps_available else "CPU only"


def detect_hardware(disk_path: str | Path = ".") -> Hardware:
    """Probe this machine. Slow parts (torch import, nvidia-smi) take about a second or two."""
    import psutil

    torch_info = _probe_torch()
    has_cuda = bool(torch_info.get("cuda_gpus"))
    return Hardware(
        os=platform.system(),
        os_version=_os_version(),
        python=platform.python_version(),
        arch=platform.machine(),
        cpu_model=_cpu_model(),
        cpu_cores=_cpu_cores(),
        cpu_bf16=_cpu_bf16(),
        ram_gb=round(_ram_bytes(psutil) / GIB, 1),
        disk_free_gb=round(psutil.disk_usage(str(_existing(disk_path))).free / GIB, 1),
        disk_path=str(disk_path),
        nvidia_smi_gpus=_nvidia_smi_gpus(),
        apple_chip=_apple_chip(),
        bitsandbytes=_bitsandbytes_status() if has_cuda else "not applicable (no CUDA)",
        **torch_info,
    )


def _probe_torch() -> dict:
    """torch's version, build, GPUs and MPS state; a failed import becomes `torch_error`."""
    try:
        import torch
    except Exception as exc:  # ImportError, or OSError when a CUDA library is missing
        return {"torch_error": f"{type(exc).__name__}: {exc}"}
    info: dict = {
        "torch_version": str(torch.__version__),
        "torch_cuda_build": torch.version.cuda,
        "mps_built": _safe(lambda: torch.backends.mps.is_built(), False),
        "mps_available": _safe(lambda: torch.backends.mps.is_available(), False),
    }
    try:
        info["cuda_gpus"] = _cuda_gpus(torch)
    except Exception as exc:  # e.g. "driver too old" raised when CUDA initialises
        info["cuda_error"] = f"{type(exc).__name__}: {exc}"
    return info


def _cuda_gpus(torch) -> list[Gpu]:
    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append(
            Gpu(
                name=props.name,
                vram_gb=round(props.total_memory / GIB, 1),
                compute_capability=f"{props.major}.{props.minor}",
                bf16=props.major >= 8,
            )
        )
    return gpus


def _bitsandbytes_status() -> str:
    """Only asked on CUDA machines: bitsandbytes is what makes 4-bit loading possible."""
    try:
        import bitsandbytes  # noqa: F401
    except ModuleNotFoundError:
        return "not installed"
    except Exception as exc:  # it imports but cannot find its CUDA library, for example
        return f"fails: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return "works"


def _safe(probe, default):
    try:
        return bool(probe())
    except Exception:
        return default


def _run(cmd: list[str]) -> str:
    """A tool's stdout, or "" when it is missing, fails or hangs (a wedged driver can hang nvidia-smi)."""
    if not shutil.which(cmd[0]):
        return ""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def _nvidia_smi_gpus() -> int:
    """GPUs the NVIDIA driver lists: catches "GPU present but torch was built for CPU"."""
    return sum(line.startswith("GPU ") for line in _run(["nvidia-smi", "-L"]).splitlines())


def _apple_chip() -> str | None:
    """The Apple chip name, also under Rosetta, where an x86 Python cannot use the GPU."""
    if platform.system() != "Darwin":
        return None
    brand = _run(["sysctl", "-n", "machdep.cpu.brand_string"]).strip()
    return brand if brand.startswith("Apple") else None


def _os_version() -> str:
    system = platform.system()
    if system == "Darwin":
        return f"macOS {platform.mac_ver()[0]}"
    if system == "Linux":
        for line in _read("/etc/os-release").splitlines():
            if line.startswith("PRETTY_NAME="):
                return f"{line.split('=', 1)[1].strip(chr(34))} (kernel {platform.release()})"
    return f"{platform.release()} {platform.version()}".strip()


def _cpu_model() -> str:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    if platform.system() == "Darwin":
        brand = _run(["sysctl", "-n", "machdep.cpu.brand_string"]).strip()
        if brand:
            return brand
    return platform.processor() or "unknown"


def _cpu_cores() -> int:
    """Logical cores this process may use; a container's CPU set, not the host's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _cpu_bf16() -> bool:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            return bool(flags & {"avx512_bf16", "amx_bf16"})
    return False


def _ram_bytes(psutil) -> int:
    """Total RAM, capped by a container's memory limit (cgroup v2), which is what the OOM killer uses."""
    total = psutil.virtual_memory().total
    limit = _read("/sys/fs/cgroup/memory.max").strip()
    return min(total, int(limit)) if limit.isdigit() else total


def _existing(path: str | Path) -> Path:
    """The nearest folder that exists: the output folder is often not created yet."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""
