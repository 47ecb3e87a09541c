"""The lease reaper: intents whose worker died (or stopped renewing) go back to the queue.

An ``assigned`` intent (claimed, not started) is requeued untouched; a ``running`` attempt
counts as failed with INTENT.LEASE_EXPIRED (retried with backoff, or dead), unless a cancel
was requested, which the reaper then acknowledges.
"""

from odoo import fields

from ..services import state_machine as sm
from ..services.exceptions import LeaseExpired
from . import cancel
from .attempt import Attempt
from .lease import read_committed

#: Candidates: leased work past its lease (the ``_lease_idx`` partial index), and for a
#: running attempt no renewal (``ipai_pulser_intent_lease``) past it either. ``FOR NO KEY
#: UPDATE`` (not ``FOR UPDATE``) so that a handler's own event rows (a ``KEY SHARE`` lock on
#: the intent) do not hide an expired attempt; a renewal's ``FOR SHARE`` still does.
_EXPIRED_SQL = """
    SELECT i.id FROM ipai_pulser_intent i
      LEFT JOIN ipai_pulser_intent_lease l
        ON l.intent_id = i.id AND i.state = 'running' AND l.attempt = i.attempts
     WHERE i.state IN ('assigned', 'running') AND i.lease_expires_at < %(now)s
       AND (l.expires_at IS NULL OR l.expires_at < %(now)s)
     ORDER BY i.id
     LIMIT %(limit)s
       FOR NO KEY UPDATE OF i SKIP LOCKED
"""
#: The same test once the rows are locked, in a statement of its own: under READ COMMITTED
#: it sees a renewal committed after the first statement began (the lock orders every later
#: one after this transaction).
_STILL_EXPIRED_SQL = """
    SELECT i.id FROM ipai_pulser_intent i
      LEFT JOIN ipai_pulser_intent_lease l
        ON l.intent_id = i.id AND i.state = 'running' AND l.attempt = i.attempts
     WHERE i.id = ANY(%(ids)s) AND (l.expires_at IS NULL OR l.expires_at < %(now)s)
     ORDER BY i.id
"""
REAP_LIMIT = 500


def reap_expired_leases(Intent, *, now=None, limit=REAP_LIMIT):
    """Reap on ``Intent``'s cursor; returns how many intents were reaped."""
    now = now or fields.Datetime.now()
    env = Intent.env
    env.flush_all()
    env.cr.execute(_EXPIRED_SQL, {"now": now, "limit": int(limit)})
    locked = [row[0] for row in env.cr.fetchall()]
    if not locked:
        return 0
    env.cr.execute(_STILL_EXPIRED_SQL, {"ids": locked, "now": now})
    intents = Intent.browse([row[0] for row in env.cr.fetchall()])
    for intent in intents:
        owner = intent.lease_owner
        if intent.state == sm.ASSIGNED:
            intent._transition(
                sm.QUEUED,
                vals=cancel.keep_cancel_request(intent, {"lease_owner": False, "lease_expires_at": False}),
                event_type="lease_expired",
                message=f"lease of {owner} expired before the attempt started; requeued",
                failure_code="INTENT.LEASE_EXPIRED",
            )
            continue
        request = cancel.pending_cancel_request(intent)
        if request:
            # the handler never acknowledged: the reaper does, never back to the queue
            cancel.acknowledge_cancel(intent, now, "reaper", request)
            continue
        exc = LeaseExpired(
            f"lease of {owner} expired at {intent.lease_expires_at} while attempt "
            f"{intent.attempts} was running (worker crashed, was killed or stopped renewing)",
            details={"lease_owner": owner, "attempt": intent.attempts},
        )
        elapsed = (now - intent.started_at).total_seconds() * 1000 if intent.started_at else 0.0
        Attempt(intent, "reaper", number=intent.attempts).fail(exc, duration_ms=elapsed, now=now)
    return len(intents)


def reap_committed(Intent, *, now=None, limit=REAP_LIMIT):
    """:func:`reap_expired_leases` in a READ COMMITTED transaction of its own, committed
    before this returns (as ``lease.claim_committed`` claims): a row another reaper or
    worker holds is skipped, one it reaped meanwhile is re-checked and left out; a lost race
    is never a serialization failure."""
    with read_committed(Intent.env) as env:
        return reap_expired_leases(Intent.with_env(env), now=now, limit=limit)
