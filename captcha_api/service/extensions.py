"""Flask extensions, created here and bound to the app in the factory."""

from __future__ import annotations

import hashlib

from flask import current_app, g
from flask_cors import CORS
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address


def rate_limit_key() -> str:
    """With API keys configured, limits follow the key (checked before the limiter runs; hashed, so no key reaches
    the limiter's storage). Open, they follow the client address alone: a key header the client makes up must not
    buy it a fresh allowance."""
    key = g.get("api_key")  # set by security.py once the key is checked, wherever the request carried it
    if key and not current_app.config["SETTINGS"].open_access:
        return "key:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:24]
    return client_address()


def client_address() -> str:
    return "addr:" + (get_remote_address() or "unknown")


# The scope of the allowance of images that /predict, /predict-batch and the compatible APIs' task creation share.
IMAGES_SCOPE = "images"

limiter = Limiter(key_func=rate_limit_key)
cors = CORS()
