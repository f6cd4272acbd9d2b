"""The WSGI entry point: gunicorn -c gunicorn.conf.py (which names wsgi:app)."""

import logging
import os
import sys
import time

from captcha_api.service.app import create_app
from captcha_api.service.config import ConfigError

RESPAWN_PAUSE = 5  # seconds a worker that cannot serve waits before it exits (less than gunicorn's boot timeout)

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
    time.sleep(RESPAWN_PAUSE)  # gunicorn starts another at once: a pause, not a loop taking a core
    sys.exit(1)
