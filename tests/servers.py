"""Real servers on loopback for the deployment tests: Redis, nginx with deploy/nginx.conf as shipped (its HTTPS lines
switched on with a test certificate where a test needs them), and a fleet of two gunicorn instances behind it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.process import GunicornProcess, free_port

ROOT = Path(__file__).resolve().parents[1]
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
NGINX = shutil.which("nginx", path=SBIN)
REDIS = shutil.which("redis-server", path=SBIN)


def require_nginx_and_redis() -> None:
    """Skip the calling test module without nginx and Redis; in CI they must be there."""
    if NGINX and REDIS:
        return
    missing = " and ".join(name for name, path in (("nginx", NGINX), ("redis-server", REDIS)) if not path)
    if os.environ.get("CI"):
        pytest.fail(f"{missing} must be installed in CI (apt-get install nginx redis-server)", pytrace=False)
    pytest.skip(f"{missing} not installed (Debian: apt-get install nginx redis-server)", allow_module_level=True)


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


class Redis:
    def __init__(self, directory: Path):
        self.port = free_port()
        self.uri = f"redis://127.0.0.1:{self.port}"
        self.directory = directory
        self.process = None

    def start(self) -> Redis:
        command = [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        with open(self.directory / "redis.log", "a") as log:
            self.process = subprocess.Popen(command + ["--dir", str(self.directory)], stdout=log, stderr=log)
        wait_for_port(self.port)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


@dataclass(frozen=True)
class Tls:
    """A certificate and its key (PEM files) for nginx's HTTPS listener, on `port`."""

    certificate: Path
    key: Path
    port: int


def nginx_site(upstreams: list[str], port: int, directory: Path, tls: Tls | None = None) -> str:
    """deploy/nginx.conf as shipped, with the test's instance addresses, ports and access log (in `directory`), and
    its HTTPS lines switched on with the test's certificate when `tls` is given: nothing else changes."""
    text = (ROOT / "deploy" / "nginx.conf").read_text()
    servers = re.findall(r"^\s*server api\d+:5000 (.*);$", text, flags=re.M)
    assert len(servers) == 2, "deploy/nginx.conf should list the two compose instances api1 and api2"
    options = servers[0]
    lines = "\n".join(f"    server {address} {options};" for address in upstreams)
    text, count = re.subn(r"(?:^\s*server api\d+:5000 .*;\n)+", lines + "\n", text, flags=re.M)
    assert count == 1
    text, count = re.subn(r"^(\s*)listen 8080;$", rf"\g<1>listen 127.0.0.1:{port};", text, flags=re.M)
    assert count == 1
    text, count = re.subn(
        r"^(\s*)access_log /var/log/nginx/access.log (\w+);$",
        rf"\g<1>access_log {directory}/access.log \2;",
        text,
        flags=re.M,
    )
    assert count == 1
    if tls is not None:
        for pattern, value in (
            (r"^(\s*)# listen 8443 ssl;$", rf"\g<1>listen 127.0.0.1:{tls.port} ssl;"),
            (r"^(\s*)# ssl_certificate (\S+);$", rf"\g<1>ssl_certificate {tls.certificate};"),
            (r"^(\s*)# ssl_certificate_key (\S+);$", rf"\g<1>ssl_certificate_key {tls.key};"),
        ):
            text, count = re.subn(pattern, value, text, flags=re.M)
            assert count == 1, f"deploy/nginx.conf should hold the commented line {pattern!r}"
    return text


class Nginx:
    def __init__(self, directory: Path, upstreams: list[str], tls: Tls | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tls = tls
        self.directory = directory
        (directory / "captcha.conf").write_text(nginx_site(upstreams, self.port, directory, tls))
        temp = " ".join(
            f"{kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        user = "user root;" if os.geteuid() == 0 else ""
        (directory / "nginx.conf").write_text(
            f"{user}\ndaemon off;\npid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'} info;\n"
            "events { worker_connections 512; }\n"
            f"http {{\n  access_log {directory / 'access.log'};\n  {temp}\n"
            f"  include {directory / 'captcha.conf'};\n}}\n"
        )
        self.process = None

    def start(self) -> Nginx:
        check = subprocess.run(
            [NGINX, "-t", "-p", str(self.directory), "-c", str(self.directory / "nginx.conf")],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
        with open(self.directory / "nginx.out", "w") as log:
            self.process = subprocess.Popen(
                [NGINX, "-p", str(self.directory), "-c", str(self.directory / "nginx.conf")], stdout=log, stderr=log
            )
        wait_for_port(self.port)
        if self.tls is not None:
            wait_for_port(self.tls.port)
        return self

    def error_log(self) -> str:
        return (self.directory / "error.log").read_text(errors="replace")

    def access_log(self) -> str:
        return (self.directory / "access.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class Fleet:
    """Redis, two instances (two workers each, limits in Redis, trusting one proxy) and nginx in front."""

    def __init__(self, directory: Path, key: str, tls: Tls | None = None, **settings: str):
        self.directory = directory
        self.key, self.tls = key, tls
        self.settings = settings
        self.redis, self.instances, self.nginx = None, [], None

    def start(self) -> Fleet:
        directory = self.directory
        self.redis = Redis(directory).start()
        env = {
            "CAPTCHA_API_KEYS": self.key,
            "CAPTCHA_WORKERS": "2",
            "CAPTCHA_TRUSTED_PROXIES": "1",
            "CAPTCHA_RATELIMIT_STORAGE_URI": self.redis.uri,
            "CAPTCHA_RATE_LIMIT": "100000/minute",
            "CAPTCHA_FEEDBACK_DIR": str(directory / "feedback"),
            **self.settings,
        }
        self.instances = [GunicornProcess(env, directory / f"api{i}.log").start() for i in (1, 2)]
        for instance in self.instances:
            instance.wait_ready()
        nginx_dir = directory / "nginx"
        nginx_dir.mkdir()
        self.nginx = Nginx(nginx_dir, [f"127.0.0.1:{i.port}" for i in self.instances], self.tls).start()
        self.url = self.nginx.url
        return self

    def stop(self) -> None:
        for part in (self.nginx, *self.instances, self.redis):
            if part is not None:
                part.stop()
