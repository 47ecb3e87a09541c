"""The worker loop: reap, claim, run one attempt of each claimed intent."""

import logging
import os
import socket

import psycopg2.errors

from ..services import telemetry
from .attempt import Attempt
from .lease import claim, claim_committed
from .reaper import reap_committed, reap_expired_leases

_logger = logging.getLogger(__name__)

DEFAULT_BATCH = 20
OUTCOMES = ("succeeded", "failed", "retried", "dead", "cancelled", "lease_lost")


def worker_identity(env):
    return f"odoo:{env.cr.dbname}:{socket.gethostname()}:{os.getpid()}"


def commit_if(env, commit):
    # A queue worker must commit: the claim has to be visible (and its row locks
    # released) before the attempt runs, and each attempt's outcome must survive a
    # crash of the next one. Same reasoning as OCA queue_job's runner.
    if commit:
        env.cr.commit()  # pylint: disable=invalid-commit


def run_worker(Intent, limit=DEFAULT_BATCH, worker_id=None, *, commit=False, now=None):
    """Reap expired leases, claim up to ``limit`` queued intents, run one attempt of each.

    ``commit=True`` (cron, ``odoo shell``, a worker on its own cursor) reaps and claims in
    READ COMMITTED transactions of their own and commits each attempt (``running`` before
    its handler, then its outcome); tests keep it False on the test cursor, where
    everything happens in the caller's transaction. Returns counters.
    """
    env = Intent.env
    worker_id = worker_id or worker_identity(env)
    telemetry.watch_queue(env.cr.dbname)
    stats = dict.fromkeys(("reaped", "claimed", "claim_conflicts", *OUTCOMES), 0)
    if commit:
        commit_if(env, commit)  # nothing in progress: the next snapshot sees what follows
        stats["reaped"] = reap_committed(Intent, now=now)
        claimed = claim_committed(Intent, limit, worker_id, now=now)
    else:
        reap = lambda: reap_expired_leases(Intent, now=now)  # noqa: E731
        take = lambda: claim(Intent, limit, worker_id, now=now)  # noqa: E731
        stats["reaped"] = contended(env, reap, 0, stats=stats, step="reap")
        claimed = contended(env, take, Intent.browse(), stats=stats, step="claim")
    stats["claimed"] = len(claimed)
    for intent in claimed:
        outcome = Attempt(intent, worker_id, commit=commit).run()
        stats[outcome] = stats.get(outcome, 0) + 1
        commit_if(env, commit)
    return stats


def contended(env, work, nothing, *, stats, step):
    """Run a SKIP LOCKED claim (or reap) in a savepoint of the caller's transaction.

    Odoo cursors are REPEATABLE READ: when a concurrent worker commits its claim of a row
    after our snapshot was taken, our lock on that row (still ``queued`` in our snapshot)
    fails with a serialization failure instead of skipping it. Such a lost race counts as a
    claim conflict (``stats["claim_conflicts"]`` and the ``ipai.intent.claim.conflicts``
    metric) and takes nothing this round; only a new transaction sees the current rows, so
    the next round does. A committing worker reaps and claims in READ COMMITTED instead
    (``reap_committed``, ``claim_committed``), where a lost race is simply skipped.
    """
    try:
        with env.cr.savepoint():
            return work()
    except psycopg2.errors.SerializationFailure:
        stats["claim_conflicts"] += 1
        telemetry.count("claim_conflicts", 1, {"ipai.worker.step": step})
    _logger.info("intent worker: %s lost to a concurrent worker; the next round takes the rest", step)
    return nothing
