"""gunicorn settings, all from CAPTCHA_* variables (validated with the app's own settings). The model loads in
each worker (no preload): a worker that is recycled or killed comes back with its own copy."""

import glob
import os
import shutil
import tempfile

import psutil
from gunicorn.glogging import Logger

from captcha_api.config import load_settings
from captcha_api.logs import make_formatter

# Validate CAPTCHA_* once in the master, so a bad setting stops start-up with its message.
_settings = load_settings()


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


bind = [_address(_settings.host, _settings.port)]
if _settings.metrics_port:
    # A second listener served by the same workers; the app answers /metrics there and nothing else.
    bind.append(_address(_settings.metrics_bind_host, _settings.metrics_port))
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


class CaptchaLogger(Logger):
    """gunicorn's own lines (booting, exiting, timed-out workers) as JSON too with CAPTCHA_LOG_FORMAT=json, so every
    line the service writes is one JSON object. Only the formatter changes: a logconfig_dict would also switch on
    gunicorn's access log, built for every request and then thrown away."""

    def setup(self, cfg):
        super().setup(cfg)
        if _settings.log_format == "json":
            for handler in self.error_log.handlers:
                handler.setFormatter(make_formatter("json"))


logger_class = CaptchaLogger

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


# Metrics under several workers: prometheus_client's multiprocess mode. Each worker writes its values to files in
# PROMETHEUS_MULTIPROC_DIR and /metrics adds them all up, so a scrape counts every worker whichever one answers.
# The variable must be set before a worker imports prometheus_client, hence here in the master, before the fork.
_MULTIPROC = "PROMETHEUS_MULTIPROC_DIR"
_OWN_DIR = "_CAPTCHA_METRICS_TMPDIR"  # internal: set when the folder is ours to delete at exit


def on_starting(server):
    if _settings.metrics == "off":
        return
    if server.master_pid:
        # A new master started by a USR2 upgrade: the old master's workers still write to the same folder.
        return
    path = os.environ.get(_MULTIPROC)
    if path:
        # Files left by an earlier run would be added to this run's counts: the folder must start empty.
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="captcha-metrics-")
        os.environ[_MULTIPROC] = os.environ[_OWN_DIR] = path
    server.log.info("metrics: the workers' values are kept in %s", path)


def child_exit(server, worker):
    """A dead worker's counters and histograms stay (they are part of the totals); its "live" gauges (workers,
    model info) go."""
    if os.environ.get(_MULTIPROC):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    own = os.environ.get(_OWN_DIR)
    # Not when a USR2 upgrade left a new master running on the same folder (reexec_pid) or we are that new master
    # before it took over (master_pid).
    if own and own == os.environ.get(_MULTIPROC) and not server.reexec_pid and not server.master_pid:
        shutil.rmtree(own, ignore_errors=True)
