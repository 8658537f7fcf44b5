"""docker-compose.yml does what its documented commands say: each profile runs exactly one
facegate service on the host port (the GPU one instead of the CPU one, never beside it), and
the PostgreSQL profiles wire the service to their database.

Two checks of the same expectations: ``docker compose config`` itself (skipped, with the
reason, where neither the compose plugin nor a v2 ``docker-compose`` binary is installed;
FACEGATE_TEST_COMPOSE may name the binary), and an independent reading of the file with
PyYAML and Compose's documented profile rules, which needs no Docker at all. Nothing here
starts a container: there is no Docker daemon in CI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"

#: The documented commands (README.md "Docker" and the file's header): --profile flags ->
#: (the facegate service, whether it uses PostgreSQL, whether it gets a GPU).
COMMANDS = {
    (): ("facegate", False, False),
    ("gpu",): ("facegate-gpu", False, True),
    ("postgres",): ("facegate-pg", True, False),
    ("gpu-postgres",): ("facegate-gpu-pg", True, True),
}
PG_URL = "postgresql+psycopg://facegate:facegate@postgres:5432/facegate"


def _command(profiles: tuple[str, ...]) -> str:
    return "docker compose " + "".join(f"--profile {p} " for p in profiles) + "up -d"


def test_documented_commands_are_the_ones_checked() -> None:
    header = COMPOSE.read_text()
    readme = (ROOT / "README.md").read_text()
    for profiles in COMMANDS:
        assert _command(profiles) in header, _command(profiles)
        assert _command(profiles).replace(" -d", "") in readme, _command(profiles)


def _dotenv_profiles() -> list[str]:
    for line in (ROOT / ".env").read_text().splitlines():
        if line.startswith("COMPOSE_PROFILES="):
            return [p for p in line.split("=", 1)[1].strip().split(",") if p]
    return []


def _check(services: dict, profiles: tuple[str, ...]) -> None:
    name, postgres, gpu = COMMANDS[profiles]
    published = [(n, str(p["published"] if isinstance(p, dict) else p.split(":")[-2]))
                 for n, s in services.items() for p in s.get("ports", [])]
    assert published == [(name, "8000")], f"{_command(profiles)}: host ports {published}"
    env = services[name]["environment"]
    assert (env.get("FACEGATE_DATABASE_URL") or "") == (PG_URL if postgres else "")
    if postgres:
        assert "postgres" in services and services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
    else:
        assert "postgres" not in services
    devices = services[name].get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])
    assert bool(devices) == gpu and ("CUDAExecutionProvider" in env.get("FACEGATE_PROVIDERS", "")) == gpu


def _interpolate(value, env: dict[str, str]):
    """${VAR:-default} / ${VAR} as Compose does, enough for this file."""
    import re

    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    return value


@pytest.mark.parametrize("profiles", list(COMMANDS), ids=lambda p: "+".join(p) or "default")
def test_profiles_by_the_compose_rules(profiles: tuple[str, ...]) -> None:
    """Compose: a service with no ``profiles`` always runs, one with profiles runs when one of
    them is active; ``--profile`` flags replace COMPOSE_PROFILES (read from .env)."""
    spec = yaml.safe_load(COMPOSE.read_text())  # resolves the anchors and << merges
    active = set(profiles) if profiles else set(_dotenv_profiles())
    services = {n: _interpolate(s, {}) for n, s in spec["services"].items()
                if not s.get("profiles") or active & set(s["profiles"])}
    _check(services, profiles)


def _compose_binary() -> list[str] | None:
    if os.environ.get("FACEGATE_TEST_COMPOSE"):
        return [os.environ["FACEGATE_TEST_COMPOSE"]]
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        p = subprocess.run([*cmd, "version"], capture_output=True, text=True, check=False)
        if p.returncode == 0 and "v2." in p.stdout:
            return cmd
    return None


@pytest.mark.parametrize("profiles", list(COMMANDS), ids=lambda p: "+".join(p) or "default")
def test_profiles_by_docker_compose_config(profiles: tuple[str, ...]) -> None:
    cmd = _compose_binary()
    if cmd is None:
        pytest.skip("no Docker Compose v2 here (neither `docker compose` nor a v2 `docker-compose`; "
                    "FACEGATE_TEST_COMPOSE may name one): the PyYAML reading of the same rules still ran")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "FACEGATE_"))}
    flags = [a for p in profiles for a in ("--profile", p)]
    p = subprocess.run([*cmd, *flags, "config", "--format", "json"], cwd=ROOT, env=env, capture_output=True,
                       text=True, check=False, timeout=60)
    assert p.returncode == 0, p.stderr
    _check(json.loads(p.stdout)["services"], profiles)
