"""End to end in a real browser: the Puppeteer example logs in to the demo site through its captcha, read by the
service under gunicorn, 20 times, run by the command line of the Puppeteer section of clients/node/README.md as
written; and so does its variant on CapMonster Cloud's official Node client, through the service's task API
(docs/compat.md)."""

import json
import os
import re
import shlex
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from scripts.process import GunicornProcess

from .conftest import KEY, ROOT
from .demo_site import create_demo_app

pytestmark = pytest.mark.integration  # starts real servers or tools: see pyproject.toml

NODE_CLIENT = ROOT / "clients" / "node"
README = NODE_CLIENT / "README.md"
README_SECTION = "## Puppeteer example"
README_COMMAND = "node clients/node/examples/puppeteer-login.js"
# The same example on CapMonster Cloud's official client, pointed at the service's task API (/createTask).
CAPMONSTER_SECTION = "## Puppeteer example with the CapMonster Cloud client"
CAPMONSTER_COMMAND = "node clients/node/examples/puppeteer-capmonster.js"
CAPMONSTER_CLIENT = NODE_CLIENT / "node_modules" / "@zennolab_com" / "capmonstercloud-client"
EXAMPLES = [(README_SECTION, README_COMMAND), (CAPMONSTER_SECTION, CAPMONSTER_COMMAND)]
# What the README's command line names and the test replaces with its own demo site, service and key.
README_SITE, README_API_URL, README_KEY = "http://127.0.0.1:8000/", "http://127.0.0.1:5000", "my-key-0123456789abcdef"
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
    folder = tmp_path_factory.mktemp("browser")
    env = {"CAPTCHA_API_KEYS": KEY, "CAPTCHA_WORKERS": "1", "CAPTCHA_TASK_STORE": str(folder / "tasks.sqlite3")}
    with GunicornProcess(env, folder / "server.log") as process:
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


def readme_command(heading: str = README_SECTION, command: str = README_COMMAND) -> list[str]:
    """The arguments of the line of a Puppeteer section of the Node client README that runs its example."""
    text = README.read_text(encoding="utf-8")
    section = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert section, f"{README.name} has no section {heading!r}"
    lines = [line.strip() for line in section.group(1).splitlines() if line.strip().startswith(command + " ")]
    assert len(lines) == 1, lines
    return shlex.split(lines[0])


@pytest.mark.parametrize("heading, command", EXAMPLES, ids=["puppeteer-login", "puppeteer-capmonster"])
def test_readme_command_names_the_example_and_its_placeholders(heading, command):
    """Checked without a browser too: the command the browser test runs is in the client's README, with what it
    replaces."""
    args = readme_command(heading, command)
    assert (ROOT / args[1]).is_file(), args
    assert {README_SITE, README_API_URL, README_KEY} <= set(args), args
    assert args[args.index("--rounds") + 1] == str(ROUNDS), args


def run_readme_command(heading: str, command: str, service: str, demo_site: str) -> None:
    """Run a section's command line with the test's demo site, service and key in place of the README's; at least
    18 of the 20 logins must pass, none failing with an error."""
    ours = {README_SITE: demo_site, README_API_URL: service, README_KEY: KEY}
    args = [ours.get(arg, arg) for arg in readme_command(heading, command)]
    env = {name: value for name, value in os.environ.items() if name not in ("CAPTCHA_API_URL", "CAPTCHA_API_KEY")}
    run = subprocess.run(
        args,
        cwd=ROOT,
        env={**env, "CHROMIUM_PATH": str(CHROMIUM)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["rounds"] == ROUNDS, args
    assert summary["errors"] == 0, run.stderr
    assert summary["passed"] >= 18, run.stderr


def test_puppeteer_example_logs_in(service, demo_site):
    run_readme_command(README_SECTION, README_COMMAND, service, demo_site)


def test_puppeteer_example_logs_in_with_capmonsters_client(service, demo_site):
    """The official CapMonster Cloud client, changed only in serviceUrl and clientKey, solves through /createTask
    and /getTaskResult (its 10 s limit after createTask, a poll every 200 ms) as well as this package does."""
    if not CAPMONSTER_CLIENT.is_dir():
        reason = f"{CAPMONSTER_CLIENT.relative_to(ROOT)} is absent (npm ci --prefix clients/node)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: {reason}")
        pytest.skip(reason)
    run_readme_command(CAPMONSTER_SECTION, CAPMONSTER_COMMAND, service, demo_site)
