"""API keys, rate limits and CORS."""

import base64
import io
import time

import pytest

from .conftest import KEY, OTHER_KEY

PROTECTED = [("get", "/info"), ("post", "/predict"), ("post", "/predict-batch")]


def body_for(path, png):
    image = base64.b64encode(png).decode()
    return {"images": [image]} if path == "/predict-batch" else {"image": image}


@pytest.fixture
def anonymous(app):
    return app.test_client()


@pytest.mark.parametrize("method, path", PROTECTED)
def test_missing_key_is_401(anonymous, method, path, png):
    response = getattr(anonymous, method)(path, json=body_for(path, png) if method == "post" else None)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "missing_api_key"


@pytest.mark.parametrize("method, path", PROTECTED)
@pytest.mark.parametrize("key", ["wrong-key-0123456789abcdef", KEY[:-1], KEY + "x", "", "ключ-не-тот", "x" * 5000])
def test_wrong_key_is_401(anonymous, method, path, key, png):
    kwargs = {"json": body_for(path, png)} if method == "post" else {}
    response = getattr(anonymous, method)(path, headers={"X-API-Key": key}, **kwargs)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] in ("invalid_api_key", "missing_api_key")


@pytest.mark.parametrize("method, path", PROTECTED)
@pytest.mark.parametrize("key", [KEY, OTHER_KEY])
def test_every_configured_key_works(make_app, method, path, key, png):
    client = make_app(api_keys=[KEY, OTHER_KEY]).test_client()
    kwargs = {"json": body_for(path, png)} if method == "post" else {}
    assert getattr(client, method)(path, headers={"X-API-Key": key}, **kwargs).status_code == 200


def test_health_needs_no_key(anonymous):
    assert anonymous.get("/health").status_code == 200


def test_open_on_loopback_without_keys(make_app, png):
    # gunicorn says it is open, naming the addresses it listens on (tests/test_hostile.py).
    client = make_app(api_keys=[]).test_client()
    assert client.post("/predict", json=body_for("/predict", png)).status_code == 200


def test_rate_limit_reached_then_reset(make_app, png):
    client = make_app(rate_limit="3/second").test_client()
    headers = {"X-API-Key": KEY}
    time.sleep(1 - time.time() % 1)  # start at the beginning of a one-second window
    statuses = [client.post("/predict", json=body_for("/predict", png), headers=headers).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    limited = client.post("/predict", json=body_for("/predict", png), headers=headers)
    assert limited.status_code == 429
    assert limited.get_json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 1  # never "come back now" while still limited
    time.sleep(1.1)
    assert client.post("/predict", json=body_for("/predict", png), headers=headers).status_code == 200


def test_only_a_429_says_retry_after(make_app, png):
    client = make_app(rate_limit="100/minute").test_client()
    headers = {"X-API-Key": KEY}
    ok = client.post("/predict", json=body_for("/predict", png), headers=headers)
    bad = client.post("/predict", json={"image": "!!"}, headers=headers)
    assert (ok.status_code, bad.status_code) == (200, 400)
    for response in (ok, bad):
        assert "Retry-After" not in response.headers
        assert int(response.headers["X-RateLimit-Remaining"]) < 100


def test_rate_limit_is_per_key(make_app, png):
    client = make_app(api_keys=[KEY, OTHER_KEY], rate_limit="2/minute").test_client()
    send = lambda key: client.post("/predict", json=body_for("/predict", png), headers={"X-API-Key": key}).status_code  # noqa: E731
    assert [send(KEY) for _ in range(3)] == [200, 200, 429]
    assert send(OTHER_KEY) == 200
    assert client.get("/health").status_code == 200  # health is never limited


def test_batch_has_its_own_limit(make_app, png):
    client = make_app(batch_rate_limit="1/minute").test_client()
    headers = {"X-API-Key": KEY}
    send = lambda: client.post("/predict-batch", json=body_for("/predict-batch", png), headers=headers).status_code  # noqa: E731
    assert [send(), send()] == [200, 429]
    assert client.post("/predict", json=body_for("/predict", png), headers=headers).status_code == 200


def test_cors_allowed_origin(make_app):
    client = make_app(cors_origins=["https://scraper.example"]).test_client()
    response = client.get("/health", headers={"Origin": "https://scraper.example"})
    assert response.headers["Access-Control-Allow-Origin"] == "https://scraper.example"
    other = client.get("/health", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_cors_preflight_needs_no_key(make_app):
    client = make_app(cors_origins=["https://scraper.example"]).test_client()
    response = client.options(
        "/predict",
        headers={
            "Origin": "https://scraper.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "Content-Type, X-API-Key",
        },
    )
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == "https://scraper.example"
    allowed = response.headers["Access-Control-Allow-Headers"].lower()
    assert "x-api-key" in allowed and "content-type" in allowed
    assert "POST" in response.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize("trusted, separate", [(1, True), (0, False)])
def test_limits_key_on_the_forwarded_client_only_behind_trusted_proxies(make_app, png, trusted, separate):
    """Without a key the limit follows the client address: behind one trusted proxy that is the address the proxy
    appended to X-Forwarded-For; with no trusted proxy the header is ignored (a client could forge it)."""
    client = make_app(api_keys=[], rate_limit="1/minute", trusted_proxies=trusted).test_client()

    def post(forwarded):
        return client.post(
            "/predict",
            data={"image": (io.BytesIO(png), "c.png")},
            headers={"X-Forwarded-For": f"203.0.113.9, {forwarded}"},
        ).status_code

    assert post("198.51.100.1") == 200
    assert post("198.51.100.2") == (200 if separate else 429)
    assert post("198.51.100.2") == 429  # the same client twice is limited either way


def test_open_mode_limits_by_address_whatever_key_is_sent(make_app, png):
    client = make_app(api_keys=[], rate_limit="2/minute").test_client()
    send = lambda key: client.post("/predict", json=body_for("/predict", png), headers={"X-API-Key": key}).status_code  # noqa: E731
    assert [send(f"made-up-key-{i:04d}-0123456789") for i in range(4)] == [200, 200, 429, 429]


def test_wrong_keys_lock_the_address_out_for_a_while(make_app):
    client = make_app(auth_failure_limit="3/minute").test_client()
    info = lambda key: client.get("/info", headers={"X-API-Key": key})  # noqa: E731
    assert [info(f"wrong-key-{i:04d}-0123456789").status_code for i in range(4)] == [401, 401, 401, 429]
    locked = info(KEY)
    assert locked.status_code == 429 and locked.get_json()["error"]["code"] == "rate_limited"
    assert 0 < int(locked.headers["Retry-After"]) <= 60
    # Another address is not locked out.
    assert client.get("/info", headers={"X-API-Key": KEY}, environ_base={"REMOTE_ADDR": "127.0.0.9"}).status_code == 200


def test_wrong_keys_are_not_counted_in_open_mode_or_when_off(make_app):
    client = make_app(auth_failure_limit="").test_client()
    assert {
        client.get("/info", headers={"X-API-Key": f"wrong-{i:04d}-0123456789ab"}).status_code for i in range(30)
    } == {401}
