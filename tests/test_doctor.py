"""Guards `tuneforge doctor`: it reports the detected (or faked) machine, a reasoned profile, pure JSON, torch or not."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

import tuneforge.commands.doctor as doctor
from tuneforge.commands.doctor import run_doctor
from tuneforge.machine.hardware import GIB, Gpu, Hardware, detect_hardware
from tuneforge.machine.profile import params_label, recommend_profile

SRC = Path(__file__).resolve().parents[1] / "src"
SMALL = 134_515_008  # smollm2-135m, doctor's default model
KEYS = (  # in the order doctor lists them
    "train.device", "train.precision", "model.load_in_4bit", "train.batch_size",
    "train.grad_accum", "train.max_seq_length", "train.gradient_checkpointing",
)  # fmt: skip
TORCH_FIELDS = {"torch_version", "torch_error", "torch_cuda_build", "cuda_error", "cuda_gpus",
                "mps_built", "mps_available", "bitsandbytes", "kind", "label"}  # fmt: skip

# Makes `import torch` fail the way a broken CUDA install does, then runs the real CLI.
BROKEN_TORCH = """
import sys

class BrokenTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("libcudart.so.12: cannot open shared object file")
        return None

sys.meta_path.insert(0, BrokenTorch())
sys.argv = ["tuneforge", "doctor", "--json"]
from tuneforge.cli import main
main()
"""


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=120)


def _json_alone(stdout: str) -> dict:
    """stdout holds one JSON object, exactly as doctor formats it, and nothing else."""
    report = json.loads(stdout)
    assert stdout == json.dumps(report, indent=2) + "\n", "something besides the JSON reached stdout"
    return report


def _expected_keys(hw: dict) -> set[str]:
    return set(KEYS) | ({"train.strategy"} if len(hw["cuda_gpus"]) > 1 else set())


def _check_report(report: dict, params: int) -> None:
    """The profile is the one recommend_profile gives for the reported machine, and each setting explains itself."""
    hw = Hardware.model_validate(report["hardware"])
    assert report["model_params"] == params
    assert report["profile"] == recommend_profile(hw, params).model_dump()
    assert report["profile"]["device"] == report["hardware"]["kind"]
    settings = report["profile"]["settings"]
    assert tuple(s["key"] for s in settings)[: len(KEYS)] == KEYS
    assert {s["key"] for s in settings} == _expected_keys(report["hardware"])
    for s in settings:  # every reason opens with the value it argues for ("fp32: …", "on: …", "4: …")
        said = ("on" if s["value"] else "off") if isinstance(s["value"], bool) else str(s["value"])
        assert s["reason"].startswith(f"{said}: ") and len(s["reason"]) > len(said) + 10, s


def _same_machine(reported: dict, fresh: dict, skip: set[str] = frozenset()) -> None:
    """Field by field equal to a fresh detect_hardware(); free disk may move a little in between."""
    reported, fresh = dict(reported), dict(fresh)
    assert abs(reported.pop("disk_free_gb") - fresh.pop("disk_free_gb")) < 1.0
    for name in skip:
        reported.pop(name), fresh.pop(name)
    assert reported == fresh


def fake_cuda(count: int) -> Hardware:
    gpus = [Gpu(name="NVIDIA GeForce RTX 4090", vram_gb=24.0, compute_capability="8.9", bf16=True)] * count
    return Hardware(
        os="Linux", os_version="Ubuntu 24.04 LTS", python="3.11.9", arch="x86_64", cpu_model="Fake CPU 9000",
        cpu_cores=24, ram_gb=62.5, disk_free_gb=480.0, disk_path="/data", torch_version="2.5.1+cu124",
        torch_cuda_build="12.4", cuda_gpus=gpus, nvidia_smi_gpus=count, bitsandbytes="works",
    )  # fmt: skip


# the classic trap: the driver sees a GPU, but the installed torch is a CPU-only build
CPU_TORCH_ON_GPU_BOX = Hardware(
    os="Linux", arch="x86_64", cpu_model="Fake CPU 7000", cpu_cores=6, ram_gb=15.6, disk_free_gb=3.2,
    disk_path="/tmp/out", torch_version="2.5.1+cpu", nvidia_smi_gpus=1,
)  # fmt: skip


@pytest.fixture
def fake_machine(monkeypatch):
    """Make doctor see the given Hardware instead of this machine."""

    def use(hw: Hardware) -> None:
        monkeypatch.setattr(doctor, "detect_hardware", lambda disk_path=".": hw)

    return use


def test_json_report_is_this_machine(capsys):
    run_doctor(json_out=True)
    report = _json_alone(capsys.readouterr().out)
    assert (report["model"], report["model_params"]) == ("smollm2-135m", SMALL)
    hw = report["hardware"]
    _same_machine(hw, detect_hardware(".").model_dump())
    _check_report(report, SMALL)

    # the facts themselves, read here another way than detect_hardware does
    import psutil
    import torch

    assert (hw["os"], hw["arch"], hw["python"]) == (platform.system(), platform.machine(), platform.python_version())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    assert hw["cpu_cores"] == cores
    assert 0 < hw["ram_gb"] <= round(psutil.virtual_memory().total / GIB, 1)
    assert hw["torch_version"] == str(torch.__version__) and hw["torch_error"] is None
    assert hw["torch_cuda_build"] == torch.version.cuda
    if hw["cuda_error"] is None:
        gpus = (
            [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            if torch.cuda.is_available()
            else []
        )
        assert [g["name"] for g in hw["cuda_gpus"]] == gpus
    assert hw["mps_available"] == torch.backends.mps.is_available()
    kind = "cuda" if hw["cuda_gpus"] else "mps" if hw["mps_available"] else "cpu"
    label = {"cuda": f"NVIDIA GPU ×{len(hw['cuda_gpus'])}", "mps": "Apple Silicon", "cpu": "CPU only"}[kind]
    assert (hw["kind"], hw["label"], report["profile"]["device"]) == (kind, label, kind)


def test_json_report_for_a_model_named_by_size(capsys):
    run_doctor(json_out=True, model="Qwen/Qwen2.5-7B-Instruct")
    report = _json_alone(capsys.readouterr().out)
    assert (report["model"], report["model_params"]) == ("Qwen/Qwen2.5-7B-Instruct", 7_000_000_000)
    _check_report(report, 7_000_000_000)


@pytest.mark.parametrize("count", [1, 2])
def test_json_report_on_fake_gpu_machines(fake_machine, capsys, count):
    hw = fake_cuda(count)
    fake_machine(hw)
    run_doctor(json_out=True, model="Qwen/Qwen2.5-7B-Instruct")
    report = _json_alone(capsys.readouterr().out)
    assert report["hardware"] == hw.model_dump()
    assert (report["hardware"]["kind"], report["hardware"]["label"]) == ("cuda", f"NVIDIA GPU ×{count}")
    _check_report(report, 7_000_000_000)
    profile = {s["key"]: s["value"] for s in report["profile"]["settings"]}
    chosen = (profile["train.device"], profile["train.precision"], profile["model.load_in_4bit"])
    assert chosen == ("cuda", "bf16", False)  # 7B in bf16 is 14 GB: fits a 24 GB card without 4-bit
    assert ("train.strategy" in profile) == (count > 1)  # several GPUs: doctor must say how they share the work


def test_human_report_shows_the_fake_machine_and_its_warnings(fake_machine, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # rich wraps at the terminal width; keep each line whole
    hw = CPU_TORCH_ON_GPU_BOX
    fake_machine(hw)
    run_doctor()
    out = capsys.readouterr().out
    lines = [" ".join(line.split()) for line in out.splitlines()]
    assert lines[0] == "tuneforge doctor: CPU only"
    for row in (
        "CPU Fake CPU 7000, 6 logical cores", "RAM 15.6 GB", "Free disk 3.2 GB at /tmp/out",
        "torch 2.5.1+cpu (CPU-only build)", "CUDA GPUs none usable by torch (nvidia-smi lists 1)",
        "bitsandbytes not applicable (no CUDA)", "Recommended profile for smollm2-135m (135M params)",
    ):  # fmt: skip
        assert row in lines, (row, lines)
    profile = recommend_profile(hw, SMALL)
    for s in profile.settings:  # each "key = value" line, then its reason on the next line
        at = lines.index(f"{s.key} = {s.value}")
        assert lines[at + 1] == " ".join(s.reason.split())
    assert profile.warnings and "Warnings" in lines  # a CPU-only torch next to a GPU, and a nearly full disk
    for warning in profile.warnings:
        assert f"! {' '.join(warning.split())}" in lines
    assert "No warnings: this machine is ready to train." not in out


def test_human_report_of_a_ready_gpu_machine(fake_machine, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    fake_machine(fake_cuda(1))
    run_doctor()
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == "tuneforge doctor: NVIDIA GPU ×1"
    assert "GPU 0 NVIDIA GeForce RTX 4090, 24.0 GB, compute capability 8.9, bf16 yes" in lines
    assert "torch 2.5.1+cu124 (CUDA 12.4 build)" in lines
    assert not any(line.startswith("CUDA GPUs") for line in lines)
    assert "train.device = cuda" in lines and "train.precision = bf16" in lines
    assert lines[-1] == "No warnings: this machine is ready to train."


def test_human_report_of_this_machine(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    run_doctor()
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    hw = detect_hardware(".")
    assert lines[0] == f"tuneforge doctor: {hw.label}"
    assert f"Recommended profile for smollm2-135m ({params_label(SMALL)} params)" in lines
    cpu = f"CPU {' '.join(hw.cpu_model.split())}, {hw.cpu_cores} logical cores"
    assert any(line.startswith(cpu) for line in lines), (cpu, lines)
    assert f"RAM {hw.ram_gb:.1f} GB" in lines
    for s in recommend_profile(hw, SMALL).settings:
        assert f"{s.key} = {s.value}" in lines


def test_cli_doctor_json():
    done = _run(["-m", "tuneforge", "doctor", "--json"])
    assert done.returncode == 0, done.stderr
    report = _json_alone(done.stdout)
    _same_machine(report["hardware"], detect_hardware(".").model_dump())
    _check_report(report, SMALL)


def test_doctor_survives_broken_torch():
    done = _run(["-c", BROKEN_TORCH])
    assert done.returncode == 0, done.stderr
    report = _json_alone(done.stdout)
    hw = report["hardware"]
    assert hw["torch_version"] is None and hw["torch_cuda_build"] is None and hw["cuda_gpus"] == []
    assert "libcudart.so.12" in hw["torch_error"]
    assert (hw["kind"], hw["label"], report["profile"]["device"]) == ("cpu", "CPU only", "cpu")
    _same_machine(hw, detect_hardware(".").model_dump(), skip=TORCH_FIELDS)  # the rest is still found
    assert any(w.startswith("torch could not be imported") for w in report["profile"]["warnings"])
    _check_report(report, SMALL)


@pytest.mark.parametrize(
    ("hw", "advised", "said"),
    [
        (CPU_TORCH_ON_GPU_BOX.model_copy(update={"cpu_bf16": True}), "int8", "AVX-512 BF16 or AMX"),
        (CPU_TORCH_ON_GPU_BOX, "fp16", "without AVX-512 BF16 or AMX"),
        (fake_cuda(1), "auto", "the GPU"),
    ],
)
def test_doctor_advises_a_serve_precision_for_the_machine(hw, advised, said, fake_machine, capsys, monkeypatch):
    """Advice, measured per CPU kind; the config's serve.precision default stays auto."""
    from tuneforge.config import ServeSection

    fake_machine(hw)
    run_doctor(json_out=True)
    serve = _json_alone(capsys.readouterr().out)["serve"]
    assert (serve["key"], serve["value"]) == ("serve.precision", advised) and said in serve["reason"]
    assert ServeSection().precision == "auto"
    ServeSection(precision=advised)  # a value serve takes
    monkeypatch.setenv("COLUMNS", "400")
    run_doctor()
    lines = [" ".join(line.split()) for line in capsys.readouterr().out.splitlines()]
    assert f"--precision {advised}" in lines and any(line.startswith(f"{advised}: ") for line in lines)
