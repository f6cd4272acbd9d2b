"""What the logs and the metrics report about one request, kept in one place.

The request id and start time (set first, by logs.py), the error code of an error answer (errors.py) and a batch's
size and failed images (routes.py): each module notes its fact here and the access log and the metrics read them back,
instead of passing loose attributes through flask.g. A record is made on first use, so the order of the hooks that
note facts does not matter.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from flask import g

_KEY = "captcha_request"


@dataclass
class RequestRecord:
    request_id: str = "-"
    started: float = field(default_factory=time.perf_counter)
    error_code: str | None = None  # the code of an error answer
    batch_size: int | None = None  # images in a /predict-batch request
    image_errors: Counter = field(default_factory=Counter)  # failed images of a batch, by code

    def seconds(self) -> float:
        return time.perf_counter() - self.started


def current() -> RequestRecord:
    """This request's record (inside a request only)."""
    record = g.get(_KEY)
    if record is None:
        record = RequestRecord()
        setattr(g, _KEY, record)
    return record
