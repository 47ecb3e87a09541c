import contextlib
import contextvars
import functools
import json
import logging
import os
import socket
import time
import traceback
import uuid
from datetime import timedelta

import psycopg2.errors
import psycopg2.extensions
from markupsafe import Markup
from odoo import api, fields, models, release, sql_db
from odoo.addons.ipai_reliability.models.ipai_ops import local_dsn
from odoo.exceptions import ConcurrencyError

from ipai_ops.record import failure_from_exception
from ipai_ops.retry import decide

from ..services import contract, telemetry
from ..services import state_machine as sm
from ..services.exceptions import (
    HandlerCrashed,
    IntentCancelled,
    IntentTimeout,
    IntentTypeUnknown,
    LeaseExpired,
    StateConflict,
)
from ..services.handler_registry import HandlerContext, get_handler, timeout_for, validate_args

_logger = logging.getLogger(__name__)

#: True while :meth:`IpaiPulserIntent._transition` writes: the only writes that may change
#: ``state``. A context variable, not an Odoo context key: an RPC caller chooses the context
#: (``/web/dataset/call_kw`` passes ``kwargs.context`` through), never this variable.
_STATE_WRITE_ALLOWED = contextvars.ContextVar("ipai_pulser_state_write_allowed", default=False)
#: Seconds a claimed-but-not-started intent keeps its lease.
CLAIM_LEASE_SECONDS = 120
#: Extra seconds past the handler timeout before a running intent's lease expires.
LEASE_GRACE_SECONDS = 30
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BATCH = 20

#: The pending cancel request of one intent, as seen by one snapshot: the row's own
#: ``cancel_requested_at`` (queued cancels, older code) and the first ``cancel_requested``
#: event logged after the intent's latest ``claimed`` event (a request made before a requeue
#: does not cancel the new run). ``claim_id`` is raised to ``%(floor)s``: a fresh snapshot
#: uses the claim the worker's own transaction sees, which may not be committed yet.
_PENDING_CANCEL_SQL = """
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


@contextlib.contextmanager
def state_writes_allowed():
    """Server code only: writes inside this block may change ``state`` without the machine.

    :meth:`IpaiPulserIntent._transition` uses it; tests use it to place an intent in a state.
    Nothing an RPC caller sends reaches it."""
    token = _STATE_WRITE_ALLOWED.set(True)
    try:
        yield
    finally:
        _STATE_WRITE_ALLOWED.reset(token)


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _cancel_request_of(row):
    """``(requested_at, source)`` from a :data:`_PENDING_CANCEL_SQL` row, or None. Times are
    kept to the second, as ``fields.Datetime.now()`` (the acknowledgement) is."""
    if not row:
        return None
    row_at, row_source, event_at, event_source, _claim_id = row
    if row_at:
        return row_at.replace(microsecond=0), row_source or None
    if event_at:
        return event_at.replace(microsecond=0), event_source or None
    return None


class IpaiPulserIntent(models.Model):
    _name = "ipai.pulser.intent"
    _inherit = ["mail.thread", "mail.activity.mixin"]
    _description = "Pulser Intent"
    # Intents are read-only for Reliability Users, who still discuss and follow them.
    _mail_post_access = "read"
    _order = "priority desc, id desc"
    _rec_name = "ref"

    ref = fields.Char(
        required=True,
        readonly=True,
        copy=False,
        index=True,
        default=lambda self: uuid.uuid4().hex,
        help="Public reference used by the JSON API.",
    )
    intent_type = fields.Char(string="Type", required=True, index=True, readonly=True)
    args = fields.Json(readonly=True)
    args_pretty = fields.Text(compute="_compute_pretty", string="Args (JSON)")
    source = fields.Char(
        required=True,
        index=True,
        readonly=True,
        default="odoo",
        help="Who submitted the intent: the API client's key id, or 'odoo' from the backend.",
    )
    client_id = fields.Many2one("ipai.pulser.client", readonly=True, ondelete="set null", index="btree_not_null")
    idempotency_key = fields.Char(readonly=True, copy=False)
    correlation_id = fields.Char(index=True, readonly=True, copy=False, default=lambda self: uuid.uuid4().hex)
    traceparent = fields.Char(readonly=True, copy=False, help="W3C traceparent of the caller.")
    work_item_ref = fields.Char(readonly=True, index="btree_not_null")
    priority = fields.Integer(default=0, help="Higher runs first.")
    state = fields.Selection(sm.STATE_LABELS, default=sm.QUEUED, required=True, readonly=True, index=True, copy=False)
    attempts = fields.Integer(readonly=True, copy=False)
    max_attempts = fields.Integer(default=DEFAULT_MAX_ATTEMPTS, required=True)
    attempt_budget = fields.Integer(
        readonly=True, help="Attempts granted at creation; a requeue grants this many more."
    )
    next_attempt_at = fields.Datetime(readonly=True, copy=False)
    lease_owner = fields.Char(readonly=True, copy=False)
    lease_expires_at = fields.Datetime(readonly=True, copy=False)
    started_at = fields.Datetime(readonly=True, copy=False)
    finished_at = fields.Datetime(readonly=True, copy=False)
    duration_ms = fields.Float(readonly=True, copy=False, aggregator="avg")
    result = fields.Json(readonly=True, copy=False)
    result_pretty = fields.Text(compute="_compute_pretty", string="Result (JSON)")
    failure_envelope = fields.Json(readonly=True, copy=False)
    failure_envelope_pretty = fields.Text(compute="_compute_pretty", string="Failure envelope")
    failure_code = fields.Char(readonly=True, copy=False, index="btree_not_null")
    failure_mode_id = fields.Many2one("ipai.failure.mode", readonly=True, copy=False, ondelete="set null")
    runbook_html = fields.Html(related="failure_mode_id.runbook_html", string="Runbook")
    ops_error_id = fields.Integer(
        string="Ops error id", readonly=True, copy=False, help="id of the row in ops.agent_errors"
    )
    ops_error_ref_id = fields.Many2one(
        "ipai.agent.error",
        compute="_compute_ops_error_ref",
        string="Ops error",
        help="The error group in the Agent Errors console that counts this failure.",
    )
    cancel_requested_at = fields.Datetime(readonly=True, copy=False)
    cancel_acknowledged_at = fields.Datetime(readonly=True, copy=False)
    cancel_source = fields.Char(readonly=True, copy=False)
    event_ids = fields.One2many("ipai.pulser.intent.event", "intent_id", string="Events", readonly=True)
    event_count = fields.Integer(compute="_compute_event_count")
    is_failing = fields.Boolean(compute="_compute_is_failing", search="_search_is_failing")

    _ref_uniq = models.Constraint("UNIQUE(ref)", "The intent reference must be unique.")
    _idempotency_uniq = models.UniqueIndex(
        "(source, idempotency_key) WHERE idempotency_key IS NOT NULL",
        "An intent with this idempotency key already exists for this source.",
    )
    _max_attempts_positive = models.Constraint("CHECK(max_attempts >= 1)", "An intent needs at least one attempt.")
    # The claim query: queued work by priority.
    _queue_idx = models.Index("(priority DESC, id) WHERE state = 'queued'")
    # The reaper: leased work by expiry.
    _lease_idx = models.Index("(lease_expires_at) WHERE state IN ('assigned', 'running')")

    # ------------------------------------------------------------------ computes

    @api.depends("args", "result", "failure_envelope")
    def _compute_pretty(self):
        for rec in self:
            rec.args_pretty = json.dumps(rec.args, indent=2, sort_keys=True) if rec.args else False
            rec.result_pretty = json.dumps(rec.result, indent=2, sort_keys=True) if rec.result else False
            rec.failure_envelope_pretty = (
                json.dumps(rec.failure_envelope, indent=2, sort_keys=True) if rec.failure_envelope else False
            )

    @api.depends("ops_error_id")
    def _compute_ops_error_ref(self):
        # the console model's id is the ops.agent_errors id; empty when ops lives elsewhere
        found = self.env["ipai.agent.error"].browse({rec.ops_error_id for rec in self if rec.ops_error_id}).exists()
        for rec in self:
            rec.ops_error_ref_id = rec.ops_error_id if rec.ops_error_id in found.ids else False

    def _compute_event_count(self):
        counts = dict(
            self.env["ipai.pulser.intent.event"]._read_group(
                [("intent_id", "in", self.ids)], ["intent_id"], ["__count"]
            )
        )
        for rec in self:
            rec.event_count = counts.get(rec, 0)

    @api.depends("state", "failure_code")
    def _compute_is_failing(self):
        for rec in self:
            rec.is_failing = rec.state in (sm.FAILED, sm.DEAD) or (rec.state == sm.QUEUED and bool(rec.failure_code))

    def _search_is_failing(self, operator, value):
        if operator not in ("in", "not in"):
            return NotImplemented
        failing = [
            "|",
            ("state", "in", (sm.FAILED, sm.DEAD)),
            "&",
            ("state", "=", sm.QUEUED),
            ("failure_code", "!=", False),
        ]
        return failing if (operator == "in") == (True in value) else ["!", *failing]

    @api.depends("intent_type", "ref")
    def _compute_display_name(self):
        for rec in self:
            rec.display_name = f"{rec.intent_type or '?'} · {(rec.ref or '')[:8]}"

    # ------------------------------------------------------------------ CRUD

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            # Intents are born queued; the state machine decides everything after.
            vals["state"] = sm.QUEUED
            vals.setdefault("attempt_budget", vals.get("max_attempts") or DEFAULT_MAX_ATTEMPTS)
        records = super().create(vals_list)
        self.env["ipai.pulser.intent.event"].create(
            [
                {
                    "intent_id": rec.id,
                    "event_type": "created",
                    "to_state": sm.QUEUED,
                    "message": f"submitted by {rec.source}",
                }
                for rec in records
            ]
        )
        return records

    def write(self, vals):
        if "state" in vals and not _STATE_WRITE_ALLOWED.get():
            # Who may not write intents at all (Reliability Users) is told that first.
            self.check_access("write")
            raise StateConflict(
                "the state of an intent changes only through its state machine "
                "(_transition, the worker, cancel and requeue actions)",
                details={"to": vals["state"]},
            )
        return super().write(vals)

    # ------------------------------------------------------------------ state machine

    def _transition(
        self,
        new_state,
        *,
        vals=None,
        event_type="transition",
        message=None,
        data=None,
        attempt=None,
        failure_code=None,
        worker=None,
    ):
        """The only way to change ``state``: checks legality, writes, logs one event per record."""
        Event = self.env["ipai.pulser.intent.event"]
        events = []
        for rec in self:
            old = rec.state
            sm.check_transition(old, new_state)
            events.append(
                {
                    "intent_id": rec.id,
                    "event_type": event_type,
                    "from_state": old,
                    "to_state": new_state,
                    "attempt": attempt if attempt is not None else rec.attempts,
                    "message": message,
                    "failure_code": failure_code,
                    "worker": worker,
                    "data": data,
                }
            )
        with state_writes_allowed():
            self.write({**(vals or {}), "state": new_state})
        Event.create(events)
        return True

    def _log_event(self, event_type, message, **values):
        self.env["ipai.pulser.intent.event"].create(
            [
                {
                    "intent_id": rec.id,
                    "event_type": event_type,
                    "from_state": rec.state,
                    "to_state": rec.state,
                    "attempt": rec.attempts,
                    "message": message,
                    **values,
                }
                for rec in self
            ]
        )

    # ------------------------------------------------------------------ actions (UI + API)

    def _request_cancel(self, source="ui"):
        """Cancel: immediate when no worker holds the intent, cooperative otherwise.

        A ``queued`` intent is cancelled at once (no worker holds its row). An ``assigned`` or
        ``running`` one is held by a worker whose attempt transaction keeps the intent row
        locked (the ``running`` write) until the outcome commits: the request must not write
        that row, or it would wait for the whole attempt and then fail to serialize. It is
        recorded as a ``cancel_requested`` event instead (an INSERT whose foreign key takes
        only a KEY SHARE lock on the intent row, which the worker's update does not block),
        answered at once, and acknowledged by the worker (:meth:`_cancel_requested_in_db`).
        A request while one is pending adds nothing.

        Returns ``"cancelled"`` or ``"cancel_requested"``; terminal intents raise
        INTENT.STATE_CONFLICT.
        """
        self.ensure_one()
        now = fields.Datetime.now()
        if self.state in sm.TERMINAL:
            raise StateConflict(
                f"intent {self.ref} is {self.state}; only queued, assigned or running intents can be cancelled",
                details={"state": self.state},
            )
        telemetry.audit(
            "run.state", "cancel_requested", intent_id=self.id, state="cancel_requested", cancel_source=source
        )
        if self.state == sm.QUEUED:
            self._transition(
                sm.CANCELLED,
                vals={
                    "cancel_requested_at": now,
                    "cancel_acknowledged_at": now,
                    "cancel_source": source,
                    "finished_at": now,
                    "next_attempt_at": False,
                },
                event_type="cancelled",
                message=f"cancelled by {source} before it ran",
            )
            self._cancel_telemetry(source, now, now, instant=True)
            return "cancelled"
        if not self._pending_cancel_request(fresh=False):
            self._log_event(
                "cancel_requested",
                f"cancel requested by {source}; the worker acknowledges it",
                data={"source": source},
            )
        return "cancel_requested"

    def _cancel_telemetry(self, source, requested, acknowledged, *, instant=False):
        """Cancel latency by path (docs/specs/telemetry_v1.md). ``instant``: a queued intent
        cancelled in the request's own transaction (latency 0). ``requested`` keeps the
        microseconds of the request event's ``create_date``; ``acknowledged`` is the wall
        clock, not the row's second-truncated ``Datetime.now()``."""
        latency_ms = 0.0 if instant else max((acknowledged - requested).total_seconds() * 1000, 0.0)
        attrs = {telemetry.ATTR_INTENT_TYPE: self.intent_type}
        cancel = telemetry.cancel_attributes(source, instant=instant)
        telemetry.observe("cancel_latency", latency_ms / 1000.0, {**attrs, **cancel})
        telemetry.count("intents", 1, {**attrs, telemetry.ATTR_OUTCOME: sm.CANCELLED})
        telemetry.audit("run.state", "cancelled", intent_id=self.id, state="cancelled")
        telemetry.audit(
            "run.cancel",
            "acknowledged",
            intent_id=self.id,
            cancel_source=source,
            cancel_path=cancel[telemetry.ATTR_CANCEL_PATH],
            instant=instant,
            requested=requested.isoformat(),
            acknowledged=acknowledged.isoformat(),
            latency_ms=round(latency_ms, 3),
        )

    def action_cancel(self):
        for rec in self:
            rec._request_cancel(source="ui")
        return True

    def action_requeue(self):
        """Requeue failed / dead intents with a fresh attempt budget."""
        for rec in self:
            if rec.state not in sm.REQUEUEABLE:
                raise StateConflict(
                    f"intent {rec.ref} is {rec.state}; only failed or dead intents can be requeued",
                    details={"state": rec.state},
                )
            rec._transition(
                sm.QUEUED,
                vals={
                    "max_attempts": rec.attempts + max(rec.attempt_budget or 1, 1),
                    "next_attempt_at": False,
                    "lease_owner": False,
                    "lease_expires_at": False,
                    "cancel_requested_at": False,
                    "cancel_acknowledged_at": False,
                },
                event_type="requeued",
                message=f"requeued by {self.env.user.login or 'system'}",
            )
        return True

    def action_view_events(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Intent events"),
            "res_model": "ipai.pulser.intent.event",
            "view_mode": "list,form",
            "domain": [("intent_id", "=", self.id)],
        }

    def action_escalation_bundle(self):
        """Download this intent's escalation bundle (``ipai-ops escalate intent:<ref>``): the
        intent row and its audit events, its failure envelope and ops error, redacted.

        The intent table is in Odoo's own database, so the bundle reads that one (an ops
        database configured elsewhere is not consulted: its error row is then left out).
        """
        self.ensure_one()
        return self.env["ipai.ops"]._escalation_bundle(
            f"intent:{self.ref}", record=self, dsn=local_dsn(self.env.cr.dbname)
        )

    # ------------------------------------------------------------------ API helpers

    @api.model
    def _submit(
        self,
        *,
        intent_type,
        args,
        source="odoo",
        client=None,
        idempotency_key=None,
        correlation_id=None,
        traceparent=None,
        work_item_ref=None,
        priority=0,
        max_attempts=None,
    ):
        """Validate and create an intent; returns ``(intent, created)``.

        The same (source, idempotency key) returns the existing intent instead of a duplicate.
        """
        args = {} if args is None else args
        same_key = [("source", "=", source), ("idempotency_key", "=", idempotency_key)]
        if idempotency_key:
            existing = self.search(same_key, limit=1)
            if existing:
                return existing, False
        validate_args(intent_type, args)
        vals = {
            "intent_type": intent_type,
            "args": args,
            "source": source,
            "client_id": client.id if client else False,
            "idempotency_key": idempotency_key or False,
            "traceparent": traceparent or False,
            "work_item_ref": work_item_ref or False,
            "priority": int(priority or 0),
            "max_attempts": int(max_attempts or DEFAULT_MAX_ATTEMPTS),
        }
        if correlation_id:
            vals["correlation_id"] = correlation_id
        if idempotency_key:
            # Two concurrent creates with one key: the unique index lets one win. The loser's
            # snapshot (REPEATABLE READ) predates the winner's commit, so it cannot read the
            # winner's intent: it asks Odoo to run the request again, which then finds it.
            try:
                with self.env.cr.savepoint():
                    return self.create(vals), True
            except psycopg2.errors.UniqueViolation as exc:
                existing = self.search(same_key, limit=1)
                if not existing:
                    raise ConcurrencyError(f"idempotency key {idempotency_key!r} taken concurrently") from exc
                return existing, False
        return self.create(vals), True

    def _api_dict(self, *, with_events=True):
        self.ensure_one()

        def dt(value):
            return value and value.isoformat(timespec="milliseconds") + "Z"

        out = {
            "id": self.id,
            "ref": self.ref,
            "type": self.intent_type,
            "state": self.state,
            "source": self.source,
            "idempotency_key": self.idempotency_key or None,
            "correlation_id": self.correlation_id,
            "traceparent": self.traceparent or None,
            "work_item_ref": self.work_item_ref or None,
            "priority": self.priority,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "next_attempt_at": dt(self.next_attempt_at) or None,
            "created_at": dt(self.create_date),
            "started_at": dt(self.started_at) or None,
            "finished_at": dt(self.finished_at) or None,
            "duration_ms": self.duration_ms,
            "failure_code": self.failure_code or None,
            "cancel_requested_at": dt(self._cancel_requested_at()) or None,
            "cancel_acknowledged_at": dt(self.cancel_acknowledged_at) or None,
            "result": self.result or None,
            "failure_envelope": self.failure_envelope or None,
        }
        if with_events:
            out["events"] = [
                {
                    "at": dt(ev.create_date),
                    "type": ev.event_type,
                    "from": ev.from_state or None,
                    "to": ev.to_state or None,
                    "attempt": ev.attempt,
                    "message": ev.message or None,
                    "failure_code": ev.failure_code or None,
                    "worker": ev.worker or None,
                }
                for ev in self.event_ids.sorted("id")
            ]
        return out

    # ------------------------------------------------------------------ worker

    @api.model
    def _worker_identity(self):
        return f"odoo:{self.env.cr.dbname}:{socket.gethostname()}:{os.getpid()}"

    @api.model
    def _cron_run_worker(self, batch=DEFAULT_BATCH):
        """Cron entry point: claim and run batches, committing each, until the queue is
        empty or the cron's time budget runs out."""
        while True:
            stats = self._run_worker(limit=batch, commit=True)
            if not stats["claimed"]:
                break
            remaining = self.env["ir.cron"]._commit_progress(stats["claimed"])
            if remaining < 5:
                break
        self.env["ipai.pulser.request.nonce"]._gc_expired()

    @api.model
    def _run_worker(self, limit=DEFAULT_BATCH, worker_id=None, *, commit=False, now=None):
        """Reap expired leases, claim up to ``limit`` queued intents, run one attempt of each.

        ``commit=True`` commits after the claim and after every attempt (cron, ``odoo
        shell``, a worker on its own cursor); tests keep it False on the test cursor.
        Returns counters.
        """
        worker_id = worker_id or self._worker_identity()
        telemetry.watch_queue(self.env.cr.dbname)
        stats = dict.fromkeys(
            ("reaped", "claimed", "claim_conflicts", "succeeded", "failed", "retried", "dead", "cancelled"), 0
        )
        stats["reaped"] = self._contended(
            lambda: self._reap_expired_leases(now=now), 0, commit=commit, stats=stats, step="reap"
        )
        self._commit_if(commit)
        if commit:
            claimed = self._claim_committed(limit, worker_id, now=now)
        else:
            claimed = self._contended(
                lambda: self._claim(limit, worker_id, now=now), self.browse(), commit=False, stats=stats, step="claim"
            )
        stats["claimed"] = len(claimed)
        self._commit_if(commit)
        for intent in claimed:
            outcome = intent._run_attempt(worker_id)
            stats[outcome] = stats.get(outcome, 0) + 1
            self._commit_if(commit)
        return stats

    def _contended(self, work, nothing, *, commit, stats, step, tries=3):
        """Run a SKIP LOCKED claim on this cursor, retrying when another worker won the race.

        Odoo cursors are REPEATABLE READ: when a concurrent worker commits its claim of a row
        after our snapshot was taken, our FOR UPDATE on that row (still ``queued`` in our
        snapshot) fails with a serialization failure instead of skipping it. Each such lost
        race counts as a claim conflict (``stats["claim_conflicts"]`` and the
        ``ipai.intent.claim.conflicts`` metric). Only a new transaction sees the current rows,
        so a worker that commits (nothing is pending: it has just committed) rolls back and
        tries again; on a caller's transaction it claims nothing this round and the next
        round does. The committing worker claims with :meth:`_claim_committed` instead, where
        a lost race is simply skipped; the lease reaper (rare: expired leases only) stays here.
        """
        for _attempt in range(tries):
            try:
                with self.env.cr.savepoint():
                    return work()
            except psycopg2.errors.SerializationFailure:
                stats["claim_conflicts"] += 1
                telemetry.count("claim_conflicts", 1, {"ipai.worker.step": step})
                if not commit:
                    break
                self.env.cr.rollback()
        _logger.info("intent worker: claim lost to a concurrent worker; the next round takes the rest")
        return nothing

    def _commit_if(self, commit):
        # A queue worker must commit: the claim has to be visible (and its row locks
        # released) before the attempt runs, and each attempt's outcome must survive a
        # crash of the next one. Same reasoning as OCA queue_job's runner.
        if commit:
            self.env.cr.commit()  # pylint: disable=invalid-commit

    @api.model
    def _claim_committed(self, limit, worker_id, *, now=None):
        """Claim (:meth:`_claim`: same rows, same lease, same ``claimed`` events) in a READ
        COMMITTED transaction of its own, committed before this returns.

        Under READ COMMITTED, ``FOR UPDATE SKIP LOCKED`` skips the rows another worker holds
        and re-checks ``state = 'queued'`` on the rows it committed meanwhile: a lost race is
        simply a row not claimed, never a serialization failure (OCA queue_job's runner
        claims the same way). The caller's cursor must have no transaction in progress
        (``_run_worker(commit=True)`` has just committed), so its next snapshot sees the claim.
        Returns the claimed intents on the caller's environment.
        """
        with self.env.registry.cursor() as cr:
            if isinstance(cr, sql_db.Cursor):  # not a test cursor sharing the test's transaction
                cr.connection.set_isolation_level(psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED)
            ids = self.with_env(self.env(cr=cr))._claim(limit, worker_id, now=now).ids
        claimed = self.browse(ids)
        claimed.invalidate_recordset()
        return claimed

    @api.model
    def _claim(self, limit, worker_id, *, now=None):
        """Claim queued work with SELECT ... FOR UPDATE SKIP LOCKED: concurrent workers never
        see each other's rows, nobody waits, and capacity never rejects (the rest stays queued)."""
        now = now or fields.Datetime.now()
        self.env.flush_all()
        self.env.cr.execute(
            """
            SELECT id FROM ipai_pulser_intent
             WHERE state = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= %s)
             ORDER BY priority DESC, id
             LIMIT %s
             FOR UPDATE SKIP LOCKED
            """,
            (now, int(limit)),
        )
        ids = [row[0] for row in self.env.cr.fetchall()]
        intents = self.browse(ids)
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

    @api.model
    def _reap_expired_leases(self, *, now=None):
        """Intents whose worker died: assigned ones go back to the queue untouched; a running
        attempt counts as failed with INTENT.LEASE_EXPIRED (retried with backoff, or dead)."""
        now = now or fields.Datetime.now()
        self.env.flush_all()
        self.env.cr.execute(
            """
            SELECT id FROM ipai_pulser_intent
             WHERE state IN ('assigned', 'running') AND lease_expires_at < %s
             ORDER BY id
             LIMIT 500
             FOR UPDATE SKIP LOCKED
            """,
            (now,),
        )
        intents = self.browse([row[0] for row in self.env.cr.fetchall()])
        for intent in intents:
            owner = intent.lease_owner
            if intent.state == sm.ASSIGNED:
                intent._transition(
                    sm.QUEUED,
                    vals=intent._keep_cancel_request({"lease_owner": False, "lease_expires_at": False}),
                    event_type="lease_expired",
                    message=f"lease of {owner} expired before the attempt started; requeued",
                    failure_code="INTENT.LEASE_EXPIRED",
                )
                continue
            request = intent._pending_cancel_request()
            if request:
                # the handler never acknowledged: the reaper does, never back to the queue
                intent._acknowledge_cancel(now, "reaper", request)
                continue
            exc = LeaseExpired(
                f"lease of {owner} expired at {intent.lease_expires_at} while attempt "
                f"{intent.attempts} was running (worker crashed or was killed)",
                details={"lease_owner": owner, "attempt": intent.attempts},
            )
            elapsed = (now - intent.started_at).total_seconds() * 1000 if intent.started_at else 0.0
            intent._finish_failure(
                exc, attempt=intent.attempts, duration_ms=elapsed, span=None, stacktrace=None, ctx=None, now=now
            )
        return len(intents)

    def _cancel_requested_in_db(self, found=None):
        """True when a cancel of this intent is pending: the worker's cancel poll
        (``HandlerContext.cancel_requested``, called by ``ctx.check()``), and the check
        before an attempt starts. Appends the request (``(requested_at, source)``) to
        ``found`` when given, so the acknowledgement can record it even when the handler's
        savepoint that logged it is rolled back.

        See :meth:`_pending_cancel_request`: it reads both the worker's own transaction and
        a fresh snapshot, because Odoo cursors are REPEATABLE READ and the attempt's own
        snapshot never sees a request committed after the attempt began.
        """
        request = self._pending_cancel_request()
        if request and found is not None:
            found.append(request)
        return bool(request)

    def _pending_cancel_request(self, *, fresh=True):
        """The pending cancel request of this intent as ``(requested_at, source)``, or None.

        A request is the row's ``cancel_requested_at`` (set by a queued cancel, or by older
        code) or a ``cancel_requested`` event logged after the intent's latest ``claimed``
        event (see :meth:`_request_cancel`). Two reads:

        - this transaction (ORM changes flushed first): a request made in the same
          transaction, e.g. by the handler itself or a test;
        - with ``fresh``, a separate short-lived cursor, i.e. a new snapshot at every call:
          a request committed by the API or the UI after this transaction's snapshot was
          taken (Odoo cursors are REPEATABLE READ: re-reading on ``self.env.cr`` never sees
          it). That cursor only reads, takes no lock, and is closed at once.
        """
        self.ensure_one()
        Event = self.env["ipai.pulser.intent.event"]
        Event.flush_model(["intent_id", "event_type", "data"])
        self.flush_recordset(["cancel_requested_at", "cancel_source"])
        self.env.cr.execute(_PENDING_CANCEL_SQL, {"id": self.id, "floor": 0})
        row = self.env.cr.fetchone()
        request = _cancel_request_of(row)
        if request or not fresh or not row:
            return request
        try:
            with self.env.registry.cursor() as cr:
                cr.execute(_PENDING_CANCEL_SQL, {"id": self.id, "floor": row[4]})
                return _cancel_request_of(cr.fetchone())
        except Exception:  # a poll never breaks the attempt: the next one asks again
            _logger.warning("ipai_pulser: cancel poll of intent %s on a fresh cursor failed", self.id, exc_info=True)
            return None

    def _keep_cancel_request(self, vals):
        """``vals`` for an intent going back to the queue, plus a pending cancel request moved
        onto the row: the next claim's ``claimed`` event would hide the request event, and
        the row's field makes that claim cancel the intent before the handler runs. The
        caller (worker or reaper) holds the row."""
        if not self.cancel_requested_at:
            request = self._pending_cancel_request()
            if request:
                vals.update(cancel_requested_at=request[0], cancel_source=request[1] or "api")
        return vals

    def _cancel_requested_at(self):
        """When a cancel was requested: the row's field, else a pending request event."""
        if self.cancel_requested_at or self.state not in (sm.ASSIGNED, sm.RUNNING):
            return self.cancel_requested_at
        request = self._pending_cancel_request(fresh=False)
        return request[0] if request else False

    def _intent_info(self, attempt):
        return {
            "id": self.id,
            "ref": self.ref,
            "type": self.intent_type,
            "attempt": attempt,
            "max_attempts": self.max_attempts,
            "source": self.source,
        }

    def _trace_info(self, attempt, span=None):
        trace_id, span_id = telemetry.span_ids(span) if span is not None else (None, None)
        return {
            "work_item_ref": self.work_item_ref or None,
            "run_id": contract.occurrence_id(self.env.cr.dbname, self.id, attempt),
            "correlation_id": self.correlation_id,
            "trace_id": trace_id,
            "span_id": span_id,
        }

    def _run_attempt(self, worker_id):
        """One attempt of one claimed intent. Returns the outcome counter name."""
        self.ensure_one()
        request = self._pending_cancel_request()
        now = fields.Datetime.now()
        if request:
            self._acknowledge_cancel(now, worker_id, request)
            return "cancelled"
        attempt = self.attempts + 1
        try:
            budget = timeout_for(get_handler(self.intent_type), self.args or {})
        except IntentTypeUnknown:
            # validate_args raises it again inside the attempt, where it becomes the failure
            budget = 10.0
        self._transition(
            sm.RUNNING,
            vals={
                "attempts": attempt,
                "started_at": now,
                "finished_at": False,
                "next_attempt_at": False,
                "lease_expires_at": now + timedelta(seconds=budget + LEASE_GRACE_SECONDS),
            },
            event_type="attempt_started",
            attempt=attempt,
            message=f"attempt {attempt}/{self.max_attempts} by {worker_id}",
            worker=worker_id,
        )
        attrs = {
            telemetry.ATTR_INTENT_ID: self.id,
            telemetry.ATTR_INTENT_TYPE: self.intent_type,
            telemetry.ATTR_ATTEMPT: attempt,
            telemetry.ATTR_CORRELATION: self.correlation_id or "",
        }
        telemetry.audit("run.state", "start", intent_id=self.id, state="start", attempt=attempt)
        with telemetry.attempt_span(traceparent=self.traceparent, attributes=attrs) as span:
            started = time.monotonic()
            requests = []
            ctx = HandlerContext(
                env=self.env,
                args=dict(self.args or {}),
                intent=self,
                timeout=budget,
                cancel_requested=functools.partial(self._cancel_requested_in_db, found=requests),
            )
            try:
                data = self._execute_handler(ctx)
            except IntentCancelled:
                self.env.invalidate_all()
                request = requests[-1] if requests else self._pending_cancel_request()
                self._acknowledge_cancel(fields.Datetime.now(), worker_id, request)
                return "cancelled"
            except Exception as exc:
                stack = traceback.format_exc()
                self.env.invalidate_all()
                duration_ms = (time.monotonic() - started) * 1000
                return self._finish_failure(
                    exc, attempt=attempt, duration_ms=duration_ms, span=span, stacktrace=stack, ctx=ctx
                )
            duration_ms = (time.monotonic() - started) * 1000
            return self._finish_success(data, attempt=attempt, duration_ms=duration_ms, span=span, ctx=ctx)

    def _execute_handler(self, ctx):
        """Run the handler in a savepoint under its time budget.

        The budget is enforced twice, both safe in Odoo's threaded and prefork servers
        (``signal.alarm`` works only in the main thread): PostgreSQL cancels any single
        statement past the remaining time (``SET LOCAL statement_timeout``, reverted with
        the savepoint), and the handler context raises INTENT.TIMEOUT from ``ctx.check()``
        and once more after the handler returns, discarding a late result.
        """
        cr = self.env.cr
        handler = validate_args(self.intent_type, ctx.args)
        try:
            with cr.savepoint():
                # one round trip: remember the session's value, set the attempt's budget
                cr.execute(
                    "SELECT current_setting('statement_timeout'), set_config('statement_timeout', %s, true)",
                    (str(max(int(ctx.remaining * 1000), 1)),),
                )
                previous = cr.fetchone()[0]
                data = handler.func(ctx)
                ctx.check()
                cr.execute("SELECT set_config('statement_timeout', %s, true)", (previous,))
        except psycopg2.errors.QueryCanceled as exc:
            raise IntentTimeout(
                f"a database statement exceeded the handler's {ctx.timeout:g}s budget",
                details={"timeout_seconds": ctx.timeout},
            ) from exc
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise HandlerCrashed(f"handler {self.intent_type} returned {type(data).__name__}, expected an object")
        try:
            return _jsonable(data)
        except (TypeError, ValueError) as exc:
            raise HandlerCrashed(f"handler {self.intent_type} returned data that is not JSON: {exc}") from exc

    def _evidence(self, *, exit_code, duration_ms, ctx=None, stacktrace=None, links=()):
        return contract.evidence(
            exit_code=exit_code,
            duration_ms=duration_ms,
            stdout_tail="\n".join(ctx.stdout) if ctx and ctx.stdout else None,
            stderr_tail=stacktrace,
            tool_calls=ctx.tool_calls if ctx else [],
            links=[f"/odoo/action-ipai_pulser_connector.ipai_pulser_intent_action/{self.id}", *links],
        )

    def _finish_success(self, data, *, attempt, duration_ms, span, ctx):
        now = fields.Datetime.now()
        result = contract.success(
            self._intent_info(attempt),
            self._trace_info(attempt, span),
            data,
            self._evidence(exit_code=0, duration_ms=duration_ms, ctx=ctx),
        )
        self._transition(
            sm.SUCCEEDED,
            vals={
                "result": result,
                "failure_envelope": False,
                "failure_code": False,
                "failure_mode_id": False,
                "duration_ms": duration_ms,
                "finished_at": now,
                "lease_owner": False,
                "lease_expires_at": False,
            },
            event_type="succeeded",
            attempt=attempt,
            message=f"succeeded in {duration_ms:.1f} ms",
            data={"duration_ms": round(duration_ms, 3)},
        )
        attrs = {telemetry.ATTR_INTENT_TYPE: self.intent_type}
        telemetry.observe("attempt_duration", duration_ms / 1000.0, {**attrs, telemetry.ATTR_OUTCOME: "succeeded"})
        telemetry.count("intents", 1, {**attrs, telemetry.ATTR_OUTCOME: sm.SUCCEEDED})
        telemetry.audit("run.state", "complete", intent_id=self.id, state="complete", attempt=attempt)
        if self._pending_cancel_request():
            self._log_event("cancel_ignored", "cancel requested while running; the attempt completed first")
        return "succeeded"

    def _acknowledge_cancel(self, now, worker_id, request=None):
        """Move the intent to ``cancelled`` in the worker's transaction, recording on the row
        the request (``(requested_at, source)`` from :meth:`_pending_cancel_request`) and
        the acknowledgement; the cancel latency is ``acknowledged - requested``."""
        requested, source = request or (None, None)
        exact = requested or self.cancel_requested_at
        requested = min(exact or now, now)
        source = source or self.cancel_source or "api"
        self._transition(
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
        self._cancel_telemetry(source, exact or requested, max(telemetry.utcnow(), exact or now))

    @api.model
    def _ops_registry(self):
        return self.env["ipai.ops"].registry()

    def _failure(self, exc, *, attempt, duration_ms, span, stacktrace, ctx):
        """The attempt's failure (``ipai_ops.record.failure_from_exception``, as every producer
        records one): its envelope and the occurrence keyed ``intent:<db>:<id>:attempt:<n>``,
        which Odoo writes directly and the attempt span's exception event carries."""
        trace_id, span_id = telemetry.span_ids(span) if span is not None else (None, None)
        return failure_from_exception(
            self._ops_registry(),
            exc,
            source="odoo",
            service="odoo",
            occurrence_id=contract.occurrence_id(self.env.cr.dbname, self.id, attempt),
            service_version=release.version,
            env=self.env.cr.dbname,
            correlation_id=self.correlation_id or None,
            trace_id=trace_id,
            span_id=span_id,
            context={
                "intent_id": self.id,
                "intent_type": self.intent_type,
                "attempt": attempt,
                "work_item_ref": self.work_item_ref or None,
            },
            evidence=self._evidence(exit_code=1, duration_ms=duration_ms, ctx=ctx, stacktrace=stacktrace),
            stacktrace=stacktrace or "",
            # An exception escaping a handler that neither a typed failure nor a signature
            # names is, by definition, the handler crashing (registry: INTENT.HANDLER_CRASHED).
            fallback_code=HandlerCrashed.failure_code,
        )

    def _record_ops_error(self, envelope, occurrence):
        """Upsert the failure into ops.agent_errors on a separate connection: it survives a
        rollback of this transaction. A broken ops store never breaks the worker."""
        try:
            return self.env["ipai.ops"].record_failure(
                envelope,
                occurrence_id=occurrence,
                source="odoo",
                service="odoo",
                service_version=release.version,
            )
        except Exception:
            _logger.exception("ipai_pulser: could not record failure %s in ops.agent_errors", occurrence)
            return None

    def _notify_gave_up(self, code, message, attempt, state, ops_error_id):
        """Tell the intent's followers that the worker gave up on it (dead letter, or a
        failure no retry can fix): one message in its chatter, subtype *Gave up*."""
        link = Markup("")
        if ops_error_id:
            link = Markup(' <a href="/odoo/ipai.agent.error/{}">{}</a>').format(
                ops_error_id, self.env._("Open the error")
            )
        body = Markup("<p>{}</p><p><code>{}</code>: {}{}</p>").format(
            self.env._("Gave up after attempt %(attempt)s: %(state)s.", attempt=attempt, state=state),
            code,
            (message or "")[:400],
            link,
        )
        self.sudo().message_post(body=body, subtype_xmlid="ipai_pulser_connector.mt_intent_gave_up")

    def _finish_failure(self, exc, *, attempt, duration_ms, span, stacktrace, ctx, now=None):
        now = now or fields.Datetime.now()
        registry = self._ops_registry()
        failure = self._failure(
            exc, attempt=attempt, duration_ms=duration_ms, span=span, stacktrace=stacktrace, ctx=ctx
        )
        envelope, code = failure.envelope, failure.code
        mode = registry[code]
        ops = self._record_ops_error(envelope, failure.occurrence_id) or {}
        decision = decide(mode, attempt, max_attempts=self.max_attempts)
        if decision.retry:
            new_state, outcome = sm.QUEUED, "retried"
        elif mode.retryable:
            new_state, outcome = sm.DEAD, "dead"
        else:
            new_state, outcome = sm.FAILED, "failed"
        vals = {
            "failure_envelope": envelope,
            "failure_code": code,
            "failure_mode_id": self.env["ipai.failure.mode"].search([("code", "=", code)], limit=1).id,
            "result": contract.failure(self._intent_info(attempt), self._trace_info(attempt, span), envelope),
            "duration_ms": duration_ms,
            "lease_owner": False,
            "lease_expires_at": False,
            "ops_error_id": ops.get("error_id") or self.ops_error_id,
        }
        if new_state == sm.QUEUED:
            vals["next_attempt_at"] = now + timedelta(seconds=decision.delay_seconds)
            self._keep_cancel_request(vals)
        else:
            vals["finished_at"] = now
        self._transition(
            new_state,
            vals=vals,
            event_type="attempt_failed",
            attempt=attempt,
            failure_code=code,
            message=f"{code}: {envelope['error']['message'][:400]} ({decision.reason})",
            data={
                "retry": decision.retry,
                "delay_seconds": round(decision.delay_seconds, 3),
                "ops_error_id": ops.get("error_id"),
                "ops_count": ops.get("count"),
            },
        )
        attrs = {telemetry.ATTR_INTENT_TYPE: self.intent_type}
        if span is not None:
            telemetry.record_failure(span, failure, exc)
        telemetry.observe("attempt_duration", duration_ms / 1000.0, {**attrs, telemetry.ATTR_OUTCOME: "error"})
        if outcome == "retried":
            telemetry.count("retries", 1, {**attrs, telemetry.ATTR_FAILURE_CODE: code})
        else:
            telemetry.count(
                "intents", 1, {**attrs, telemetry.ATTR_OUTCOME: new_state, telemetry.ATTR_FAILURE_CODE: code}
            )
        if outcome == "dead":
            telemetry.count("dead_letters", 1, {**attrs, telemetry.ATTR_FAILURE_CODE: code})
        if outcome in ("dead", "failed"):
            self._notify_gave_up(code, envelope["error"]["message"], attempt, new_state, ops.get("error_id"))
        telemetry.audit(
            "run.state",
            "error",
            intent_id=self.id,
            state="error",
            attempt=attempt,
            failure_code=code,
            next_state=new_state,
        )
        _logger.info("ipai_pulser: intent %s attempt %s failed with %s -> %s", self.id, attempt, code, new_state)
        return outcome
