"""The scaled-out deployment, for real on loopback: Redis, two gunicorn instances and nginx with deploy/nginx.conf.

Each test starts its own fleet (about two seconds) so that killing parts of it cannot leak into the next test.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import threading
import time

import pytest
import requests

from scripts.process import GunicornProcess

from .conftest import encode
from .servers import Fleet, require_nginx_and_redis

pytestmark = pytest.mark.integration  # starts real servers or tools: see pyproject.toml

require_nginx_and_redis()

KEY = "deploy-test-key-" + secrets.token_hex(8)


@pytest.fixture
def make_fleet(tmp_path):
    fleets = []

    def build(**settings):
        fleets.append(Fleet(tmp_path, KEY, **settings))
        return fleets[-1].start()

    yield build
    for fleet in fleets:
        fleet.stop()


@pytest.fixture(scope="module")
def captcha(tmp_path_factory):
    from captcha_api.training.generator import sample

    image, _ = sample(seed=606, index=0)
    return encode(image, "PNG")


def predict(url: str, image: bytes, **headers) -> requests.Response:
    return requests.post(
        url + "/predict", files={"image": ("captcha.png", image)}, headers={"X-API-Key": KEY, **headers}, timeout=30
    )


def served(instance: GunicornProcess) -> int:
    return len(re.findall(r"POST /predict 200 ", instance.log()))


def test_requests_are_spread_over_both_instances(make_fleet, captcha):
    fleet = make_fleet()
    readings = {predict(fleet.url, captcha).json()["prediction"] for _ in range(40)}
    assert len(readings) == 1
    counts = [served(instance) for instance in fleet.instances]
    assert sum(counts) == 40 and min(counts) >= 10, counts


def test_a_limit_holds_across_instances_through_redis(make_fleet, captcha):
    fleet = make_fleet(CAPTCHA_RATE_LIMIT="10/minute")
    # Half of the requests claim another client address: with one trusted proxy only nginx's entry counts.
    answers = [predict(fleet.url, captcha, **({"X-Forwarded-For": f"10.0.0.{i}"} if i % 2 else {})) for i in range(15)]
    statuses = [answer.status_code for answer in answers]
    assert statuses.count(200) == 10 and statuses.count(429) == 5, statuses
    assert all(answer.json()["error"]["code"] == "rate_limited" for answer in answers if answer.status_code == 429)
    assert all(served(instance) >= 3 for instance in fleet.instances)


def steady_load(url: str, image: bytes, seconds: float, clients: int = 4) -> list:
    """`clients` threads sending one request after another for `seconds`; returns (status, reading) or the error."""
    results, lock = [], threading.Lock()
    stop_at = time.monotonic() + seconds

    def client():
        with requests.Session() as session:
            while time.monotonic() < stop_at:
                try:
                    answer = session.post(
                        url + "/predict", files={"image": ("c.png", image)}, headers={"X-API-Key": KEY}, timeout=30
                    )
                    outcome = (answer.status_code, answer.json().get("prediction"))
                except requests.RequestException as exc:
                    outcome = exc
                with lock:
                    results.append(outcome)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads, results


def kill_instance(instance: GunicornProcess) -> None:
    """SIGKILL to the master and every worker at once: a crash, with no chance to finish anything."""
    pids = [instance.process.pid, *instance.worker_pids()]
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    instance.process.wait(10)


def test_killing_an_instance_under_load_loses_no_request(make_fleet, captcha):
    fleet = make_fleet()
    expected = predict(fleet.url, captcha).json()["prediction"]
    threads, results = steady_load(fleet.url, captcha, seconds=6)
    time.sleep(2)
    before = served(fleet.instances[0])
    kill_instance(fleet.instances[0])
    for thread in threads:
        thread.join()
    assert before > 20, "the killed instance was serving when it died"
    failures = [r for r in results if r != (200, expected)]
    assert not failures, f"{len(failures)} of {len(results)} requests failed: {failures[:5]}"
    assert len(results) > 200
    # After the kill the survivor answered everything; nginx saw the dead instance and moved on.
    assert served(fleet.instances[1]) > len(results) - before - 40
    dead = f'upstream: "{fleet.instances[0].url}/predict"'
    assert any("[error]" in line and dead in line for line in fleet.nginx.error_log().splitlines())


def test_a_killed_worker_is_replaced_and_the_service_keeps_answering(make_fleet, captcha):
    fleet = make_fleet()
    instance = fleet.instances[0]
    victim = instance.worker_pids()[0]
    threads, results = steady_load(fleet.url, captcha, seconds=3, clients=2)
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = instance.worker_pids()
        if len(pids) == 2 and victim not in pids:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"worker {victim} was not replaced: {instance.worker_pids()}")
    for thread in threads:
        thread.join()
    assert all(r[0] == 200 for r in results if not isinstance(r, Exception)) and len(results) > 50
    assert not [r for r in results if isinstance(r, Exception)]
    # The new worker loaded its own model and answers, straight to the instance too.
    answer = predict(instance.url, captcha)
    assert answer.status_code == 200
    assert re.search(rf"Worker \(pid:{victim}\) was sent SIGKILL|Booting worker", instance.log())


def test_predictions_go_on_when_redis_stops(make_fleet, captcha):
    fleet = make_fleet(CAPTCHA_RATE_LIMIT="1000/minute")
    assert predict(fleet.url, captcha).status_code == 200
    fleet.redis.stop()
    started = time.monotonic()
    answers = [predict(fleet.url, captcha) for _ in range(20)]
    elapsed = time.monotonic() - started
    assert [a.status_code for a in answers] == [200] * 20
    assert elapsed < 10, "a dead Redis must not stall requests"
    logs = "".join(instance.log() for instance in fleet.instances)
    assert "falling back to in-memory storage" in logs


def test_limits_still_apply_per_worker_while_redis_is_down(make_fleet, captcha):
    fleet = make_fleet(CAPTCHA_RATE_LIMIT="3/minute", CAPTCHA_WORKERS="1")
    fleet.redis.stop()
    statuses = [predict(fleet.url, captcha).status_code for _ in range(12)]
    # Two instances of one worker each, counting in memory: at most 3 each get through.
    assert statuses.count(200) <= 6 and statuses.count(429) >= 6, statuses


def test_nginx_answers_its_own_errors_in_the_api_envelope(make_fleet, captcha):
    fleet = make_fleet()
    big = requests.post(fleet.url + "/predict", data=b"0" * (17 * 1024 * 1024), headers={"X-API-Key": KEY}, timeout=30)
    assert big.status_code == 413 and big.json()["error"]["code"] == "payload_too_large"
    for instance in fleet.instances:
        instance.stop()
    down = predict(fleet.url, captcha)
    assert down.status_code == 503 and down.json()["error"]["code"] == "service_unavailable"


def test_nginx_bounds_the_requests_one_address_has_in_flight(make_fleet, captcha):
    """Stalled bodies from one address hold at most 64 requests in nginx; the next one from there is a JSON 429,
    and once they are gone the address is served again."""
    import socket

    fleet = make_fleet()
    host, port = fleet.url.removeprefix("http://").split(":")
    stalled = []
    try:
        for _ in range(64):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 999\r\n\r\n{"
            )
            stalled.append(sock)
        time.sleep(0.5)  # each one's headers read: counted
        refused = predict(fleet.url, captcha)
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited", refused.text
        assert refused.headers["Retry-After"] == "1"
    finally:
        for sock in stalled:
            sock.close()
    time.sleep(0.5)
    assert predict(fleet.url, captcha).status_code == 200
