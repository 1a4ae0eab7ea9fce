"""The one error tree of the proxy.

Every failure the proxy reports to a client is one of these classes, and each class maps to
one HTTP status and one OpenAI error object (`{"error": {"message", "type", "param",
"code"}}`), so the `openai` SDK raises its usual typed exception. This module is pure (no
aiohttp) so that the rewrite engine can raise these too.
"""

from __future__ import annotations

from typing import Any, ClassVar

SERVER_NAME = "tuned-proxy"  # the `Server` header: no versions for a scanner to match
# A client's string quoted in an error or a log line is cut to this many characters: a 3 MB
# model name must not come back whole in a 404 body nor fill a log line.
MAX_ECHOED_CHARS = 256


def echo(text: str, limit: int = MAX_ECHOED_CHARS) -> str:
    """`text` as an error or a log line may quote it: at most `limit` characters, and a note
    of how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


class ProxyError(Exception):
    """Base class: a failure with an OpenAI-shaped body and a status code."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "server_error"
    default_code: ClassVar[str | None] = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        """Extra response headers this error carries (e.g. `retry-after`)."""
        return {}


class InvalidRequest(ProxyError):
    status = 400
    error_type = "invalid_request_error"


def nested_too_deeply() -> InvalidRequest:
    """JSON nested deeper than the proxy parses (about 1000 levels) or writes (254 levels)."""
    return InvalidRequest(
        "We could not parse the JSON body of your request (nested too deeply).",
        code="invalid_json",
    )


class AuthenticationFailed(ProxyError):
    status = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"


class ModelNotFound(ProxyError):
    status = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"

    @classmethod
    def for_model(cls, model: str) -> ModelNotFound:
        return cls(
            f"The model `{echo(model)}` does not exist or you do not have access to it.",
            param="model",
        )


class NotFound(ProxyError):
    status = 404
    error_type = "invalid_request_error"
    default_code = "not_found"


class ExpectationFailed(ProxyError):
    status = 417
    error_type = "invalid_request_error"
    default_code = "expectation_failed"


class UriTooLong(ProxyError):
    status = 414
    error_type = "invalid_request_error"
    default_code = "uri_too_long"


class MethodNotAllowed(ProxyError):
    status = 405
    error_type = "invalid_request_error"
    default_code = "method_not_allowed"


class RequestTimeout(ProxyError):
    status = 408
    error_type = "invalid_request_error"
    default_code = "request_timeout"


class BodyTooLarge(ProxyError):
    status = 413
    error_type = "invalid_request_error"
    default_code = "request_too_large"


class HeadersTooLarge(ProxyError):
    status = 431
    error_type = "invalid_request_error"
    default_code = "request_header_fields_too_large"


class Overloaded(ProxyError):
    """The proxy refuses work at once rather than queueing it (in-flight cap, draining)."""

    status = 503
    error_type = "server_error"
    default_code = "overloaded"

    def __init__(self, message: str, *, retry_after_s: int = 1, code: str | None = None):
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(self.retry_after_s)}


class UpstreamFailure(ProxyError):
    """A failure of the upstream rather than of the client or the proxy.

    `reason` is its bounded label in `upstream_errors_total` and in the request's log line:
    `connect`, `disconnected` (closed before answering), `timeout`, `broken_stream` (the
    answer broke after it started), `invalid_response` (an answer that is not one), `auth`
    (the upstream refused the proxy's credential).
    """

    error_type = "server_error"
    default_reason: ClassVar[str] = "connect"

    def __init__(self, message: str, *, reason: str | None = None, code: str | None = None):
        super().__init__(message, code=code)
        self.reason = reason or self.default_reason


class UpstreamUnreachable(UpstreamFailure):
    """The upstream could not be reached, or answered with something that is not an answer."""

    status = 502
    default_code = "upstream_error"


class UpstreamTimeout(UpstreamFailure):
    status = 504
    default_code = "upstream_timeout"
    default_reason = "timeout"


class InternalError(ProxyError):
    status = 500
    error_type = "server_error"
    default_code = "internal_error"


class ConfigError(Exception):
    """A config or policy file that cannot be used; never raised per request.

    `errors` are lines of the form `file: field.path: message`, ready to print.
    """

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


def validation_messages(file: str, exc: Any, prefix: str = "") -> list[str]:
    """Turn a pydantic `ValidationError` into `file: field.path: message` lines."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(part) for part in err["loc"])
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{file}: {path}: {message}")
    return lines
