"""What a request body may cost before the app sees it.

The body is read here, whole, before any view: within CAPTCHA_BODY_TIMEOUT seconds (a client that trickles its body
is cut off with a 408 instead of holding the worker's memory and a connection slot), up to CAPTCHA_MAX_BODY_BYTES
however it is sent (a chunked body has no length to check up front: it is counted as it arrives and refused with a
413 past the limit), and into memory counted against CAPTCHA_MAX_BUFFERED_BYTES, the bytes one worker holds for all
the bodies it is reading at once (past it, 503 and Retry-After). The app then reads from memory.

A refused body is answered by the app (a before_request hook), so the refusal has the same JSON envelope, request
id, access line, CORS headers and metrics as any other error. What it leaves unread, gunicorn drains before the
connection's next request, within its keepalive time, or closes the connection.

Under gunicorn's gevent worker (gunicorn.conf.py) many connections are read at once in one process, each by a
greenlet: the deadline is a gevent.Timeout, which fires while the greenlet waits for the client. Elsewhere (the
Flask test client, the development server) the body is already in memory or arrives at once, and no timer is set.
"""

from __future__ import annotations

import io
import time
from contextlib import nullcontext

from flask import Flask, request

from ..core.errors import CaptchaError
from .errors import PayloadTooLarge, RequestTimeout, ServerBusy
from .security import key_is_valid

BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CHUNK = 64 * 1024


REFUSED = "captcha.body_refused"  # environ key: the refusal the app answers with


class _BodyTimeout(Exception):
    """Raised by the gevent timer inside a read that waited past the deadline."""


def _deadline(seconds: float):
    """A gevent.Timeout in a gevent-patched process, where reads yield to the hub; nothing elsewhere."""
    try:
        from gevent import monkey
    except ImportError:  # pragma: no cover - gevent is a serving dependency
        return nullcontext()
    if not monkey.is_module_patched("socket"):
        return nullcontext()
    import gevent

    return gevent.Timeout(seconds, _BodyTimeout)


class _Pool:
    """A budget of request-body bytes held at once by one process; with `share`, no one client address may hold
    more than that part of it."""

    def __init__(self, limit: int, share: float = 1.0):
        self.limit, self.held = limit, 0
        self.per_address = int(limit * share)
        self.by_address: dict[str, int] = {}

    def take(self, address: str | None, size: int) -> bool:
        if self.held + size > self.limit:
            return False
        if address is not None:
            mine = self.by_address.get(address, 0)
            if mine + size > self.per_address:
                return False
            self.by_address[address] = mine + size
        self.held += size
        return True

    def release(self, address: str | None, size: int) -> None:
        self.held -= size
        if address is not None and size:
            left = self.by_address.get(address, 0) - size
            if left > 0:
                self.by_address[address] = left
            else:
                self.by_address.pop(address, None)


class BodyGuard:
    """WSGI middleware: reads the request body with a deadline, a size limit and a per-process memory budget."""

    def __init__(
        self,
        app,
        max_body_bytes: int,
        timeout: float,
        max_buffered_bytes: int,
        api_keys=(),
        key_in_body: tuple[frozenset[str], int] = (frozenset(), 0),
    ):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.timeout = timeout
        self.api_keys = tuple(api_keys)
        self.pool = _Pool(max_buffered_bytes)  # the bodies of requests whose key is right (or of an open service)
        # Paths whose key is in the body (the compatible APIs): their bodies are read before the key can be
        # checked, whatever the method, each up to its own bound, and, without a right X-API-Key, from a quarter
        # of the budget of their own, so that clients without a key can never take the budget of those with one;
        # one client address takes a quarter of that at most (behind nginx, which sends only whole bodies, fast,
        # the address is nginx's, and the bodies are held a moment each).
        self.key_in_body, self.key_in_body_max = key_in_body
        self.keyless = _Pool(max_buffered_bytes // 4, share=0.25)
        # One body of the largest size must always fit one address's share, or it could never be read.
        self.keyless.per_address = max(self.keyless.per_address, min(self.key_in_body_max, self.keyless.limit))

    def __call__(self, environ, start_response):
        # As routing sees it: werkzeug matches "//in.php" as "/in.php".
        path = "/" + (environ.get("PATH_INFO") or "").lstrip("/")
        key_in_body = path in self.key_in_body
        if environ.get("REQUEST_METHOD") not in BODY_METHODS and not key_in_body:
            return self.app(environ, start_response)
        limit, pool, address = self.max_body_bytes, self.pool, None
        keyed = not self.api_keys or key_is_valid(environ.get("HTTP_X_API_KEY", ""), self.api_keys)
        if key_in_body:
            limit = self.key_in_body_max
            if not keyed:
                pool, address = self.keyless, environ.get("REMOTE_ADDR", "")
        elif not keyed:
            # Without a right key the request is refused (401, or 429 once locked out) before its body matters:
            # nothing of it is read or held, so keyless clients cannot fill the budget of those with keys.
            return self.app(environ, start_response)
        held, whole = [0], False
        try:
            body = self._read(environ, held, limit, pool, address)
            whole = True
        except CaptchaError as refused:
            # Without its traceback: its frames hold the chunks read so far, which must go with this request.
            environ[REFUSED] = refused.with_traceback(None)
            body = b""
        except Exception as error:  # noqa: BLE001 - a broken body (bad chunk, reset): whatever the server raised
            environ[REFUSED] = CaptchaError(f"the request body could not be read: {error}")
            body = b""
        finally:
            if not whole:
                # What a refused, broken or interrupted body had taken goes back at once, however the read ended.
                pool.release(address, held[0])
                held[0] = 0
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        # The body is whole now: werkzeug must read it by its length, not as an open-ended chunked stream.
        environ.pop("wsgi.input_terminated", None)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        try:
            return self.app(environ, start_response)
        finally:
            pool.release(address, held[0])

    def _read(self, environ, held: list[int], limit: int, pool: _Pool, address: str | None) -> bytes:
        declared = environ.get("CONTENT_LENGTH") or ""
        terminated = bool(environ.get("wsgi.input_terminated"))
        if declared:
            try:
                length = int(declared)
            except ValueError:
                raise CaptchaError("the Content-Length header is not a number") from None
            if length > limit:
                raise self._too_large(limit)
        elif terminated:
            length = None  # chunked: read until the end, counting
        else:
            return b""
        stream = environ["wsgi.input"]
        parts = []
        received = 0
        started = time.monotonic()
        try:
            with _deadline(self.timeout):
                while length is None or received < length:
                    want = CHUNK if length is None else min(CHUNK, length - received)
                    chunk = stream.read(want)
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > limit:
                        raise self._too_large(limit)
                    if not pool.take(address, len(chunk)):
                        raise ServerBusy(
                            "this worker is reading as many request bodies as its memory allows "
                            "(CAPTCHA_MAX_BUFFERED_BYTES); retry in a moment",
                            {"Retry-After": "1"},
                        )
                    held[0] += len(chunk)
                    parts.append(chunk)
        except _BodyTimeout:
            waited = time.monotonic() - started
            raise RequestTimeout(
                f"the request body did not arrive within {self.timeout:g} s (CAPTCHA_BODY_TIMEOUT); "
                f"{received} bytes came in {waited:.1f} s",
            ) from None
        return b"".join(parts)

    def _too_large(self, limit: int) -> PayloadTooLarge:
        setting = "CAPTCHA_MAX_BODY_BYTES" if limit == self.max_body_bytes else "a captcha image's worth"
        return PayloadTooLarge(f"the request body is larger than {limit} bytes ({setting})")


def _answer_refusal():
    refused = request.environ.get(REFUSED)
    if refused is not None:
        raise refused
    return None


def init_app(app: Flask) -> None:
    """Wrap the app in the guard and answer its refusals in a hook that runs once the request id exists. The guard
    checks the API key itself only to decide whether to read the body; refusing a wrong key stays security.py's."""
    settings = app.config["SETTINGS"]
    from .compat import PATHS  # the compatible APIs' paths, whose key is in the body

    app.wsgi_app = BodyGuard(
        app.wsgi_app,
        settings.max_body_bytes,
        settings.body_timeout,
        settings.max_buffered_bytes,
        settings.api_keys,
        (PATHS, settings.compat_max_body_bytes),
    )
    app.before_request(_answer_refusal)
