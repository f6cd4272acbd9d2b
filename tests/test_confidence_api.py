"""Readings the service will not vouch for: min_confidence (per request, and the model's default) -> 422
low_confidence with the reading; no characters, an untrained length or an unsettled count -> 422 unreadable;
details=1 -> per-character confidences and the runner-up; the batch follows entry by entry."""

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from captcha_api.core.artifact import ModelArtifact
from captcha_api.service import response_models

from .conftest import KEY, encode
from .test_api import b64


def reading_of(client, png, **options):
    response = client.post("/predict", json={"image": b64(png), **options})
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def blank_png() -> bytes:
    return encode(Image.new("RGB", (200, 60), "white"), "PNG")


def noise_png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (60, 200, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def refused(response, code: str) -> dict:
    body = response.get_json()
    assert response.status_code == 422, body
    assert body["success"] is False and body["error"]["code"] == code, body
    response_models.Unreadable.model_validate(body)  # the documented envelope, with the reading
    return body["error"]


def test_a_reading_below_min_confidence_is_refused_with_the_reading(client, png):
    read = reading_of(client, png)
    assert 0 < read["confidence"] < 1
    above = min(1.0, read["confidence"] + 0.0001)
    error = refused(client.post("/predict", json={"image": b64(png), "min_confidence": above}), "low_confidence")
    assert (error["prediction"], error["confidence"]) == (read["prediction"], read["confidence"])
    assert "below min_confidence" in error["message"]
    # the same from the query string and from a multipart field
    query = client.post(f"/predict?min_confidence={above}", data={"image": (io.BytesIO(png), "c.png")})
    assert refused(query, "low_confidence")["prediction"] == read["prediction"]
    form = client.post("/predict", data={"image": (io.BytesIO(png), "c.png"), "min_confidence": str(above)})
    assert refused(form, "low_confidence")["prediction"] == read["prediction"]
    # at or below its confidence the reading is answered; 0 answers every reading
    assert reading_of(client, png, min_confidence=read["confidence"] - 0.0001)["prediction"] == read["prediction"]
    assert reading_of(client, png, min_confidence=0)["prediction"] == read["prediction"]


@pytest.mark.parametrize("value", ["abc", "-0.1", "1.5", "nan", "inf", ""])
def test_a_bad_min_confidence_is_400(client, png, value):
    response = client.post(f"/predict?min_confidence={value}", data={"image": (io.BytesIO(png), "c.png")})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_parameter"
    assert "min_confidence" in response.get_json()["error"]["message"]


@pytest.fixture
def strict_model(tiny_artifact, tmp_path):
    """The test model with a default min_confidence of 1.0 in its metadata."""
    folder = tmp_path / "models"
    folder.mkdir()
    base = folder / "strict"
    shutil.copy(ModelArtifact(tiny_artifact).onnx, base.with_suffix(".onnx"))
    meta = json.loads(ModelArtifact(tiny_artifact).metadata_path.read_text()) | {
        "name": "strict",
        "min_confidence": 1.0,
    }
    base.with_suffix(".json").write_text(json.dumps(meta))
    return base


def test_the_model_default_applies_unless_the_request_sets_its_own(make_app, strict_model, png):
    client = make_app(model=strict_model, model_dir=str(strict_model.parent)).test_client()
    client.environ_base["HTTP_X_API_KEY"] = KEY
    assert client.get("/info").get_json()["model"]["min_confidence"] == 1.0
    refused(client.post("/predict", json={"image": b64(png)}), "low_confidence")
    assert reading_of(client, png, min_confidence=0)["success"] is True
    assert reading_of(client, png, min_confidence=0.01)["success"] is True


def test_blank_and_noise_images_are_unreadable_whatever_min_confidence(client):
    error = refused(client.post("/predict", json={"image": b64(blank_png()), "min_confidence": 0}), "unreadable")
    assert error["prediction"] == "" and "no characters" in error["message"]
    for seed in range(3):
        error = refused(
            client.post("/predict", json={"image": b64(noise_png(seed)), "min_confidence": 0}), "unreadable"
        )
        assert "how many characters" in error["message"], error


def test_a_length_the_model_was_not_trained_on_is_unreadable_unless_asked_for(
    client, make_app, tiny_artifact, tmp_path, png
):
    count = len(reading_of(client, png)["prediction"])
    base = tmp_path / "short" / "short"
    base.parent.mkdir()
    shutil.copy(ModelArtifact(tiny_artifact).onnx, base.with_suffix(".onnx"))
    meta = json.loads(ModelArtifact(tiny_artifact).metadata_path.read_text()) | {
        "name": "short",
        "max_length": count - 1,
    }
    base.with_suffix(".json").write_text(json.dumps(meta))
    short = make_app(model=base, model_dir=str(base.parent)).test_client()
    short.environ_base["HTTP_X_API_KEY"] = KEY
    error = refused(short.post("/predict", json={"image": b64(png)}), "unreadable")
    assert len(error["prediction"]) == count and f"reads 1 to {count - 1}" in error["message"]
    assert len(reading_of(short, png, length=count)["prediction"]) == count  # a length option says how many


def test_details_give_each_character_and_the_runner_up(client, png):
    plain = reading_of(client, png)
    assert "details" not in plain
    read = reading_of(client, png, details=True)
    response_models.Reading.model_validate(read)
    details = read["details"]
    assert "".join(c["char"] for c in details["characters"]) == read["prediction"]
    assert all(0 <= c["confidence"] <= 1 for c in details["characters"])
    second = details["runner_up"]
    assert second["prediction"] != read["prediction"] and 0 <= second["confidence"] <= read["confidence"]
    assert abs(len(second["prediction"]) - len(read["prediction"])) <= 1
    assert (read["prediction"], read["confidence"]) == (plain["prediction"], plain["confidence"])
    # details=1 in the query string, and in a refusal
    query = client.post("/predict?details=1&min_confidence=1", data={"image": (io.BytesIO(png), "c.png")})
    assert refused(query, "low_confidence")["details"] == details


def test_the_batch_refuses_entry_by_entry(client, png):
    response = client.post(
        "/predict-batch", json={"images": [b64(png), b64(blank_png()), b64(noise_png(0))], "details": "true"}
    )
    body = response.get_json()
    assert response.status_code == 200, body
    response_models.BatchReading.model_validate(body)
    good, blank, noise = body["results"]
    assert good["success"] is True and "".join(c["char"] for c in good["details"]["characters"]) == good["prediction"]
    assert blank["success"] is False and blank["error"]["code"] == "unreadable" and blank["error"]["prediction"] == ""
    assert noise["success"] is False and noise["error"]["code"] == "unreadable"
    strict = client.post("/predict-batch", json={"images": [b64(png)], "min_confidence": 1}).get_json()
    entry = strict["results"][0]
    assert entry["success"] is False and entry["error"]["code"] == "low_confidence"
    assert entry["error"]["prediction"] == good["prediction"]


def test_a_refused_reading_may_still_be_reported(client, png):
    response = client.post("/predict", json={"image": b64(png), "min_confidence": 1})
    refused(response, "low_confidence")
    report = client.post("/report", json={"request_id": response.headers["X-Request-ID"], "text": "дд22"})
    assert report.status_code == 200, report.get_json()


def test_a_length_option_does_not_make_blank_or_noise_readable(client):
    for image in (blank_png(), noise_png(1)):
        for length in (5, "4-7"):
            answer = client.post("/predict", json={"image": b64(image), "length": length, "min_confidence": 0})
            refused(answer, "unreadable")


def test_the_threshold_is_compared_with_the_confidence_as_answered(client, png):
    shown = reading_of(client, png)["confidence"]
    assert reading_of(client, png, min_confidence=shown)["confidence"] == shown  # at it: answered


def test_a_reading_forced_to_another_length_still_has_a_runner_up(client, png):
    count = len(reading_of(client, png)["prediction"])
    for length in (count - 1, count + 1):
        read = reading_of(client, png, length=length, details=True, min_confidence=0)
        assert len(read["prediction"]) == length
        second = read["details"]["runner_up"]
        assert second is not None and len(second["prediction"]) == length and second["prediction"] != read["prediction"]


def test_a_boolean_is_not_a_threshold(client, png):
    response = client.post("/predict", json={"image": b64(png), "min_confidence": True})
    assert response.status_code == 400 and response.get_json()["error"]["code"] == "invalid_parameter"
