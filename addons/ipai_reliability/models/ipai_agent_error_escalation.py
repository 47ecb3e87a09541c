"""Escalations raised automatically: the triggers of the agent incident runbook.

``docs/runbooks/agent_incidents.md`` names when a failure stops being a runbook's business and
becomes the owner's: structured output failing on every retry of a run, or across providers;
a validator failing after a known-good baseline; a core contract that does not parse. The
cron *Reliability: escalate errors that match a trigger* finds them with bounded set-based SQL
over ``ops.agent_errors``, ``ops.agent_error_occurrences`` and ``ops.agent_runs`` (never in a
writer: the bridge's write path stays as it is, as for alert rules), and for each new match

* records the escalation (this model: one per error and trigger, so a match is escalated
  once), which marks the error *Escalated* (``ipai.agent.error.escalated``, in ipai_agent_error_chatter.py);
* posts it on the error (subtype *Escalated*, which followers get) with the facts that
  matched, after subscribing the owner: the assignee, else the owner team's default
  assignee, and the team's members; the owner gets an *Escalated* to-do;
* attaches the escalation bundle (``ipai-ops escalate``) of the run that matched, or of the
  error when no run did, to the error and to the message.
"""

import logging

from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.tools import SQL

_logger = logging.getLogger(__name__)

TODO = "mail.mail_activity_data_todo"
OUTPUT_INVALID = "AGENT.OUTPUT_SCHEMA_INVALID"
VERIFICATION_FAILED = "AGENT.VERIFICATION_FAILED"
#: Codes of a core contract that did not parse (run.json, the events file, the run metadata a
#: benchmark or a dataset reads): one occurrence is enough, the evidence of runs is at stake.
CONTRACT_CODES = ("AGENT.RUN_METADATA_INVALID",)

PARAM_CHECKED = "ipai_reliability.escalation_checked_at"
PARAM_RETRIES = "ipai_reliability.escalation_retry_attempts"
PARAM_PROVIDERS = "ipai_reliability.escalation_providers"
PARAM_WINDOW_HOURS = "ipai_reliability.escalation_window_hours"
DEFAULT_RETRIES = 2
DEFAULT_PROVIDERS = 2
DEFAULT_WINDOW_HOURS = 24
#: a writer's transaction that began before the last run and committed after it is still seen
OVERLAP = "10 minutes"
#: errors and runs looked at per trigger per run, at most (the rest wait for the next run)
BATCH = 500

TRIGGERS = [
    ("output_retries", "Structured output failed on every retry"),
    ("output_providers", "Structured output failed across providers"),
    ("verification_regressed", "Validator failed after a known-good baseline"),
    ("contract_parse", "Core contract did not parse"),
]


class IpaiAgentErrorEscalation(models.Model):
    _name = "ipai.agent.error.escalation"
    _description = "Agent error escalation"
    _order = "create_date desc, id desc"
    _rec_name = "trigger"

    error_id = fields.Many2one("ipai.agent.error", required=True, readonly=True, index=True, ondelete="cascade")
    code = fields.Char(readonly=True)
    trigger = fields.Selection(TRIGGERS, required=True, readonly=True)
    reason = fields.Text(readonly=True, help="The facts that matched the trigger.")
    run_ref = fields.Char(string="Run", readonly=True, help="ops.agent_runs.run_id of the run that matched")
    user_id = fields.Many2one("res.users", string="Owner notified", readonly=True)
    team_id = fields.Many2one("ipai.reliability.team", string="Owner team", readonly=True)
    attachment_id = fields.Many2one("ir.attachment", string="Bundle", readonly=True, ondelete="set null")
    bundle_note = fields.Char(readonly=True, help="Why no bundle is attached, when none is.")

    _error_trigger_uniq = models.Constraint("UNIQUE(error_id, trigger)", "An error is escalated once per trigger.")

    # ------------------------------------------------------------------ settings

    @api.model
    def _int_param(self, key, default, minimum):
        raw = (self.env["ir.config_parameter"].sudo().get_param(key) or "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            _logger.warning("%s = %r is not a whole number >= %s: %s is used", key, raw, minimum, default)
            return default
        return value

    # ------------------------------------------------------------------ finding matches

    @api.model
    def _matches(self, since, *, now):
        """``[(error id, trigger, reason, run id or None)]`` for what matched since ``since``
        (runs started, errors last seen), in SQL, each trigger bounded to :data:`BATCH`."""
        cr = self.env.cr
        retries = self._int_param(PARAM_RETRIES, DEFAULT_RETRIES, 2)
        providers = self._int_param(PARAM_PROVIDERS, DEFAULT_PROVIDERS, 2)
        window = self._int_param(PARAM_WINDOW_HOURS, DEFAULT_WINDOW_HOURS, 1)
        found = []
        # Runs finished since the mark (started within a day before it: agent_runs_recent_idx
        # bounds the scan); their iterations (run record v2) say which attempt failed with which code.
        # Any writer of the ops schema writes these rows: a malformed iteration is skipped, never cast.
        runs = SQL(
            "SELECT r.run_id, r.agent, r.task_ref, r.started_at, it.value->>'code' AS code,"
            "  CASE WHEN it.value->>'error_id' ~ '^[0-9]{1,18}$' THEN (it.value->>'error_id')::bigint"
            "  ELSE r.error_id END AS error_id"
            " FROM ops.agent_runs r CROSS JOIN LATERAL jsonb_array_elements("
            "   CASE WHEN jsonb_typeof(r.metadata->'iterations') = 'array' THEN r.metadata->'iterations'"
            "   ELSE '[]'::jsonb END) it"
            " WHERE (r.started_at AT TIME ZONE 'UTC') >= (%s::timestamptz AT TIME ZONE 'UTC') - interval '1 day'"
            "  AND coalesce(r.finished_at, r.started_at) >= %s::timestamptz"
            "  AND jsonb_typeof(it.value) = 'object'",
            since,
            since,
        )

        # 1. structured output invalid on N attempts of one run (every retry failed the same way)
        cr.execute(
            SQL(
                "SELECT error_id, run_id, count(*) FROM (%s) runs"
                " WHERE code = %s AND error_id IS NOT NULL"
                " GROUP BY 1, 2 HAVING count(*) >= %s ORDER BY 2 LIMIT %s",
                runs,
                OUTPUT_INVALID,
                retries,
                BATCH,
            )
        )
        for error_id, run_id, attempts in cr.fetchall():
            found.append(
                (
                    error_id,
                    "output_retries",
                    self.env._(
                        "Run %(run)s returned invalid structured output on %(n)s attempts (threshold %(min)s): "
                        "retrying does not fix it.",
                        run=run_id,
                        n=attempts,
                        min=retries,
                    ),
                    run_id,
                )
            )

        # 2. structured output invalid from several providers within the window: the groups of
        # the code seen since the mark, and the providers of the code's occurrences in the window
        cr.execute(
            SQL(
                "WITH recent AS ("
                "  SELECT o.error_id, o.gen_ai_provider FROM ops.agent_errors e"
                "  JOIN ops.agent_error_occurrences o ON o.error_id = e.id"
                "   AND o.occurred_at >= %(now)s::timestamptz - make_interval(hours => %(window)s)"
                "  WHERE e.code = %(code)s AND e.merged_into IS NULL"
                "   AND e.last_seen >= %(now)s::timestamptz - make_interval(hours => %(window)s)"
                "   AND o.gen_ai_provider IS NOT NULL AND o.gen_ai_provider <> ''),"
                " providers AS (SELECT array_agg(DISTINCT gen_ai_provider ORDER BY gen_ai_provider) AS names"
                "  FROM recent)"
                " SELECT e.id, p.names FROM ops.agent_errors e, providers p"
                " WHERE e.code = %(code)s AND e.merged_into IS NULL AND cardinality(p.names) >= %(min)s"
                "  AND (e.last_seen AT TIME ZONE 'UTC') >= (%(since)s::timestamptz AT TIME ZONE 'UTC')"
                "  AND EXISTS (SELECT 1 FROM recent r WHERE r.error_id = e.id)"
                " ORDER BY e.id LIMIT %(batch)s",
                now=now,
                window=window,
                code=OUTPUT_INVALID,
                min=providers,
                since=since,
                batch=BATCH,
            )
        )
        for error_id, names in cr.fetchall():
            found.append(
                (
                    error_id,
                    "output_providers",
                    self.env._(
                        "Structured output failed with %(n)s providers in the last %(hours)s h (%(names)s): "
                        "the schema or the prompt is at fault, not one model.",
                        n=len(names),
                        hours=window,
                        names=", ".join(names),
                    ),
                    None,
                )
            )

        # 3. a validator failed in a run whose agent passed the same task's verification before
        cr.execute(
            SQL(
                "SELECT DISTINCT ON (runs.error_id) runs.error_id, runs.run_id, b.run_id"
                " FROM (%s) runs"
                " JOIN LATERAL (SELECT g.run_id FROM ops.agent_runs g"
                "   WHERE g.agent = runs.agent AND g.task_ref = runs.task_ref AND g.started_at < runs.started_at"
                "     AND g.status = 'succeeded' AND g.metadata->'verification'->>'status' = 'passed'"
                "   ORDER BY g.started_at DESC LIMIT 1) b ON true"
                " WHERE runs.code = %s AND runs.task_ref IS NOT NULL AND runs.error_id IS NOT NULL"
                " ORDER BY runs.error_id, runs.started_at DESC LIMIT %s",
                runs,
                VERIFICATION_FAILED,
                BATCH,
            )
        )
        for error_id, run_id, baseline in cr.fetchall():
            found.append(
                (
                    error_id,
                    "verification_regressed",
                    self.env._(
                        "Run %(run)s failed verification on a task whose run %(baseline)s passed it: "
                        "a known-good baseline broke.",
                        run=run_id,
                        baseline=baseline,
                    ),
                    run_id,
                )
            )

        # 4. a core contract did not parse: every group of those codes seen since the mark
        cr.execute(
            SQL(
                "SELECT e.id, e.code, (SELECT r.run_id FROM ops.agent_runs r WHERE r.error_id = e.id"
                "   ORDER BY r.started_at DESC LIMIT 1)"
                " FROM ops.agent_errors e WHERE e.code IN %s AND e.merged_into IS NULL"
                "  AND (e.last_seen AT TIME ZONE 'UTC') >= (%s::timestamptz AT TIME ZONE 'UTC')"
                " ORDER BY e.id LIMIT %s",
                CONTRACT_CODES,
                since,
                BATCH,
            )
        )
        for error_id, code, run_id in cr.fetchall():
            found.append(
                (
                    error_id,
                    "contract_parse",
                    self.env._(
                        "%(code)s: a core contract did not parse; the evidence of the runs that wrote it is lost "
                        "until the writer is fixed.",
                        code=code,
                    ),
                    run_id,
                )
            )
        return found

    # ------------------------------------------------------------------ escalating

    @api.model
    def _cron_escalate(self):
        """Escalate what matched a trigger since the last run; returns the escalations created."""
        if not self.env["ipai.ops"].ops_is_local():
            return 0
        params = self.env["ir.config_parameter"].sudo()
        self.env.cr.execute("SELECT now()")
        (now,) = self.env.cr.fetchone()
        checked = params.get_param(PARAM_CHECKED)
        self.env.cr.execute(
            SQL(
                "SELECT coalesce(%s::timestamptz, %s::timestamptz - interval '1 day') - %s::interval",
                checked or None,
                now,
                OVERLAP,
            )
        )
        (since,) = self.env.cr.fetchone()
        created = self._escalate_matches(self._matches(since, now=now))
        params.set_param(PARAM_CHECKED, now.isoformat())
        return len(created)

    @api.model
    def _escalate_matches(self, matches):
        """Escalate each ``(error id, trigger, reason, run id)`` not escalated yet for its trigger."""
        if not matches:
            return self.browse()
        existing = {
            (e.error_id.id, e.trigger) for e in self.sudo().search([("error_id", "in", list({m[0] for m in matches}))])
        }
        errors = self.env["ipai.agent.error"].sudo().browse({m[0] for m in matches}).exists()
        created = self.browse()
        for error_id, trigger, reason, run_id in matches:
            error = errors.browse(error_id)
            if (error_id, trigger) in existing or error not in errors or error.status in ("ignored", "merged"):
                continue
            existing.add((error_id, trigger))
            created |= self.sudo()._escalate(error.sudo(), trigger, reason, run_id)
        return created

    @api.private
    def _escalate(self, error, trigger, reason, run_id):
        """Record, notify and attach one escalation of ``error``."""
        team = error.team_id
        owner = error.user_id or team.user_id
        escalation = self.create(
            {
                "error_id": error.id,
                "code": error.code,
                "trigger": trigger,
                "reason": reason,
                "run_ref": run_id,
                "user_id": owner.id,
                "team_id": team.id,
            }
        )
        ref = f"run:{run_id}" if run_id else str(error.id)
        try:
            escalation.attachment_id = self.env["ipai.ops"]._escalation_attachment(ref, record=error)
        except UserError as exc:
            # the escalation stands without it: the message says why, and a person builds it
            _logger.warning("escalation of error %s: no bundle: %s", error.id, exc)
            escalation.bundle_note = str(exc)[:500]
        error.message_subscribe(partner_ids=(owner | team.user_id | team.member_ids).partner_id.ids)
        label = dict(TRIGGERS)[trigger]
        error.message_post(
            body=self.env._(
                "Escalated (%(trigger)s): %(reason)s%(owner)s%(bundle)s",
                trigger=label,
                reason=reason,
                owner=self.env._(" Owner: %s.", owner.name)
                if owner
                else self.env._(" No owner: no assignee, and no owner team with a default assignee for this code."),
                bundle=self.env._(" The escalation bundle is attached.")
                if escalation.attachment_id
                else self.env._(" No bundle: %s", escalation.bundle_note or ""),
            ),
            subtype_xmlid="ipai_reliability.mt_agent_error_escalated",
            attachment_ids=escalation.attachment_id.ids,
        )
        if owner:
            error.activity_schedule(
                TODO,
                user_id=owner.id,
                summary=self.env._("Escalated: %(code)s", code=error.code),
                note=reason,
            )
        _logger.info(
            "escalated error %s (%s) on %s%s",
            error.id,
            error.code,
            trigger,
            f", run {run_id}" if run_id else "",
        )
        return escalation
