"""The gunicorn worker (gunicorn.conf.py): gevent's, with a time limit on every read and write of a connection.

gunicorn's gevent worker makes each client socket blocking with no limit, so a client that sends requests and never
reads the answers (a 1.7 MB /docs script, pipelined) held its connection, and the worker's slots with enough of
them, for as long as it liked: /health went unanswered until the client closed. Here a read or write that waits
longer than the client has for a request body (CAPTCHA_BODY_TIMEOUT, or the keepalive wait if longer) fails and the
connection is closed.
"""

from __future__ import annotations

import logging

from gunicorn.http import wsgi
from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

from .config import ConfigError, Settings, load_settings


class OneWriteResponse(wsgi.Response):
    """gunicorn's response, but the status line and headers go out with the first body bytes, in one write: a worker
    killed mid-answer leaves nginx either a whole answer or nothing (which it retries on another instance), never
    headers without their body (seen once in about a thousand requests when an instance was killed under load)."""

    _held = b""

    def send_headers(self):
        if self.headers_sent:
            return
        lines = self.default_headers()
        lines.extend(f"{name}: {value}\r\n" for name, value in self.headers)
        self._held = ("".join(lines) + "\r\n").encode("latin-1")
        self.headers_sent = True

    def _flush_headers(self):
        if self._held:
            held, self._held = self._held, b""
            self.sock.sendall(held)

    def _emit_body(self, data):
        if self._held and not self.chunked:
            held, self._held = self._held, b""
            self.sock.sendall(held + data)
            return
        self._flush_headers()
        super()._emit_body(data)

    def sendfile(self, respiter):
        # A file goes out by sendfile(2) after the headers (Swagger UI's script, for one): they cannot share a write.
        self.send_headers()
        self._flush_headers()
        return super().sendfile(respiter)

    def close(self):
        if not self.headers_sent:
            self.send_headers()
        self._flush_headers()  # an answer without a body (HEAD, 304), or a body that never came
        super().close()


class CaptchaWorker(GeventWorker):
    def init_process(self):
        # gunicorn's request handling makes its responses through this module's Response.
        wsgi.Response = OneWriteResponse
        try:
            body_timeout = load_settings().body_timeout
        except ConfigError:
            # Settings that no longer load (the default model removed under a running service): the app says so
            # when it loads (wsgi.py), and whether the master stops; an error here would stop it in any case.
            body_timeout = Settings.model_fields["body_timeout"].default
        # Longer than the keepalive wait, which has its own timer and ends an idle connection quietly.
        self.socket_timeout = max(body_timeout, self.cfg.keepalive) + 1
        super().init_process()

    def handle(self, listener, client, addr):
        client.settimeout(self.socket_timeout)
        AsyncWorker.handle(self, listener, client, addr)  # GeventWorker.handle would make the socket blocking again


class StalledClientFilter(logging.Filter):
    """A client dropped for stalling is the time limit at work, not a server fault: one INFO line, no traceback
    (gunicorn logs any socket error with its traceback)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], TimeoutError):
            record.msg, record.args = "closed a connection that stalled: %s", (record.exc_info[1] or "timed out",)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info = record.exc_text = None
        return True
