"""Taught examples: the codes people chose, kept in ``ops.classification_examples``.

A person who decides the right code of an error teaches it (``ipai-ops classify teach``, or
the Odoo error form): the text, the code, who and when. ``ipai-ops classify train --dsn``
trains the learned layer on them (:mod:`ipai_ops.classify.model`), where a taught example
also answers for texts nearly identical to it, so a new kind of error gets its code from a
few examples. Examples whose code is no longer active stay stored and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ipai_ops import store
from ipai_ops.registry import Registry

#: Longest text kept per example (the ops column's check).
MAX_TEXT_CHARS = 16384


class TeachError(ValueError):
    """A taught example that is refused (unknown, inactive or fallback code; empty text)."""


@dataclass(frozen=True)
class Taught:
    id: int
    code: str
    error_type: str | None
    text: str
    taught_by: str


def check_example(registry: Registry, code: str, text: str | None) -> str:
    """The code to store for ``code`` (an alias resolves), or :class:`TeachError`."""
    mode = registry.get((code or "").strip())
    if mode is None:
        raise TeachError(f"{code!r} is not a code of the registry")
    if not mode.active:
        hint = f"; teach {mode.replaced_by} instead" if mode.replaced_by else ""
        raise TeachError(f"{mode.code} is {mode.lifecycle}: only an active code can be taught{hint}")
    if mode.fallback:
        raise TeachError(f"{mode.code} is the fallback: teach the code the error should have")
    if not (text or "").strip():
        raise TeachError("the example's text is empty: teach the text that was classified")
    return mode.code


def teach(
    conn: Any,
    registry: Registry,
    *,
    code: str,
    text: str,
    taught_by: str,
    error_type: str | None = None,
    error_id: int | None = None,
    previous_code: str | None = None,
) -> int:
    """Check and store one taught example on ``conn`` (the caller commits); its id."""
    code = check_example(registry, code, text)
    with conn.cursor() as cur:
        return insert_example(
            cur,
            code=code,
            text=text,
            taught_by=taught_by,
            error_type=error_type,
            error_id=error_id,
            previous_code=previous_code,
        )


def insert_example(
    cur: Any,
    *,
    code: str,
    text: str,
    taught_by: str,
    error_type: str | None = None,
    error_id: int | None = None,
    previous_code: str | None = None,
) -> int:
    """``INSERT`` one example on a cursor (Odoo's own, or one of :func:`teach`); its id. The
    caller has checked the code (against the registry, or Odoo's failure modes)."""
    if not (text or "").strip():
        raise TeachError("the example's text is empty: teach the text that was classified")
    if not (taught_by or "").strip():
        raise TeachError("who taught it is empty")
    cur.execute(
        "INSERT INTO ops.classification_examples"
        " (code, error_type, text, error_id, previous_code, taught_by)"
        " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
        (
            code,
            (error_type or None) and error_type[:512],
            text[:MAX_TEXT_CHARS],
            error_id,
            previous_code,
            taught_by.strip()[:256],
        ),
    )
    return int(cur.fetchone()[0])


def taught_examples(dsn: str | None) -> list[Taught]:
    """Every taught example, oldest first."""
    conn = store.connect(dsn, application_name="ipai-ops classify train")
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT id, code, error_type, text, taught_by FROM ops.classification_examples ORDER BY id")
            return [Taught(*row) for row in cur.fetchall()]
    finally:
        conn.close()
