"""Settings from CAPTCHA_* environment variables, typed and validated once at start-up (pydantic-settings).

One class: each field is a variable (CAPTCHA_ + its name in capitals), its type and bounds say what it takes, and
the checks that involve several fields are its model validator. A bad value is a ConfigError whose one line names
the variable.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from ..core.artifact import DEFAULT_MODEL, ModelArtifact

PREFIX = "CAPTCHA_"
PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")
LIMITS_OFF = ("", "0", "off", "none")
STORAGES = ("memory", "redis", "rediss", "redis+sentinel", "memcached")
SHARED_ELSEWHERE = ("redis+sentinel", "memcached")  # shared rate limits the task store cannot share
SECRETS = frozenset({"api_keys"})
DEFAULT_TASK_STORE = "runs/tasks.sqlite3"  # the compatible APIs' tasks on one machine (CAPTCHA_TASK_STORE)


class ConfigError(ValueError):
    """A setting is missing, malformed or unsafe; the message names the variable."""


def _stripped(value):
    return value.strip() if isinstance(value, str) else value


def _lower(value):
    return value.strip().lower() if isinstance(value, str) else value


def _words(value):
    """'a, b,,c' -> ('a', 'b', 'c'): comma-separated in a variable, a list or tuple from `overrides`."""
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return tuple(value)


def _limit(value):
    """A Flask-Limiter limit string ('600/minute', '10/second;100/hour'), or '' for off."""
    text = str(value or "").strip()
    if text.lower() in LIMITS_OFF:
        return ""
    from limits import parse_many

    parse_many(text)  # raises ValueError on a malformed limit string
    return text


def _flag(value):
    return False if isinstance(value, str) and not value.strip() else _lower(value)


Text = Annotated[str, BeforeValidator(_stripped)]
Word = Annotated[str, BeforeValidator(_lower)]
Words = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_words)]
Limit = Annotated[str, BeforeValidator(_limit)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Positive = Annotated[int, Field(ge=1)]
Count = Annotated[int, Field(ge=0)]
Port = Annotated[int, Field(ge=1, le=65535)]

# load_settings(environ): the variables to read instead of os.environ (the tests give their own).
_ENVIRON: ContextVar[Mapping[str, str] | None] = ContextVar("captcha_environ", default=None)


class _Environment(EnvSettingsSource):
    def _load_env_vars(self):
        environ = _ENVIRON.get()
        if environ is None:
            return super()._load_env_vars()
        return parse_env_vars(environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True, extra="forbid", protected_namespaces=())

    model: Path = DEFAULT_MODEL
    model_dir: Text = ""  # "": the default model's folder; "none": the default model alone
    # onnx: the ONNX models of the folder (a .keras-only one is skipped); keras: their Keras files (loads TensorFlow)
    runtime: Literal["onnx", "keras"] = "onnx"
    threads: Positive = 1
    api_keys: Words = ()
    allow_open: Flag = False
    rate_limit: Limit = "600/minute"  # images a minute, over /predict and /predict-batch together
    batch_rate_limit: Limit = "60/minute"  # /predict-batch requests a minute
    auth_failure_limit: Limit = "20/minute"  # wrong API keys from one address; past it, 429 for that address
    ratelimit_storage_uri: Text = "memory://"
    cors_origins: Words = ()
    max_image_bytes: Positive = 500 * 1024
    max_batch: Positive = 64
    max_body_bytes: Positive = 16 * 1024 * 1024
    max_pixels: Positive = 4_000_000
    max_batch_pixels: Positive = 16_000_000  # pixels decoded for one batch, all images together
    body_timeout: Positive = 10  # seconds for a whole request body to arrive
    max_buffered_bytes: Positive = 64 * 1024 * 1024  # request bodies one worker holds at once
    host: Text = "127.0.0.1"
    port: Port = 5000
    log_level: Annotated[str, BeforeValidator(lambda v: v.strip().upper() if isinstance(v, str) else v)] = "INFO"
    log_format: Annotated[Literal["json", "text"], BeforeValidator(_lower)] = "json"
    trusted_proxies: Count = 0
    # Prometheus metrics: "off", "protected" (the API key, like /info) or "open" (no key: a private network)
    metrics: Annotated[Literal["off", "protected", "open"], BeforeValidator(_lower)] = "protected"
    metrics_port: Annotated[int, Field(ge=0, le=65535)] = 0  # 0: on the API's port; else its own listener
    metrics_host: Text = ""  # "": the same address as CAPTCHA_HOST
    # gunicorn (read by gunicorn.conf.py)
    workers: Positive = 2
    worker_connections: Positive = 1000  # connections each (gevent) worker holds at once
    timeout: Positive = 30
    graceful_timeout: Count = 20
    keepalive: Positive = 5  # also the time a client has to send a request's headers
    max_requests: Count = 20000
    max_requests_jitter: Count = 2000
    max_worker_rss_mb: Count = 400
    # Reports of wrong readings (POST /report): where they are stored ("none": off), how long and how much of the
    # recent readings' images is kept for a report to find, and how much the stored reports may take.
    feedback_dir: Text = "runs/feedback"
    feedback_keep_seconds: Count = 300
    feedback_keep_mb: Count = 8
    feedback_max_mb: Positive = 100
    control_socket: Text = ""  # gunicorn's control socket: "" none, else its path (one per instance)
    # The solver-compatible APIs' tasks (compat/store.py): "" the Redis of RATELIMIT_STORAGE_URI when it is one,
    # else the SQLite file runs/tasks.sqlite3; a file's path, a redis:// URI, or "none" (those APIs off).
    task_store: Text = ""
    task_ttl_seconds: Positive = 600  # a task is answered this long after its creation, then forgotten
    task_max: Positive = 100_000  # live tasks a SQLite store holds at most; past it, ERROR_NO_SLOT_AVAILABLE

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        # The CAPTCHA_* variables and the arguments: no .env file, no secrets folder read behind the operator's back.
        return init_settings, _Environment(settings_cls)

    @field_validator("runtime", mode="before")
    @classmethod
    def _runtime_case(cls, value):
        return _lower(value)

    @field_validator("model_dir")
    @classmethod
    def _a_folder(cls, value: str) -> str:
        if value and value.lower() != "none" and not Path(value).is_dir():
            raise ValueError(f"{value} is not a folder")
        return value

    @field_validator("ratelimit_storage_uri")
    @classmethod
    def _a_storage(cls, value: str) -> str:
        if value.split("://")[0] not in STORAGES:
            raise ValueError("use memory://, redis://host:port or similar")
        return value

    @field_validator("api_keys")
    @classmethod
    def _usable_keys(cls, keys: tuple[str, ...]) -> tuple[str, ...]:
        if any(len(key) < 16 for key in keys):
            raise ValueError("every key must be at least 16 characters long")
        if not all(PRINTABLE_ASCII.fullmatch(key) for key in keys):
            # An HTTP header carries ASCII: a key with other characters (or spaces) could never be sent and match.
            raise ValueError("keys must be printable ASCII without spaces (letters, digits, punctuation)")
        return keys

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        checks = (
            (self.metrics_port and self.metrics == "off", "METRICS_PORT is set but {p}METRICS=off: drop one of them"),
            (self.metrics_host and not self.metrics_port, "METRICS_HOST needs {p}METRICS_PORT (a listener of its own)"),
            # The app tells its two listeners apart by port, so the ports differ even on different addresses.
            (
                self.metrics_port == self.port,
                "METRICS_PORT must differ from {p}PORT (0 serves /metrics on the API's port)",
            ),
            (self.max_body_bytes < self.max_image_bytes, "MAX_BODY_BYTES must be at least {p}MAX_IMAGE_BYTES"),
            (self.max_buffered_bytes < self.max_body_bytes, "MAX_BUFFERED_BYTES must be at least {p}MAX_BODY_BYTES"),
            (self.max_batch_pixels < self.max_pixels, "MAX_BATCH_PIXELS must be at least {p}MAX_PIXELS"),
            (
                not self.task_store and self.ratelimit_storage_uri.split("://")[0] in SHARED_ELSEWHERE,
                "TASK_STORE must be set (a redis:// URI every instance reaches, a file, or none) when "
                "{p}RATELIMIT_STORAGE_URI is not plain Redis: tasks would stay on each instance",
            ),
            (
                self.open_access and not is_loopback(self.host) and not self.allow_open,
                f"HOST={self.host}: no API key is configured and it is not a loopback address: set {{p}}API_KEYS, "
                "listen on 127.0.0.1, or set {p}ALLOW_OPEN=true to run open on purpose",
            ),
        )
        for failed, message in checks:
            if failed:
                raise ValueError(PREFIX + message.format(p=PREFIX))
        default = ModelArtifact.at(self.model)
        needed = (default.metadata_path, default.onnx if self.runtime == "onnx" else default.keras)
        missing = [str(path) for path in needed if not path.is_file()]
        if missing:
            raise ValueError(
                f"{PREFIX}MODEL={self.model}: no model there ({' and '.join(missing)} not found; "
                f"{PREFIX}RUNTIME={self.runtime} serves NAME.json with NAME.{self.runtime})"
            )
        return self

    @property
    def models_folder(self) -> Path | None:
        """Where the other served models are: every model in it is loaded beside the default."""
        if self.model_dir.lower() == "none":
            return None
        return Path(self.model_dir) if self.model_dir else ModelArtifact.at(self.model).folder

    @property
    def task_store_location(self) -> str | None:
        """Where the compatible APIs keep their tasks (CAPTCHA_TASK_STORE resolved); None: those APIs are off."""
        if self.task_store.lower() == "none":
            return None
        if self.task_store:
            return self.task_store
        uri = self.ratelimit_storage_uri
        if uri.startswith(("redis://", "rediss://")):
            return uri
        return DEFAULT_TASK_STORE

    @property
    def compat_max_body_bytes(self) -> int:
        """The largest body the compatible APIs read (their key is inside): an image as base64, and its options."""
        return min(self.max_body_bytes, self.max_image_bytes * 4 // 3 + 64 * 1024)

    @property
    def open_access(self) -> bool:
        return not self.api_keys

    @property
    def metrics_bind_host(self) -> str:
        return self.metrics_host or self.host


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def load_settings(environ: Mapping[str, str] | None = None, overrides: Mapping | None = None) -> Settings:
    """Defaults, then CAPTCHA_* variables (from `environ`, os.environ by default), then `overrides` (field names;
    for tests). Raises ConfigError with one line naming the variable."""
    token = _ENVIRON.set(environ)
    try:
        return Settings(**(overrides or {}))
    except ValidationError as error:
        raise ConfigError(_describe(error, environ, overrides or {})) from None
    finally:
        _ENVIRON.reset(token)


def _describe(error: ValidationError, environ: Mapping[str, str] | None, overrides: Mapping) -> str:
    import os

    detail = error.errors(include_url=False)[0]
    message = detail["msg"].removeprefix("Value error, ")
    if not detail["loc"]:  # the model validator: its message names the variables
        return message
    name = str(detail["loc"][0])
    if detail["type"] == "extra_forbidden":
        return f"unknown settings: {', '.join(sorted(set(overrides) - set(Settings.model_fields)))}"
    variable = PREFIX + name.upper()
    if name in SECRETS:
        return f"{variable}: {message}"  # never the value: it would be a key in a log
    source = os.environ if environ is None else {k.upper(): v for k, v in environ.items()}
    given = overrides[name] if name in overrides else source.get(variable)
    return f"{variable}={given!r} is not valid: {message}"
