"""The WSGI entry point: gunicorn -c gunicorn.conf.py (which names wsgi:app)."""

import logging
import sys

from captcha_api.service.app import create_app
from captcha_api.service.config import ConfigError

try:
    app = create_app()
except ConfigError as error:
    # One line, no traceback; exit status 3 is gunicorn's "worker failed to boot", which stops the master too.
    logging.getLogger("captcha_api").critical("%s", error)
    sys.exit(3)
