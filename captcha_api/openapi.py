"""Request validation and the OpenAPI description, both by spectree from the models in schemas.py.

GET /openapi.json is the document spectree builds from the views' declarations; GET /docs is spectree's Swagger UI
page for it. Both are public and not rate limited, like /health."""

from __future__ import annotations

from flask import Blueprint
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.model_adapter.pydantic_adapter import PydanticModelAdapter

from . import __version__
from .extensions import limiter
from .inputs import rejection

API_KEY = {"ApiKey": []}  # `security` of a view that needs the X-API-Key header


class ResponseOffContract(RuntimeError):
    """A view answered with a body its declared model refuses: a bug here, answered as a 500 internal_error."""


class ModelAdapter(PydanticModelAdapter):
    """spectree's pydantic adapter, but its error lists leave out the input. spectree turns the list into JSON
    before our hook runs, and the input of a multipart request holds the uploaded files: with them, that JSON
    fails and a missing field became a 500. Without them, nothing a client sent (an image, a key) can reach a
    log line either."""

    def validation_errors(self, err):
        return err.errors(include_url=False, include_context=False, include_input=False)


def _reject(req, resp, error, instance, adapter) -> None:
    """spectree's hook after request validation: a request the models refuse is answered in the project's error
    envelope (errors.py) with the project's codes, instead of spectree's own 422 list."""
    if error is not None:
        raise rejection(req, adapter.validation_errors(error))


def _check_answer(req, resp, error, instance, adapter) -> None:
    """spectree's hook after response validation: its own answer to an off-contract body would be a bare list of
    pydantic errors; raising instead gives the logged 500 of errors.py."""
    if error is not None:
        raise ResponseOffContract(f"{req.method} {req.path}: {adapter.validation_errors(error)}")


spec = SpecTree(
    "flask",
    model_adapter=ModelAdapter(),
    title="CAPTCHA OCR API",
    version=__version__,
    description="Reads text captchas with a CNN + BiLSTM + CTC model. Every error is JSON: "
    '{"success": false, "error": {"code": "...", "message": "..."}}.',
    # Only the views declared with spec.validate: not /openapi.json, /docs or the static route.
    mode="strict",
    security_schemes=[
        # SecuritySchemeData, not the plain dict of spectree's README: 3.0.0 keeps a dict as it is and then fails
        # to render it.
        SecurityScheme(name="ApiKey", data=SecuritySchemeData(type="apiKey", name="X-API-Key", field_in="header")),
    ],
    # Component names as the models are called (the default appends a hash of the module path).
    naming_strategy=lambda model: model.__name__,
    nested_naming_strategy=lambda _parent, child: child,
    annotations=False,  # the views read the request themselves; nothing to inject as arguments
    before=_reject,
    after=_check_answer,
    # The status spectree documents for a refused request: 400, as _reject answers (each view declares its own
    # 400 model, which spectree keeps, instead of adding its 422 list).
    validation_error_status=400,
)


docs = Blueprint("docs", __name__)  # public: security.PUBLIC_ENDPOINTS


@docs.get("/openapi.json")
@limiter.exempt
def openapi_json():
    return spec.spec


@docs.get("/docs")
@limiter.exempt
def swagger_ui():
    # spectree's own page: Swagger UI loaded from the unpkg CDN (spectree's default; its "offline" extra would
    # inline several MB of JavaScript). A relative URL keeps working behind a proxy that adds a path prefix.
    page = spec.config.page_templates["swagger"].format(
        spec_url="openapi.json", spec_path="docs", **spec.config.swagger_oauth2_config()
    )
    return page, 200, {"Content-Type": "text/html; charset=utf-8"}
