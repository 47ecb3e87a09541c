"""RFC 9457 problem documents: what every ipai HTTP surface answers on failure.

``type`` is ``urn:ipai:failure:<CODE>`` (RFC 9457 section 3.1.1 allows a URN; it is not
meant to be dereferenced); ``status`` is the failure mode's ``http_status`` (500 when the
mode has none); the extension member ``ipai`` (section 3.2) carries what a machine acts
on: the canonical ``code``, whether a retry can succeed, and the correlation id to quote.

Contract: ``ssot/schemas/problem.schema.json``. Framework-free: the Odoo Pulser connector
and the Python service middleware (:mod:`ipai_ops.sdk`) build the same shape.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import jsonschema

from ipai_ops import config
from ipai_ops.registry import Registry

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:ipai:failure:"
#: RFC 9457 section 3.1.3: "status" is advisory and mirrors the HTTP status code.
DEFAULT_STATUS = 500


class ProblemInvalid(ValueError):
    """A problem document does not satisfy the schema; ``errors`` holds ``path: message`` lines."""

    def __init__(self, errors: list[str]):
        self.errors = errors
        super().__init__("; ".join(errors))


def status_for(registry: Registry | None, code: str, status: int | None = None) -> int:
    """The HTTP status of ``code``: an explicit one, else the mode's ``http_status``, else 500."""
    if status:
        return int(status)
    mode = registry.get(code) if registry is not None else None
    return int(mode.http_status) if mode is not None and mode.http_status else DEFAULT_STATUS


def problem(
    registry: Registry | None,
    code: str,
    *,
    detail: str,
    instance: str,
    correlation_id: str | None = None,
    status: int | None = None,
    errors: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A problem document for ``code`` (a dotted code or a legacy alias such as ``ARGS_INVALID``).

    ``detail`` goes to the client as it is: callers pass text meant for the client, never a
    raw exception message. ``errors`` (``[{"path": "$.x", "message": ...}]``) is the
    validation-error list; ``extra`` adds further extension members.
    """
    mode = registry.get(code) if registry is not None else None
    canonical = mode.code if mode else code
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + canonical,
        "title": mode.title if mode else canonical,
        "status": status_for(registry, canonical, status),
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


@lru_cache(maxsize=1)
def problem_schema() -> dict[str, Any]:
    """The JSON Schema of a problem document (``ssot/schemas/problem.schema.json``)."""
    path = config.data_path("ssot", "schemas", "problem.schema.json")
    return json.loads(path.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(problem_schema())


def problem_errors(document: Any) -> list[str]:
    """Every schema violation as ``/json/path: message``; empty when valid."""
    return [
        f"/{'/'.join(str(p) for p in err.absolute_path)}: {err.message}"
        for err in sorted(_validator().iter_errors(document), key=lambda e: list(map(str, e.path)))
    ]


def validate_problem(document: Any) -> None:
    errors = problem_errors(document)
    if errors:
        raise ProblemInvalid(errors)
