"""Flask extensions, created here and bound to the app in the factory."""

from __future__ import annotations

import hashlib

from flask import request
from flask_cors import CORS
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address


def rate_limit_key() -> str:
    """Limits follow the API key (hashed, so no key reaches the limiter's storage), else the client address."""
    key = request.headers.get("X-API-Key")
    if key:
        return "key:" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:24]
    return "addr:" + (get_remote_address() or "unknown")


limiter = Limiter(key_func=rate_limit_key)
cors = CORS()
