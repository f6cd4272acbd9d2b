"""deploy/: the Docker image recipe, compose file and systemd unit, kept in step with the setup the tests run.

Docker cannot run here, so the image is checked by parts: its instructions are read, and what it would run (the
serving requirements in a fresh virtualenv, the files it copies, its command and health check) is run for real.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from captcha_api.service.config import PREFIX, Settings, load_settings
from scripts.process import free_port

from .conftest import ROOT, encode

pytestmark = pytest.mark.integration  # starts real servers or tools: see pyproject.toml

DEPLOY = ROOT / "deploy"
# What every tested server runs (scripts.process.GunicornProcess): python -m gunicorn -c gunicorn.conf.py
SERVE = ["python", "-m", "gunicorn", "-c", "gunicorn.conf.py"]
KEY = "image-test-key-0123456789"


def dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            instruction, _, rest = line.partition(" ")
            pairs.append((instruction.upper(), rest.strip()))
    return pairs


def env_pairs(arguments: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(arguments))


@pytest.fixture(scope="module")
def api_image():
    steps = dockerfile(DEPLOY / "Dockerfile")
    env = {}
    for instruction, arguments in steps:
        if instruction == "ENV":
            env.update(env_pairs(arguments))
    return steps, env


def test_the_api_image_is_slim_non_root_and_serves_like_the_tests(api_image):
    steps, env = api_image
    instructions = [i for i, _ in steps]
    assert steps[0][0] == "FROM" and re.fullmatch(r"python:3\.11-slim(-\w+)?", steps[0][1])
    runs = [a for i, a in steps if i == "RUN"]
    installs = [r for r in runs if "pip install" in r]
    assert installs == ["pip install -r requirements.txt"], "the image installs the serving requirements only"
    user = [a for i, a in steps if i == "USER"]
    assert user and user[-1] not in ("root", "0") and instructions.index("USER") < instructions.index("CMD")
    assert json.loads(dict(steps)["CMD"]) == SERVE
    assert "/health" in dict(steps)["HEALTHCHECK"]
    for instruction, arguments in steps:
        if instruction == "COPY":
            for source in arguments.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
    settings = load_settings({**env, "CAPTCHA_API_KEYS": KEY})
    assert settings.runtime == "onnx" and settings.host == "0.0.0.0"
    with pytest.raises(ValueError, match="not a loopback address"):
        load_settings(env)  # the image refuses to start open on every interface


def test_the_api_image_recipe_runs(api_image, tmp_path):
    """Build the image's contents without Docker: a fresh virtualenv with requirements.txt only, the files the
    Dockerfile copies, then its CMD with its ENV and its HEALTHCHECK command, and one prediction."""
    steps, env = api_image
    app = tmp_path / "app"
    app.mkdir()
    for instruction, arguments in steps:
        if instruction == "COPY":
            *sources, _ = arguments.split()
            for source in sources:
                origin = ROOT / source
                if origin.is_dir():
                    shutil.copytree(origin, app / source, ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    shutil.copy(origin, app / origin.name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [python, "-m", "pip", "install", "-q", "-r", str(app / "requirements.txt")], capture_output=True, text=True
    )
    assert install.returncode == 0, install.stderr[-3000:]
    no_tf = subprocess.run([python, "-c", "import tensorflow"], capture_output=True, text=True)
    assert no_tf.returncode != 0, "the serving install must not bring TensorFlow"

    port = free_port()
    run_env = {"PATH": f"{venv / 'bin'}:{os.environ['PATH']}", **env}
    run_env.update(CAPTCHA_HOST="127.0.0.1", CAPTCHA_PORT=str(port), CAPTCHA_API_KEYS=KEY)
    command = json.loads(dict(steps)["CMD"])
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(command, cwd=app, env=run_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        health = dict(steps)["HEALTHCHECK"].split(" CMD ", 1)[1]
        for _ in range(300):
            check = subprocess.run(["sh", "-c", health], cwd=app, env=run_env, capture_output=True)
            if check.returncode == 0 or server.poll() is not None:
                break
        assert check.returncode == 0, (tmp_path / "server.log").read_text()
        from captcha_api.training.generator import sample

        image, text = sample(seed=44, index=0)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict",
            data=json.dumps({"image": base64.b64encode(encode(image, "PNG")).decode()}).encode(),
            headers={"Content-Type": "application/json", "X-API-Key": KEY},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        assert body["success"] is True and body["prediction"] == text
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def test_compose_matches_the_tested_fleet():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    assert {"redis", "api1", "api2", "nginx", "scraper"} <= set(services)
    nginx_conf = (DEPLOY / "nginx.conf").read_text()
    upstreams = re.findall(r"^\s*server (\w+):(\d+) ", nginx_conf, flags=re.M)
    image_env = {}
    for instruction, arguments in dockerfile(DEPLOY / "Dockerfile"):
        if instruction == "ENV":
            image_env.update(env_pairs(arguments))
    assert sorted(host for host, _ in upstreams) == ["api1", "api2"]
    assert {port for _, port in upstreams} == {image_env["CAPTCHA_PORT"]}
    known = {PREFIX + field.upper() for field in Settings.model_fields}
    for name in ("api1", "api2"):
        api = services[name]
        assert (ROOT / api["build"]["context"].replace("..", ".") / api["build"]["dockerfile"]).is_file()
        environment = {k: str(v) for k, v in api["environment"].items()}
        assert set(environment) <= known, set(environment) - known
        assert environment["CAPTCHA_RATELIMIT_STORAGE_URI"].startswith("redis://redis:")
        assert environment["CAPTCHA_TRUSTED_PROXIES"] == "1"  # nginx is the one proxy in front
        concrete = {k: ("k" * 20 if "${" in v else v) for k, v in environment.items()}
        load_settings({**image_env, **concrete})
    assert "./nginx.conf:/etc/nginx/conf.d/default.conf:ro" in services["nginx"]["volumes"]
    scraper = services["scraper"]
    assert (ROOT / scraper["build"]["dockerfile"]).is_file()
    assert scraper["environment"]["CAPTCHA_API_URL"] == "http://nginx:8080"
    entry = dockerfile(ROOT / scraper["build"]["dockerfile"])
    script = json.loads(dict(entry)["ENTRYPOINT"])[-1]
    assert (ROOT / "clients" / "node" / script).is_file()


def unit() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "captcha-ocr.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            values[key] = value
    return values


def test_the_systemd_unit_restarts_always_within_a_memory_limit():
    values = unit()
    assert values["Restart"] == "always"
    assert values["ExecStart"].split()[1:] == SERVE[1:]
    assert values["MemoryMax"].endswith(("M", "G"))
    defaults = Settings()
    limit_mb = int(values["MemoryMax"][:-1]) * (1024 if values["MemoryMax"].endswith("G") else 1)
    assert limit_mb > defaults.workers * defaults.max_worker_rss_mb, "workers recycle before systemd kills them"


def test_systemd_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if not analyze:
        pytest.skip("systemd-analyze is not installed")
    values = unit()
    text = (DEPLOY / "captcha-ocr.service").read_text()
    # Point the unit at this checkout, its Python and a real environment file; nothing else changes.
    env_file = tmp_path / "captcha-ocr.env"
    env_file.write_text(f"CAPTCHA_API_KEYS={KEY}\n")
    text = text.replace(values["ExecStart"].split()[0], sys.executable)
    text = text.replace(values["WorkingDirectory"], str(ROOT)).replace(values["EnvironmentFile"], str(env_file))
    text = re.sub(r"^(User|Group)=.*$", r"\1=root", text, flags=re.M)
    path = tmp_path / "captcha-ocr.service"
    path.write_text(text)
    result = subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True)
    problems = [line for line in result.stderr.splitlines() if "captcha-ocr.service" in line]
    assert result.returncode == 0 and not problems, result.stderr
