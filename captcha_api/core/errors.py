"""What can go wrong reading an image with a model: one class per error, each with its HTTP status and the stable
`code` clients match on. The service adds the errors of its own request handling (captcha_api/service/errors.py);
`codes()` there lists every code of both, each defined once, as a class here or there."""


class CaptchaError(Exception):
    """The request cannot be handled as sent."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidImage(CaptchaError):
    """The bytes are not an image at all, or the image is truncated."""

    status = 400
    code = "invalid_image"


class InvalidParameter(CaptchaError):
    """An option (model, charset, length) of the wrong type or size, or a charset or length no reading of this
    model can satisfy."""

    status = 400
    code = "invalid_parameter"


class UnsupportedImageFormat(CaptchaError):
    """An image format the service does not read (served: PNG, JPEG, BMP, GIF, WebP)."""

    status = 415
    code = "unsupported_format"


class ImageTooLarge(CaptchaError):
    """The image is over CAPTCHA_MAX_IMAGE_BYTES, or costs too much to decode (pixels, scans, segments)."""

    status = 413
    code = "image_too_large"


class UnreadableImage(CaptchaError):
    """The image decodes but cannot be read as a captcha (e.g. 1x1 or absurd proportions)."""

    status = 422
    code = "unreadable_image"


class ModelNotReady(CaptchaError):
    """No model is loaded."""

    status = 503
    code = "model_unavailable"


class NoReading(CaptchaError):
    """A reading the service will not vouch for; the error's answer carries it (prediction, confidence) so that a
    client can still look at it, refresh the captcha, or try another reader."""

    status = 422

    def __init__(self, message: str, reading):
        super().__init__(message)
        self.reading = reading


class Unreadable(NoReading):
    """The model read no characters, or a number of them outside the lengths it was trained on (when the request
    sets no length): no text the model can stand behind."""

    code = "unreadable"


class LowConfidence(NoReading):
    """The reading's confidence is below min_confidence: the request's, else the model's own default (GET /info);
    min_confidence=0 returns every reading."""

    code = "low_confidence"
