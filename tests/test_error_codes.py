"""Every error code is defined once, as a class (captcha_api/core/errors.py, captcha_api/service/errors.py); the
OpenAPI description, both clients and the docs are checked against that list here, so a new code that one of them
misses fails this file."""

import json
import re

import pytest
import requests

from captcha_api.core.errors import CaptchaError
from captcha_api.service.errors import HTTP_ERRORS, codes

from .conftest import ROOT

# The codes werkzeug's own errors are answered with (a path or method not served, a fault): no view declares them.
NOT_DECLARED_BY_VIEWS = {"not_found", "method_not_allowed", "internal_error"}

# What the Python client raises for each code. A new code needs its line here: the test below fails without it.
PYTHON_CLIENT = {
    "bad_request": "InvalidInput",
    "missing_image": "InvalidInput",
    "invalid_json": "InvalidInput",
    "invalid_base64": "InvalidInput",
    "invalid_image": "InvalidInput",
    "invalid_parameter": "InvalidInput",
    "payload_too_large": "InvalidInput",
    "image_too_large": "InvalidInput",
    "batch_too_large": "InvalidInput",
    "unsupported_media_type": "InvalidInput",
    "unsupported_format": "InvalidInput",
    "unreadable_image": "InvalidInput",
    "missing_api_key": "AuthError",
    "invalid_api_key": "AuthError",
    "unknown_model": "UnknownModel",
    # A reading the service will not vouch for: NoReading's subclasses, carrying the reading.
    "low_confidence": "LowConfidence",
    "unreadable": "Unreadable",
    "rate_limited": "RateLimited",
    "model_unavailable": "ServiceUnavailable",
    "server_busy": "ServiceUnavailable",
    "feedback_unavailable": "ServiceUnavailable",
    # Reports (POST /report), which the client does not send itself: what a caller of the raw API would get.
    "unknown_request": "CaptchaError",
    "feedback_full": "CaptchaError",
    # The client sends its body at once, to paths and with methods that exist: these mean a wrong base URL, a
    # stalled network or a fault of the service, none of them a typed case a caller handles apart.
    "not_found": "CaptchaError",
    "method_not_allowed": "CaptchaError",
    "request_timeout": "CaptchaError",
    "internal_error": "CaptchaError",
}


def test_each_code_is_one_class_with_a_status_and_a_description():
    found = codes()
    assert len(found) >= 20
    for code, cls in found.items():
        assert re.fullmatch(r"[a-z]+(_[a-z0-9]+)*", code), code
        assert issubclass(cls, CaptchaError) and 400 <= cls.status < 600, cls
        assert cls.__doc__ and cls.__doc__.strip(), f"{cls.__name__} ({code}) needs a docstring: /openapi.json shows it"
    for status, cls in HTTP_ERRORS.items():
        assert cls.status == status and found[cls.code] is cls


def test_a_code_defined_twice_is_refused():
    class Again(CaptchaError):
        code = "invalid_image"

    try:
        with pytest.raises(ValueError, match="defined twice"):
            codes()
    finally:
        del Again  # the subclass stays registered until collected; keep other tests' view clean
        import gc

        gc.collect()


def test_openapi_declares_every_code_a_view_answers(client):
    document = client.get("/openapi.json").get_json()
    declared = set()
    for schema in document["components"]["schemas"].values():
        code = schema.get("properties", {}).get("code", {})
        declared.update(code.get("enum", [code["const"]] if "const" in code else []))
    assert declared == set(codes()) - NOT_DECLARED_BY_VIEWS


@pytest.mark.parametrize("code", sorted(codes()))
def test_python_client_raises_its_typed_error_for_each_code(code):
    # The Python client is a package of its own (clients/python; make install installs it beside the service).
    python_client = pytest.importorskip(
        "captcha_ocr_client", reason="the Python client is not installed (./clients/python)"
    )
    assert code in PYTHON_CLIENT, f"decide what the Python client raises for {code!r}, and add it to PYTHON_CLIENT"
    response = requests.Response()
    response.status_code = codes()[code].status
    response._content = json.dumps({"success": False, "error": {"code": code, "message": "m"}}).encode()
    response.headers["Content-Type"] = "application/json"
    error = python_client._error_from(response)
    assert type(error).__name__ == PYTHON_CLIENT[code] and error.code == code and error.status == codes()[code].status


def test_node_client_types_list_exactly_the_service_codes():
    typings = (ROOT / "clients" / "node" / "index.d.ts").read_text(encoding="utf-8")
    union = re.search(r"export type ServiceErrorCode =([^;]+);", typings)
    assert union, "index.d.ts has no ServiceErrorCode type"
    assert set(re.findall(r"'([a-z0-9_]+)'", union.group(1))) == set(codes())


def test_api_docs_list_every_code():
    api = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    missing = [code for code, cls in codes().items() if f"| `{code}` | {cls.status} |" not in api]
    assert not missing, f"docs/api.md has no row for {missing}"
