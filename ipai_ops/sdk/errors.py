"""Typed failures: raise one where the code knows what went wrong.

:func:`ipai_ops.classify.classify_exception` honours ``failure_code`` before any signature,
so a :class:`Failure` is classified explicitly; anything else a handler lets escape is
classified by signature and, failing that, as the registry's fallback.

A :class:`Failure` message is **public**: the middleware sends it to the client as the
problem's ``detail`` (redacted and capped). Write it for the caller; put internals in
``details``, which only reaches the envelope and the ops row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


class Failure(Exception):
    """A failure with a registry code, a client-facing message and optional internals.

    ``status`` overrides the mode's ``http_status``; ``errors`` (``[{"path": "$.field",
    "message": ...}]``) is sent as the problem's validation-error list; ``retry_after``
    (seconds) overrides the reporter's default ``Retry-After`` on 429/503 answers.
    """

    failure_code: str = "UNCLASSIFIED.UNKNOWN"

    def __init__(
        self,
        code: str | None,
        message: str,
        *,
        details: Mapping[str, Any] | Sequence[Any] | str | None = None,
        status: int | None = None,
        errors: list[dict[str, str]] | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        if code:
            self.failure_code = code
        self.message = message
        self.details = details
        self.status = status
        self.errors = errors
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.failure_code!r}, {self.message!r})"


class WebhookRejected(Failure):
    """An inbound webhook was refused (missing headers, bad signature, stale, duplicate).

    One class for every refusal so a handler can catch them apart from its own failures,
    e.g. to acknowledge a ``WEBHOOK.DELIVERY_DUPLICATE`` with 200 instead of 409.
    """

    def __init__(self, code: str, message: str, *, details: Mapping[str, Any] | None = None) -> None:
        super().__init__(code, message, details=details)
