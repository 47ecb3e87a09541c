"""Typed exceptions: each carries its failure code so classification is explicit.

``ipai_ops.classify.classify_exception`` honours an exception's ``failure_code``
attribute before any signature; everything not raised through these classes
falls through to signatures and then the registry fallback.
"""

from __future__ import annotations

from typing import Any


class PulserError(Exception):
    """Base class: a failure the connector understands and can name."""

    failure_code = "INTENT.HANDLER_CRASHED"
    #: HTTP status of the API's problem document; None = the failure mode's own.
    http_status: int | None = None

    def __init__(self, message: str, *, details: Any = None, failure_code: str | None = None):
        super().__init__(message)
        self.details = details
        if failure_code:
            self.failure_code = failure_code


class ArgsInvalid(PulserError):
    """The intent's args do not satisfy the handler's JSON Schema."""

    failure_code = "INTENT.ARGS_INVALID"

    def __init__(self, errors: list[dict[str, str]], *, message: str | None = None):
        self.errors = errors
        summary = "; ".join(f"{e['path']}: {e['message']}" for e in errors[:5])
        super().__init__(message or f"intent args are invalid: {summary}", details={"errors": errors})


class IntentTypeUnknown(PulserError):
    failure_code = "INTENT.TYPE_UNKNOWN"


class HandlerCrashed(PulserError):
    failure_code = "INTENT.HANDLER_CRASHED"


class IntentTimeout(PulserError):
    failure_code = "INTENT.TIMEOUT"


class LeaseExpired(PulserError):
    failure_code = "INTENT.LEASE_EXPIRED"


class AllowlistProfileUnknown(PulserError):
    failure_code = "INTENT.ALLOWLIST_PROFILE_UNKNOWN"


class RedactionModeUnsupported(PulserError):
    failure_code = "INTENT.REDACTION_MODE_UNSUPPORTED"


class IntentNotFound(PulserError):
    failure_code = "INTENT.NOT_FOUND"


class StateConflict(PulserError):
    """An illegal state transition (or an action the current state forbids)."""

    failure_code = "INTENT.STATE_CONFLICT"


class IntentCancelled(PulserError):
    """Raised inside a handler when the intent's cancellation was requested.

    Never classified as a failure: the worker turns it into the ``cancelled`` state.
    """

    failure_code = "INTENT.STATE_CONFLICT"


class RequestInvalid(PulserError):
    failure_code = "API.REQUEST_INVALID"


class BodyTooLarge(RequestInvalid):
    """The request body passes the API's limit (refused before the rest is read)."""

    http_status = 413


class AuthMissing(PulserError):
    failure_code = "API.AUTH_MISSING"


class SignatureInvalid(PulserError):
    failure_code = "WEBHOOK.SIGNATURE_INVALID"


class TimestampStale(PulserError):
    failure_code = "WEBHOOK.TIMESTAMP_STALE"


class DeliveryDuplicate(PulserError):
    failure_code = "WEBHOOK.DELIVERY_DUPLICATE"


class DatabaseUnavailable(PulserError):
    failure_code = "TRANSPORT.DATABASE_UNAVAILABLE"


class ScopeDenied(PulserError):
    """The client's scope (``ipai.pulser.client.allowed_intent_types``) does not cover the type."""

    failure_code = "API.SCOPE_DENIED"


class RateLimited(PulserError):
    """The client spent its requests of the current minute; ``retry_after`` seconds until the next."""

    failure_code = "API.RATE_LIMITED"

    def __init__(self, message: str, *, retry_after: int, details: Any = None):
        super().__init__(message, details=details)
        self.retry_after = max(int(retry_after), 1)
