"""One attempt of one claimed intent: start it, run its handler under its budget, finish it.

:class:`Attempt` is the worker's domain object (as OCA queue_job's ``Job`` is for a
``queue.job`` row): it holds what one attempt needs (the intent, its number, the worker,
the span, the handler context) and writes every outcome through the model's state machine.
"""

import functools
import json
import logging
import time
import traceback
from datetime import timedelta

import psycopg2.errors
from markupsafe import Markup
from odoo import fields, release
from opentelemetry import trace

from ipai_ops.retry import decide

from ..services import contract, telemetry
from ..services import state_machine as sm
from ..services.exceptions import HandlerCrashed, IntentCancelled, IntentTimeout, IntentTypeUnknown
from ..services.handler_registry import HandlerContext, get_handler, timeout_for, validate_args
from . import cancel, lease

_logger = logging.getLogger(__name__)

#: The attempt still holds its intent: running, under this worker, this attempt number.
#: ``FOR NO KEY UPDATE`` keeps the reaper off the row until the outcome commits; a reap
#: committed after this transaction's snapshot makes it a serialization failure.
_HELD_SQL = "SELECT state, lease_owner, attempts FROM ipai_pulser_intent WHERE id = %s FOR NO KEY UPDATE"


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def ops_registry(env):
    """The failure-mode registry (``ipai_ops``) Odoo classifies with."""
    return env["ipai.ops"].registry()


class Attempt:
    """Attempt ``number`` of ``intent`` by ``worker_id``.

    ``commit``: the worker commits (cron, ``odoo shell``): ``running`` and its lease are
    committed before the handler runs, so the reaper sees them and a renewed lease
    counts; the outcome then commits only while the attempt still holds the intent
    (:meth:`_lost`). Without it everything happens in the caller's transaction.
    """

    def __init__(self, intent, worker_id, *, number=None, commit=False):
        intent.ensure_one()
        self.intent = intent
        self.env = intent.env
        self.worker_id = worker_id
        self.number = intent.attempts + 1 if number is None else number
        self.commit = commit
        self.span = trace.INVALID_SPAN
        self.ctx = None

    # ------------------------------------------------------------------ run

    def run(self):
        """Run the attempt; returns the outcome counter name (``succeeded``, ``failed``,
        ``retried``, ``dead``, ``cancelled`` or ``lease_lost``)."""
        intent = self.intent
        request = cancel.pending_cancel_request(intent)
        now = fields.Datetime.now()
        if request:
            cancel.acknowledge_cancel(intent, now, self.worker_id, request)
            return "cancelled"
        try:
            handler = get_handler(intent.intent_type)
            budget = timeout_for(handler, intent.args or {})
            lease_seconds = handler.lease or budget + lease.LEASE_GRACE_SECONDS
        except IntentTypeUnknown:
            # validate_args raises it again inside the attempt, where it becomes the failure
            handler, budget, lease_seconds = None, 10.0, 10.0 + lease.LEASE_GRACE_SECONDS
        intent._transition(
            sm.RUNNING,
            vals={
                "attempts": self.number,
                "started_at": now,
                "finished_at": False,
                "next_attempt_at": False,
                "lease_expires_at": now + timedelta(seconds=lease_seconds),
            },
            event_type="attempt_started",
            attempt=self.number,
            message=f"attempt {self.number}/{intent.max_attempts} by {self.worker_id}",
            worker=self.worker_id,
        )
        if self.commit:
            self.env.cr.commit()  # pylint: disable=invalid-commit
        attrs = {
            telemetry.ATTR_INTENT_ID: intent.id,
            telemetry.ATTR_INTENT_TYPE: intent.intent_type,
            telemetry.ATTR_ATTEMPT: self.number,
            telemetry.ATTR_CORRELATION: intent.correlation_id or "",
        }
        telemetry.audit("run.state", "start", intent_id=intent.id, state="start", attempt=self.number)
        with telemetry.attempt_span(traceparent=intent.traceparent, attributes=attrs) as span:
            self.span = span
            started = time.monotonic()
            requests = []
            self.ctx = HandlerContext(
                env=self.env,
                args=dict(intent.args or {}),
                intent=intent,
                timeout=budget,
                cancel_requested=functools.partial(cancel.cancel_requested_in_db, intent, found=requests),
                lease=handler.lease if handler else None,
                renew_lease=functools.partial(
                    lease.renew,
                    self.env,
                    intent.id,
                    self.worker_id,
                    self.number,
                    lease_seconds,
                    own_transaction=self.commit,
                ),
            )
            try:
                data = self.execute()
            except IntentCancelled:
                self.env.invalidate_all()
                if self._lost():
                    return "lease_lost"
                request = requests[-1] if requests else cancel.pending_cancel_request(intent)
                cancel.acknowledge_cancel(intent, fields.Datetime.now(), self.worker_id, request)
                return "cancelled"
            except Exception as exc:
                stack = traceback.format_exc()
                self.env.invalidate_all()
                duration_ms = (time.monotonic() - started) * 1000
                return self.fail(exc, duration_ms=duration_ms, stacktrace=stack)
            duration_ms = (time.monotonic() - started) * 1000
            return self.succeed(data, duration_ms=duration_ms)

    def execute(self):
        """Run the handler in a savepoint under its time budget.

        The budget is enforced twice, both safe in Odoo's threaded and prefork servers
        (``signal.alarm`` works only in the main thread): PostgreSQL cancels any single
        statement past the remaining time (``SET LOCAL statement_timeout``, reverted with
        the savepoint), and the handler context raises INTENT.TIMEOUT from ``ctx.check()``
        and once more after the handler returns, discarding a late result.
        """
        ctx, cr, intent_type = self.ctx, self.env.cr, self.intent.intent_type
        handler = validate_args(intent_type, ctx.args)
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
            raise HandlerCrashed(f"handler {intent_type} returned {type(data).__name__}, expected an object")
        try:
            return _jsonable(data)
        except (TypeError, ValueError) as exc:
            raise HandlerCrashed(f"handler {intent_type} returned data that is not JSON: {exc}") from exc

    # ------------------------------------------------------------------ outcome

    def _lost(self):
        """True (and this transaction rolled back) when a committing worker's attempt no
        longer holds its intent: the reaper took it after a missed lease renewal and has
        recorded its failure; the handler's work is discarded with the outcome."""
        if not self.commit:
            return False
        cr, intent = self.env.cr, self.intent
        self.env.flush_all()
        try:
            with cr.savepoint(flush=False):
                cr.execute(_HELD_SQL, (intent.id,))
                held = cr.fetchone() == (sm.RUNNING, self.worker_id, self.number)
        except psycopg2.errors.SerializationFailure:
            held = False
        if held:
            return False
        cr.rollback()
        _logger.warning(
            "ipai_pulser: intent %s attempt %s lost its lease (reaped); its outcome is discarded",
            intent.id,
            self.number,
        )
        return True

    def _ids(self):
        return telemetry.span_ids(self.span)

    def _evidence(self, *, exit_code, duration_ms, stacktrace=None):
        ctx = self.ctx
        return contract.attempt_evidence(
            self.intent.id,
            exit_code=exit_code,
            duration_ms=duration_ms,
            stdout=ctx.stdout if ctx else None,
            tool_calls=ctx.tool_calls if ctx else None,
            stacktrace=stacktrace,
        )

    def succeed(self, data, *, duration_ms):
        if self._lost():
            return "lease_lost"
        intent, attempt = self.intent, self.number
        now = fields.Datetime.now()
        dbname = self.env.cr.dbname
        result = contract.success(
            contract.intent_info(intent, attempt),
            contract.trace_info(dbname, intent, attempt, self._ids()),
            data,
            self._evidence(exit_code=0, duration_ms=duration_ms),
        )
        intent._transition(
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
        attrs = {telemetry.ATTR_INTENT_TYPE: intent.intent_type}
        telemetry.observe("attempt_duration", duration_ms / 1000.0, {**attrs, telemetry.ATTR_OUTCOME: "succeeded"})
        telemetry.count("intents", 1, {**attrs, telemetry.ATTR_OUTCOME: sm.SUCCEEDED})
        telemetry.audit("run.state", "complete", intent_id=intent.id, state="complete", attempt=attempt)
        if cancel.pending_cancel_request(intent):
            intent._log_event("cancel_ignored", "cancel requested while running; the attempt completed first")
        return "succeeded"

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

    def _notify_gave_up(self, code, message, state, ops_error_id):
        """Tell the intent's followers that the worker gave up on it (dead letter, or a
        failure no retry can fix): one message in its chatter, subtype *Gave up*."""
        env = self.env
        link = Markup("")
        if ops_error_id:
            link = Markup(' <a href="/odoo/ipai.agent.error/{}">{}</a>').format(ops_error_id, env._("Open the error"))
        body = Markup("<p>{}</p><p><code>{}</code>: {}{}</p>").format(
            env._("Gave up after attempt %(attempt)s: %(state)s.", attempt=self.number, state=state),
            code,
            (message or "")[:400],
            link,
        )
        self.intent.sudo().message_post(body=body, subtype_xmlid="ipai_pulser_connector.mt_intent_gave_up")

    def fail(self, exc, *, duration_ms, stacktrace=None, now=None):
        if self._lost():
            return "lease_lost"
        intent, attempt, env = self.intent, self.number, self.env
        now = now or fields.Datetime.now()
        registry = ops_registry(env)
        failure = contract.attempt_failure(
            registry,
            exc,
            dbname=env.cr.dbname,
            intent=intent,
            attempt=attempt,
            ev=self._evidence(exit_code=1, duration_ms=duration_ms, stacktrace=stacktrace),
            ids=self._ids(),
            stacktrace=stacktrace,
            service_version=release.version,
        )
        envelope, code = failure.envelope, failure.code
        mode = registry[code]
        ops = self._record_ops_error(envelope, failure.occurrence_id) or {}
        decision = decide(mode, attempt, max_attempts=intent.max_attempts)
        if decision.retry:
            new_state, outcome = sm.QUEUED, "retried"
        elif mode.retryable:
            new_state, outcome = sm.DEAD, "dead"
        else:
            new_state, outcome = sm.FAILED, "failed"
        vals = {
            "failure_envelope": envelope,
            "failure_code": code,
            "failure_mode_id": env["ipai.failure.mode"].search([("code", "=", code)], limit=1).id,
            "result": contract.failure(
                contract.intent_info(intent, attempt),
                contract.trace_info(env.cr.dbname, intent, attempt, self._ids()),
                envelope,
            ),
            "duration_ms": duration_ms,
            "lease_owner": False,
            "lease_expires_at": False,
            "ops_error_id": ops.get("error_id") or intent.ops_error_id,
        }
        if new_state == sm.QUEUED:
            vals["next_attempt_at"] = now + timedelta(seconds=decision.delay_seconds)
            cancel.keep_cancel_request(intent, vals)
        else:
            vals["finished_at"] = now
        intent._transition(
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
        attrs = {telemetry.ATTR_INTENT_TYPE: intent.intent_type}
        telemetry.record_failure(self.span, failure, exc)
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
            self._notify_gave_up(code, envelope["error"]["message"], new_state, ops.get("error_id"))
        telemetry.audit(
            "run.state",
            "error",
            intent_id=intent.id,
            state="error",
            attempt=attempt,
            failure_code=code,
            next_state=new_state,
        )
        _logger.info("ipai_pulser: intent %s attempt %s failed with %s -> %s", intent.id, attempt, code, new_state)
        return outcome
