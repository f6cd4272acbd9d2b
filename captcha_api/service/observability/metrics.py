"""Prometheus metrics at /metrics (CAPTCHA_METRICS: off, protected, open; CAPTCHA_METRICS_PORT: a listener of its
own).

Under gunicorn every worker is a process with its own counters, and a scrape reaches one worker at random. So
gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR in the master before any worker starts: prometheus_client then keeps
each worker's values in memory-mapped files there, and /metrics adds up the files of every worker, living or dead,
whichever worker answers. Without that variable (the Flask test client, the development server) the values live in
the process and the app's own registry is what /metrics shows.

The recognition core stays free of web code: a Recognizer calls back `on_model_call(seconds, images)` and this
module turns that into the inference histogram.
"""

from __future__ import annotations

import logging
import os

from flask import Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector
from werkzeug.exceptions import NotFound

from ... import __version__
from ..config import is_loopback
from ..extensions import limiter
from . import context

log = logging.getLogger(__name__)
# The *_created series carry no information a scraper uses, and multiprocess mode never has them: without them the
# output is the same with and without gunicorn.
disable_created_metrics()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
ENDPOINT = "metrics"
PORT_KEY = "captcha.listener_port"
# Any other method (a scanner's) is counted as "other", so nobody can mint label values.
METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})
# Requests take milliseconds (p50 2.8 ms over HTTP) and batches up to a second or so.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# One image in the model takes under a millisecond; a batch of 64 tens of them.
INFERENCE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def multiprocess_mode() -> bool:
    """prometheus_client decides this from the same variable when it is first imported."""
    return bool(os.environ.get(MULTIPROC_ENV))


class Metrics:
    """The service's metrics, in a registry of the app's own (so two apps in one process, as in the tests, count
    apart). Labelled children are cached: a request then costs a dict look-up and a few increments."""

    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "captcha_requests",
            "HTTP requests answered, by route, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "captcha_request_duration_seconds",
            "Time to answer a request inside the app, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "captcha_errors",
            "Error answers by code (scope=request), and failed images inside a batch (scope=image)",
            ["code", "scope"],
            registry=r,
        )
        self.inference = Histogram(
            "captcha_inference_duration_seconds",
            "Time in the model (ONNX Runtime or Keras) per request, by model and its version",
            ["model", "version"],
            buckets=INFERENCE_BUCKETS,
            registry=r,
        )
        self.images = Counter(
            "captcha_images", "Images read by the model, by model and its version", ["model", "version"], registry=r
        )
        self.batch_size = Histogram(
            "captcha_batch_size", "Images sent in one /predict-batch request", buckets=BATCH_BUCKETS, registry=r
        )
        # "live" modes: a worker's series go away when the master marks it dead (gunicorn.conf.py's child_exit), so
        # these describe the workers running now. max/sum fold the workers into one series without a pid label.
        self.model_info = Gauge(
            "captcha_model_info",
            "Models served (value 1): name, version, runtime, alphabet size, and whether it is the default",
            ["model", "version", "runtime", "alphabet_size", "default"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.service_info = Gauge(
            "captcha_service_info",
            "The service's version (value 1)",
            ["version"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.workers = Gauge(
            "captcha_workers", "Worker processes serving (1 without gunicorn)", multiprocess_mode="livesum", registry=r
        )
        self._request_children: dict = {}
        self._latency_children: dict = {}
        self._error_children: dict = {}

    def exposition_registry(self) -> CollectorRegistry:
        if not multiprocess_mode():
            return self.registry
        # A registry of its own that reads every worker's files; the live metric objects above only write them.
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry

    def count_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, method, str(status))
        child.inc()
        latency = self._latency_children.get(route)
        if latency is None:
            latency = self._latency_children[route] = self.latency.labels(route)
        latency.observe(seconds)

    def count_error(self, code: str, scope: str, amount: int = 1) -> None:
        key = (code, scope)
        child = self._error_children.get(key)
        if child is None:
            child = self._error_children[key] = self.errors.labels(code, scope)
        child.inc(amount)

    def watch_models(self, models) -> None:
        """Describe the served models and time their calls (set after loading, so the warm-up is not counted)."""
        for name, recognizer in models.recognizers.items():
            meta = recognizer.metadata
            is_default = "true" if name == models.default_name else "false"
            labels = (name, recognizer.version, recognizer.runtime.name, str(len(meta.alphabet)), is_default)
            self.model_info.labels(*labels).set(1)
            recognizer.on_model_call = self._model_observer(name, recognizer.version)

    def _model_observer(self, name: str, version: str):
        inference = self.inference.labels(name, version)
        images = self.images.labels(name, version)

        def observe(seconds: float, count: int) -> None:
            inference.observe(seconds)
            images.inc(count)

        return observe


def _recorder(metrics: Metrics):
    def record(response):
        # Each proxy look-up costs about a microsecond: resolve the request once, then read plain attributes.
        req = request._get_current_object()
        record = context.current()
        seconds = record.seconds()
        rule = req.url_rule
        # The route's rule, not the path: a scan of random paths must not create a series per path.
        route = rule.rule if rule is not None else "unmatched"
        method = req.method if req.method in METHODS else "other"
        metrics.count_request(route, method, response.status_code, seconds)
        if record.error_code:
            metrics.count_error(record.error_code, "request")
        if record.batch_size is not None:
            metrics.batch_size.observe(record.batch_size)
            for image_code, count in record.image_errors.items():
                metrics.count_error(image_code, "image", count)
        return response

    return record


@limiter.exempt
def metrics_view():
    # OpenMetrics when the scraper asks for it (Prometheus does), else the classic text format.
    encoder, content_type = choose_encoder(request.headers.get("Accept"))
    return Response(encoder(current_app.extensions["metrics_registry"]), headers={"Content-Type": content_type})


class ListenerPort:
    """Outermost WSGI layer: notes the port the connection came in on before ProxyFix may rewrite SERVER_PORT from
    a client's X-Forwarded-Host, so no header can move a request from one listener to the other."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        environ[PORT_KEY] = environ.get("SERVER_PORT", "")
        return self.app(environ, start_response)


def _separate_listener(port: str):
    def only_metrics_there():
        on_metrics_listener = request.environ.get(PORT_KEY) == port
        if on_metrics_listener != (request.endpoint == ENDPOINT):
            raise NotFound()

    return only_metrics_there


def init_app(app: Flask) -> None:
    """Hooks and the /metrics route; call before the security hooks so a wrong listener answers 404, not 401."""
    settings = app.config["SETTINGS"]
    if settings.metrics == "off":
        return
    metrics = Metrics()
    app.extensions["metrics"] = metrics
    app.extensions["metrics_registry"] = metrics.exposition_registry()
    metrics.service_info.labels(__version__).set(1)
    metrics.workers.set(1)
    app.add_url_rule("/metrics", ENDPOINT, metrics_view, methods=["GET"])
    if settings.metrics_port:
        app.before_request(_separate_listener(str(settings.metrics_port)))
        app.wsgi_app = ListenerPort(app.wsgi_app)  # the factory adds ProxyFix before this: this layer is outside
    app.after_request(_recorder(metrics))
    listener = settings.metrics_bind_host if settings.metrics_port else settings.host
    if settings.metrics == "open" and not is_loopback(listener):
        log.warning("/metrics is open to anyone who can reach %s (CAPTCHA_METRICS=open)", listener)
