"""gunicorn settings, all from CAPTCHA_* variables (validated with the app's own settings). The model loads in
each worker (no preload): a worker that is recycled or killed comes back with its own copy."""

import psutil

from captcha_api.config import load_settings

# Validate CAPTCHA_* once in the master, so a bad setting stops start-up with its message.
_settings = load_settings()

_host = f"[{_settings.host}]" if ":" in _settings.host else _settings.host
bind = f"{_host}:{_settings.port}"
workers = _settings.workers
threads = _settings.worker_threads
timeout = _settings.timeout
graceful_timeout = _settings.graceful_timeout
keepalive = _settings.keepalive
# Recycle each worker after this many requests (0: never); the jitter keeps workers from restarting together.
max_requests = _settings.max_requests
max_requests_jitter = _settings.max_requests_jitter
wsgi_app = "wsgi:app"
# The longest request line the API documents: three query options of up to 200 characters, each character up to
# 12 bytes percent-encoded, is 7.2 KB. gunicorn's default of 4094 answered it with its own HTML 414 instead of the
# app's JSON; 8190 is gunicorn's maximum (and fits nginx's default 8k buffers).
limit_request_line = 8190
preload_app = False
# The app writes one access line per request itself (with latency and request id); gunicorn logs the rest.
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()

_max_rss_bytes = _settings.max_worker_rss_mb * 1024 * 1024


def post_worker_init(worker):
    worker.process_info = psutil.Process()


def post_request(worker, req, environ, resp):
    """The memory cap (CAPTCHA_MAX_WORKER_RSS_MB, 0: off): a worker that has grown past it finishes this request,
    exits, and the master starts a fresh one, as a process manager's memory restart would, without dropping
    a request."""
    if not _max_rss_bytes:
        return
    rss = worker.process_info.memory_info().rss
    if rss > _max_rss_bytes:
        worker.log.warning(
            "worker %s uses %.0f MB, over CAPTCHA_MAX_WORKER_RSS_MB=%d: recycling it",
            worker.pid,
            rss / 2**20,
            _settings.max_worker_rss_mb,
        )
        worker.alive = False
