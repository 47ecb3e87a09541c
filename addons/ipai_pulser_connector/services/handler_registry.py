"""The handler registry: intent type -> (JSON Schema for args, callable, default timeout).

Another addon adds a handler with one decorator, in a module its ``__init__`` imports::

    from odoo.addons.ipai_pulser_connector.services.handler_registry import intent_handler

    @intent_handler("sale.order.confirm", schema={"type": "object", ...}, timeout=60)
    def confirm(ctx):
        order = ctx.env["sale.order"].browse(ctx.args["order_id"])
        ...
        return {"confirmed": True}

A handler receives a :class:`HandlerContext` and returns a JSON-serialisable dict
(the ``data`` of the result contract). It raises the typed exceptions of
``services.exceptions`` to name a failure; anything else is classified by the
registry's signatures (and falls back to its fallback code). Long handlers call
``ctx.check()`` between steps so timeouts and cancellation are honoured cooperatively.

A running attempt holds its intent under a lease: by default its whole budget plus a
grace period. A handler declared with ``lease=<seconds>`` holds it that long only, and
keeps it by heartbeats (``ctx.heartbeat()``, which ``ctx.check()`` calls): one that stops
calling them (hung, stuck outside Python) loses the intent to the reaper after ``lease``
seconds instead of after its whole budget, and its late outcome is discarded.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from .exceptions import ArgsInvalid, IntentCancelled, IntentTimeout, IntentTypeUnknown, LeaseExpired

DEFAULT_TIMEOUT_SECONDS = 30.0
#: Minimum seconds between two cancellation polls of one attempt.
CANCEL_POLL_SECONDS = 0.25
MAX_TIMEOUT_SECONDS = 600.0


@dataclass
class HandlerContext:
    env: Any
    args: dict[str, Any]
    intent: Any = None
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    started: float = field(default_factory=time.monotonic)
    #: Called by :meth:`check`; returns True when a cancel was requested.
    cancel_requested: Callable[[], bool] | None = None
    #: The handler's declared lease (seconds between heartbeats), None for the default.
    lease: float | None = None
    #: Called by :meth:`heartbeat`; returns False when the attempt lost its intent.
    renew_lease: Callable[[], bool] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    stdout: list[str] = field(default_factory=list)
    _last_cancel_poll: float = field(default=0.0, repr=False)
    _last_heartbeat: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        self._last_cancel_poll = self.started
        self._last_heartbeat = self.started

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def remaining(self) -> float:
        return max(self.timeout - self.elapsed, 0.0)

    def check(self) -> None:
        """Raise INTENT.TIMEOUT past the deadline, or stop when the intent was cancelled."""
        if self.elapsed > self.timeout:
            raise IntentTimeout(
                f"handler exceeded its {self.timeout:g}s budget ({self.elapsed:.2f}s elapsed)",
                details={"timeout_seconds": self.timeout, "elapsed_seconds": round(self.elapsed, 3)},
            )
        if self.lease:
            self.heartbeat()
        now = time.monotonic()
        # Asking the database costs a round trip: at most every CANCEL_POLL_SECONDS, the
        # first time once the handler has run that long (a quicker handler just finishes).
        if self.cancel_requested is not None and now - self._last_cancel_poll >= CANCEL_POLL_SECONDS:
            self._last_cancel_poll = now
            if self.cancel_requested():
                raise IntentCancelled("cancellation requested")

    def heartbeat(self) -> None:
        """Renew the attempt's lease (a write on a connection of its own), at most three times
        per lease (or per budget for a handler without ``lease=``). Raises INTENT.LEASE_EXPIRED
        when the attempt already lost its intent to the reaper: there is no point going on."""
        if self.renew_lease is None:
            return
        now = time.monotonic()
        if now - self._last_heartbeat < (self.lease or self.timeout) / 3:
            return
        self._last_heartbeat = now
        if not self.renew_lease():
            raise LeaseExpired(
                "this attempt lost its lease (reaped after a missed heartbeat); its outcome is discarded",
                details={"lease_seconds": self.lease, "elapsed_seconds": round(self.elapsed, 3)},
            )

    def check_cancel_now(self) -> None:
        """Poll the cancel flag at once (for a handler about to start an expensive step)."""
        self._last_cancel_poll = float("-inf")
        self.check()

    def log(self, line: str) -> None:
        """A line of handler output, kept (tail, redacted) as evidence.stdout_tail."""
        self.stdout.append(str(line))

    def tool_call(self, name: str, **attributes: Any) -> None:
        self.tool_calls.append({"name": name, **attributes})


@dataclass(frozen=True)
class Handler:
    intent_type: str
    func: Callable[[HandlerContext], dict[str, Any]]
    schema: dict[str, Any]
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    description: str = ""
    #: Seconds a running attempt keeps its intent without a heartbeat; None = its budget
    #: plus the worker's grace period, no heartbeat needed.
    lease: float | None = None

    def validator(self) -> jsonschema.Draft202012Validator:
        return jsonschema.Draft202012Validator(self.schema, format_checker=jsonschema.FormatChecker())


_HANDLERS: dict[str, Handler] = {}


def register(handler: Handler) -> Handler:
    jsonschema.Draft202012Validator.check_schema(handler.schema)
    _HANDLERS[handler.intent_type] = handler
    return handler


def intent_handler(
    intent_type: str,
    *,
    schema: dict[str, Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    description: str = "",
    lease: float | None = None,
):
    """Decorator registering ``func`` as the handler of ``intent_type`` (``lease``: see the
    module's docstring)."""
    if lease is not None and not lease > 0:
        raise ValueError(f"intent handler {intent_type!r}: lease must be a positive number of seconds, got {lease!r}")

    def decorate(func):
        register(
            Handler(
                intent_type,
                func,
                schema or {"type": "object"},
                timeout,
                description or _first_line(func.__doc__),
                lease,
            )
        )
        return func

    return decorate


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0] if lines else ""


def unregister(intent_type: str) -> None:
    _HANDLERS.pop(intent_type, None)


def get_handler(intent_type: str) -> Handler:
    handler = _HANDLERS.get(intent_type)
    if handler is None:
        raise IntentTypeUnknown(
            f"unknown intent type {intent_type!r}",
            details={"intent_type": intent_type, "known_types": sorted(_HANDLERS)},
        )
    return handler


def handler_types() -> list[str]:
    return sorted(_HANDLERS)


def json_path(parts) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def validate_args(intent_type: str, args: Any) -> Handler:
    """The handler of ``intent_type`` after checking ``args``; ArgsInvalid lists each problem's JSON path."""
    handler = get_handler(intent_type)
    errors = [
        {"path": json_path(err.absolute_path), "message": err.message}
        for err in sorted(
            handler.validator().iter_errors(args), key=lambda e: (list(map(str, e.absolute_path)), e.message)
        )
    ]
    if errors:
        raise ArgsInvalid(errors)
    return handler


def timeout_for(handler: Handler, args: dict[str, Any]) -> float:
    """The handler's budget: ``args.timeout_s`` when given (bounded), else its default."""
    value = args.get("timeout_s") if isinstance(args, dict) else None
    if isinstance(value, (int, float)) and value > 0:
        return float(min(value, MAX_TIMEOUT_SECONDS))
    return handler.timeout
