"""gunicorn settings from the environment. The model loads in each worker (no preload)."""

import os

from captcha_api.config import load_settings

# Validate CAPTCHA_* once in the master, so a bad setting stops start-up with its message.
_settings = load_settings()

_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host
bind = os.environ.get("GUNICORN_BIND", f"{_host}:{_settings.port}")
workers = int(os.environ.get("CAPTCHA_WORKERS", "2"))
threads = int(os.environ.get("CAPTCHA_WORKER_THREADS", "1"))
timeout = int(os.environ.get("CAPTCHA_TIMEOUT", "30"))
graceful_timeout = int(os.environ.get("CAPTCHA_GRACEFUL_TIMEOUT", "20"))
keepalive = int(os.environ.get("CAPTCHA_KEEPALIVE", "5"))
wsgi_app = "wsgi:app"
preload_app = False
# The app writes one access line per request itself (with latency and request id); gunicorn logs the rest.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
