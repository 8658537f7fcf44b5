"""Installed, not only cloned: the built wheel, installed into a fresh virtual environment, runs
``facegate config`` and serves ``/healthz`` and ``/readyz`` from an empty folder, with no
FACEGATE_* variable: the default pack's cards come from the wheel's package data, models and
data go to the per-user folder.

To stay fast (no download, no dependency resolution) the fresh environment reuses this
environment's dependencies through a ``.pth`` line that appends its site-packages *after* the
fresh environment's own: ``.pth`` files inside it (this checkout's editable install) are not
processed there, so ``service`` can only come from the installed wheel, and the test checks
that it does.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """(the fresh environment's bin folder, its site-packages) with the wheel installed."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"  # build from a copy: the build writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("service", "training"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist),
                    str(src)], check=True, timeout=300)
    [wheel] = dist.glob("facegate-*.whl")
    env_dir = tmp / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "zz_reuse_test_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "-q", str(wheel)],
                   check=True, timeout=300)
    return env_dir / "bin", site


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("FACEGATE_", "XDG_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(HOME=str(home), FACEGATE_BOOTSTRAP_ADMIN_KEY="install-test-admin-key-0123456789")
    return env


def test_wheel_carries_the_default_cards(installed) -> None:
    _, site = installed
    cards = sorted(p.parent.name for p in (site / "service" / "default_models").glob("*/model.json"))
    assert cards == ["sface-2021dec-int8bq", "yunet-2023mar-int8bq"]


def test_installed_package_serves_from_any_folder(installed, tmp_path) -> None:
    bin_dir, site = installed
    home, cwd = tmp_path / "home", tmp_path / "anywhere"
    home.mkdir()
    cwd.mkdir()
    env = _env(home)
    where = subprocess.run([str(bin_dir / "python"), "-c", "import service; print(service.__file__)"], cwd=cwd,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(site), f"service imported from {where}, not from the installed wheel"

    user = home / ".local" / "share" / "facegate"
    out = subprocess.run([str(bin_dir / "facegate"), "config"], cwd=cwd, env={**env, "COLUMNS": "300"},
                         capture_output=True, text=True, check=True, timeout=120).stdout
    assert f"{user / 'models'} (no ./models or ./data in" in out, out
    assert f"{user / 'data'} (no ./models or ./data in" in out, out

    port = _free_port()
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(bin_dir / "facegate"), "serve", "--port", str(port)], cwd=cwd, env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        ready = None
        while ready is None:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
                    ready = r.status
            except OSError:
                time.sleep(0.5)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        assert ready == 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    assert (user / "data" / "facegate.db").is_file()
    assert list(cwd.iterdir()) == [], "the service wrote into the folder it was started from"
