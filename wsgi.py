"""The WSGI entry point: gunicorn -c gunicorn.conf.py (which names wsgi:app)."""

import logging
import os
import sys

from captcha_api.service.app import create_app
from captcha_api.service.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    log = logging.getLogger("captcha_api")
    log.critical("%s", error)  # one line, no traceback
    if os.environ.get("CAPTCHA_FIRST_WORKERS", "1") == "1":
        sys.exit(3)  # gunicorn's "worker failed to boot": at start-up, the master stops too
    # A worker started later (recycled, or after a reload) while others serve: the master starts another; the
    # service keeps what it has until the files are fixed and it is reloaded.
    log.critical("the workers already running keep serving; fix the model files and reload (kill -HUP)")
    sys.exit(1)
