"""Request validation and the OpenAPI description, both by spectree from request_models.py and response_models.py.

GET /openapi.json is the document spectree builds from the views' declarations; GET /docs is a Swagger UI page for
it, with Swagger UI's files served by the service itself (GET /docs/<version>/<name>). All are public and not rate
limited, like /health."""

from __future__ import annotations

import hashlib
import html
import importlib.metadata
import importlib.resources

import flask
from flask import Blueprint, abort, send_file
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from spectree.model_adapter.pydantic_adapter import PydanticModelAdapter
from spectree.plugins.base import Context
from spectree.plugins.flask_plugin import FlaskPlugin
from spectree.plugins.werkzeug_utils import flask_response_unpack
from spectree.utils import get_multidict_items

from .. import __version__
from .extensions import limiter
from .request_models import check_media_type, refusal

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


class Plugin(FlaskPlugin):
    """spectree's Flask plugin (3.0.0, pinned) without two costs it adds to every request and this API does not
    need; together they were about half of the 0.1 ms spectree added to a /predict."""

    def request_validation(self, request, query, json, form, headers, cookies):
        # As spectree's, but the headers and cookies are read only for a view that declares a model for them (none
        # does): spectree copied every header into a dict on every request.
        has_data = request.method not in ("GET", "DELETE")
        use_json = json and has_data and request.mimetype not in self.FORM_MIMETYPE
        use_form = form and has_data and request.mimetype in self.FORM_MIMETYPE
        validate = self.model_adapter.validate_obj
        request.context = Context(
            validate(query, get_multidict_items(request.args, query)) if query else None,
            validate(json, request.get_json(silent=True) or {}) if use_json else None,
            validate(form, self.fill_form(request)) if use_form else None,
            validate(headers, dict(request.headers)) if headers else None,
            validate(cookies, get_multidict_items(request.cookies)) if cookies else None,
        )

    def validate_response(self, resp, resp_model, skip_validation, force_resp_serialize):
        # The views answer with jsonify(...), with or without a status: check that body against the model of its
        # status and hand the answer on as it is. spectree rebuilt every answer (a new Response, each header copied)
        # to allow for views that return model instances, which these never do.
        payload, status, _ = flask_response_unpack(resp)
        if skip_validation or resp_model is None or not isinstance(payload, flask.Response):
            return super().validate_response(resp, resp_model, skip_validation, force_resp_serialize)
        model = resp_model.find_model(payload.status_code if status == 200 else status)
        if model is not None:
            try:
                self.model_adapter.validate_json(model, payload.get_data())
            except self.model_adapter.validation_error as err:
                return resp, err  # _check_answer raises: a logged 500
        return resp, None


def _reject(req, resp, error, instance, adapter) -> None:
    """spectree's hook after request validation: a request the models refuse is answered in the project's error
    envelope (errors.py) with the project's codes, instead of spectree's own 422 list."""
    if error is None:
        if req.context.form is not None:
            # A urlencoded form is validated as a form too, and could pass one without files: only multipart and
            # JSON bodies are read.
            check_media_type(req)
        return
    _forget_causes(error)
    raise refusal(req, error.title, adapter.validation_errors(error))


def _forget_causes(error) -> None:
    """Drop the tracebacks that tie a refused request's frames (its body included) into reference cycles.

    A validator's ValueError is kept by the ValidationError inside pydantic-core, where the garbage collector does
    not look; its traceback holds the frames of the whole request, and spectree's frame holds the ValidationError:
    a cycle the collector never frees (each refused body stayed for good: 18 KB for `{}`, 30 MB for a 15 MB body).
    The ValidationError's own traceback makes a cycle the collector does free, but only at its next full pass,
    after many such bodies have piled up. Neither traceback is used: the answer is built from the error list."""
    for detail in error.errors(include_url=False, include_input=False):
        cause = (detail.get("ctx") or {}).get("error")
        if isinstance(cause, BaseException):
            cause.__traceback__ = None
    error.__traceback__ = None


def _check_answer(req, resp, error, instance, adapter) -> None:
    """spectree's hook after response validation: its own answer to an off-contract body would be a bare list of
    pydantic errors; raising instead gives the logged 500 of errors.py."""
    if error is not None:
        raise ResponseOffContract(f"{req.method} {req.path}: {adapter.validation_errors(error)}")


def _documented_only(req, resp, error, instance, adapter) -> None:
    """The hooks of a view spectree documents but does not validate: it parses its own request."""


def documented(**declaration):
    """spec.validate for a view that parses its own request (compat/, whose clients send parameters in every way
    HTTP allows): in /openapi.json with its models, with neither validation nor its hooks."""
    return spec.validate(skip_validation=True, before=_documented_only, after=_documented_only, **declaration)


spec = SpecTree(
    "flask",
    backend=Plugin,
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


# Swagger UI's own files come from the pinned flask-swagger-ui package (requirements.txt; we use its files, not its
# blueprint): read from the installed package, not committed here, nor loaded by the browser from a CDN, so /docs
# works offline. Its release number is the Swagger UI release it ships.
SWAGGER_UI_DIST = importlib.resources.files("flask_swagger_ui") / "dist"
SWAGGER_UI_FILES = {  # the only names served: no listing, no other path
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "index.css": "text/css",  # the page's margin and background
    "favicon-32x32.png": "image/png",
}
# Swagger UI's start, in a file rather than an inline script, so that the page's CSP can refuse every inline script.
INIT_JS = """window.ui = SwaggerUIBundle({
  url: "openapi.json",  // relative to /docs: still right behind a proxy that adds a path prefix
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null  // no badge image from validator.swagger.io
});
"""
# In every asset URL: a new Swagger UI release or a changed INIT_JS gets new URLs, so a browser never mixes a page
# with files cached for a day from an older release.
ASSET_VERSION = f"{importlib.metadata.version('flask-swagger-ui')}-{hashlib.sha256(INIT_JS.encode()).hexdigest()[:8]}"
ASSET_MAX_AGE = 86400  # seconds
# What Swagger UI needs, nothing more: its script and styles from here (React sets its inline styles through the
# DOM, which style-src does not restrict), the icons its CSS holds as data: URLs, and fetches of /openapi.json and
# of "Try it out" to this origin.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
DOCS_PAGE = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(spec.config.title)}</title>
<link rel="stylesheet" href="docs/{ASSET_VERSION}/index.css">
<link rel="stylesheet" href="docs/{ASSET_VERSION}/swagger-ui.css">
<link rel="icon" type="image/png" href="docs/{ASSET_VERSION}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/{ASSET_VERSION}/swagger-ui-bundle.js"></script>
<script src="docs/{ASSET_VERSION}/swagger-init.js"></script>
</body>
</html>
"""


@docs.get("/docs")
@limiter.exempt
def swagger_ui():
    # Relative asset URLs ("docs/..." from /docs): right behind a proxy that adds a path prefix too.
    return DOCS_PAGE, 200, {"Content-Type": "text/html; charset=utf-8", "Content-Security-Policy": DOCS_CSP}


@docs.get("/docs/<version>/<name>")
@limiter.exempt
def swagger_asset(version: str, name: str):
    if version != ASSET_VERSION:
        abort(404)  # an older page's URL: a 404 rather than today's file cached for a day under that name
    if name == "swagger-init.js":
        response = flask.Response(INIT_JS, mimetype="text/javascript")
        response.cache_control.public = True
        response.cache_control.max_age = ASSET_MAX_AGE
    elif name in SWAGGER_UI_FILES:
        response = send_file(SWAGGER_UI_DIST / name, mimetype=SWAGGER_UI_FILES[name], max_age=ASSET_MAX_AGE)
    else:
        abort(404)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response
