"""The HTTP contract of DESIGN.md, on a tiny real model."""

import base64
import io

import pytest
from PIL import Image

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


def test_no_model_is_503(make_app, tmp_path, png):
    app = make_app(model=tmp_path / "missing")
    client = app.test_client()
    response = client.get("/health")
    assert response.status_code == 503
    assert response.get_json() == {"status": "unavailable", "model_loaded": False, "version": "1.0.0"}
    assert_error(
        client.post("/predict", json={"image": b64(png)}, headers={"X-API-Key": KEY}), 503, "model_unavailable"
    )


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
def test_broken_model_files_give_503_not_a_crash(make_app, tiny_artifact, tmp_path, damage):
    import shutil

    base = tmp_path / "broken"
    for suffix in (".keras", ".onnx", ".json"):
        shutil.copy(tiny_artifact.with_suffix(suffix), base.with_suffix(suffix))
    if damage == "corrupt-onnx":
        base.with_suffix(".onnx").write_bytes(b"not an onnx model")
    else:
        base.with_suffix(".json").write_text('{"name": "x", "unexpected": 1}')
    assert make_app(model=base).test_client().get("/health").status_code == 503
