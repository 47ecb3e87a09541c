"""Classification: an error (explicit code, exception type, message, log text) -> failure code.

Precedence, documented in ssot/errors/error_codes.md:

1. an explicit code (an ``ipai.failure.code`` attribute, an envelope's ``error.code``,
   or a legacy alias such as ``ARGS_INVALID``) that the registry knows;
2. signatures ``on: type`` over the exception type, then ``on: message`` over the
   message, then ``on: text`` over any log/output text (message included), each
   tier in registry file order; deprecated codes never match;
3. the registry's fallback code.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipai_ops.taxonomy import FailureMode, Registry

#: Signatures only see this much of a message/log text: bounded work per error.
MAX_CLASSIFY_CHARS = 64 * 1024


@dataclass(frozen=True)
class Classification:
    code: str
    mode: FailureMode
    #: ``explicit``, ``signature`` or ``fallback``.
    matched_by: str
    #: ``on:pattern`` of the signature that matched, or the explicit code given.
    signature: str | None = None

    @property
    def is_fallback(self) -> bool:
        return self.matched_by == "fallback"


def classify(
    registry: Registry,
    *,
    explicit_code: str | None = None,
    error_type: str | None = None,
    message: str | None = None,
    text: str | None = None,
) -> Classification:
    if explicit_code:
        mode = registry.get(explicit_code)
        if mode is not None:
            if not mode.active and mode.replaced_by:
                mode = registry[mode.replaced_by]
            return Classification(mode.code, mode, "explicit", explicit_code)

    subjects = {
        "type": (error_type or "")[:MAX_CLASSIFY_CHARS],
        "message": (message or "")[:MAX_CLASSIFY_CHARS],
        "text": "\n".join(p for p in (message, text) if p)[: MAX_CLASSIFY_CHARS * 2],
    }
    for tier in ("type", "message", "text"):
        subject = subjects[tier]
        if not subject:
            continue
        for mode in registry.modes:
            if not mode.active:
                continue
            for sig in mode.signatures:
                if sig.on == tier and sig.regex.search(subject):
                    return Classification(mode.code, mode, "signature", sig.describe())
    fallback = registry.fallback
    return Classification(fallback.code, fallback, "fallback")


def classify_exception(registry: Registry, exc: BaseException, *, text: str | None = None) -> Classification:
    explicit = getattr(exc, "failure_code", None)
    return classify(
        registry,
        explicit_code=explicit if isinstance(explicit, str) else None,
        error_type=qualified_type(exc),
        message=str(exc),
        text=text,
    )


def qualified_type(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"
