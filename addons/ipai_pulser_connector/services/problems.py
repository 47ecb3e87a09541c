"""RFC 9457 problem documents for every error the JSON API returns.

``type`` is ``urn:ipai:failure:<CODE>`` (RFC 9457 section 3.1.1 allows a URN);
the extension member ``ipai`` carries what a machine acts on (section 3.2).
"""

from __future__ import annotations

from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:ipai:failure:"


def problem(
    registry,
    code: str,
    *,
    detail: str,
    instance: str,
    correlation_id: str | None = None,
    status: int | None = None,
    errors: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A problem document for ``code`` (a dotted code or a legacy alias)."""
    mode = registry.get(code) if registry is not None else None
    canonical = mode.code if mode else code
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + canonical,
        "title": mode.title if mode else canonical,
        "status": int(status or (mode.http_status if mode and mode.http_status else 500)),
        "detail": detail,
        "instance": instance,
        "ipai": {
            "code": canonical,
            "retryable": bool(mode.retryable) if mode else False,
            "correlation_id": correlation_id,
        },
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        body.update(extra)
    return body


PROBLEM_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["type", "title", "status", "detail", "instance", "ipai"],
    "properties": {
        "type": {"type": "string", "pattern": "^urn:ipai:failure:[A-Z][A-Z0-9_]*(\\.[A-Z][A-Z0-9_]*)+$"},
        "title": {"type": "string", "minLength": 1},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "minLength": 1},
        "ipai": {
            "type": "object",
            "required": ["code", "retryable", "correlation_id"],
            "properties": {
                "code": {"type": "string"},
                "retryable": {"type": "boolean"},
                "correlation_id": {"type": ["string", "null"]},
            },
        },
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["path", "message"],
                "properties": {"path": {"type": "string", "pattern": "^\\$"}, "message": {"type": "string"}},
            },
        },
    },
}
