import contextlib
import contextvars
import json
import uuid

import psycopg2.errors
from odoo import api, fields, models
from odoo.addons.ipai_reliability.models.ipai_ops import local_dsn
from odoo.exceptions import ConcurrencyError

from ..services import state_machine as sm
from ..services import telemetry
from ..services.exceptions import StateConflict
from ..services.handler_registry import validate_args
from ..worker import attempt, cancel, completion, runner

#: True while :meth:`IpaiPulserIntent._transition` writes: the only writes that may change
#: ``state``. A context variable, not an Odoo context key: an RPC caller chooses the context
#: (``/web/dataset/call_kw`` passes ``kwargs.context`` through), never this variable.
_STATE_WRITE_ALLOWED = contextvars.ContextVar("ipai_pulser_state_write_allowed", default=False)
DEFAULT_MAX_ATTEMPTS = 3


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
        completion.on_final_state(self, new_state)
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
        answered at once, and acknowledged by the worker (``worker.cancel``).
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
            cancel.cancel_telemetry(self, source, now, now, instant=True)
            return "cancelled"
        if not cancel.pending_cancel_request(self, fresh=False):
            self._log_event(
                "cancel_requested",
                f"cancel requested by {source}; the worker acknowledges it",
                data={"source": source},
            )
        return "cancel_requested"

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
    def _cron_run_worker(self, batch=runner.DEFAULT_BATCH):
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
    def _run_worker(self, limit=runner.DEFAULT_BATCH, worker_id=None, *, commit=False, now=None):
        """Reap, claim up to ``limit`` queued intents, run one attempt of each
        (``worker.runner.run_worker``; ``odoo shell``: ``commit=True``). Returns counters."""
        return runner.run_worker(self, limit, worker_id, commit=commit, now=now)

    @api.model
    def _ops_registry(self):
        return attempt.ops_registry(self.env)

    def _cancel_requested_at(self):
        """When a cancel was requested: the row's field, else a pending request event."""
        if self.cancel_requested_at or self.state not in (sm.ASSIGNED, sm.RUNNING):
            return self.cancel_requested_at
        request = cancel.pending_cancel_request(self, fresh=False)
        return request[0] if request else False
