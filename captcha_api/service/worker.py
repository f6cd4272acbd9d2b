"""The gunicorn worker (gunicorn.conf.py): gevent's, with a time limit on every read and write of a connection.

gunicorn's gevent worker makes each client socket blocking with no limit, so a client that sends requests and never
reads the answers (a 1.7 MB /docs script, pipelined) held its connection, and the worker's slots with enough of
them, for as long as it liked: /health went unanswered until the client closed. Here a read or write that waits
longer than the client has for a request body (CAPTCHA_BODY_TIMEOUT, or the keepalive wait if longer) fails and the
connection is closed.
"""

from __future__ import annotations

import logging

from gunicorn.workers.base_async import AsyncWorker
from gunicorn.workers.ggevent import GeventWorker

from .config import load_settings


class CaptchaWorker(GeventWorker):
    def init_process(self):
        settings = load_settings()
        # Longer than the keepalive wait, which has its own timer and ends an idle connection quietly.
        self.socket_timeout = max(settings.body_timeout, settings.keepalive) + 1
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
