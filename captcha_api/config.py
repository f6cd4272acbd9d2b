"""Settings from CAPTCHA_* environment variables, typed and validated once at start-up."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .ocr.metadata import DEFAULT_MODEL
from .ocr.runtime import RUNTIMES

PREFIX = "CAPTCHA_"
LOG_FORMATS = ("json", "text")
METRICS_MODES = ("off", "protected", "open")
PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


class ConfigError(ValueError):
    """A setting is missing, malformed or unsafe; the message names the variable."""


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _list(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _limit(text: str) -> str:
    value = text.strip()
    if value in ("", "0", "off", "none"):
        return ""
    from limits import parse_many

    parse_many(value)  # raises ValueError on a malformed limit string
    return value


@dataclass(frozen=True)
class Settings:
    model: Path = DEFAULT_MODEL
    model_dir: str = ""  # "": the default model's folder; "none": the default model alone
    runtime: str = "auto"
    threads: int = 1
    api_keys: tuple[str, ...] = ()
    allow_open: bool = False
    rate_limit: str = "600/minute"  # images a minute, over /predict and /predict-batch together
    batch_rate_limit: str = "60/minute"  # /predict-batch requests a minute
    auth_failure_limit: str = "20/minute"  # wrong API keys from one address; past it, 429 for that address
    ratelimit_storage_uri: str = "memory://"
    cors_origins: tuple[str, ...] = ()
    max_image_bytes: int = 500 * 1024
    max_batch: int = 64
    max_body_bytes: int = 16 * 1024 * 1024
    max_pixels: int = 4_000_000
    max_batch_pixels: int = 16_000_000  # pixels decoded for one batch, all images together
    body_timeout: int = 10  # seconds for a whole request body to arrive
    max_buffered_bytes: int = 64 * 1024 * 1024  # request bodies one worker holds at once
    host: str = "127.0.0.1"
    port: int = 5000
    log_level: str = "INFO"
    log_format: str = "json"  # "json": one JSON object a line; "text": the classic one-line format
    trusted_proxies: int = 0
    # Prometheus metrics: "off", "protected" (the API key, like /info) or "open" (no key: a private network)
    metrics: str = "protected"
    metrics_port: int = 0  # 0: /metrics on the API's port; else only there, on its own gunicorn listener
    metrics_host: str = ""  # "": the same address as CAPTCHA_HOST
    # gunicorn (read by gunicorn.conf.py)
    workers: int = 2
    worker_connections: int = 1000  # connections each (gevent) worker holds at once
    timeout: int = 30
    graceful_timeout: int = 20
    keepalive: int = 5
    max_requests: int = 20000
    max_requests_jitter: int = 2000
    max_worker_rss_mb: int = 400
    control_socket: str = ""  # gunicorn's control socket: "" none, else its path (one per instance)

    @property
    def models_folder(self) -> Path | None:
        """Where the other served models are: every model in it is loaded beside the default."""
        if self.model_dir.lower() == "none":
            return None
        return Path(self.model_dir) if self.model_dir else Path(self.model).parent

    @property
    def open_access(self) -> bool:
        return not self.api_keys

    @property
    def metrics_bind_host(self) -> str:
        return self.metrics_host or self.host

    def validate(self) -> Settings:
        if self.model_dir and self.model_dir.lower() != "none" and not Path(self.model_dir).is_dir():
            raise ConfigError(f"{PREFIX}MODEL_DIR={self.model_dir} is not a folder")
        if self.runtime not in RUNTIMES:
            raise ConfigError(f"{PREFIX}RUNTIME must be one of {', '.join(RUNTIMES)}, not {self.runtime!r}")
        for name in (
            "threads",
            "max_image_bytes",
            "max_batch",
            "max_body_bytes",
            "max_pixels",
            "max_batch_pixels",
            "body_timeout",
            "max_buffered_bytes",
            "workers",
            "worker_connections",
            "timeout",
            "keepalive",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{PREFIX}{name.upper()} must be a positive number")
        for name in (
            "trusted_proxies",
            "graceful_timeout",
            "max_requests",
            "max_requests_jitter",
            "max_worker_rss_mb",
        ):
            if getattr(self, name) < 0:
                raise ConfigError(f"{PREFIX}{name.upper()} must be zero or a positive number")
        if not 0 < self.port < 65536:
            raise ConfigError(f"{PREFIX}PORT must be between 1 and 65535, not {self.port}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"{PREFIX}LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {self.log_format!r}")
        if self.metrics not in METRICS_MODES:
            raise ConfigError(f"{PREFIX}METRICS must be one of {', '.join(METRICS_MODES)}, not {self.metrics!r}")
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"{PREFIX}METRICS_PORT must be between 1 and 65535 (0: the API's port)")
        if self.metrics_port and self.metrics == "off":
            raise ConfigError(f"{PREFIX}METRICS_PORT is set but {PREFIX}METRICS=off: drop one of them")
        if self.metrics_host and not self.metrics_port:
            raise ConfigError(f"{PREFIX}METRICS_HOST needs {PREFIX}METRICS_PORT (a listener of its own)")
        # The app tells its two listeners apart by port, so the ports differ even on different addresses.
        if self.metrics_port == self.port:
            raise ConfigError(
                f"{PREFIX}METRICS_PORT must differ from {PREFIX}PORT (0 serves /metrics on the API's port)"
            )
        if self.max_body_bytes < self.max_image_bytes:
            raise ConfigError(f"{PREFIX}MAX_BODY_BYTES must be at least {PREFIX}MAX_IMAGE_BYTES")
        if self.max_buffered_bytes < self.max_body_bytes:
            raise ConfigError(f"{PREFIX}MAX_BUFFERED_BYTES must be at least {PREFIX}MAX_BODY_BYTES")
        if self.max_batch_pixels < self.max_pixels:
            raise ConfigError(f"{PREFIX}MAX_BATCH_PIXELS must be at least {PREFIX}MAX_PIXELS")
        if self.ratelimit_storage_uri.split("://")[0] not in (
            "memory",
            "redis",
            "rediss",
            "redis+sentinel",
            "memcached",
        ):
            raise ConfigError(f"{PREFIX}RATELIMIT_STORAGE_URI must be memory://, redis://host:port or similar")
        if any(len(key) < 16 for key in self.api_keys):
            raise ConfigError(f"{PREFIX}API_KEYS: every key must be at least 16 characters long")
        if not all(PRINTABLE_ASCII.fullmatch(key) for key in self.api_keys):
            # An HTTP header carries ASCII: a key with other characters (or spaces) could never be sent and match.
            raise ConfigError(
                f"{PREFIX}API_KEYS: keys must be printable ASCII without spaces (letters, digits, punctuation)"
            )
        if self.open_access and not is_loopback(self.host) and not self.allow_open:
            raise ConfigError(
                f"no API key is configured and {PREFIX}HOST={self.host} is not a loopback address: set "
                f"{PREFIX}API_KEYS, listen on 127.0.0.1, or set {PREFIX}ALLOW_OPEN=true to run open on purpose"
            )
        return self


PARSERS = {
    "model": Path,
    "model_dir": str.strip,
    "runtime": lambda s: s.strip().lower(),
    "threads": int,
    "api_keys": _list,
    "allow_open": _bool,
    "rate_limit": _limit,
    "batch_rate_limit": _limit,
    "auth_failure_limit": _limit,
    "ratelimit_storage_uri": str.strip,
    "cors_origins": _list,
    "max_image_bytes": int,
    "max_batch": int,
    "max_body_bytes": int,
    "max_pixels": int,
    "max_batch_pixels": int,
    "body_timeout": int,
    "max_buffered_bytes": int,
    "host": str.strip,
    "port": int,
    "log_level": lambda s: s.strip().upper(),
    "log_format": lambda s: s.strip().lower(),
    "trusted_proxies": int,
    "metrics": lambda s: s.strip().lower(),
    "metrics_port": int,
    "metrics_host": str.strip,
    "workers": int,
    "worker_connections": int,
    "timeout": int,
    "graceful_timeout": int,
    "keepalive": int,
    "max_requests": int,
    "max_requests_jitter": int,
    "max_worker_rss_mb": int,
    "control_socket": str.strip,
}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping | None = None) -> Settings:
    """Defaults, then CAPTCHA_* variables, then `overrides` (field names, already typed; for tests)."""
    environ = os.environ if environ is None else environ
    values = {}
    for field in fields(Settings):
        raw = environ.get(PREFIX + field.name.upper())
        if raw is None:
            continue
        try:
            values[field.name] = PARSERS[field.name](raw)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{PREFIX}{field.name.upper()}={raw!r} is not valid: {exc}") from None
    settings = replace(Settings(), **values)
    if overrides:
        unknown = set(overrides) - {f.name for f in fields(Settings)}
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        typed = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        for key in ("rate_limit", "batch_rate_limit", "auth_failure_limit"):
            if key in typed:
                typed[key] = _limit(str(typed[key] or ""))
        settings = replace(settings, **typed)
    return settings.validate()
