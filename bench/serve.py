"""``hie serve`` under test: started in its own process group with its log in a file, stopped with its workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def hie_command() -> str:
    """The ``hie`` of this interpreter's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("hie")
    found = str(beside) if beside.exists() else shutil.which("hie")
    if found is None:
        raise SystemExit("the `hie` command is not installed; run `make test` or `pip install -e .` first")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HieServe:
    """One ``hie serve --workers N`` on a free loopback port; its process group is the server and its workers."""

    def __init__(self, env: dict[str, str], workers: int, log_path: Path) -> None:
        self.env = env
        self.workers = workers
        self.log_path = log_path
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    @property
    def group(self) -> int:
        assert self.process is not None
        return self.process.pid  # started with start_new_session

    def start(self, timeout: float = 90.0) -> float:
        """Start and wait until ``/metadata`` answers; seconds it took. RuntimeError with the log's tail if not."""
        args = ["serve", "--host", "127.0.0.1", "--port", str(self.port), "--workers", str(self.workers)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [hie_command(), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/metadata", timeout=5).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"the server did not answer within {timeout:.0f} s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL after 30 s."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"
