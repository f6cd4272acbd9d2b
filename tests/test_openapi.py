"""/openapi.json and /docs: built by spectree from the request and answer models (captcha_api/service/)."""

import io

import pytest
from flask import jsonify
from spectree import Response

from captcha_api.service import compat, request_models, response_models
from captcha_api.service.openapi import spec

from .conftest import KEY
from .test_api import assert_error, b64


@pytest.fixture
def anonymous(make_app):
    # A limit of one request a minute: the documentation must be exempt from it, like /health.
    return make_app(rate_limit="1/minute", batch_rate_limit="1/minute").test_client()


@pytest.fixture
def document(anonymous):
    response = anonymous.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    return response.get_json()


def test_document_and_docs_page_need_no_key_and_no_rate_limit(anonymous):
    for _ in range(3):
        assert anonymous.get("/openapi.json").status_code == 200
        page = anonymous.get("/docs")
        assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert 'src="docs/' in html  # its own files, relative: still right behind a proxy that adds a path prefix
    assert_error(anonymous.get("/info"), 401, "missing_api_key")  # the API itself still needs the key


def test_every_endpoint_is_described_and_nothing_else(document):
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "CAPTCHA OCR API" and document["info"]["version"] == "1.0.0"
    native = {"/health", "/info", "/predict", "/predict-batch", "/report"}
    assert set(document["paths"]) == native | compat.PATHS  # the solver-compatible APIs: tests/test_compat.py
    assert list(document["paths"]["/predict"]) == ["post"]


REF = "#/components/schemas/{model}"


def test_schemas_are_the_validating_models(document):
    """Not a hand-written document: each component is what pydantic makes of the model spectree validates with."""
    components = document["components"]["schemas"]
    assert components["PredictJson"] == request_models.PredictJson.model_json_schema()
    reading = response_models.Reading.model_json_schema(mode="serialization", ref_template=REF)
    nested = reading.pop("$defs")
    assert components["Reading"] == reading
    assert all(components[name] == schema for name, schema in nested.items())
    assert components["Health"] == response_models.Health.model_json_schema(mode="serialization")


def test_predict_takes_json_or_multipart_and_the_key_header(document):
    operation = document["paths"]["/predict"]["post"]
    content = operation["requestBody"]["content"]
    assert set(content) == {"application/json", "multipart/form-data"}
    components = document["components"]["schemas"]
    form = components["PredictForm"]
    assert form["required"] == ["image"]
    assert form["properties"]["image"] == {**form["properties"]["image"], "type": "string", "format": "binary"}
    json_body = components["PredictJson"]
    assert {"image", "image_base64", "text", "model", "charset", "length"} <= set(json_body["properties"])
    assert json_body["anyOf"] == [{"required": ["image"]}, {"required": ["image_base64"]}, {"required": ["text"]}]
    assert {p["name"]: p["in"] for p in operation["parameters"]} == {
        "model": "query",
        "charset": "query",
        "length": "query",
        "min_confidence": "query",
        "details": "query",
    }
    assert operation["security"] == [{"ApiKey": []}]
    assert document["components"]["securitySchemes"]["ApiKey"] == {
        "type": "apiKey",
        "name": "X-API-Key",
        "in": "header",
    }
    assert "security" not in document["paths"]["/health"]["get"]
    batch = components["BatchForm"]["properties"]["images"]
    assert batch["type"] == "array" and batch["items"] == {"type": "string", "format": "binary"}


def test_every_error_status_is_the_envelope_with_its_codes(document):
    responses = document["paths"]["/predict"]["post"]["responses"]
    assert set(responses) == {"200", "400", "401", "404", "408", "413", "414", "415", "422", "429", "503"}
    assert "content" not in responses.pop("414")  # gunicorn's own answer to a request line over its limit
    components = document["components"]["schemas"]
    for status, answer in responses.items():
        name = answer["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
        if status == "200":
            assert name == "Reading"
            continue
        envelope = components[name]
        assert envelope["required"] == ["success", "error"] and envelope["properties"]["success"]["const"] is False
        detail = components[envelope["properties"]["error"]["$ref"].rsplit("/", 1)[1]]
        refused = {"prediction", "confidence", "details"} if status == "422" else set()  # unreadable, low_confidence
        assert set(detail["properties"]) == {"code", "message"} | refused
    codes_400 = components["BadRequestDetail"]["properties"]["code"]["enum"]
    assert {"missing_image", "invalid_json", "invalid_base64", "invalid_image", "invalid_parameter"} <= set(codes_400)
    assert "422" not in document["paths"]["/predict-batch"]["post"]["responses"]  # an unreadable entry fails alone
    assert set(document["paths"]["/health"]["get"]["responses"]) == {"200", "503"}


def test_answers_match_their_declared_models(client, png):
    """The models check the answers too: the runtime hook for successes, and here the error envelopes."""
    response_models.Health.model_validate_json(client.get("/health").data)
    response_models.Info.model_validate_json(client.get("/info").data)
    response_models.Reading.model_validate_json(
        client.post("/predict", data={"image": (io.BytesIO(png), "c.png")}).data
    )
    batch = client.post("/predict-batch", json={"images": [b64(png), "!!", 7]})
    answer = response_models.BatchReading.model_validate_json(batch.data)
    assert [type(entry).__name__ for entry in answer.results] == ["EntryRead", "EntryFailed", "EntryFailed"]
    response_models.BadRequest.model_validate_json(client.post("/predict", json={"image": 5}).data)
    response_models.Unauthorized.model_validate_json(client.get("/info", headers={"X-API-Key": "nope"}).data)
    response_models.NotFound.model_validate_json(client.post("/predict?model=nope", json={"image": b64(png)}).data)
    response_models.UnsupportedMedia.model_validate_json(
        client.post("/predict", data="x", content_type="text/plain").data
    )


def test_an_answer_off_its_model_is_a_logged_500_in_the_envelope(make_app, caplog):
    """The response hook: a view whose body breaks its declared model is a server bug, answered as one."""
    app = make_app()

    @spec.validate(resp=Response(HTTP_200=response_models.Health))
    def off_contract():
        return jsonify({"status": "fine", "model_loaded": True, "version": "1.0.0", "extra": 1})

    # Never on a route /openapi.json describes: this app's document is not requested in this test.
    app.add_url_rule("/off-contract", view_func=off_contract)
    response = app.test_client().get("/off-contract", headers={"X-API-Key": KEY})
    assert_error(response, 500, "internal_error")
    logged = [str(r.exc_info[1]) for r in caplog.records if r.exc_info]
    assert any("GET /off-contract" in line and "extra" in line for line in logged), logged


def test_a_validation_failure_is_the_envelope_not_spectrees_list(client):
    """Each kind of refusal by the models comes back with the code the hand checks give."""
    assert_error(client.post("/predict", json={"image": b64(b"x"), "length": True}), 400, "invalid_parameter")
    assert_error(client.post("/predict?charset=", json={"image": b64(b"x")}), 400, "invalid_parameter")
    assert_error(client.post("/predict", json={"image": None}), 400, "invalid_image")
    assert_error(client.post("/predict", json={"model": "tiny"}), 400, "missing_image")

    def no_file():
        return {"model": "tiny", "other": (io.BytesIO(b"x"), "x.png")}  # multipart, as a file is in it

    assert_error(client.post("/predict", data=no_file()), 400, "missing_image")
    assert_error(client.post("/predict-batch", json={"images": "abc"}), 400, "missing_image")
    assert_error(client.post("/predict-batch", data=no_file()), 400, "missing_image")
    assert_error(client.post("/predict", data={"image": "x"}), 415, "unsupported_media_type")  # url-encoded form
