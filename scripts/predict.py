#!/usr/bin/env python3
"""Read captchas on this machine, no server: python scripts/predict.py IMAGE_OR_DIR... [-o predictions.txt]

The same as `captcha-ocr predict ...` (python -m captcha_api predict ...); --help lists the options.
"""

import sys

from captcha_api.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", *sys.argv[1:]]))
