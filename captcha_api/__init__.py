"""CaptchaOCR: a self-hosted CAPTCHA-reading service."""

__version__ = "1.0.0"
