"""The captcha-solving services' official client libraries, unchanged, against the live service on loopback, reading
real FSSP captchas: 2captcha-python (HTTPS only: through nginx with deploy/nginx.conf's HTTPS lines and a test
certificate authority), python-anticaptcha, capmonstercloudclient and the Node @zennolab_com/capmonstercloud-client.
Then 200 tasks created and polled through random workers, and through two instances behind nginx sharing Redis.

The Python clients run in a virtual environment of their own (.venv-clients, `make install`): capmonstercloudclient
pins a pydantic older than the service's, and a scraper's code runs in its own environment anyway."""

from __future__ import annotations

import base64
import csv
import json
import os
import random
import re
import secrets
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from captcha_api.service.compat.store import REDIS_PREFIX
from scripts.process import GunicornProcess, free_port

from .conftest import DATASETS, ROOT
from .servers import Fleet, Nginx, Tls, require_nginx_and_redis

pytestmark = pytest.mark.integration  # starts real servers or tools: see pyproject.toml

require_nginx_and_redis()

KEY = "compat-test-key-" + secrets.token_hex(8)
CLIENTS_PYTHON = ROOT / ".venv-clients" / "bin" / "python"
DRIVER = ROOT / "tests" / "compat" / "drive.py"
NODE_DRIVER = ROOT / "tests" / "compat" / "drive-capmonster.js"
NODE_CLIENT = ROOT / "clients" / "node" / "node_modules" / "@zennolab_com" / "capmonstercloud-client"
# Labels in fssp-real known to be wrong (datasets/README.md): the model reads these right.
LABEL_SLIPS = {"dg7g7.png", "l28vt.png", "zhmb8g.png"}
DIGITS = "2456789"
PER_CLIENT = 8


def missing_tools() -> list[str]:
    missing = []
    if not CLIENTS_PYTHON.is_file():
        missing.append(f"{CLIENTS_PYTHON} is absent (make install)")
    if shutil.which("node") is None:
        missing.append("node is not on PATH")
    if not NODE_CLIENT.is_dir():
        missing.append(f"{NODE_CLIENT} is absent (npm ci --prefix clients/node)")
    return missing


@pytest.fixture(scope="module")
def tools():
    missing = missing_tools()
    if missing:
        if os.environ.get("CI"):
            pytest.fail("CI must run the client tests: " + "; ".join(missing), pytrace=False)
        pytest.skip("; ".join(missing))


@pytest.fixture(scope="module")
def real():
    """fssp-real's labelled images, without its known label slips, in name order: [(path, label)]."""
    folder = DATASETS / "fssp-real"
    if not (folder / "labels.csv").is_file():
        pytest.skip(f"{folder} is absent: the real data sets live in ../shared/datasets beside the checkout")
    with open(folder / "labels.csv", encoding="utf-8") as handle:
        rows = sorted((row["filename"], row["text"]) for row in csv.DictReader(handle))
    return [(folder / "images" / name, text) for name, text in rows if name not in LABEL_SLIPS]


@pytest.fixture(scope="module")
def stack(tools, tmp_path_factory):
    """One instance (two workers, tasks in its SQLite file) with nginx in front, HTTP and HTTPS."""
    import trustme

    directory = tmp_path_factory.mktemp("compat")
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1")
    authority.cert_pem.write_to_path(directory / "ca.pem")
    certificate.private_key_pem.write_to_path(directory / "server.key")
    certificate.cert_chain_pems[0].write_to_path(directory / "server.pem")
    for pem in certificate.cert_chain_pems[1:]:
        pem.write_to_path(directory / "server.pem", append=True)
    env = {
        "CAPTCHA_API_KEYS": KEY,
        "CAPTCHA_WORKERS": "2",
        "CAPTCHA_TRUSTED_PROXIES": "1",
        "CAPTCHA_RATE_LIMIT": "100000/minute",
        "CAPTCHA_TASK_STORE": str(directory / "tasks.sqlite3"),
        "CAPTCHA_FEEDBACK_DIR": str(directory / "feedback"),
    }
    with GunicornProcess(env, directory / "api.log") as instance:
        (directory / "nginx").mkdir()
        tls = Tls(directory / "server.pem", directory / "server.key", free_port())
        nginx = Nginx(directory / "nginx", [f"127.0.0.1:{instance.port}"], tls).start()
        try:
            yield {"instance": instance, "nginx": nginx, "dir": directory, "tls": tls}
        finally:
            nginx.stop()


def native(url: str, image: Path, **options) -> str:
    answer = requests.post(
        url + "/predict", params=options, files={"image": image.read_bytes()}, headers={"X-API-Key": KEY}, timeout=30
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["prediction"]


def drive(stack, steps: list[dict]) -> list[dict]:
    """The Python clients' steps (tests/compat/drive.py), in their own environment; each step's outcome."""
    urls = {
        "twocaptcha": f"127.0.0.1:{stack['tls'].port}",  # the client adds https:// itself
        "anticaptcha": f"127.0.0.1:{stack['nginx'].port}",
        "capmonster": stack["instance"].url,
    }
    ca = str(stack["dir"] / "ca.pem")
    run = subprocess.run(
        [str(CLIENTS_PYTHON), str(DRIVER)],
        input=json.dumps({"urls": urls, "steps": steps}),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "REQUESTS_CA_BUNDLE": ca, "SSL_CERT_FILE": ca},
    )
    assert run.returncode == 0, run.stderr
    outcomes = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(outcomes) == len(steps), run.stdout + run.stderr
    return outcomes


def drive_node(stack, steps: list[dict]) -> list[dict]:
    run = subprocess.run(
        ["node", str(NODE_DRIVER)],
        input=json.dumps({"serviceUrl": stack["instance"].url, "steps": steps}),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    outcomes = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(outcomes) == len(steps), run.stdout + run.stderr
    return outcomes


def outcomes_of(stack, client: str, steps: list[dict]) -> list[dict]:
    steps = [{"client": client, "key": KEY, **step} for step in steps]
    return drive_node(stack, steps) if client == "node" else drive(stack, steps)


PYTHON_CLIENTS = ("twocaptcha", "anticaptcha", "capmonster")
ALL_CLIENTS = (*PYTHON_CLIENTS, "node")


@pytest.mark.parametrize("client", ALL_CLIENTS)
def test_each_client_reads_real_captchas(stack, real, client):
    chosen = real[ALL_CLIENTS.index(client) * PER_CLIENT :][:PER_CLIENT]  # different images for each client
    outcomes = outcomes_of(stack, client, [{"op": "solve", "image": str(path)} for path, _ in chosen])
    assert all(o["ok"] for o in outcomes), outcomes
    texts = [o["text"] for o in outcomes]
    assert texts == [native(stack["instance"].url, path) for path, _ in chosen]  # the same model, the same reading
    right = sum(text == label for text, (_, label) in zip(texts, chosen))
    assert right >= PER_CLIENT - 1, list(zip(texts, [label for _, label in chosen]))


# What each client calls the options: digits only, and (where it has them) a length range.
OPTIONS = {
    "twocaptcha": {"numeric": 1, "minLen": 4, "maxLen": 5},
    "anticaptcha": {"numeric": 1, "min_length": 4, "max_length": 5},
    "capmonster": {"numeric": 1},
    "node": {"numeric": 1},
}


@pytest.mark.parametrize("client", ALL_CLIENTS)
def test_options_constrain_the_reading_as_the_native_ones_do(stack, real, client):
    path, _ = real[40 + ALL_CLIENTS.index(client)]
    (outcome,) = outcomes_of(stack, client, [{"op": "solve", "image": str(path), "options": OPTIONS[client]}])
    assert outcome["ok"], outcome
    length = "4-5" if "numeric" in OPTIONS[client] and len(OPTIONS[client]) > 1 else None
    expected = native(stack["instance"].url, path, charset=DIGITS, **({"length": length} if length else {}))
    assert outcome["text"] == expected and set(expected) <= set(DIGITS)


@pytest.mark.parametrize("client", ALL_CLIENTS)
def test_a_bad_key_and_an_unreadable_image_are_the_services_errors(stack, real, client, tmp_path):
    garbage = tmp_path / "not-an-image.png"
    garbage.write_bytes(b"this is not an image, whatever its name says" * 10)
    steps = [
        {"op": "solve", "image": str(real[0][0]), "key": "wrong-key-0123456789"},
        {"op": "solve", "image": str(garbage)},
    ]
    bad_key, unreadable = outcomes_of(stack, client, steps)
    assert not bad_key["ok"] and "KEY_DOES_NOT_EXIST" in bad_key["message"], bad_key
    # The Node client turns an errorCode outside its own short list into "Unknown" (its ErrorCodeConverter): the
    # code itself it never shows; the Python clients show it whole.
    expected = "Unknown" if client == "node" else "IMAGE_TYPE_NOT_SUPPORTED"
    assert not unreadable["ok"] and expected in unreadable["message"], unreadable


@pytest.mark.parametrize("client", ALL_CLIENTS)
def test_balance_is_a_number_each_client_parses(stack, client):
    (outcome,) = outcomes_of(stack, client, [{"op": "balance"}])
    assert outcome["ok"], outcome
    balance = outcome["balance"]
    if isinstance(balance, dict):  # the CapMonster clients hand back the whole answer
        assert balance["errorId"] == 0
        balance = balance["balance"]
    assert float(balance) > 0


@pytest.mark.parametrize("client", ("twocaptcha", "anticaptcha"))  # the CapMonster clients have no report call
def test_a_bad_reading_reported_keeps_its_image_for_labelling(stack, real, client):
    path, _ = real[60 + PYTHON_CLIENTS.index(client)]
    (solved,) = outcomes_of(stack, client, [{"op": "solve", "image": str(path)}])
    assert solved["ok"], solved
    if client == "twocaptcha":  # its key travels in res.php's query string: nginx must not log it
        assert "res.php" in stack["nginx"].access_log() and KEY not in stack["nginx"].access_log()
    first, again = outcomes_of(stack, client, [{"op": "report", "id": solved["id"], "correct": False}] * 2)
    assert first["ok"] and first["answer"] in ("OK_REPORT_RECORDED", True), first
    assert not again["ok"] and "ERROR_DUPLICATE_REPORT" in again["message"], again
    stored = stack["dir"] / "feedback" / "fssp" / "unlabelled"
    assert any(f.read_bytes() == path.read_bytes() for f in stored.iterdir())


def test_a_key_form_picks_a_served_model(stack):
    path = DATASETS / "captcha-v2" / "images" / "226md.png"  # a captcha of the style the captcha-v2 model reads
    if not path.is_file():
        pytest.skip(f"{path} is absent: the real data sets live in ../shared/datasets beside the checkout")
    steps = [{"client": "capmonster", "op": "solve", "image": str(path), "key": f"{KEY}__captcha-v2"}]
    (outcome,) = drive(stack, steps)
    assert outcome["ok"], outcome
    assert outcome["text"] == native(stack["instance"].url, path, model="captcha-v2")


# ------------------------------------------------------------------------------------- tasks across processes

TASKS = 200


def create_and_poll(create_urls: list[str], poll_urls: list[str], images: list[bytes], seed: int) -> list[dict]:
    """TASKS tasks, each created at a random URL of `create_urls` and polled at a random one of `poll_urls`, on a
    new connection each (so the kernel hands each to any worker), eight at a time."""
    chooser = random.Random(seed)
    plan = [(i, chooser.choice(create_urls), chooser.choice(poll_urls)) for i in range(TASKS)]

    def one(item):
        index, create_url, poll_url = item
        body = {"clientKey": KEY, "task": {"type": "ImageToTextTask", "body": base64.b64encode(images[index]).decode()}}
        created = requests.post(create_url + "/createTask", json=body, timeout=30).json()
        assert created["errorId"] == 0, created
        answer = requests.post(
            poll_url + "/getTaskResult", json={"clientKey": KEY, "taskId": created["taskId"]}, timeout=30
        ).json()
        return {"index": index, "task": created["taskId"], "create": create_url, "poll": poll_url, "answer": answer}

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(one, plan))


def check_tasks(results: list[dict], expected: list[str], where: str) -> None:
    lost = [r for r in results if r["answer"].get("status") != "ready"]
    wrong = [r for r in results if r not in lost and r["answer"]["solution"]["text"] != expected[r["index"]]]
    crossed = sum(r["create"] != r["poll"] for r in results)
    summary = {"where": where, "tasks": len(results), "ids": len({r["task"] for r in results}), "lost": len(lost)}
    print(json.dumps({**summary, "wrong": len(wrong), "polled_elsewhere_than_created": crossed}))  # pytest -s
    assert not lost, lost[:5]
    assert not wrong, wrong[:5]
    assert len({r["task"] for r in results}) == TASKS


def pids(log: str, path: str) -> set[str]:
    return {m for m in re.findall(rf'"pid": (\d+), "message": "POST {re.escape(path)} 200', log)}


@pytest.fixture(scope="module")
def two_hundred(real):
    if len(real) < TASKS:
        pytest.skip(f"fssp-real has {len(real)} usable images, fewer than {TASKS}")
    return [path.read_bytes() for path, _ in real[:TASKS]]


def test_200_tasks_across_two_workers_on_sqlite(stack, two_hundred):
    url = stack["instance"].url
    readings = [
        requests.post(url + "/predict", files={"image": image}, headers={"X-API-Key": KEY}, timeout=30).json()
        for image in two_hundred
    ]
    expected = [reading["prediction"] for reading in readings]
    results = create_and_poll([url], [url], two_hundred, seed=1)
    check_tasks(results, expected, "one instance, two workers, SQLite")
    log = stack["instance"].log()
    assert len(pids(log, "/createTask")) == 2 and len(pids(log, "/getTaskResult")) == 2, "both workers served"


def test_200_tasks_across_two_instances_behind_nginx_sharing_redis(tools, tmp_path, two_hundred):
    fleet = Fleet(tmp_path, KEY).start()  # tasks in the Redis of the rate limits: CAPTCHA_TASK_STORE unset
    try:
        urls = [fleet.url, *(instance.url for instance in fleet.instances)]
        readings = [
            requests.post(fleet.url + "/predict", files={"image": i}, headers={"X-API-Key": KEY}, timeout=30).json()
            for i in two_hundred
        ]
        results = create_and_poll(urls, urls, two_hundred, seed=2)
        check_tasks(results, [reading["prediction"] for reading in readings], "two instances behind nginx, Redis")
        crossed = [r for r in results if r["create"] != r["poll"] and fleet.url not in (r["create"], r["poll"])]
        assert len(crossed) > 20  # created on one instance, answered by the other
        for instance in fleet.instances:
            log = instance.log()
            assert len(pids(log, "/createTask")) == 2 and len(pids(log, "/getTaskResult")) == 2
        import redis

        stored = redis.Redis.from_url(fleet.redis.uri).keys(REDIS_PREFIX + "*")
        assert len([k for k in stored if not k.endswith(b":reported")]) == TASKS  # all in the Redis of the limits
    finally:
        fleet.stop()


# ------------------------------------------------------------------------------------------ the README's lines

README_SECTION = "## Coming from 2captcha / anti-captcha / CapMonster"
# What each README line's client is asked, to show it reached the service.
BALANCE_CALLS = {
    "TwoCaptcha(": "print(solver.balance())",
    "AnticaptchaClient(": "print(client.getBalance())",
    "CapMonsterClient(": "import asyncio; print(asyncio.run(client.get_balance())['balance'])",
}
PYTHON_IMPORTS = (
    "from twocaptcha import TwoCaptcha\n"
    "from python_anticaptcha import AnticaptchaClient\n"
    "from capmonstercloudclient import CapMonsterClient, ClientOptions\n"
)


def readme_lines(language: str) -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(rf"^{re.escape(README_SECTION)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, f"README.md has no section {README_SECTION!r}"
    blocks = re.findall(rf"^```{language}\n(.*?)^```", section.group(1), flags=re.S | re.M)
    assert len(blocks) == 1, blocks
    return [line for line in blocks[0].splitlines() if line.strip() and not line.lstrip().startswith(("#", "//"))]


def ours(line: str, stack) -> str:
    """A README line with the test's key and addresses in place of its placeholders."""
    service = stack["instance"].url.removeprefix("http://")
    return (
        line.replace("YOUR_KEY", KEY)
        .replace("localhost:8443", f"127.0.0.1:{stack['tls'].port}")
        .replace("localhost:5000", service)
    )


def test_the_readmes_one_line_changes_reach_the_service(stack):
    lines = readme_lines("py")  # not "python": tests/test_python_client.py runs those as its client's examples
    assert sorted(next(c for c in BALANCE_CALLS if c in line) for line in lines) == sorted(BALANCE_CALLS)
    ca = str(stack["dir"] / "ca.pem")
    for line in lines:
        call = next(c for c in BALANCE_CALLS if c in line)
        run = subprocess.run(
            [str(CLIENTS_PYTHON), "-c", PYTHON_IMPORTS + ours(line, stack) + "\n" + BALANCE_CALLS[call]],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "REQUESTS_CA_BUNDLE": ca},
        )
        assert run.returncode == 0 and float(run.stdout) > 0, (line, run.stderr)
    (line,) = readme_lines("javascript")  # not "js": clients/node's tests run every js block as its own example
    script = (
        "const { CapMonsterCloudClientFactory, ClientOptions } = require(process.argv[1]);\n"
        + ours(line, stack)
        + "\nclient.getBalance().then((answer) => console.log(answer.balance));\n"
    )
    run = subprocess.run(["node", "-e", script, str(NODE_CLIENT)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and float(run.stdout) > 0, run.stderr
