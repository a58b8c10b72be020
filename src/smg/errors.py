"""One error tree for the whole library.

Every error smg raises on purpose derives from :class:`SmgError` and knows the HTTP status and
OpenAI error ``type`` the API layer answers with, so a caller can catch one class and a server can
map any failure to an OpenAI-shaped body without a lookup table.
"""
from __future__ import annotations


def openai_error(message: str, error_type: str, status: int, code: int | str | None = None,
                 param: str | None = None) -> dict:
    """OpenAI's error body (``{"error": {message, type, param, code}}``); every server and the
    library build it here."""
    return {"error": {"message": message, "type": error_type, "param": param,
                      "code": status if code is None else code}}


class SmgError(Exception):
    """Base class of every error smg raises on purpose."""

    status_code: int = 500
    error_type: str = "internal_error"
    code: str | None = None  # OpenAI's ``code`` when it is not the status (``model_not_found``)
    retry_after: float | None = None  # seconds a client should wait before retrying (``Retry-After``)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_openai(self) -> dict:
        """The error as an OpenAI-style response body."""
        return openai_error(self.message, self.error_type, self.status_code, self.code)


class InvalidRequest(SmgError):
    """The request itself is wrong (bad field, bad value, unsupported option)."""

    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceeded(InvalidRequest):
    """The prompt (plus the tokens asked for) does not fit the model's context."""

    code = "context_length_exceeded"


class UnsupportedFeature(InvalidRequest):
    """A recognised API feature that smg does not implement yet (HTTP 400; listed in README)."""

    error_type = "unsupported_feature"


class InvalidImage(InvalidRequest):
    """An image input that cannot be used: unreachable, refused by the fetch policy, not an image,
    truncated, too large, or a shape its model's processor refuses. The message names the image."""

    code = "invalid_image"
    #: which of a batch's images a processor refused (its index), when it was one image's fault
    image_index: int | None = None


class ModelNotFound(SmgError):
    """The request names a model (or adapter) the gateway does not serve."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "model_not_found"


class TokenizerError(InvalidRequest):
    """Input the tokenizer cannot take (e.g. lone surrogates), or a tokenizer that cannot be used."""


class TokenizerLoadError(SmgError):
    """A tokenizer file or directory is missing, unreadable or corrupt."""

    status_code = 500
    error_type = "server_error"


class ParseError(SmgError):
    """A parser was used wrongly (fed after ``finish``, fed a non-str); model output never raises."""

    status_code = 500
    error_type = "server_error"


class ChatTemplateError(InvalidRequest):
    """No chat template, a template that does not compile, or one that raised while rendering."""


class EngineError(SmgError):
    """The engine failed the request (its gRPC status and message are kept)."""

    status_code = 502
    error_type = "engine_error"


class EngineUnavailable(EngineError):
    """The worker cannot be reached or is overloaded; another worker may serve the request."""

    status_code = 503
    error_type = "engine_unavailable"


class NoHealthyWorker(EngineUnavailable):
    """No worker is healthy (or none is configured)."""


class RequestAborted(SmgError):
    """The request was cancelled (client gone, stop matched, timeout) or aborted by the engine."""

    status_code = 499
    error_type = "request_aborted"


class Unauthorized(SmgError):
    """No API key, or one the gateway does not know (the key itself is never logged or echoed)."""

    status_code = 401
    error_type = "invalid_request_error"
    code = "invalid_api_key"


class Forbidden(SmgError):
    """A known API key that may not use what the request asks for (a model outside its list)."""

    status_code = 403
    error_type = "permission_error"
    code = "model_not_allowed"


class Overloaded(SmgError):
    """The gateway (or the model) is at its admission limits: the queue is full, or the request
    waited past the queue timeout. ``retry_after``: seconds a client should wait (``Retry-After``)."""

    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFound(SmgError):
    """A stored object (response, conversation, item) the request names does not exist."""

    status_code = 404
    error_type = "invalid_request_error"
    code = "not_found"


class StorageUnavailable(SmgError):
    """The storage backend cannot be reached or failed; nothing of the request was stored."""

    status_code = 503
    error_type = "storage_unavailable"
