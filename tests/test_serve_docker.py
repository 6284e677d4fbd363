"""Guards the Dockerfile and compose.yaml against drifting from the real CLI (Docker can't run here)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer
import yaml

from tuneforge.cli import app

ROOT = Path(__file__).resolve().parents[1]


def dockerfile_instruction(name: str) -> str:
    """The last NAME instruction of the Dockerfile, with continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text(encoding="utf-8"))
    found = [line.split(None, 1)[1] for line in text.splitlines() if line.strip().upper().startswith(name + " ")]
    assert found, f"the Dockerfile has no {name}"
    return found[-1].strip()


def compose_service() -> dict:
    services = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))["services"]
    assert list(services) == ["tuneforge"]
    return services["tuneforge"]


def parse_serve(args: list[str]) -> dict:
    """Run click's own parser over the arguments, as the container would; unknown flags raise."""
    command = typer.main.get_command(app)
    assert args[0] == "serve", args
    parent = command.make_context("tuneforge", list(args))
    serve = command.get_command(parent, "serve")
    return serve.make_context("serve", list(args[1:]), parent=parent).params


def test_entrypoint_is_the_installed_console_script():
    entrypoint = json.loads(dockerfile_instruction("ENTRYPOINT"))
    assert entrypoint == ["tuneforge"]
    # the name on PATH is the console script pyproject installs (tomllib is 3.11+, so a plain match)
    assert re.search(r'^tuneforge = "tuneforge\.cli:main"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    # installed the way users install: run.sh setup, with the venv's bin first on PATH
    assert re.search(r"^RUN .*\./run\.sh setup", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert "TUNEFORGE_VENV}/bin:" in dockerfile_instruction("ENV")


def test_dockerfile_cmd_parses_with_the_real_cli():
    cmd = json.loads(dockerfile_instruction("CMD"))
    params = parse_serve(cmd)
    assert params["adapter"] == ["/results"] and params["host"] == "0.0.0.0"
    assert f"EXPOSE {params['port']}" in (ROOT / "Dockerfile").read_text()
    assert f"127.0.0.1:{params['port']}/health" in dockerfile_instruction("HEALTHCHECK")


def test_compose_command_parses_and_matches_its_mounts_and_port():
    service = compose_service()
    params = parse_serve(service["command"])
    assert service["command"] == json.loads(dockerfile_instruction("CMD"))
    mounts = {volume.split(":")[1] for volume in service["volumes"]}
    assert params["adapter"][0] in mounts  # the adapter the server reads is the folder compose mounts
    assert any(port.endswith(f":{params['port']}") for port in service["ports"])
    # 0.0.0.0 inside the container is refused without a key; compose insists on one
    assert "TUNEFORGE_API_KEY" in service["environment"] and ":?" in service["environment"]["TUNEFORGE_API_KEY"]


def test_container_command_without_a_key_is_refused():
    """What happens if someone runs the image and forgets the key: a clear refusal, not an open server."""
    from tuneforge.commands.serve import check_exposure
    from tuneforge.errors import UserError

    params = parse_serve(json.loads(dockerfile_instruction("CMD")))
    with pytest.raises(UserError, match="TUNEFORGE_API_KEY"):
        check_exposure(params["host"], None, insecure_no_key=False)
    check_exposure(params["host"], "a-key", insecure_no_key=False)


def test_the_real_executable_accepts_the_container_flags():
    """The same arguments through the installed program; --help exits 0 only if every flag is known."""
    script = Path(sys.executable).with_name("tuneforge")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "tuneforge"]
    cmd = json.loads(dockerfile_instruction("CMD"))
    done = subprocess.run([*command, *cmd, "--help"], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    bad = subprocess.run(
        [*command, *cmd, "--no-such-flag", "--help"], check=False, capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2  # the check above can fail
