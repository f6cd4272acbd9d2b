"""The HTTP endpoints: each takes its validated request model (request_models.py), asks the recognizer, and answers."""

from __future__ import annotations

from collections import Counter

from flask import Blueprint, current_app, jsonify, request
from spectree import Response

from .. import __version__
from ..core.decoding import Constraints
from ..core.errors import CaptchaError, InvalidParameter
from ..core.preprocess import DecodeBudget
from ..core.runtime import CONFIDENCE_DIGITS
from . import response_models as s
from .errors import FeedbackUnavailable, UnsupportedMediaType, error_body
from .extensions import IMAGES_SCOPE, limiter
from .observability import context
from .openapi import API_KEY, spec
from .request_models import (
    BatchForm,
    BatchJson,
    Options,
    PredictForm,
    PredictJson,
    ReportJson,
    batch_length,
    options,
)
from .security import HEADER as API_KEY_HEADER

bp = Blueprint("api", __name__)
MODEL_VERSION_HEADER = "X-Model-Version"


def _settings():
    return current_app.config["SETTINGS"]


def _models():
    return current_app.extensions["models"]


def _validated():
    """The request's body model, as spectree validated it (PredictJson, PredictForm, BatchJson or BatchForm), and
    its decoding options (the query string's win over the body's)."""
    body = request.context.json if request.context.json is not None else request.context.form
    return body, options(request.context.query, body)


def _recognizer_and_constraints(given: dict):
    """The model a request asks for (else the default) and its decoding constraints, checked against that model."""
    recognizer = _models().get(given.get("model"))
    if "charset" not in given and "length" not in given:
        return recognizer, None
    try:
        constraints = Constraints.parse(given.get("charset"), given.get("length"))
        constraints.check(recognizer.alphabet)
    except ValueError as exc:
        raise InvalidParameter(str(exc)) from None
    return recognizer, constraints


def _describe(name: str, recognizer) -> dict:
    meta = recognizer.metadata
    return {
        "name": name,
        "version": recognizer.version,
        "runtime": recognizer.runtime.name,
        "image_size": [meta.input_height, meta.input_width],
        "max_sequence_length": meta.max_length,
        "min_sequence_length": meta.min_length,
        "alphabet": meta.alphabet,
        "min_confidence": meta.min_confidence,
        "accuracy": meta.accuracy,
        # Where it was published from is the operator's business, not every API key holder's.
        "published": {k: v for k, v in meta.published.items() if k != "from"},
    }


def _reading(reading, details: bool = False) -> dict:
    """A reading's fields in an answer; with `details`, each character's confidence and the runner-up."""
    fields = {"prediction": reading.text, "confidence": round(reading.confidence, CONFIDENCE_DIGITS)}
    if details:
        second = reading.runner_up
        fields["details"] = {
            "characters": [
                {"char": char, "confidence": round(confidence, CONFIDENCE_DIGITS)}
                for char, confidence in zip(reading.text, reading.char_confidences)
            ],
            "runner_up": None
            if second is None
            else {"prediction": second.text, "confidence": round(second.confidence, CONFIDENCE_DIGITS)},
        }
    return fields


def _judged(recognizer, reading, constraints, given: dict) -> CaptchaError | None:
    """The error a reading is refused with (unreadable, low_confidence), carrying the reading; None to answer it."""
    refusal = recognizer.verdict(reading, constraints, given.get("min_confidence"))
    if refusal is not None:
        refusal.fields = _reading(reading, given.get("details", False))
    return refusal


def _answer(body: dict, recognizer):
    """A reading's answer, with the version of the model that read it (MODEL_VERSION_HEADER)."""
    response = jsonify(body)
    response.headers[MODEL_VERSION_HEADER] = recognizer.version
    return response


def _client_key() -> str:
    """Whose readings these are, for the feedback store: only the client that read an image may report it."""
    return request.headers.get(API_KEY_HEADER, "")


def _remember(given: dict, recognizer, readings) -> None:
    """Keep the images of these readings briefly, for a report of a wrong one (feedback.py)."""
    feedback = current_app.extensions.get("feedback")
    if feedback is None:
        return
    name = given.get("model") or _models().default_name
    request_id = context.current().request_id
    for index, image, reading in readings:
        feedback.remember(_client_key(), request_id, index, name, recognizer.version, reading.text, image)


def _limit(key: str):
    # Flask-Limiter parses the string even for an exempt request, so an unset limit still needs a valid one.
    return lambda: getattr(_settings(), key) or "1/second"


def _limit_off(key: str):
    return lambda: not getattr(_settings(), key)


def _images() -> int:
    """What a request costs against CAPTCHA_RATE_LIMIT: its images (a batch is refused past CAPTCHA_MAX_BATCH)."""
    if request.endpoint != "api.predict_batch":
        return 1
    return max(1, min(batch_length(request), _settings().max_batch))


# /predict and /predict-batch draw on one allowance of images: 64 images cost the same sent one by one or at once.
images_limit = limiter.shared_limit(
    _limit("rate_limit"), scope=IMAGES_SCOPE, cost=_images, exempt_when=_limit_off("rate_limit")
)


# The error answers of the views that read images (response_models.py: each with the codes its status carries).
IMAGE_ERRORS = s.responses(
    s.BadRequest,
    s.Unauthorized,
    s.NotFound,
    s.RequestTimeout,
    s.TooLarge,
    s.UnsupportedMedia,
    s.Unreadable,
    s.RateLimited,
    s.Unavailable,
    # gunicorn.conf.py lets every documented query through (limit_request_line); only a longer one gets here.
    HTTP_414=(None, "The request line is over 8190 bytes: answered by gunicorn, before the app, not in JSON"),
)


@bp.get("/health")
@limiter.exempt
# A view without a request model never fails validation; naming one of its own statuses as the validation error
# status keeps spectree from documenting a 422 it cannot answer.
@spec.validate(resp=Response(HTTP_200=s.Health, HTTP_503=s.Health), validation_error_status=503, operation_id="health")
def health():
    """Liveness and readiness: 200 once a model is loaded, 503 before.

    No API key and no rate limit."""
    loaded = _models().default is not None
    body = {"status": "ok" if loaded else "unavailable", "model_loaded": loaded, "version": __version__}
    return jsonify(body), 200 if loaded else 503


@bp.get("/info")
@limiter.exempt
@spec.validate(
    resp=Response(HTTP_200=s.Info, HTTP_401=s.Unauthorized, HTTP_429=s.RateLimited, HTTP_503=s.Unavailable),
    validation_error_status=401,
    security=API_KEY,
    operation_id="info",
)
def info():
    """What is served: the model, its alphabet and measured accuracy, and the endpoints."""
    models = _models()
    default = models.get()
    return jsonify(
        {
            "name": "CAPTCHA OCR API",
            "version": __version__,
            "description": "Reads text captchas with a CNN + BiLSTM + CTC model",
            "model": _describe(models.default_name, default),
            "models": [
                {**_describe(name, recognizer), "default": name == models.default_name}
                for name, recognizer in sorted(models.recognizers.items())
            ],
            "not_served": [{"name": name, "reason": reason} for name, reason in sorted(models.not_served.items())],
            "endpoints": {
                "GET /health": "liveness and model readiness",
                "GET /info": "this description",
                "GET /openapi.json": "the OpenAPI 3 description of these endpoints",
                "GET /docs": "interactive documentation (Swagger UI)",
                "POST /predict": "one image: multipart field 'image', or JSON {'image': base64 or data URL}",
                "POST /predict-batch": "several images: JSON {'images': [...]} or multipart fields 'images'",
                "POST /report": "a wrong reading: JSON {'request_id': X-Request-ID of its answer, 'text': the right "
                "text}, stored for training",
                "options": "model (a name from 'models'), charset (allowed characters), length (5 or 4-6), "
                "min_confidence (0 to 1: refuse a less sure reading with 422 low_confidence), details (1: per-"
                "character confidences and the runner-up): in the query string, the JSON body or multipart fields",
            },
            "limits": {
                "max_image_bytes": _settings().max_image_bytes,
                "max_batch": _settings().max_batch,
                "rate_limit": _settings().rate_limit or None,
            },
        }
    )


@bp.post("/predict")
@images_limit
@spec.validate(
    query=Options,
    json=PredictJson,
    form=PredictForm,
    resp=Response(HTTP_200=s.Reading, **IMAGE_ERRORS),
    security=API_KEY,
    operation_id="predict",
)
def predict():
    """Read one captcha.

    The image comes as a multipart file in field 'image', or as JSON {"image": "<base64 or data URL>"}
    ('image_base64' and 'text' are accepted as aliases). The options model, charset, length, min_confidence and
    details may be given in the query string, the JSON body or multipart fields; the query string wins.

    A reading with no characters, or (without a length option) a length outside the model's, is answered 422
    unreadable; one less sure than min_confidence (the request's, else the model's) 422 low_confidence. Both
    carry the reading: the client may refresh the captcha, or fall back to another reader."""
    body, given = _validated()
    recognizer, constraints = _recognizer_and_constraints(given)
    data = body.image_bytes(_settings().max_image_bytes)
    details = given.get("details", False)
    reading = recognizer.read(data, constraints, details)
    _remember(given, recognizer, [(0, data, reading)])  # a refused reading may be reported too
    refusal = _judged(recognizer, reading, constraints, given)
    if refusal is not None:
        raise refusal
    return _answer({"success": True, **_reading(reading, details)}, recognizer)


@bp.post("/predict-batch")
@images_limit
@limiter.limit(_limit("batch_rate_limit"), exempt_when=_limit_off("batch_rate_limit"))
@spec.validate(
    query=Options,
    json=BatchJson,
    form=BatchForm,
    resp=Response(HTTP_200=s.BatchReading, **{k: v for k, v in IMAGE_ERRORS.items() if k != "HTTP_422"}),
    security=API_KEY,
    operation_id="predict_batch",
)
def predict_batch():
    """Read several captchas in one model call; a bad image fails only its own entry.

    JSON {"images": [...]} with base64 strings or data URLs, or multipart files, one field 'images' each. Options
    as for /predict; a reading /predict would refuse (unreadable, low_confidence) fails its own entry, with the
    reading in its error."""
    body, given = _validated()
    recognizer, constraints = _recognizer_and_constraints(given)
    settings = _settings()
    items = body.entries(settings.max_image_bytes, settings.max_batch)
    results = []
    failed = Counter()
    budget = DecodeBudget(settings.max_batch_pixels)
    read = []
    details = given.get("details", False)
    for index, outcome in enumerate(recognizer.read_each(items, constraints, budget, details)):
        if not isinstance(outcome, CaptchaError):
            read.append((index, items[index], outcome))
            outcome = _judged(recognizer, outcome, constraints, given) or outcome
        if isinstance(outcome, CaptchaError):
            error = error_body(outcome.code, outcome.message, getattr(outcome, "fields", None))["error"]
            results.append({"index": index, "success": False, "error": error})
            failed[outcome.code] += 1
        else:
            results.append({"index": index, "success": True, **_reading(outcome, details)})
    _remember(given, recognizer, read)
    record = context.current()  # for the metrics, when they are on
    record.batch_size, record.image_errors = len(items), failed
    return _answer({"success": True, "total": len(results), "results": results}, recognizer)


@bp.post("/report")
@images_limit
@spec.validate(
    json=ReportJson,
    resp=Response(
        HTTP_200=s.ReportStored,
        **s.responses(
            s.ReportBadRequest,
            s.Unauthorized,
            s.ReportNotFound,
            s.RequestTimeout,
            s.ReportTooLarge,
            s.ReportUnsupportedMedia,
            s.RateLimited,
            s.ReportUnavailable,
            s.FeedbackFull,
        ),
    ),
    security=API_KEY,
    operation_id="report",
)
def report():
    """Report a wrong reading, with the right text.

    JSON {"request_id": "<X-Request-ID of the answer>", "text": "<what the image says>"} (and "index" for an image
    of a batch). The image of a recent reading (kept for CAPTCHA_FEEDBACK_KEEP_SECONDS) is stored with the text in
    the feedback folder, in the layout `captcha-ocr train --data` reads. Counts as one image against the rate
    limit."""
    body = request.context.json
    if body is None:
        raise UnsupportedMediaType(f"send application/json, not {request.mimetype or 'no content type'}")
    feedback = current_app.extensions.get("feedback")
    if feedback is None:
        raise FeedbackUnavailable("reports are off on this service (CAPTCHA_FEEDBACK_DIR=none)")
    stored = feedback.report(_client_key(), body.request_id, body.index, body.text, _models())
    return jsonify({"success": True, **stored})
