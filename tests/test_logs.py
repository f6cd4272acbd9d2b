"""The service's log lines as written to stdout: JSON objects by default, the text format on request, request ids
on every line of a request, nothing of a request's body or keys."""

import base64
import json
import logging
import re

from .conftest import KEY, json_lines


def test_access_line_fields(client, log_output):
    client.post("/predict", json={"image": "!!"}, headers={"X-Request-ID": "abc.DEF-1_2"})
    (line,) = [r for r in json_lines(log_output.getvalue()) if r["logger"] == "captcha_api.access"]
    assert list(line)[:5] == ["ts", "level", "logger", "pid", "message"]
    assert line["level"] == "INFO" and isinstance(line["pid"], int)
    assert line["request_id"] == "abc.DEF-1_2"
    assert (line["method"], line["path"], line["status"]) == ("POST", "/predict", 400)
    assert isinstance(line["latency_ms"], float) and line["latency_ms"] >= 0
    assert line["remote_addr"] == "127.0.0.1"


def test_a_request_id_is_made_when_none_or_a_bad_one_is_sent(client, log_output):
    made = client.get("/health").headers["X-Request-ID"]
    refused = client.get("/health", headers={"X-Request-ID": 'x" injected="1'}).headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", made) and re.fullmatch(r"[0-9a-f]{32}", refused) and made != refused
    ids = [r["request_id"] for r in json_lines(log_output.getvalue()) if r["logger"] == "captcha_api.access"]
    assert ids == [made, refused]
    assert "injected" not in log_output.getvalue()


def test_an_app_log_inside_a_request_carries_its_request_id(make_app, log_output):
    app = make_app()

    @app.get("/boom")
    def boom():
        logging.getLogger("captcha_api.test").warning("about to fail")
        raise RuntimeError("kaput")

    response = app.test_client().get("/boom", headers={"X-API-Key": KEY, "X-Request-ID": "req-77"})
    assert response.status_code == 500 and response.headers["X-Request-ID"] == "req-77"
    records = json_lines(log_output.getvalue())  # the traceback stays inside its one JSON line
    warning = next(r for r in records if r["logger"] == "captcha_api.test")
    assert (warning["level"], warning["message"], warning["request_id"]) == ("WARNING", "about to fail", "req-77")
    failure = next(r for r in records if r["logger"] == "captcha_api.service.errors")
    assert failure["level"] == "ERROR" and failure["request_id"] == "req-77"
    assert "Traceback" in failure["exc_info"] and "RuntimeError: kaput" in failure["exc_info"]
    access = next(r for r in records if r["logger"] == "captcha_api.access")
    assert (access["status"], access["request_id"]) == (500, "req-77")


def test_a_log_outside_any_request_has_no_request_id(make_app, log_output):
    make_app()
    logging.getLogger("captcha_api.test").info("start-up")
    (line,) = [r for r in json_lines(log_output.getvalue()) if r["logger"] == "captcha_api.test"]
    assert "request_id" not in line and line["message"] == "start-up"


def test_text_format_keeps_the_one_line_layout(make_app, png, log_output):
    client = make_app(log_format="text").test_client()
    client.post(
        "/predict",
        json={"image": base64.b64encode(png).decode()},
        headers={"X-API-Key": KEY, "X-Request-ID": "text-1"},
    )
    text = log_output.getvalue()
    assert re.search(r"^\S+ \S+ INFO \d+ captcha_api.access: POST /predict 200 \d+\.\dms id=text-1$", text, re.M), text
    assert KEY not in text and base64.b64encode(png).decode()[:40] not in text
    for line in text.splitlines():
        try:
            json.loads(line)
        except ValueError:
            continue
        raise AssertionError(f"a JSON line in the text format: {line}")


def test_text_format_escapes_control_characters(make_app, log_output):
    client = make_app(log_format="text").test_client()
    client.get("/nothing%0a2026-01-01 00:00:00,000 INFO 1 forged: line%0d%e2%80%a8", headers={"X-API-Key": KEY})
    lines = log_output.getvalue().splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines)
    access = next(line for line in lines if "/nothing" in line)
    assert "/nothing\\x0a2026-01-01 00:00:00,000 INFO 1 forged: line\\x0d\\u2028 404" in access
