"""/docs: Swagger UI served by the service itself (its files from the pinned flask-swagger-ui package), with no CDN,
no inline script and a strict Content-Security-Policy (captcha_api/service/openapi.py)."""

import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest

from captcha_api.service.openapi import ASSET_VERSION, DOCS_CSP, SWAGGER_UI_DIST
from scripts.process import GunicornProcess

from .conftest import KEY
from .test_api import assert_error

CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ASSETS = {  # what the page loads, and the type each must be served with
    "index.css": "text/css",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-init.js": "text/javascript",
}


class Page(HTMLParser):
    """The URLs a page loads (src and href) and the text inside each of its <script> elements."""

    def __init__(self, html: str):
        super().__init__()
        self.urls, self.scripts, self._in_script = [], [], False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        self.urls += [value for name, value in attrs if name in ("src", "href")]
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


@pytest.fixture
def anonymous(make_app):
    # Open mode (no keys), and a limit of one request a minute that the docs and their files must be exempt from.
    return make_app(api_keys=[], rate_limit="1/minute", batch_rate_limit="1/minute").test_client()


def docs_page(client):
    response = client.get("/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    return response


def asset_paths(client) -> dict[str, str]:
    """name -> path of each file the page loads, resolved against /docs as a browser does."""
    page = Page(docs_page(client).get_data(as_text=True))
    return {url.rsplit("/", 1)[-1]: urlsplit(urljoin("http://localhost/docs", url)).path for url in page.urls}


def test_docs_page_loads_only_its_own_files_and_no_inline_script(anonymous):
    response = docs_page(anonymous)
    html = response.get_data(as_text=True)
    assert response.headers["Content-Security-Policy"] == DOCS_CSP
    assert "script-src 'self';" in DOCS_CSP and "unsafe" not in DOCS_CSP
    page = Page(html)
    assert "http" not in html and "unpkg" not in html and "//" not in html
    # Relative, so a proxy that adds a path prefix keeps them right; all under the versioned asset folder.
    assert sorted(page.urls) == sorted(f"docs/{ASSET_VERSION}/{name}" for name in ASSETS)
    assert len(page.scripts) == 2 and all(not body.strip() for body in page.scripts)  # each has a src, no body


@pytest.mark.parametrize("name", ASSETS)
def test_each_file_is_served_with_its_type_and_cached(anonymous, name):
    for _ in range(3):  # not rate limited
        with anonymous.get(asset_paths(anonymous)[name]) as response:  # closed: a file's answer holds it open
            assert response.status_code == 200
            assert response.mimetype == ASSETS[name]
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.cache_control.public and response.cache_control.max_age == 86400
            body = response.data
    if name == "swagger-init.js":
        assert b"SwaggerUIBundle(" in body
        assert b'url: "openapi.json"' in body  # relative: still right behind a proxy that adds a path prefix
    else:
        assert body == (SWAGGER_UI_DIST / name).read_bytes()  # the installed package's file, as it is


@pytest.mark.parametrize(
    "path",
    [
        f"/docs/{ASSET_VERSION}/VERSION",  # in the package's folder, but not on the list
        f"/docs/{ASSET_VERSION}/swagger-ui.js",
        f"/docs/{ASSET_VERSION}/oauth2-redirect.html",
        f"/docs/{ASSET_VERSION}/",  # no listing
        f"/docs/{ASSET_VERSION}/..%2fLICENSE",
        f"/docs/{ASSET_VERSION}/%2e%2e/flask_swagger_ui.py",
        "/docs/5.0.0/swagger-ui.css",  # another release's URL
        "/docs/swagger-ui.css",
    ],
)
def test_other_names_are_a_json_404(anonymous, path):
    assert_error(anonymous.get(path), 404, "not_found")


def test_files_need_no_key_when_keys_are_configured(make_app):
    client = make_app(api_keys=[KEY]).test_client()
    for path in asset_paths(client).values():
        with client.get(path) as response:
            assert response.status_code == 200, path


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install chromium): Swagger UI is not checked in a real browser")
    log = tmp_path_factory.mktemp("docs") / "server.log"
    with GunicornProcess({"CAPTCHA_API_KEYS": "", "CAPTCHA_WORKERS": "1"}, log) as process:
        yield process.url


@pytest.mark.integration
def test_swagger_ui_renders_offline_under_its_csp(service, tmp_path):
    """A real browser that can reach no host but this one renders the page: the files came from the service, and
    the CSP blocked nothing (Chromium logs each violation, with the words below, to stderr)."""
    screenshot = tmp_path / "docs.png"
    run = subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # any other host (a CDN) does not resolve
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",  # lets the scripts fetch /openapi.json and render before the dump
            "--window-size=1280,1400",
            f"--screenshot={screenshot}",
            "--dump-dom",
            f"{service}/docs",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Content Security Policy" not in run.stderr, run.stderr[-3000:]
    dom = run.stdout
    assert '<h1 class="title">CAPTCHA OCR API' in dom, dom[-3000:]  # rendered from /openapi.json by Swagger UI
    for path in ("/health", "/info", "/predict", "/predict-batch"):
        assert f'class="opblock-summary-path" data-path="{path}"' in dom, path
    assert screenshot.read_bytes().startswith(b"\x89PNG")
