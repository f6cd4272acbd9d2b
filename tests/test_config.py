"""Settings: environment parsing, defaults and start-up validation."""

import pytest

from captcha_api.core.artifact import DEFAULT_MODEL
from captcha_api.service.config import ConfigError, Settings, load_settings


def test_defaults():
    settings = load_settings({})
    assert settings == Settings()
    assert (settings.host, settings.port) == ("127.0.0.1", 5000)
    assert settings.model == DEFAULT_MODEL
    assert settings.max_image_bytes == 500 * 1024
    assert settings.ratelimit_storage_uri == "memory://"
    assert (settings.log_format, settings.metrics, settings.metrics_port) == ("json", "protected", 0)
    assert settings.metrics_bind_host == "127.0.0.1"


def test_environment_is_typed(tmp_path):
    for name in ("mine.json", "mine.keras"):  # the default model must be there, with a file for its runtime
        (tmp_path / name).write_text("x")
    settings = load_settings(
        {
            "CAPTCHA_MODEL": str(tmp_path / "mine"),
            "CAPTCHA_RUNTIME": "Keras",
            "CAPTCHA_API_KEYS": " key-aaaaaaaaaaaaaaaa , key-bbbbbbbbbbbbbbbb ",
            "CAPTCHA_RATE_LIMIT": "100/minute",
            "CAPTCHA_RATELIMIT_STORAGE_URI": "redis://127.0.0.1:6379",
            "CAPTCHA_CORS_ORIGINS": "https://a.example,https://b.example",
            "CAPTCHA_MAX_IMAGE_BYTES": "2048",
            "CAPTCHA_MAX_BATCH": "8",
            "CAPTCHA_HOST": "0.0.0.0",
            "CAPTCHA_PORT": "8080",
        }
    )
    assert settings.model == tmp_path / "mine"
    assert settings.runtime == "keras"
    assert settings.api_keys == ("key-aaaaaaaaaaaaaaaa", "key-bbbbbbbbbbbbbbbb")
    assert settings.rate_limit == "100/minute"
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert (settings.max_image_bytes, settings.max_batch, settings.port) == (2048, 8, 8080)


def test_observability_settings_are_typed():
    settings = load_settings(
        {
            "CAPTCHA_LOG_FORMAT": " Text ",
            "CAPTCHA_METRICS": "OPEN",
            "CAPTCHA_METRICS_PORT": "9100",
            "CAPTCHA_METRICS_HOST": " 10.0.0.5 ",
        }
    )
    assert (settings.log_format, settings.metrics) == ("text", "open")
    assert (settings.metrics_bind_host, settings.metrics_port) == ("10.0.0.5", 9100)
    assert load_settings({"CAPTCHA_METRICS_PORT": "9100"}).metrics_bind_host == "127.0.0.1"  # CAPTCHA_HOST's


@pytest.mark.parametrize("value", ["0", "", "off"])
def test_rate_limit_can_be_turned_off(value):
    assert load_settings({"CAPTCHA_RATE_LIMIT": value}).rate_limit == ""


@pytest.mark.parametrize(
    "environ, mentions",
    [
        ({"CAPTCHA_PORT": "http"}, "CAPTCHA_PORT"),
        ({"CAPTCHA_PORT": "70000"}, "CAPTCHA_PORT"),
        ({"CAPTCHA_RUNTIME": "tensorrt"}, "CAPTCHA_RUNTIME"),
        ({"CAPTCHA_MAX_BATCH": "0"}, "CAPTCHA_MAX_BATCH"),
        ({"CAPTCHA_MAX_IMAGE_BYTES": "lots"}, "CAPTCHA_MAX_IMAGE_BYTES"),
        ({"CAPTCHA_RATE_LIMIT": "many per fortnight"}, "CAPTCHA_RATE_LIMIT"),
        ({"CAPTCHA_RATELIMIT_STORAGE_URI": "postgres://db"}, "CAPTCHA_RATELIMIT_STORAGE_URI"),
        ({"CAPTCHA_API_KEYS": "short"}, "CAPTCHA_API_KEYS"),
        ({"CAPTCHA_API_KEYS": "ключ-ключ-ключ-ключ-1"}, "CAPTCHA_API_KEYS: keys must be printable ASCII"),
        ({"CAPTCHA_API_KEYS": "a key with spaces inside"}, "printable ASCII"),
        ({"CAPTCHA_AUTH_FAILURE_LIMIT": "often"}, "CAPTCHA_AUTH_FAILURE_LIMIT"),
        ({"CAPTCHA_BODY_TIMEOUT": "0"}, "CAPTCHA_BODY_TIMEOUT"),
        ({"CAPTCHA_KEEPALIVE": "0"}, "CAPTCHA_KEEPALIVE"),
        ({"CAPTCHA_WORKER_CONNECTIONS": "0"}, "CAPTCHA_WORKER_CONNECTIONS"),
        ({"CAPTCHA_MAX_BUFFERED_BYTES": "1000"}, "CAPTCHA_MAX_BUFFERED_BYTES must be at least CAPTCHA_MAX_BODY_BYTES"),
        ({"CAPTCHA_MAX_BATCH_PIXELS": "1000"}, "CAPTCHA_MAX_BATCH_PIXELS must be at least CAPTCHA_MAX_PIXELS"),
        ({"CAPTCHA_ALLOW_OPEN": "maybe"}, "CAPTCHA_ALLOW_OPEN"),
        ({"CAPTCHA_WORKERS": "0"}, "CAPTCHA_WORKERS"),
        ({"CAPTCHA_MAX_REQUESTS": "-1"}, "CAPTCHA_MAX_REQUESTS"),
        ({"CAPTCHA_MAX_WORKER_RSS_MB": "lots"}, "CAPTCHA_MAX_WORKER_RSS_MB"),
        ({"CAPTCHA_TRUSTED_PROXIES": "-2"}, "CAPTCHA_TRUSTED_PROXIES"),
        ({"CAPTCHA_HOST": "0.0.0.0"}, "CAPTCHA_ALLOW_OPEN"),
        ({"CAPTCHA_HOST": "10.1.2.3"}, "CAPTCHA_API_KEYS"),
        ({"CAPTCHA_LOG_FORMAT": "xml"}, "CAPTCHA_LOG_FORMAT"),
        ({"CAPTCHA_METRICS": "public"}, "CAPTCHA_METRICS"),
        ({"CAPTCHA_METRICS_PORT": "70000"}, "CAPTCHA_METRICS_PORT"),
        ({"CAPTCHA_METRICS_PORT": "metrics"}, "CAPTCHA_METRICS_PORT"),
        ({"CAPTCHA_METRICS_PORT": "9100", "CAPTCHA_METRICS": "off"}, "CAPTCHA_METRICS=off"),
        ({"CAPTCHA_METRICS_HOST": "10.0.0.5"}, "CAPTCHA_METRICS_HOST needs CAPTCHA_METRICS_PORT"),
        ({"CAPTCHA_METRICS_PORT": "5000"}, "must differ from CAPTCHA_PORT"),
        ({"CAPTCHA_METRICS_PORT": "8080", "CAPTCHA_PORT": "8080", "CAPTCHA_METRICS_HOST": "10.0.0.5"}, "differ"),
    ],
)
def test_bad_settings_are_refused_with_their_name(environ, mentions):
    with pytest.raises(ConfigError, match=mentions):
        load_settings(environ)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_open_is_fine_on_loopback(host):
    assert load_settings({"CAPTCHA_HOST": host}).open_access


def test_open_on_public_address_only_when_asked():
    settings = load_settings({"CAPTCHA_HOST": "0.0.0.0", "CAPTCHA_ALLOW_OPEN": "true"})
    assert settings.open_access and settings.allow_open
    assert not load_settings({"CAPTCHA_HOST": "0.0.0.0", "CAPTCHA_API_KEYS": "k" * 20}).open_access


def test_overrides_are_checked():
    with pytest.raises(ConfigError, match="unknown"):
        load_settings({}, {"modle": "typo"})


def test_factory_refuses_bad_settings():
    from captcha_api.service.app import create_app

    with pytest.raises(ConfigError):
        create_app({"runtime": "nope"})
