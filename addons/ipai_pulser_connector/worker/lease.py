"""Claims and leases: which worker holds which intent, and until when.

A claim takes queued rows with ``SELECT ... FOR UPDATE SKIP LOCKED`` and gives each a lease
(``lease_owner``, ``lease_expires_at``). A running attempt's lease is the handler's budget
plus :data:`LEASE_GRACE_SECONDS`, or, for a handler declared with ``lease=``, that many
seconds renewed by its heartbeats (:func:`renew`). The reaper (``worker.reaper``) takes back
what an expired lease leaves behind.
"""

import contextlib
from datetime import timedelta

import psycopg2.extensions
from odoo import fields, sql_db

from ..services import state_machine as sm

#: Seconds a claimed-but-not-started intent keeps its lease.
CLAIM_LEASE_SECONDS = 120
#: Extra seconds past the handler timeout before a running intent's lease expires.
LEASE_GRACE_SECONDS = 30

_CLAIM_SQL = """
    SELECT id FROM ipai_pulser_intent
     WHERE state = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
     ORDER BY priority DESC, id
     LIMIT %s
       FOR UPDATE SKIP LOCKED
"""

#: A heartbeat: the renewed lease of a running attempt, in ``ipai_pulser_intent_lease``
#: rather than on the intent row. The worker's attempt transaction (REPEATABLE READ) writes
#: the intent row at the end; a renewal committed on that row meanwhile would make that
#: write a serialization failure. ``FOR SHARE`` on the intent row orders a renewal against
#: the reaper's ``FOR NO KEY UPDATE``: a renewal waits for a reap in progress and then finds
#: the row no longer running (lease lost), and a reap skips a row being renewed. A lock
#: alone creates no row version, so the attempt's own write still succeeds.
_RENEW_SQL = """
    WITH held AS (
        SELECT id FROM ipai_pulser_intent
         WHERE id = %(id)s AND state = 'running' AND lease_owner = %(owner)s AND attempts = %(attempt)s
           FOR SHARE
    )
    INSERT INTO ipai_pulser_intent_lease (intent_id, attempt, expires_at)
    SELECT id, %(attempt)s, %(until)s FROM held
        ON CONFLICT (intent_id) DO UPDATE SET attempt = EXCLUDED.attempt, expires_at = EXCLUDED.expires_at
    RETURNING intent_id
"""


@contextlib.contextmanager
def read_committed(env):
    """``env`` on a cursor of its own in a READ COMMITTED transaction, committed on exit
    (rolled back on an exception).

    Odoo cursors are REPEATABLE READ: a ``FOR UPDATE SKIP LOCKED`` there fails with a
    serialization failure on a row another worker changed after the snapshot was taken.
    Under READ COMMITTED it skips the rows another worker holds and re-checks its ``WHERE``
    on the rows committed meanwhile: a lost race is a row not taken, never an error (OCA
    queue_job's runner claims the same way). A test cursor shares the test's transaction
    and keeps its isolation."""
    with env.registry.cursor() as cr:
        if isinstance(cr, sql_db.Cursor):  # not a test cursor sharing the test's transaction
            cr.connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED)
        yield env(cr=cr)


def claim(Intent, limit, worker_id, *, now=None):
    """Claim queued work with SELECT ... FOR UPDATE SKIP LOCKED on ``Intent``'s cursor:
    concurrent workers never see each other's rows, nobody waits, and capacity never
    rejects (the rest stays queued)."""
    now = now or fields.Datetime.now()
    Intent.env.flush_all()
    Intent.env.cr.execute(_CLAIM_SQL, (now, int(limit)))
    intents = Intent.browse([row[0] for row in Intent.env.cr.fetchall()])
    if intents:
        intents._transition(
            sm.ASSIGNED,
            vals={
                "lease_owner": worker_id,
                "lease_expires_at": now + timedelta(seconds=CLAIM_LEASE_SECONDS),
            },
            event_type="claimed",
            message=f"claimed by {worker_id}",
            worker=worker_id,
        )
    return intents


def claim_committed(Intent, limit, worker_id, *, now=None):
    """:func:`claim` (same rows, same lease, same ``claimed`` events) in a READ COMMITTED
    transaction of its own (:func:`read_committed`), committed before this returns.

    The caller's cursor must have no transaction in progress (``run_worker(commit=True)``
    has just committed), so its next snapshot sees the claim. Returns the claimed intents
    on the caller's environment."""
    with read_committed(Intent.env) as env:
        ids = claim(Intent.with_env(env), limit, worker_id, now=now).ids
    claimed = Intent.browse(ids)
    claimed.invalidate_recordset()
    return claimed


def renew(env, intent_id, owner, attempt, lease_seconds, *, own_transaction):
    """Extend the lease of a running attempt to now + ``lease_seconds``; False when the
    attempt no longer holds it (reaped, or another worker's now).

    ``own_transaction``: in a committed transaction of its own (:func:`read_committed`),
    for a worker that committed ``running`` before the handler; else on ``env``'s cursor,
    whose transaction holds the uncommitted ``running`` row (a second connection would not
    see it)."""
    params = {
        "id": intent_id,
        "owner": owner,
        "attempt": attempt,
        "until": fields.Datetime.now() + timedelta(seconds=lease_seconds),
    }
    if not own_transaction:
        env.cr.execute(_RENEW_SQL, params)
        return bool(env.cr.fetchall())
    with read_committed(env) as renew_env:
        renew_env.cr.execute(_RENEW_SQL, params)
        return bool(renew_env.cr.fetchall())
