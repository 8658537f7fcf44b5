"""The documentation's commands run as written: a documented command that breaks fails CI.

Markers (an HTML comment on the line before a fenced block, invisible when rendered):

* ``<!-- run -->``: the block runs with ``bash -euo pipefail``, in document order, in one
  working directory per document (a fresh temporary folder, like a new user's project
  folder: ``configs/`` linked from the repository, an empty ``models/``, so ``./data`` and
  ``./models`` are the service's folders).
* ``<!-- run: serve -->``: the same, with ``facegate serve`` running in that folder (started
  once per document, before its first such block, on a free port: ``127.0.0.1:8000`` in the
  block is replaced by its address; ``KEY`` holds the admin key it wrote to data/admin.key).
* ``<!-- check -->``: every ``facegate ...`` line is parsed by the real command line (its
  options, arguments and the files they name must exist) but not run: for commands too long
  for CI, such as a full training recipe.

What the blocks get: ``facegate`` and ``.venv/bin/facegate`` run this checkout's CLI; ``curl``
fails on an HTTP error (``--fail-with-body``); the variables the docs ask the reader to set,
``LFW`` (the shared lfw112 folder) and ``IDENTITIES`` (the shared faces), point at the shared
test data; the file names the docs use are real inputs placed in the working folder:
``a.jpg`` / ``b.jpg`` (two photos of one person), ``ada1.jpg``, ``ada2.jpg``, ``probe.jpg``
(three of another), ``group.jpg``, ``my-people/`` (identity folders), and stand-ins for the
third-party models the docs name: ``w600k_r50.onnx`` is the shared MobileFaceNet (128-d, a
different input convention: the commands run, its scores are not the R50's),
``det_10g.onnx`` the shared SCRFD-2.5G, and ``my-recognizer.onnx`` the ONNX file that the
training walk-through's export wrote. Each document's test prints how many blocks it ran.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ["README.md", "models/README.md", "training/README.md"]
MARKER = re.compile(r"^<!--\s*(run|run:\s*serve|check)\s*-->\s*$")
BLOCK_TIMEOUT_S = 600


@dataclass
class Block:
    doc: str
    line: int  # 1-based line of the opening fence
    mode: str  # "run", "serve", "check"
    code: str


def blocks(doc: str) -> list[Block]:
    """The marked ```bash blocks of a document, in order."""
    lines = (ROOT / doc).read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        m = MARKER.match(line.strip())
        if not m:
            continue
        assert i + 1 < len(lines) and lines[i + 1].startswith("```bash"), f"{doc}:{i + 1}: marker not before ```bash"
        end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
        mode = "serve" if "serve" in m.group(1) else m.group(1)
        out.append(Block(doc, i + 2, mode, "\n".join(lines[i + 2 : end]) + "\n"))
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _shims(bin_dir: Path, py: str) -> None:
    """``facegate`` = this checkout's CLI; ``curl`` = curl that fails on HTTP errors."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    cli = bin_dir / "facegate"
    cli.write_text(f'#!/bin/sh\nexec "{py}" -m service.cli "$@"\n')
    real_curl = shutil.which("curl")
    curl = bin_dir / "curl"
    curl.write_text(f'#!/bin/sh\nexec "{real_curl}" --fail-with-body "$@"\n')
    for f in (cli, curl):
        f.chmod(0o755)


def _inputs(cwd: Path, data: Path) -> None:
    faces, shared = data / "faces", data / "models"
    for name, src in {"a.jpg": "obama/1.jpg", "b.jpg": "obama/2.jpg", "group.jpg": "obama/3.jpg",
                      "ada1.jpg": "kit_harington/1.jpg", "ada2.jpg": "kit_harington/2.jpg",
                      "probe.jpg": "kit_harington/3.jpg"}.items():
        shutil.copyfile(faces / src, cwd / name)
    (cwd / "my-people").symlink_to(faces)
    (cwd / "w600k_r50.onnx").symlink_to(shared / "mobilefacenet_paddle_128d.onnx")
    (cwd / "det_10g.onnx").symlink_to(shared / "scrfd_2.5g_bnkps.onnx")
    (cwd / "my-recognizer.onnx").symlink_to(Path("models/lfw-tiny-raw/model.onnx"))  # written by an export
    (cwd / "configs").symlink_to(ROOT / "configs")
    (cwd / "models").mkdir()
    _shims(cwd / ".venv" / "bin", sys.executable)


class Server:
    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.port = _free_port()
        self.log = open(cwd / "serve.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["facegate", "serve", "--port", str(self.port)], cwd=cwd, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"facegate serve did not become ready:\n{(cwd / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.5)
        self.key = (cwd / "data" / "admin.key").read_text().strip()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def _facegate_lines(code: str) -> list[str]:
    joined = re.sub(r"\\\n\s*", " ", code)
    return [ln.strip() for ln in joined.splitlines() if re.match(r"\s*(\.venv/bin/)?facegate\s", ln)]


_APP = None


def _check(line: str, env: dict[str, str], cwd: Path) -> None:
    """Parse a facegate command line with the real CLI, without running it. (Typer may bring its
    own copy of click, so groups and errors are recognised by what they do, not by class.)"""
    import typer

    global _APP
    if _APP is None:
        from service.cli import _register_plugins, app

        _register_plugins()
        _APP = typer.main.get_command(app)
    argv = shlex.split(os.path.expandvars(line), comments=True)[1:]
    here = Path.cwd()
    os.chdir(cwd)  # relative paths in the line are the reader's, in the working folder
    try:
        cmd, ctx = _APP, _APP.make_context("facegate", argv)
        while hasattr(cmd, "resolve_command"):
            name, cmd, rest = cmd.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
            ctx = cmd.make_context(name, rest, parent=ctx)
    except Exception as e:  # a usage error of click or of typer's click
        if not hasattr(e, "format_message"):
            raise
        pytest.fail(f"documented command does not parse: {line}\n  {e.format_message()}")
    finally:
        os.chdir(here)


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS)
def test_documented_blocks_run(doc: str, test_data: Path, tmp_path: Path) -> None:
    found = blocks(doc)
    assert any(b.mode != "check" for b in found), f"{doc} has no runnable block"
    if doc.startswith("training/"):
        pytest.importorskip("torch", reason="the training walk-through needs the [train] extra")
    cwd = tmp_path / "work"
    cwd.mkdir()
    _inputs(cwd, test_data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGATE_") or k == "FACEGATE_TEST_DATA"}
    env.update(PATH=f"{cwd / '.venv' / 'bin'}{os.pathsep}{env['PATH']}", PYTHONPATH=str(ROOT),
               LFW=str(test_data / "lfw112"), IDENTITIES=str(test_data / "faces"),
               FACEGATE_LOG_LEVEL="warning", OMP_NUM_THREADS="1", COLUMNS="200")
    server: Server | None = None
    ran = {"run": 0, "serve": 0, "check": 0}
    try:
        for b in found:
            where = f"{b.doc}:{b.line}"
            if b.mode == "check":
                for line in _facegate_lines(b.code):
                    _check(line, env, cwd)
                ran["check"] += 1
                continue
            code = b.code
            if b.mode == "serve":
                if server is None:
                    server = Server(cwd, env)
                    env["KEY"] = server.key
                code = code.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}")
            t0 = time.monotonic()
            p = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True,
                               text=True, timeout=BLOCK_TIMEOUT_S, check=False)
            if p.returncode != 0:
                pytest.fail(f"{where}: documented block failed (exit {p.returncode}):\n{b.code}\n"
                            f"--- stdout\n{p.stdout[-3000:]}\n--- stderr\n{p.stderr[-3000:]}")
            print(f"{where}: {b.mode} block ok in {time.monotonic() - t0:.1f} s")
            ran[b.mode] += 1
    finally:
        if server is not None:
            server.stop()
    print(f"{doc}: ran {ran['run'] + ran['serve']} blocks ({ran['serve']} against a server), "
          f"parsed {ran['check']} check blocks")
