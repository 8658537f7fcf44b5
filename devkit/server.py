"""A real ``facegate serve`` process on a free loopback port, for the tests and benchmarks that need HTTP
(crash recovery, the browser test, load and fault runs). One implementation for all of them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``facegate serve --host 127.0.0.1 --port P`` with FACEGATE_* env; start/kill/stop."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None, port: int | None = None) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "FACEGATE_DATA_DIR": str(data_dir), "FACEGATE_LOG_LEVEL": "warning",
                    **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / f"server-{self.port}.log"

    def start(self, timeout: float = 90.0, attempts: int = 3) -> Server:
        """Start and wait for /readyz. The port was free when chosen; if another process took it
        meanwhile (our log says so), start again on a new port rather than talk to a stranger."""
        if self.proc is not None and self.proc.poll() is None:
            return self  # already running (``with Server(...).start() as s`` starts once)
        for attempt in range(attempts):
            self._start_once(timeout)
            if b"Address already in use" not in self.log.read_bytes() and self.proc.poll() is None:
                return self
            self.stop()
            if attempt < attempts - 1:
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"
                self.log = self.data_dir / f"server-{self.port}.log"
        raise RuntimeError(f"could not bind a free port in {attempts} attempts")

    def _start_once(self, timeout: float) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        script = Path(sys.executable).parent / "facegate"  # the installed console script
        launcher = [str(script)] if script.exists() else [sys.executable, "-c", "from service.cli import main; main()"]
        cmd = [*launcher, "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self._logf = open(self.log, "ab")  # noqa: SIM115 - closed by stop()/kill()
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self._logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url + "/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"server not ready after {timeout}s: {self.log.read_text()[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss(self) -> int:
        """Resident set size of the server process, bytes (from /proc, no psutil needed)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0

    def kill(self) -> None:
        """SIGKILL: no shutdown handlers, no flushing — a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        self._close_log()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._close_log()

    def _close_log(self) -> None:
        f = getattr(self, "_logf", None)
        if f and not f.closed:
            f.close()

    def __enter__(self) -> Server:  # noqa: PYI034
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
