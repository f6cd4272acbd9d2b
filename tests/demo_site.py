"""A login-like demo site guarded by an FSSP-style captcha from the project's generator, for the browser test and the
Puppeteer example.

Each page load draws a fresh captcha, remembered server-side under the form's one-time token; POST /login passes
only with the right answer. Run it by hand with `python -m tests.demo_site --port 8000`.
"""

from __future__ import annotations

import argparse
import html
import io
import secrets
import threading
from collections import OrderedDict

from flask import Flask, Response, abort, request

from captcha_api.training.generator import sample

MAX_PENDING = 1000  # forms remembered at once; the oldest are forgotten first

PAGE = """<!doctype html>
<html lang="ru">
<head><meta charset="utf-8"><title>Demo login</title></head>
<body>
<h1>Вход</h1>
{body}
</body>
</html>
"""

FORM = """<form id="login" method="post" action="/login">
  <input type="hidden" name="token" value="{token}">
  <p><label>Login <input id="login-name" name="login" autocomplete="off"></label></p>
  <p><label>Password <input id="password" name="password" type="password"></label></p>
  <p><img id="captcha" src="/captcha.png?token={token}" width="{width}" height="{height}" alt="captcha"></p>
  <p><label>Код с картинки <input id="captcha-answer" name="captcha" autocomplete="off"></label></p>
  <p><button id="submit" type="submit">Войти</button></p>
</form>
"""


class CaptchaStore:
    """Pending captchas by form token: (text, PNG bytes), each used at most once."""

    def __init__(self, seed: int | None):
        self.seed = secrets.randbits(32) if seed is None else seed
        self.index = 0
        self.pending: OrderedDict[str, tuple[str, bytes]] = OrderedDict()
        self.lock = threading.Lock()

    def new(self) -> tuple[str, int, int]:
        """A fresh captcha: (token, width, height)."""
        with self.lock:
            index = self.index
            self.index += 1
        image, text = sample(self.seed, index)
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        token = secrets.token_urlsafe(16)
        with self.lock:
            self.pending[token] = (text, buffer.getvalue())
            while len(self.pending) > MAX_PENDING:
                self.pending.popitem(last=False)
        return token, image.width, image.height

    def image(self, token: str) -> bytes | None:
        with self.lock:
            entry = self.pending.get(token)
        return entry[1] if entry else None

    def check(self, token: str, answer: str) -> bool:
        with self.lock:
            entry = self.pending.pop(token, None)
        return entry is not None and answer.strip().lower() == entry[0]


def create_demo_app(seed: int | None = None) -> Flask:
    """The demo site; `seed` makes its captcha stream repeatable."""
    app = Flask(__name__)
    store = CaptchaStore(seed)
    app.extensions["captchas"] = store

    @app.get("/")
    def form():
        """The login form with a fresh captcha."""
        token, width, height = store.new()
        return PAGE.format(body=FORM.format(token=html.escape(token), width=width, height=height))

    @app.get("/captcha.png")
    def captcha():
        """The captcha image of a pending form."""
        data = store.image(request.args.get("token", ""))
        if data is None:
            abort(404)
        return Response(data, mimetype="image/png", headers={"Cache-Control": "no-store"})

    @app.post("/login")
    def login():
        """Accepts the form only with the right captcha answer; each captcha counts once."""
        passed = store.check(request.form.get("token", ""), request.form.get("captcha", ""))
        result = "passed" if passed else "wrong captcha"
        return PAGE.format(body=f'<p id="result">{result}</p>\n<p><a href="/">again</a></p>'), 200 if passed else 403

    return app


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)
    create_demo_app(args.seed).run(host=args.host, port=args.port, threaded=True)


if __name__ == "__main__":
    main()
