"""The Python client (clients/python) against the live service under gunicorn, and its README examples as written:
those of clients/python/README.md, and the project README's short one."""

import base64
import contextlib
import email.utils
import json
import re
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

# The client is a package of its own (clients/python), installed beside the service by make install.
pytest.importorskip("captcha_ocr_client", reason="the Python client is not installed: pip install ./clients/python")
from captcha_ocr_client import (  # noqa: E402
    AuthError,
    CaptchaClient,
    CaptchaError,
    CharacterConfidence,
    Details,
    InvalidInput,
    LowConfidence,
    NetworkError,
    NoReading,
    Prediction,
    RateLimited,
    RequestTimeout,
    ServiceUnavailable,
    UnknownModel,
    Unreadable,
    parse_retry_after,
)
from PIL import Image

from captcha_api.core.artifact import DEFAULT_MODEL
from captcha_api.training.generator import sample
from scripts.process import GunicornProcess, free_port

from .conftest import KEY, ROOT, encode
from .test_server import example_labels

pytestmark = pytest.mark.integration  # starts real servers or tools: see pyproject.toml

README = ROOT / "README.md"
CLIENT_README = ROOT / "clients" / "python" / "README.md"
ALPHABET = "2456789бвгджклмнпрст"


@pytest.fixture(scope="module")
def samples() -> list[tuple[bytes, str]]:
    """Eight generated captchas as PNG bytes with their texts."""
    return [(encode(image, "PNG"), text) for image, text in (sample(seed=2024, index=i) for i in range(8))]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    env = {"CAPTCHA_API_KEYS": KEY, "CAPTCHA_WORKERS": "1"}
    with GunicornProcess(env, tmp_path_factory.mktemp("client") / "server.log") as process:
        yield process.url


@pytest.fixture(scope="module")
def open_service(tmp_path_factory):
    """The service as a new user first starts it: no API key, open on loopback."""
    env = {"CAPTCHA_API_KEYS": "", "CAPTCHA_WORKERS": "1"}
    with GunicornProcess(env, tmp_path_factory.mktemp("open") / "server.log") as process:
        yield process.url


@pytest.fixture(scope="module")
def limited_service(tmp_path_factory):
    env = {"CAPTCHA_API_KEYS": KEY, "CAPTCHA_WORKERS": "1", "CAPTCHA_RATE_LIMIT": "2/second"}
    with GunicornProcess(env, tmp_path_factory.mktemp("limited") / "server.log") as process:
        yield process.url


@pytest.fixture(scope="module")
def two_models(tmp_path_factory):
    """A service on a folder holding the shipped fssp model and 'mirror', the same network with its alphabet
    reversed: mirror's reading is fssp's with each character mapped to the mirrored place of the alphabet."""
    folder = tmp_path_factory.mktemp("models")
    for name in ("fssp", "mirror"):
        shutil.copy(DEFAULT_MODEL.with_suffix(".onnx"), folder / f"{name}.onnx")
    meta = json.loads(DEFAULT_MODEL.with_suffix(".json").read_text(encoding="utf-8"))
    (folder / "fssp.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    meta["name"], meta["alphabet"] = "mirror", meta["alphabet"][::-1]
    (folder / "mirror.json").write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    env = {"CAPTCHA_API_KEYS": KEY, "CAPTCHA_WORKERS": "1", "CAPTCHA_MODEL": str(folder / "fssp")}
    with GunicornProcess(env, folder / "server.log") as process:
        yield process.url


def mirrored(text: str) -> str:
    return text.translate(str.maketrans(ALPHABET, ALPHABET[::-1]))


def recording_session(log: list) -> requests.Session:
    """A session that notes (time, status, Retry-After) of every answer it gets, retries included."""
    session = requests.Session()
    note = lambda response, *args, **kwargs: log.append(  # noqa: E731
        (time.monotonic(), response.status_code, response.headers.get("Retry-After"))
    )
    session.hooks["response"].append(note)
    return session


def as_form(png: bytes, form: str, tmp_path: Path):
    if form == "file":
        path = tmp_path / "captcha.png"
        path.write_bytes(png)
        return path
    if form == "base64":
        return base64.b64encode(png).decode()
    if form == "data_url":
        return "data:image/png;base64," + base64.b64encode(png).decode()
    return png


def test_health_and_info(service):
    with CaptchaClient(service, api_key=KEY) as client:
        assert client.health() == {"status": "ok", "model_loaded": True, "version": "1.0.0"}
        info = client.info()
    assert info["version"] == "1.0.0" and info["model"]["name"] == "fssp"
    assert info["model"]["alphabet"] == ALPHABET


@pytest.mark.parametrize(
    ("method", "form"),
    [
        ("predict_file", "file"),
        ("predict_bytes", "bytes"),
        ("predict_base64", "base64"),
        ("predict_base64", "data_url"),
    ],
)
def test_every_input_form_reads_the_captchas(service, samples, tmp_path, method, form):
    with CaptchaClient(service, api_key=KEY) as client:
        predictions = [getattr(client, method)(as_form(png, form, tmp_path)) for png, _ in samples]
    assert all(isinstance(p, Prediction) and 0 <= p.confidence <= 1 for p in predictions)
    assert all(p.raw["success"] is True and p.raw["prediction"] == p.text for p in predictions)
    assert sum(p.text == text for p, (_, text) in zip(predictions, samples)) >= 7


def test_predict_file_accepts_a_str_path(service, samples, tmp_path):
    png, text = samples[0]
    (tmp_path / "one.png").write_bytes(png)
    with CaptchaClient(service, api_key=KEY) as client:
        assert client.predict_file(str(tmp_path / "one.png")).text == text


def test_batch_of_mixed_forms_keeps_the_order(service, samples, tmp_path):
    images = []
    for i, ((png, _), form) in enumerate(zip(samples, ["bytes", "file", "base64", "data_url"] * 2)):
        (tmp_path / str(i)).mkdir()
        images.append(as_form(png, form, tmp_path / str(i)))
    with CaptchaClient(service, api_key=KEY) as client:
        results = client.predict_batch(images)
    assert [r["index"] for r in results] == list(range(8)) and all(r["success"] for r in results)
    assert sum(r["prediction"] == text for r, (_, text) in zip(results, samples)) >= 7


def test_batch_with_bad_entries_fails_only_those(service, samples):
    png, text = samples[0]
    with CaptchaClient(service, api_key=KEY) as client:
        results = client.predict_batch([png, "!!! not base64", b"not an image", png])
    assert [r["success"] for r in results] == [True, False, False, True]
    assert results[1]["error"]["code"] == "invalid_base64"
    assert results[2]["error"]["code"] == "invalid_image"
    assert results[0]["prediction"] == results[3]["prediction"] == text


def test_batch_refuses_what_is_not_an_image_input(service):
    with CaptchaClient(service, api_key=KEY) as client, pytest.raises(TypeError):
        client.predict_batch([12345])


def test_models_lists_every_served_model(two_models):
    with CaptchaClient(two_models, api_key=KEY) as client:
        models = {model["name"]: model for model in client.models()}
    assert set(models) == {"fssp", "mirror"}
    assert models["fssp"]["default"] is True and models["mirror"]["default"] is False
    assert models["fssp"]["alphabet"] == ALPHABET and models["mirror"]["alphabet"] == ALPHABET[::-1]
    assert models["mirror"]["min_sequence_length"] == 4 and models["mirror"]["max_sequence_length"] == 7


@pytest.mark.parametrize(("method", "form"), [("predict_bytes", "bytes"), ("predict_base64", "data_url")])
def test_model_option_picks_the_model(two_models, samples, tmp_path, method, form):
    with CaptchaClient(two_models, api_key=KEY) as client:
        call = getattr(client, method)
        for png, _ in samples[:3]:
            image = as_form(png, form, tmp_path)
            default = call(image).text
            assert call(image, model="fssp").text == default
            assert call(image, model="mirror").text == mirrored(default) != default


def test_model_option_of_predict_file_and_batch(two_models, samples, tmp_path):
    path = as_form(samples[0][0], "file", tmp_path)
    with CaptchaClient(two_models, api_key=KEY) as client:
        default = client.predict_file(path).text
        assert client.predict_file(path, model="mirror").text == mirrored(default) != default
        results = client.predict_batch([path, samples[1][0]], model="mirror")
        plain = client.predict_batch([path, samples[1][0]])
    assert [r["prediction"] for r in results] == [mirrored(r["prediction"]) for r in plain]


@pytest.mark.parametrize("method", ["predict_bytes", "predict_base64", "predict_batch"])
def test_unknown_model_raises_unknown_model(two_models, samples, method):
    png = samples[0][0]
    image = {"predict_bytes": png, "predict_base64": base64.b64encode(png).decode(), "predict_batch": [png]}[method]
    with CaptchaClient(two_models, api_key=KEY) as client:
        with pytest.raises(UnknownModel) as caught:
            getattr(client, method)(image, model="nope")
    assert isinstance(caught.value, CaptchaError) and not isinstance(caught.value, InvalidInput)
    assert (caught.value.status, caught.value.code) == (404, "unknown_model")
    assert "fssp, mirror" in caught.value.message


@pytest.mark.parametrize("length", [6, "6"])
@pytest.mark.parametrize("method", ["predict_bytes", "predict_base64"])
def test_length_option_gives_a_reading_of_that_length(two_models, samples, method, length):
    texts = [text for _, text in samples]
    assert any(len(text) != 6 for text in texts)  # else the option would change nothing
    with CaptchaClient(two_models, api_key=KEY) as client:
        call = getattr(client, method)
        form = "base64" if method == "predict_base64" else "bytes"
        readings = [call(as_form(png, form, None), length=length).text for png, _ in samples]
        ranged = [client.predict_bytes(png, length="4..5").text for png, _ in samples]
    assert [len(reading) for reading in readings] == [6] * len(samples)
    assert all(4 <= len(reading) <= 5 for reading in ranged), ranged


@pytest.mark.parametrize("method", ["predict_bytes", "predict_base64"])
def test_charset_option_reads_only_those_characters(two_models, samples, method):
    charset = "2457бвг"
    assert any(not set(text) <= set(charset) for _, text in samples)
    with CaptchaClient(two_models, api_key=KEY) as client:
        call = getattr(client, method)
        form = "base64" if method == "predict_base64" else "bytes"
        readings = [call(as_form(png, form, None), charset=charset).text for png, _ in samples]
        exact = call(as_form(samples[0][0], form, None), charset=charset, length=5, model="mirror").text
    assert all(reading and set(reading) <= set(charset) for reading in readings), readings
    assert len(exact) == 5 and set(exact) <= set(charset)


def test_batch_options_apply_to_every_image(two_models, samples):
    with CaptchaClient(two_models, api_key=KEY) as client:
        results = client.predict_batch([png for png, _ in samples], charset="бвг", length="6")
    assert [r["index"] for r in results] == list(range(len(samples)))
    assert all(len(r["prediction"]) == 6 and set(r["prediction"]) <= set("бвг") for r in results), results


@pytest.mark.parametrize(
    "options",
    [{"length": "6-4"}, {"length": "many"}, {"length": 40}, {"charset": "abc"}, {"charset": ""}, {"model": ""}],
)
@pytest.mark.parametrize("method", ["predict_bytes", "predict_base64", "predict_batch"])
def test_bad_options_raise_invalid_input(two_models, samples, method, options):
    png = samples[0][0]
    image = {"predict_bytes": png, "predict_base64": base64.b64encode(png).decode(), "predict_batch": [png]}[method]
    with CaptchaClient(two_models, api_key=KEY) as client:
        with pytest.raises(InvalidInput) as caught:
            getattr(client, method)(image, **options)
    assert (caught.value.status, caught.value.code) == (400, "invalid_parameter")


BLANK_PNG = encode(Image.new("RGB", (200, 60), "white"), "PNG")


@pytest.mark.parametrize(("method", "form"), [("predict_bytes", "bytes"), ("predict_base64", "base64")])
def test_a_reading_below_min_confidence_raises_low_confidence_with_the_reading(service, samples, method, form):
    png = samples[0][0]
    with CaptchaClient(service, api_key=KEY) as client:
        call = getattr(client, method)
        read = call(as_form(png, form, None))
        assert read.text and read.confidence < 1
        with pytest.raises(LowConfidence) as caught:
            call(as_form(png, form, None), min_confidence=1)
        assert call(as_form(png, form, None), min_confidence=0).text == read.text  # 0 answers every reading
    error = caught.value
    assert isinstance(error, NoReading) and not isinstance(error, InvalidInput)
    assert (error.status, error.code, error.prediction) == (422, "low_confidence", read.text)
    assert error.confidence == pytest.approx(read.confidence, abs=1e-4) and error.details is None
    assert "below min_confidence" in error.message


@pytest.mark.parametrize(("method", "form"), [("predict_bytes", "bytes"), ("predict_base64", "data_url")])
def test_a_blank_image_raises_unreadable(service, method, form):
    with CaptchaClient(service, api_key=KEY) as client:
        with pytest.raises(Unreadable) as caught:
            getattr(client, method)(as_form(BLANK_PNG, form, None), min_confidence=0)
    error = caught.value
    assert isinstance(error, NoReading) and (error.status, error.code, error.prediction) == (422, "unreadable", "")
    assert "no characters" in error.message


@pytest.mark.parametrize(("method", "form"), [("predict_file", "file"), ("predict_base64", "base64")])
def test_details_give_each_character_and_the_runner_up(service, samples, tmp_path, method, form):
    png = samples[1][0]
    with CaptchaClient(service, api_key=KEY) as client:
        call = getattr(client, method)
        plain = call(as_form(png, form, tmp_path))
        read = call(as_form(png, form, tmp_path), details=True)
        with pytest.raises(LowConfidence) as caught:
            call(as_form(png, form, tmp_path), details=True, min_confidence=1)
    assert plain.details is None and (read.text, read.confidence) == (plain.text, plain.confidence)
    assert isinstance(read.details, Details) and read.raw["details"]["characters"]
    assert all(isinstance(c, CharacterConfidence) and 0 <= c.confidence <= 1 for c in read.details.characters)
    assert "".join(c.char for c in read.details.characters) == read.text
    second = read.details.runner_up
    assert second is not None and second.text != read.text and 0 <= second.confidence <= read.confidence
    assert caught.value.details == read.details  # a refusal carries them too


def test_batch_refuses_entry_by_entry_with_the_reading(service, samples):
    png = samples[0][0]
    with CaptchaClient(service, api_key=KEY) as client:
        text = client.predict_bytes(png).text
        good, blank = client.predict_batch([png, BLANK_PNG], details=True)
        (strict,) = client.predict_batch([png], min_confidence=1)
    assert good["success"] is True and good["prediction"] == text
    assert "".join(c["char"] for c in good["details"]["characters"]) == text
    assert blank["success"] is False and blank["index"] == 1
    assert (blank["error"]["code"], blank["error"]["prediction"]) == ("unreadable", "")
    assert strict["success"] is False and strict["error"]["code"] == "low_confidence"
    assert strict["error"]["prediction"] == text and 0 <= strict["error"]["confidence"] <= 1


@pytest.mark.parametrize(
    ("api_key", "code"), [("wrong-key-0123456789abcdef", "invalid_api_key"), (None, "missing_api_key")]
)
def test_bad_key_raises_auth_error(service, samples, api_key, code):
    with CaptchaClient(service, api_key=api_key) as client:
        assert client.health()["status"] == "ok"  # /health needs no key
        for call in (lambda: client.predict_bytes(samples[0][0]), client.info):
            with pytest.raises(AuthError) as caught:
                call()
            assert isinstance(caught.value, CaptchaError)
            assert (caught.value.status, caught.value.code) == (401, code)
            assert code in str(caught.value) and "401" in str(caught.value)


@pytest.mark.parametrize(
    ("call", "argument", "status", "code"),
    [
        ("predict_bytes", b"this is not an image", 400, "invalid_image"),
        ("predict_base64", "!!! not base64", 400, "invalid_base64"),
        ("predict_base64", "", 400, "missing_image"),
        ("predict_bytes", encode(Image.new("RGB", (1, 1)), "PNG"), 422, "unreadable_image"),
    ],
)
def test_bad_image_raises_invalid_input_with_the_service_code(service, call, argument, status, code):
    with CaptchaClient(service, api_key=KEY) as client:
        with pytest.raises(InvalidInput) as caught:
            getattr(client, call)(argument)
    assert (caught.value.status, caught.value.code) == (status, code)
    assert caught.value.message and caught.value.retry_after is None


def test_context_manager_closes_its_own_session_only(service):
    with CaptchaClient(service) as client:
        client.health()
        pools = client.session.get_adapter(service).poolmanager.pools
        assert len(pools) == 1
    assert len(pools) == 0  # closed on exit
    with requests.Session() as session:
        with CaptchaClient(service, session=session) as client:
            client.health()
        assert len(session.get_adapter(service).poolmanager.pools) == 1  # the caller's session stays open


def test_burst_over_the_rate_limit_succeeds_with_retries(limited_service, samples):
    answers = []
    png, text = samples[0]
    with recording_session(answers) as session, CaptchaClient(limited_service, api_key=KEY, session=session) as client:
        readings = [client.predict_bytes(png).text for _ in range(6)]
    assert readings == [text] * 6
    statuses = [status for _, status, _ in answers]
    assert statuses.count(200) == 6 and statuses.count(429) >= 1, statuses
    for (when, status, retry_after), (after, _, _) in zip(answers, answers[1:]):
        if status == 429:  # the retry waited what the service asked, and at least the client's back-off
            assert after - when >= max(float(retry_after), CaptchaClient.backoff) - 0.01


def test_rate_limit_surfaces_as_rate_limited_without_retries(limited_service, samples):
    answers = []
    with recording_session(answers) as session:
        with CaptchaClient(limited_service, api_key=KEY, retries=0, session=session) as client:
            with pytest.raises(RateLimited) as caught:
                for _ in range(5):  # at most 4 fit in the two one-second windows that 5 quick calls can span
                    client.predict_bytes(samples[0][0])
    assert (caught.value.status, caught.value.code) == (429, "rate_limited")
    assert caught.value.retry_after is not None and 0 <= caught.value.retry_after <= 1
    assert [status for _, status, _ in answers][-1] == 429 and len(answers) <= 5  # one request per call


def test_a_503_is_retried_then_raised(samples):
    """The service answers 503 when a worker holds as many bodies as it may (server_busy): retried with a doubling
    back-off when no Retry-After comes, then raised. A scripted server: the real one cannot be held in that state
    for a whole exchange."""
    busy = json.dumps({"success": False, "error": {"code": "server_busy", "message": "busy"}}).encode()
    with scripted_server(*[(503, {"Content-Type": "application/json"}, busy)] * 3) as server:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        with CaptchaClient(url, api_key=KEY, retries=2) as client:
            client.backoff = 0.05
            started = time.monotonic()
            with pytest.raises(ServiceUnavailable) as caught:
                client.predict_bytes(samples[0][0])
            assert time.monotonic() - started >= 0.05 + 0.1 - 0.01  # back-off doubles
        assert server.requests == 3
    assert (caught.value.status, caught.value.code) == (503, "server_busy")


@pytest.fixture
def silent_socket():
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_timeout_raises_request_timeout(silent_socket, samples):
    with CaptchaClient(silent_socket, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(RequestTimeout) as caught:
            client.predict_bytes(samples[0][0])
    assert 0.25 < time.monotonic() - started < 2  # not retried
    assert isinstance(caught.value, NetworkError) and (caught.value.status, caught.value.code) == (None, "timeout")


def test_refused_connection_raises_network_error():
    with CaptchaClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(NetworkError) as caught:
            client.health()
    assert not isinstance(caught.value, RequestTimeout) and caught.value.code == "network_error"


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the next (status, headers, body) of the server's script."""

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests += 1
        status, headers, body = self.server.script.pop(0)
        self.send_response(status)
        for name, value in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def scripted_server(*script):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.script, server.requests = list(script), 0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_retry_after_longer_than_the_cap_is_raised_at_once(samples):
    limited = (429, {"Retry-After": "3600"}, b'{"success": false, "error": {"code": "rate_limited", "message": "x"}}')
    with scripted_server(limited, limited) as server:
        with CaptchaClient(f"http://127.0.0.1:{server.server_port}", retries=1) as client:
            with pytest.raises(RateLimited) as caught:
                client.predict_bytes(samples[0][0])
    assert server.requests == 1 and caught.value.retry_after == 3600


def test_http_date_retry_after_is_honoured_and_proxy_errors_are_clear(samples):
    soon = email.utils.formatdate(time.time() + 1.5, usegmt=True)
    html = (503, {"Retry-After": soon, "Content-Type": "text/html"}, b"<html>Service Unavailable</html>")
    proxy = (502, {"Content-Type": "text/html"}, b"<html><body>Bad Gateway</body></html>")
    with scripted_server(html, proxy) as server:
        with CaptchaClient(f"http://127.0.0.1:{server.server_port}") as client:
            started = time.monotonic()
            with pytest.raises(CaptchaError) as caught:
                client.predict_bytes(samples[0][0])
    assert server.requests == 2 and time.monotonic() - started >= 0.4  # waited for the date (1 s resolution)
    assert (caught.value.status, caught.value.code) == (502, "http_error") and "Bad Gateway" in caught.value.message


@pytest.mark.parametrize(
    ("header", "seconds"),
    [("3", 3.0), ("0", 0.0), ("-5", 0.0), ("1.5", 1.5), ("", None), (None, None), ("soon", None), ("nan", None)],
)
def test_parse_retry_after(header, seconds):
    assert parse_retry_after(header) == seconds


def test_parse_retry_after_http_dates():
    assert 8 < parse_retry_after(email.utils.formatdate(time.time() + 10, usegmt=True)) <= 10
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def python_blocks(readme: Path) -> list[str]:
    """The ```python blocks of a README (every one of the project's README and of the client's is about this client)."""
    return re.findall(r"```python\n(.*?)```", readme.read_text(encoding="utf-8"), flags=re.S)


def run_readme_examples(url: str, monkeypatch, capsys) -> tuple[str, str]:
    """Run the README's examples as a reader does, from the project's root; their output, and the text of the sample
    captcha they read."""
    blocks = python_blocks(CLIENT_README)
    assert len(blocks) >= 3
    front_page = python_blocks(README)
    assert front_page, f"{README.name} has no Python client example"
    blocks += front_page
    samples = {name for block in blocks for name in re.findall(r"examples/([^\s\"')]+)", block)}
    assert len(samples) == 1, samples  # one captcha, so every reading of it can be counted
    text = example_labels()[samples.pop()]
    monkeypatch.chdir(ROOT)
    for number, block in enumerate(blocks, 1):
        assert "http://localhost:5000" in block, block
        code = block.replace("http://localhost:5000", url)
        exec(compile(code, f"README Python client block {number}", "exec"), {"__name__": "__readme__"})
    return capsys.readouterr().out, text


def check_readme_output(output: str, text: str) -> None:
    assert output.count(text) >= 6, output  # file, bytes, data URL and batch readings, and the project README's
    assert "'model_loaded': True" in output
    assert "3 invalid_base64" in output and "refused: 400 invalid_image" in output, output
    assert "[('captcha-v2', False), ('fssp', True)]" in output and "no such model: 404 unknown_model" in output, output
    assert re.search(r"^[2456789]{5}$", output, flags=re.M), output  # the reading under charset and length
    assert f"refused: low_confidence {text} " in output and f"0 low_confidence {text}" in output, output
    assert re.search(r"^RunnerUp\(text='[^']+', confidence=0(\.\d+)?\)$", output, flags=re.M), output


def test_readme_examples_run_as_written_on_the_default_keyless_service(open_service, monkeypatch, capsys):
    # A new user's shell: no CAPTCHA_API_KEY (the examples must not need it), a service with no key.
    monkeypatch.delenv("CAPTCHA_API_KEY", raising=False)
    check_readme_output(*run_readme_examples(open_service, monkeypatch, capsys))


def test_readme_examples_send_the_key_from_the_environment(service, monkeypatch, capsys):
    monkeypatch.setenv("CAPTCHA_API_KEY", KEY)  # the service has keys: without this one, every call would be a 401
    check_readme_output(*run_readme_examples(service, monkeypatch, capsys))
