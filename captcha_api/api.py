"""The HTTP endpoints: they parse, delegate to the recognizer and answer."""

from __future__ import annotations

import numpy as np
from flask import Blueprint, current_app, jsonify, request

from . import __version__
from .errors import error_body
from .extensions import limiter
from .inputs import batch_images, single_image
from .ocr.errors import CaptchaError, ModelNotReady
from .ocr.preprocess import preprocess

bp = Blueprint("api", __name__)


def _settings():
    return current_app.config["SETTINGS"]


def _recognizer():
    recognizer = current_app.extensions.get("recognizer")
    if recognizer is None:
        raise ModelNotReady("no model is loaded")
    return recognizer


def _reading(reading) -> dict:
    return {"prediction": reading.text, "confidence": round(reading.confidence, 4)}


def _predict_limit() -> str:
    return _settings().rate_limit or "1000000/second"


def _batch_limit() -> str:
    return _settings().batch_rate_limit or "1000000/second"


def _limits_off_for(key: str):
    return lambda: not getattr(_settings(), key)


@bp.get("/health")
@limiter.exempt
def health():
    """Liveness and readiness: 200 once a model is loaded, 503 before."""
    loaded = current_app.extensions.get("recognizer") is not None
    body = {"status": "ok" if loaded else "unavailable", "model_loaded": loaded, "version": __version__}
    return jsonify(body), 200 if loaded else 503


@bp.get("/info")
@limiter.exempt
def info():
    """What is served: the model, its alphabet and measured accuracy, and the endpoints."""
    recognizer = _recognizer()
    meta = recognizer.metadata
    return jsonify(
        {
            "name": "CAPTCHA OCR API",
            "version": __version__,
            "description": "Reads text captchas with a CNN + BiLSTM + CTC model",
            "model": {
                "name": meta.name,
                "path": str(recognizer.path),
                "runtime": recognizer.runtime.name,
                "image_size": [meta.input_height, meta.input_width],
                "max_sequence_length": meta.max_length,
                "alphabet": meta.alphabet,
                "accuracy": meta.accuracy,
            },
            "endpoints": {
                "GET /health": "liveness and model readiness",
                "GET /info": "this description",
                "POST /predict": "one image: multipart field 'image', or JSON {'image': base64 or data URL}",
                "POST /predict-batch": "several images: JSON {'images': [...]} or multipart fields 'images'",
            },
            "limits": {
                "max_image_bytes": _settings().max_image_bytes,
                "max_batch": _settings().max_batch,
                "rate_limit": _settings().rate_limit or None,
            },
        }
    )


@bp.post("/predict")
@limiter.limit(_predict_limit, exempt_when=_limits_off_for("rate_limit"))
def predict():
    """Read one captcha."""
    recognizer = _recognizer()
    data = single_image(request, _settings().max_image_bytes)
    reading = recognizer.read(data)
    return jsonify({"success": True, **_reading(reading)})


@bp.post("/predict-batch")
@limiter.limit(_batch_limit, exempt_when=_limits_off_for("batch_rate_limit"))
def predict_batch():
    """Read several captchas in one model call; a bad image fails only its own entry."""
    recognizer = _recognizer()
    settings = _settings()
    items = batch_images(request, settings.max_image_bytes, settings.max_batch)
    results: list[dict] = [{} for _ in items]
    arrays, positions = [], []
    for index, item in enumerate(items):
        try:
            if isinstance(item, CaptchaError):
                raise item
            arrays.append(preprocess(item, recognizer.max_pixels))
            positions.append(index)
        except CaptchaError as exc:
            results[index] = {"index": index, "success": False, "error": error_body(exc.code, exc.message)["error"]}
    if arrays:
        for index, reading in zip(positions, recognizer.read_arrays(np.stack(arrays))):
            results[index] = {"index": index, "success": True, **_reading(reading)}
    return jsonify({"success": True, "total": len(results), "results": results})
