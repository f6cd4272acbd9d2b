"""python -m captcha_api: the command line of captcha_api/cli.py (installed as the captcha-ocr command too)."""

import sys

from .cli import main

sys.exit(main())
