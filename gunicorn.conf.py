"""gunicorn settings, all from CAPTCHA_* variables (validated with the app's own settings). The model loads in
each worker (no preload): a worker that is recycled or killed comes back with its own copy."""

import glob
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile

from gunicorn.arbiter import Arbiter
from gunicorn.glogging import Logger

from captcha_api.service.config import PREFIX, ConfigError, is_loopback, load_settings
from captcha_api.service.observability.logs import make_formatter
from captcha_api.service.worker import StalledClientFilter

# Validate CAPTCHA_* once in the master, so a bad setting stops start-up with its message: one line, no traceback.
# (A reload reads this file again only once its new workers are known to start: _checked_reload below.)
try:
    _settings = load_settings()
except ConfigError as error:
    sys.exit(f"error: {error}")


def _address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


bind = [_address(_settings.host, _settings.port)]
if _settings.metrics_port:
    # A second listener served by the same workers; the app answers /metrics there and nothing else.
    bind.append(_address(_settings.metrics_bind_host, _settings.metrics_port))
workers = _settings.workers
# gevent workers: each connection is a greenlet, so a client that is slow to send, or sends nothing, holds a few KB
# and a socket, not a worker (a sync worker was held until `timeout` killed it: two such clients stopped the
# service). Every wait for a client is bounded: headers within `keepalive` seconds (gunicorn's gevent worker), the
# body within CAPTCHA_BODY_TIMEOUT (captcha_api/service/guard.py), any one read or write of a connection (an answer
# the client does not read) about as long (captcha_api/service/worker.py). Reading an image and the model are CPU
# work, run one at a time per worker, with bounded cost (captcha_api/core/preprocess.py). A worker holds at most
# `worker_connections` connections.
worker_class = "captcha_api.service.worker.CaptchaWorker"
worker_connections = _settings.worker_connections
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
# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), which every instance on the
# machine would share: off unless CAPTCHA_CONTROL_SOCKET names this instance's own.
control_socket_disable = not _settings.control_socket
if _settings.control_socket:
    control_socket = _settings.control_socket
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
        self.error_log.addFilter(StalledClientFilter())
        if _settings.log_format == "json":
            for handler in self.error_log.handlers:
                handler.setFormatter(make_formatter("json"))


logger_class = CaptchaLogger

_max_rss_kb = _settings.max_worker_rss_mb * 1024


def post_fork(server, worker):
    """Tell the app whether this worker is of the first generation: one of those the master started with, before any
    reload (wsgi.py: a default model that cannot be served stops the service at start-up, but never one that is
    already serving; a worker added later by TTIN, recycled, or started by a reload is never of the first)."""
    first = worker.age <= server.cfg.settings["workers"].get() and not getattr(server, "captcha_reloaded", False)
    os.environ["CAPTCHA_FIRST_WORKERS"] = "1" if first else "0"


def post_worker_init(worker):
    """A worker over the memory cap right after loading its models would be recycled after every request, each fresh
    worker as big as the last (a Keras model brings TensorFlow: about 620 MB): said once here, and the cap is off for
    this worker instead."""
    worker.captcha_max_rss_kb = _max_rss_kb
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if _max_rss_kb and peak_kb > _max_rss_kb:
        worker.log.error(
            "worker %s uses %.0f MB once its models are loaded, over %sMAX_WORKER_RSS_MB=%d: the memory cap is off "
            "for it (recycling would not help); raise the cap or serve fewer or smaller models",
            worker.pid,
            peak_kb / 1024,
            PREFIX,
            _settings.max_worker_rss_mb,
        )
        worker.captcha_max_rss_kb = 0


def post_request(worker, req, environ, resp):
    """The memory cap (CAPTCHA_MAX_WORKER_RSS_MB, 0: off): a worker whose peak resident memory has passed it
    finishes its requests, exits, and the master starts a fresh one, as a process manager's memory restart would,
    without dropping a request. The peak (ru_maxrss, the kernel's high-water mark), not the memory in use now: a
    request that took a worker to 600 MB and gave it back before this check still shows what the worker can reach."""
    cap_kb = getattr(worker, "captcha_max_rss_kb", _max_rss_kb)
    if not cap_kb or not worker.alive:
        return
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if peak_kb > cap_kb:
        worker.log.warning(
            "worker %s reached %.0f MB, over CAPTCHA_MAX_WORKER_RSS_MB=%d: recycling it",
            worker.pid,
            peak_kb / 1024,
            _settings.max_worker_rss_mb,
        )
        worker.alive = False


# Run in a process of its own before a reload: the app as a new worker would build it (wsgi.py exits non-zero when
# it cannot: a default model that does not load, a setting that does not hold).
RELOAD_CHECK = "import wsgi"
# The master waits for the check (it handles no other signal meanwhile): loading the models takes a few seconds.
RELOAD_CHECK_SECONDS = 30


def _new_workers_start() -> tuple[bool, str]:
    """Whether a worker started now would serve, and what it said when it would not."""
    env = {**os.environ, "CAPTCHA_FIRST_WORKERS": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # the check is no worker: its metric files would count as one
    try:
        check = subprocess.run(
            [sys.executable, "-c", RELOAD_CHECK],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=RELOAD_CHECK_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False, f"the check did not finish within {RELOAD_CHECK_SECONDS} s"
    except Exception as error:  # noqa: BLE001 - no process (fork refused, ...): an error here would stop the master
        return False, f"the check could not run: {error}"
    lines = [line for line in check.stdout.decode("utf-8", "replace").splitlines() if line.strip()]
    critical = [line for line in lines if "CRITICAL" in line or line.startswith("error")]
    return check.returncode == 0, (critical or lines or ["no message"])[0][-500:]


def _checked_reload(arbiter):
    """gunicorn's reload (kill -HUP) replaces every worker at once, and stops the old ones as soon as the new ones
    are spawned, whether or not those can serve: a broken default model copied in by hand and a reload took the
    service down. So the new workers' start is tried first, in a process of its own, before gunicorn reads this file
    again or touches a worker; if it fails, the reload is refused and the running workers keep serving."""
    ok, reason = _new_workers_start()
    if not ok:
        arbiter.log.error(
            "reload refused: new workers could not start (%s); the running workers keep serving: fix it and reload",
            reason,
        )
        return
    arbiter.captcha_reloaded = True  # post_fork: no worker started from now on is of the first generation
    _gunicorn_reload(arbiter)


# This file is read again on each reload: the reload is wrapped once, by its first reading.
if not getattr(Arbiter.reload, "captcha_checked", False):
    _gunicorn_reload = Arbiter.reload
    _checked_reload.captcha_checked = True
    Arbiter.reload = _checked_reload


def when_ready(server):
    """Checks on the addresses gunicorn really listens on, however they were given (CAPTCHA_HOST, -b, --bind in
    GUNICORN_CMD_ARGS): without API keys the service may listen on loopback only, unless CAPTCHA_ALLOW_OPEN."""
    public = [str(listener) for listener in server.LISTENERS if not _is_local(listener.sock)]
    if _settings.open_access and public and not _settings.allow_open:
        server.log.error(
            "no API key is configured and the service would listen on %s, which is not a loopback address: set "
            "%sAPI_KEYS, bind to 127.0.0.1, or set %sALLOW_OPEN=true to run open on purpose",
            ", ".join(public),
            PREFIX,
            PREFIX,
        )
        sys.exit(1)
    if _settings.open_access:
        server.log.warning(
            "no API key configured: the service is open to anyone who can reach %s",
            ", ".join(str(listener) for listener in server.LISTENERS),
        )
    if _settings.ratelimit_storage_uri.startswith("memory") and _settings.workers > 1:
        effective = _effective_limits(_settings.workers)
        if effective:
            server.log.warning(
                "rate limits are counted in each of the %d workers (%sRATELIMIT_STORAGE_URI=memory://), so a client "
                "may get up to %s, and a recycled worker counts from zero; a redis:// storage makes them exact",
                _settings.workers,
                PREFIX,
                "; ".join(effective),
            )


def _effective_limits(workers: int) -> list[str]:
    """'CAPTCHA_RATE_LIMIT=600/minute: 1200/minute' for each limit that is on, as counted by `workers` apart."""
    from limits import parse_many

    described = []
    names = ("rate_limit", "batch_rate_limit") + (() if _settings.open_access else ("auth_failure_limit",))
    for name in names:
        value = getattr(_settings, name)
        if value:
            each = ", ".join(
                f"{item.amount * workers} per {item.multiples} {item.GRANULARITY.name}" for item in parse_many(value)
            )
            described.append(f"{PREFIX}{name.upper()}={value}: {each}")
    return described


def _is_local(sock) -> bool:
    if sock.family == getattr(socket, "AF_UNIX", None):
        return True  # a Unix socket: reachable on this machine only, as its file permissions allow
    return is_loopback(sock.getsockname()[0])


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
