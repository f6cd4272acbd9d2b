"""The service as deployed (gunicorn with gunicorn.conf.py) started on a free loopback port, for the benchmark and
the tests that need a real server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def memory_mb(pid: int, field: str = "VmRSS") -> float:
    """A memory figure of a process from /proc/PID/status, in MB: VmRSS (resident now) or VmHWM (its peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class GunicornProcess:
    """`gunicorn -c gunicorn.conf.py` on 127.0.0.1 with CAPTCHA_* settings from `env`; output goes to `log_path`.

    Use as a context manager: entering waits for the first 200 from /health, leaving stops the server.
    """

    def __init__(self, env: dict[str, str], log_path: Path, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(log_path)
        self.env = {**os.environ, "CAPTCHA_HOST": "127.0.0.1", "CAPTCHA_PORT": str(self.port), **env}
        self.process: subprocess.Popen | None = None
        self.started = 0.0

    def start(self) -> GunicornProcess:
        self._log = open(self.log_path, "w")  # a file, not a pipe: a full pipe would stall the server
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self

    def wait_ready(self, timeout: float = 90.0, status: int = 200) -> float:
        """Seconds from process start until /health answers `status` (503: up, but no model); raises if the
        process exits or the time runs out."""
        while time.monotonic() - self.started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                    answered = response.status
            except urllib.error.HTTPError as error:
                answered = error.code
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                answered = None
            if answered == status:
                return time.monotonic() - self.started
            time.sleep(0.005)
        raise RuntimeError(f"gunicorn was not ready after {timeout} s:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        pid = self.process.pid
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()
        self.process = None

    def __enter__(self) -> GunicornProcess:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
