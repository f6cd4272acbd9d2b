"""The HTTP contract of DESIGN.md, on a tiny real model."""

import base64
import io

import pytest
from flask import abort, request
from PIL import Image
from werkzeug.test import encode_multipart

from captcha_api.service.config import ConfigError

from .conftest import KEY, encode, json_lines


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def assert_error(response, status, code):
    assert response.status_code == status, response.get_json()
    body = response.get_json()
    assert body["success"] is False
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert "Traceback" not in response.get_data(as_text=True)


def test_health(client):
    response = client.get("/health", headers={"X-API-Key": ""})
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "model_loaded": True, "version": "1.0.0"}


def test_info(client, tiny_artifact):
    body = client.get("/info").get_json()
    assert body["name"] == "CAPTCHA OCR API"
    assert body["version"] == "1.0.0"
    model = body["model"]
    assert model["name"] == "tiny"
    assert model["image_size"] == [60, 200]
    assert model["max_sequence_length"] == 7
    assert model["alphabet"] == "2456789бвгджклмнпрст"
    assert isinstance(model["accuracy"], dict)
    assert "POST /predict" in body["endpoints"]


def check_reading(response):
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["success"] is True
    assert set(body) == {"success", "prediction", "confidence"}
    assert isinstance(body["prediction"], str)
    assert 0.0 <= body["confidence"] <= 1.0
    return body


def test_predict_every_input_form_gives_the_same_reading(client, png):
    forms = [
        client.post("/predict", data={"image": (io.BytesIO(png), "c.png")}),
        client.post("/predict", json={"image": b64(png)}),
        client.post("/predict", json={"image": "data:image/png;base64," + b64(png)}),
        client.post("/predict", json={"image_base64": b64(png)}),
        client.post("/predict", json={"text": b64(png)}),
    ]
    readings = [check_reading(r) for r in forms]
    assert len({(r["prediction"], r["confidence"]) for r in readings}) == 1


def test_predict_accepts_jpeg_and_base64_with_newlines(client, captcha_image):
    data = encode(captcha_image, "JPEG")
    wrapped = "\n".join(b64(data)[i : i + 76] for i in range(0, len(b64(data)), 76))
    check_reading(client.post("/predict", json={"image": wrapped}))
    spaced = " \t\r\n\x0b\x0c".join(b64(data)[i : i + 64] for i in range(0, len(b64(data)), 64))
    assert (
        client.post("/predict", json={"image": spaced}).get_json()
        == client.post("/predict", json={"image": b64(data)}).get_json()
    )


def test_batch_json_and_multipart(client, png, captcha_image):
    jpeg = encode(captcha_image, "JPEG")
    response = client.post("/predict-batch", json={"images": [b64(png), "data:image/jpeg;base64," + b64(jpeg)]})
    body = response.get_json()
    assert response.status_code == 200 and body["success"] is True and body["total"] == 2
    assert [r["index"] for r in body["results"]] == [0, 1]
    assert all(r["success"] and 0 <= r["confidence"] <= 1 for r in body["results"])
    single = client.post("/predict", json={"image": b64(png)}).get_json()["prediction"]
    assert body["results"][0]["prediction"] == single

    files = {"images": [(io.BytesIO(png), "a.png"), (io.BytesIO(jpeg), "b.jpg")]}
    body = client.post("/predict-batch", data=files).get_json()
    assert body["total"] == 2 and all(r["success"] for r in body["results"])


def test_batch_bad_entry_fails_alone(client, png):
    body = client.post(
        "/predict-batch", json={"images": [b64(png), "%%%not base64", 7, b64(b"not an image")]}
    ).get_json()
    assert body["success"] is True and body["total"] == 4
    ok, bad_b64, not_string, not_image = body["results"]
    assert ok["success"] is True
    assert (bad_b64["success"], bad_b64["error"]["code"]) == (False, "invalid_base64")
    assert not_string["error"]["code"] == "invalid_image"
    assert not_image["error"]["code"] == "invalid_image"
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]


def tiny_png(size):
    return encode(Image.new("RGB", size, "white"), "PNG")


@pytest.mark.parametrize(
    "kwargs, status, code",
    [
        ({"data": {"other": (io.BytesIO(b"x"), "x.png")}}, 400, "missing_image"),
        ({"data": "{not json", "content_type": "application/json"}, 400, "invalid_json"),
        ({"data": "[" * 100000, "content_type": "application/json"}, 400, "invalid_json"),  # was a 500
        ({"json": ["a", "list"]}, 400, "invalid_json"),
        ({"json": {"picture": "abc"}}, 400, "missing_image"),
        ({"json": {"image": 12345}}, 400, "invalid_image"),
        ({"json": {"image": ""}}, 400, "missing_image"),
        ({"json": {"image": "@@@@ not base64 !!"}}, 400, "invalid_base64"),
        ({"json": {"image": "data:image/png,rawbytes"}}, 400, "invalid_base64"),
        ({"json": {"image": b64(b"hello, not an image")}}, 400, "invalid_image"),
        ({"data": {"image": (io.BytesIO(b""), "empty.png")}}, 400, "missing_image"),
        ({"json": {"image": b64(encode(Image.new("RGB", (200, 60)), "PPM"))}}, 415, "unsupported_format"),
        ({"json": {"image": b64(tiny_png((1, 1)))}}, 422, "unreadable_image"),
        ({"json": {"image": b64(tiny_png((3000, 20)))}}, 422, "unreadable_image"),
        ({"data": b"raw", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({}, 415, "unsupported_media_type"),
    ],
    ids=[
        "no-image-field",
        "bad-json",
        "json-nested-too-deep",
        "json-not-object",
        "no-image-key",
        "image-not-string",
        "empty-string",
        "bad-base64",
        "data-url-not-base64",
        "not-an-image",
        "empty-file",
        "ppm",
        "1x1",
        "very-wide",
        "text-plain",
        "no-body",
    ],
)
def test_predict_bad_input(client, kwargs, status, code):
    assert_error(client.post("/predict", **kwargs), status, code)
    assert client.get("/health").status_code == 200  # the worker is still fine


def test_image_over_size_limit_is_413(make_app):
    client = make_app(max_image_bytes=1000).test_client()
    big = encode(Image.effect_noise((200, 60), 80).convert("RGB"), "PNG")
    assert len(big) > 1000
    headers = {"X-API-Key": KEY}
    assert_error(client.post("/predict", json={"image": b64(big)}, headers=headers), 413, "image_too_large")
    response = client.post("/predict", data={"image": (io.BytesIO(big), "big.png")}, headers=headers)
    assert_error(response, 413, "image_too_large")


def test_body_over_limit_is_413(make_app):
    client = make_app(max_body_bytes=2048, max_image_bytes=1024).test_client()
    response = client.post("/predict", json={"image": "A" * 5000}, headers={"X-API-Key": KEY})
    assert_error(response, 413, "payload_too_large")


def test_decompression_bomb_is_413(client):
    from .test_preprocess import png_header_only

    assert_error(client.post("/predict", json={"image": b64(png_header_only(20000, 20000))}), 413, "image_too_large")


def test_batch_too_long_is_413(make_app, png):
    client = make_app(max_batch=3).test_client()
    response = client.post("/predict-batch", json={"images": [b64(png)] * 4}, headers={"X-API-Key": KEY})
    assert_error(response, 413, "batch_too_large")


@pytest.mark.parametrize("body", [{"images": []}, {"images": "abc"}, {"image": "abc"}])
def test_batch_malformed_is_400(client, body):
    assert_error(client.post("/predict-batch", json=body), 400, "missing_image")


def test_unknown_route_and_wrong_method_are_json(client):
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.get("/predict"), 405, "method_not_allowed")
    assert_error(client.delete("/health"), 405, "method_not_allowed")


def message(response) -> str:
    return response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    "method, path, expected",
    [
        ("GET", "/predict", "GET is not allowed on /predict: use POST"),
        ("PUT", "/predict-batch", "PUT is not allowed on /predict-batch: use POST"),
        ("DELETE", "/health", "DELETE is not allowed on /health: use GET"),
        ("POST", "/info", "POST is not allowed on /info: use GET"),
    ],
)
def test_a_wrong_method_is_told_the_method_to_use(client, method, path, expected):
    response = client.open(path, method=method)
    assert_error(response, 405, "method_not_allowed")
    assert message(response) == expected
    assert "POST" in response.headers["Allow"] or "GET" in response.headers["Allow"]


@pytest.mark.parametrize("path", ["/", "/predictt", "/api/predict"])
def test_an_unknown_path_points_to_the_docs_and_health(make_app, path):
    client = make_app().test_client()  # no key: a new user's first request
    response = client.get(path)
    assert_error(response, 404, "not_found")
    assert f"nothing is served at {path}" in message(response)
    assert "/docs" in message(response) and "/health" in message(response)


def test_a_404_on_the_metrics_listener_points_to_the_api_port(make_app):
    client = make_app(metrics_port=9100, port=5000).test_client()
    response = client.get("/docs", base_url="http://localhost:9100")  # /docs is not served there
    assert_error(response, 404, "not_found")
    assert "/metrics only" in message(response) and "CAPTCHA_PORT (5000)" in message(response)


def test_a_multipart_text_field_over_flask_limit_says_to_send_a_file(client):
    # curl -F "image=<captcha.png" sends the file as a text field, which Flask holds in memory up to 500 000 bytes.
    # Encoded here, in memory: the test client would spool a body this long to a temporary file it never closes.
    boundary, body = encode_multipart({"image": "A" * 600_000})
    response = client.post("/predict", data=body, content_type=f"multipart/form-data; boundary={boundary}")
    assert_error(response, 413, "payload_too_large")
    assert "500000 bytes (Flask's MAX_FORM_MEMORY_SIZE)" in message(response)
    assert "send the image as a file part" in message(response)


def test_too_many_multipart_parts_names_the_batch_limit(make_app):
    client = make_app(max_batch=5).test_client()
    # Text parts: werkzeug leaves the spooled files of file parts it read before the 413 to the garbage collector,
    # whose ResourceWarning pytest would report against this test.
    parts = {"images": ["x"] * 1001}
    response = client.post("/predict-batch", data=parts, content_type="multipart/form-data", headers={"X-API-Key": KEY})
    assert_error(response, 413, "payload_too_large")
    assert "more than 1000 parts (Flask's MAX_FORM_PARTS)" in message(response)
    assert "at most 5 files 'images' to /predict-batch (CAPTCHA_MAX_BATCH)" in message(response)


def test_a_body_werkzeug_finds_too_long_names_the_setting(make_app):
    # The guard reads the bodies of POST, PUT, PATCH and DELETE; a view that read another method's body would meet
    # werkzeug's own check of MAX_CONTENT_LENGTH, set from CAPTCHA_MAX_BODY_BYTES.
    app = make_app(max_body_bytes=2048, max_image_bytes=1024)
    app.add_url_rule("/echo", "echo", lambda: request.get_data(), methods=["GET"])
    response = app.test_client().get("/echo", data=b"x" * 5000, headers={"X-API-Key": KEY})
    assert_error(response, 413, "payload_too_large")
    assert message(response) == "the request body is larger than 2048 bytes (CAPTCHA_MAX_BODY_BYTES)"


def test_a_description_given_at_the_raise_site_is_kept(make_app):
    app = make_app()
    app.add_url_rule("/gone", "gone", lambda: abort(404, "that model was retired"))
    app.add_url_rule("/big", "big", lambda: abort(413, "that is too much"))
    client = app.test_client()
    assert message(client.get("/gone", headers={"X-API-Key": KEY})) == "that model was retired"
    assert message(client.get("/big", headers={"X-API-Key": KEY})) == "that is too much"


def test_a_missing_default_model_stops_start_up_with_one_line(make_app, tmp_path):
    with pytest.raises(ConfigError) as refused:
        make_app(model=tmp_path / "missing")
    message = str(refused.value)
    assert message.startswith(f"CAPTCHA_MODEL={tmp_path / 'missing'}: no model there") and "\n" not in message
    assert "missing.onnx" in message and "missing.json" in message


def test_request_id_is_echoed_or_made(client):
    assert client.get("/health", headers={"X-Request-ID": "abc-123"}).headers["X-Request-ID"] == "abc-123"
    made = client.get("/health", headers={"X-Request-ID": "bad id\u00e9"}).headers["X-Request-ID"]
    assert made and made != "bad id\u00e9"


def test_access_log_has_no_key_or_image(client, png, log_output):
    image = b64(png)
    client.post("/predict", json={"image": image}, headers={"X-Request-ID": "log-check"})
    client.post("/predict?model=" + image[:40], data={"image": (io.BytesIO(png), "c.png")})
    client.post("/predict-batch", json={"images": [image, "!!" + image]}, headers={"X-API-Key": "not-" + KEY})
    text = log_output.getvalue()
    records = json_lines(text)  # every line written is one JSON object
    access = [r for r in records if r["logger"] == "captcha_api.access"]
    assert len(access) == 3
    first = next(r for r in access if r["request_id"] == "log-check")
    assert (first["method"], first["path"], first["status"]) == ("POST", "/predict", 200)
    assert "POST /predict 200" in first["message"]
    # Not in any field of any line: the key (right or wrong), the image's base64 (also as a query value), its bytes.
    for secret in (KEY, image[:40], png[:16].decode("latin-1")):
        assert secret not in text


def test_json_is_utf8_text_in_documented_order(client, png):
    response = client.post("/predict", json={"image": b64(png)})
    text = response.get_data(as_text=True)
    assert "\\u" not in text
    assert list(response.get_json()) == ["success", "prediction", "confidence"]
    assert response.mimetype == "application/json"


@pytest.mark.parametrize("damage", ["corrupt-onnx", "bad-metadata"])
def test_a_broken_default_model_stops_start_up_naming_it(make_app, tiny_artifact, tmp_path, damage):
    import shutil

    base = tmp_path / "broken"
    for suffix in (".onnx", ".json"):
        shutil.copy(tiny_artifact.with_suffix(suffix), base.with_suffix(suffix))
    if damage == "corrupt-onnx":
        base.with_suffix(".onnx").write_bytes(b"not an onnx model")
    else:
        base.with_suffix(".json").write_text('{"name": "x", "unexpected": 1}')
    with pytest.raises(ConfigError) as refused:
        make_app(model=base)
    message = str(refused.value)
    assert message.startswith(f"CAPTCHA_MODEL={base}: the default model cannot be served: ") and "\n" not in message
