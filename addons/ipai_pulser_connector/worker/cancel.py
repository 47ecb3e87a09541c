"""Cooperative cancellation as the worker sees it: the pending request of an intent, its
acknowledgement, and the request carried across a retry.

A request for an intent a worker holds is a ``cancel_requested`` event, never a write of the
row (``IpaiPulserIntent._request_cancel`` says why); these functions read it back.
"""

import logging

from ..services import state_machine as sm
from ..services import telemetry

_logger = logging.getLogger(__name__)

#: The pending cancel request of one intent, as seen by one snapshot: the row's own
#: ``cancel_requested_at`` (queued cancels, older code) and the first ``cancel_requested``
#: event logged after the intent's latest ``claimed`` event (a request made before a requeue
#: does not cancel the new run). ``claim_id`` is raised to ``%(floor)s``: a fresh snapshot
#: uses the claim the worker's own transaction sees, which may not be committed yet.
PENDING_CANCEL_SQL = """
    SELECT i.cancel_requested_at, i.cancel_source, r.create_date, r.data->>'source', c.claim_id
      FROM ipai_pulser_intent i
     CROSS JOIN LATERAL (
            SELECT GREATEST(COALESCE(max(id), 0), %(floor)s) AS claim_id
              FROM ipai_pulser_intent_event
             WHERE intent_id = i.id AND event_type = 'claimed'
           ) c
      LEFT JOIN LATERAL (
            SELECT create_date, data
              FROM ipai_pulser_intent_event
             WHERE intent_id = i.id AND event_type = 'cancel_requested' AND id > c.claim_id
             ORDER BY id
             LIMIT 1
           ) r ON TRUE
     WHERE i.id = %(id)s
"""


def cancel_request_of(row):
    """``(requested_at, source)`` from a :data:`PENDING_CANCEL_SQL` row, or None. Times are
    kept to the second, as ``fields.Datetime.now()`` (the acknowledgement) is."""
    if not row:
        return None
    row_at, row_source, event_at, event_source, _claim_id = row
    if row_at:
        return row_at.replace(microsecond=0), row_source or None
    if event_at:
        return event_at.replace(microsecond=0), event_source or None
    return None


def pending_cancel_request(intent, *, fresh=True):
    """The pending cancel request of ``intent`` as ``(requested_at, source)``, or None.

    A request is the row's ``cancel_requested_at`` (set by a queued cancel, or by older
    code) or a ``cancel_requested`` event logged after the intent's latest ``claimed``
    event. Two reads:

    - this transaction (ORM changes flushed first): a request made in the same
      transaction, e.g. by the handler itself or a test;
    - with ``fresh``, a separate short-lived cursor, i.e. a new snapshot at every call:
      a request committed by the API or the UI after this transaction's snapshot was
      taken (Odoo cursors are REPEATABLE READ: re-reading on ``env.cr`` never sees
      it). That cursor only reads, takes no lock, and is closed at once.
    """
    intent.ensure_one()
    env = intent.env
    env["ipai.pulser.intent.event"].flush_model(["intent_id", "event_type", "data"])
    intent.flush_recordset(["cancel_requested_at", "cancel_source"])
    env.cr.execute(PENDING_CANCEL_SQL, {"id": intent.id, "floor": 0})
    row = env.cr.fetchone()
    request = cancel_request_of(row)
    if request or not fresh or not row:
        return request
    try:
        with env.registry.cursor() as cr:
            cr.execute(PENDING_CANCEL_SQL, {"id": intent.id, "floor": row[4]})
            return cancel_request_of(cr.fetchone())
    except Exception:  # a poll never breaks the attempt: the next one asks again
        _logger.warning("ipai_pulser: cancel poll of intent %s on a fresh cursor failed", intent.id, exc_info=True)
        return None


def cancel_requested_in_db(intent, found=None):
    """True when a cancel of ``intent`` is pending: the worker's cancel poll
    (``HandlerContext.cancel_requested``, called by ``ctx.check()``), and the check before
    an attempt starts. Appends the request (``(requested_at, source)``) to ``found`` when
    given, so the acknowledgement can record it even when the handler's savepoint that
    logged it is rolled back."""
    request = pending_cancel_request(intent)
    if request and found is not None:
        found.append(request)
    return bool(request)


def keep_cancel_request(intent, vals):
    """``vals`` for an intent going back to the queue, plus a pending cancel request moved
    onto the row: the next claim's ``claimed`` event would hide the request event, and the
    row's field makes that claim cancel the intent before the handler runs. The caller
    (worker or reaper) holds the row."""
    if not intent.cancel_requested_at:
        request = pending_cancel_request(intent)
        if request:
            vals.update(cancel_requested_at=request[0], cancel_source=request[1] or "api")
    return vals


def cancel_telemetry(intent, source, requested, acknowledged, *, instant=False):
    """Cancel latency by path (docs/specs/telemetry_v1.md). ``instant``: a queued intent
    cancelled in the request's own transaction (latency 0). ``requested`` keeps the
    microseconds of the request event's ``create_date``; ``acknowledged`` is the wall
    clock, not the row's second-truncated ``Datetime.now()``."""
    latency_ms = 0.0 if instant else max((acknowledged - requested).total_seconds() * 1000, 0.0)
    attrs = {telemetry.ATTR_INTENT_TYPE: intent.intent_type}
    cancel = telemetry.cancel_attributes(source, instant=instant)
    telemetry.observe("cancel_latency", latency_ms / 1000.0, {**attrs, **cancel})
    telemetry.count("intents", 1, {**attrs, telemetry.ATTR_OUTCOME: sm.CANCELLED})
    telemetry.audit("run.state", "cancelled", intent_id=intent.id, state="cancelled")
    telemetry.audit(
        "run.cancel",
        "acknowledged",
        intent_id=intent.id,
        cancel_source=source,
        cancel_path=cancel[telemetry.ATTR_CANCEL_PATH],
        instant=instant,
        requested=requested.isoformat(),
        acknowledged=acknowledged.isoformat(),
        latency_ms=round(latency_ms, 3),
    )


def acknowledge_cancel(intent, now, worker_id, request=None):
    """Move ``intent`` to ``cancelled`` in the worker's transaction, recording on the row the
    request (``(requested_at, source)`` from :func:`pending_cancel_request`) and the
    acknowledgement; the cancel latency is ``acknowledged - requested``."""
    requested, source = request or (None, None)
    exact = requested or intent.cancel_requested_at
    requested = min(exact or now, now)
    source = source or intent.cancel_source or "api"
    intent._transition(
        sm.CANCELLED,
        vals={
            "cancel_requested_at": requested,
            "cancel_source": source,
            "cancel_acknowledged_at": now,
            "finished_at": now,
            "lease_owner": False,
            "lease_expires_at": False,
        },
        event_type="cancelled",
        message=f"cancel acknowledged by {worker_id}",
        worker=worker_id,
    )
    cancel_telemetry(intent, source, exact or requested, max(telemetry.utcnow(), exact or now))
