"""End to end in a real browser: the Puppeteer example logs in to the demo site through its captcha, read by the
service under gunicorn, 20 times."""

import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from captcha_api.process import GunicornProcess

from .conftest import KEY, ROOT
from .demo_site import create_demo_app

NODE_CLIENT = ROOT / "clients" / "node"
EXAMPLE = NODE_CLIENT / "examples" / "puppeteer-login.js"
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ROUNDS = 20


def missing_tools() -> list[str]:
    missing = []
    if shutil.which("node") is None:
        missing.append("node is not on PATH")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} is absent (apt-get install chromium)")
    if not (NODE_CLIENT / "node_modules" / "puppeteer-core").is_dir():
        missing.append("clients/node/node_modules/puppeteer-core is absent (npm ci --prefix clients/node)")
    return missing


@pytest.fixture(scope="module")
def browser_tools():
    missing = missing_tools()
    if missing:
        reason = "; ".join(missing)
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def service(browser_tools, tmp_path_factory):
    log = tmp_path_factory.mktemp("browser") / "server.log"
    with GunicornProcess({"CAPTCHA_API_KEYS": KEY, "CAPTCHA_WORKERS": "1"}, log) as process:
        yield process.url


@pytest.fixture(scope="module")
def demo_site(browser_tools):
    server = make_server("127.0.0.1", 0, create_demo_app(seed=2026), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    thread.join()


def form_token(client) -> str:
    """Load the form page and return its one-time token."""
    return re.search(r'name="token" value="([^"]+)"', client.get("/").get_data(as_text=True)).group(1)


def test_demo_site_accepts_only_the_right_answer():
    app = create_demo_app(seed=7)
    client = app.test_client()
    pending = app.extensions["captchas"].pending
    token = form_token(client)
    image = client.get(f"/captcha.png?token={token}")
    assert image.mimetype == "image/png" and image.data.startswith(b"\x89PNG")
    wrong = client.post("/login", data={"token": token, "captcha": pending[token][0] + "2"})
    assert '<p id="result">wrong captcha</p>' in wrong.get_data(as_text=True)
    token = form_token(client)
    answer = pending[token][0]
    passed = client.post("/login", data={"token": token, "captcha": answer.upper()})
    assert '<p id="result">passed</p>' in passed.get_data(as_text=True)
    again = client.post("/login", data={"token": token, "captcha": answer})  # each captcha counts once
    assert '<p id="result">wrong captcha</p>' in again.get_data(as_text=True)


def test_puppeteer_example_logs_in(service, demo_site):
    env = {**os.environ, "CAPTCHA_API_URL": service, "CAPTCHA_API_KEY": KEY, "CHROMIUM_PATH": str(CHROMIUM)}
    run = subprocess.run(
        ["node", str(EXAMPLE), "--site", demo_site, "--rounds", str(ROUNDS)],
        cwd=NODE_CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["rounds"] == ROUNDS
    assert summary["errors"] == 0, run.stderr
    assert summary["passed"] >= 18, run.stderr
