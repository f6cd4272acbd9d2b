"""Errors raised on bad input or an unusable model; each carries its HTTP status and a stable code."""


class CaptchaError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidImage(CaptchaError):
    """The bytes are not an image at all, or the image is truncated."""

    status = 400
    code = "invalid_image"


class UnsupportedImageFormat(CaptchaError):
    status = 415
    code = "unsupported_format"


class ImageTooLarge(CaptchaError):
    status = 413
    code = "image_too_large"


class UnreadableImage(CaptchaError):
    """The image decodes but cannot be read as a captcha (e.g. 1x1 or absurd proportions)."""

    status = 422
    code = "unreadable_image"


class ModelNotReady(CaptchaError):
    status = 503
    code = "model_unavailable"


class InvalidConstraint(CaptchaError):
    """A charset or length no reading of this model can satisfy."""

    status = 400
    code = "invalid_parameter"
