"""Alert rules: which errors reach which people, and how often.

A cron (``_cron_evaluate``) reads ``ops.agent_errors`` and ``ops.agent_error_occurrences``
with set-based SQL, bounded per run, and queues :class:`ipai.alert.delivery` records; a
second cron sends them. Nothing here runs inside the writers of the ops schema, so an
unreachable webhook or mail server never slows ingestion down.

Triggers:

* ``new``: error groups inserted since the rule's last run. Read by id above the rule's
  high-water mark, settled for ``SETTLE_SECONDS`` (a writer's transaction that started
  before the run but committed after it is picked up next time, not skipped). Insert time,
  not ``first_seen``: a late delivery carries an old occurrence time.
* ``regression``: errors whose ``regressed_at`` moved past the rule's last run.
* ``frequency``: more than N occurrences of one error in the last window.
* ``spike``: at least N occurrences in the last window and more than ``spike_factor``
  times the error's own mean per window over the trailing baseline (e.g. last hour vs the
  hourly mean of the 7 days before it).

Rate limit and digest: a rule sends at most ``rate_limit_count`` messages per
``rate_limit_minutes``. Matches that would exceed it are folded into one digest message;
when no message is left in the budget they wait (``pending_error_ids``) for the next one.
With ``digest`` on, each run's matches always go out as one message.
"""

import logging
import time
from datetime import UTC, timedelta
from urllib.parse import urlsplit

import psycopg2
from odoo import api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.tools import SQL

from .ipai_failure_mode import FAMILY_SELECTION, SEVERITIES
from .ipai_webhook_secret_mixin import decode_webhook_secret

_logger = logging.getLogger(__name__)

TRIGGERS = [
    ("new", "New error"),
    ("regression", "Regression"),
    ("frequency", "Frequency (more than N in a window)"),
    ("spike", "Spike (over its own baseline)"),
]
WEBHOOK_FORMATS = [("standard", "Standard Webhooks (JSON)"), ("slack", "Slack-compatible")]
SEVERITY_RANK = {key: rank for rank, (key, __) in enumerate(reversed(SEVERITIES))}
#: Seconds a new error or a regression must be old before a run reads it (writers'
#: transactions are one round trip; a longer one would be read by the next run).
SETTLE_SECONDS = 30
#: Error rows a "new" run walks past the rule's mark, at most.
MAX_SCAN = 5000
#: Errors one run of one rule reports, at most (the message says how many more matched).
MAX_MATCHES = 500
#: Errors kept waiting for the rate limit, at most; the rest are counted, not listed.
MAX_PENDING = 500
#: Candidates whose baseline a spike run counts, at most (the busiest first).
MAX_SPIKE_CANDIDATES = 200
#: Seconds one evaluation cron run spends before it leaves the remaining rules to the next.
EVALUATE_BUDGET_SECONDS = 50
#: Seconds one evaluation query may run (PostgreSQL statement_timeout) before the rule is skipped.
EVALUATE_STATEMENT_SECONDS = 20
MAX_URL_LENGTH = 2048


def _naive_utc(moment):
    """A datetime from PostgreSQL as Odoo stores datetimes (naive UTC)."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment.tzinfo else moment


def _csv_values(text):
    return [value.strip() for value in (text or "").split(",") if value.strip()]


def validate_webhook_url(url, env):
    """``url`` stripped, or a ValidationError saying what is wrong with it."""
    url = (url or "").strip()
    if not url:
        raise ValidationError(env._("A webhook action needs a URL."))
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(env._("The webhook URL is longer than %(max)s characters.", max=MAX_URL_LENGTH))
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise ValidationError(env._("The webhook URL contains spaces or control characters."))
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(env._("The webhook URL is not a valid URL: %(error)s", error=exc)) from None
    if parts.scheme not in ("http", "https"):
        raise ValidationError(
            env._("The webhook URL must start with http:// or https:// (got %(scheme)r).", scheme=parts.scheme)
        )
    if not parts.hostname:
        raise ValidationError(env._("The webhook URL has no host."))
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            env._("The webhook URL must not carry credentials (user:password@); set a signing secret instead.")
        )
    if port == 0:
        raise ValidationError(env._("The webhook URL's port must be between 1 and 65535."))
    return url


class IpaiAlertRule(models.Model):
    _name = "ipai.alert.rule"
    _description = "Alert rule"
    _inherit = ["mail.thread", "mail.activity.mixin", "ipai.webhook.secret.mixin"]
    _order = "sequence, id"

    name = fields.Char(required=True, tracking=True)
    active = fields.Boolean(default=True, tracking=True)
    sequence = fields.Integer(default=10)
    company_id = fields.Many2one("res.company", default=lambda self: self.env.company)

    # ---- conditions (all that are set must hold)
    failure_mode_ids = fields.Many2many(
        "ipai.failure.mode", string="Codes", help="Only errors of these codes. Empty: any code."
    )
    family = fields.Selection(
        FAMILY_SELECTION, string="Category", help="Only errors whose code belongs to this failure family."
    )
    min_severity = fields.Selection(
        SEVERITIES, string="Severity at least", help="Only errors of this severity or a more severe one."
    )
    sources = fields.Char(help="Comma-separated sources (e.g. bridge, odoo, github_actions). Empty: any.")
    services = fields.Char(help="Comma-separated services. Empty: any.")
    environments = fields.Char(
        help="Comma-separated deployment environments (deployment.environment.name of the occurrences). Empty: any."
    )

    # ---- trigger
    trigger = fields.Selection(TRIGGERS, required=True, default="new", tracking=True)
    threshold = fields.Integer(
        string="Occurrences",
        default=10,
        help="Frequency: alert when an error has MORE than this many occurrences in the window. "
        "Spike: the least number of occurrences in the window that can be a spike.",
    )
    window_minutes = fields.Integer(string="Window (minutes)", default=60)
    spike_factor = fields.Float(
        default=3.0, help="Spike: occurrences in the window above this many times the baseline mean per window."
    )
    baseline_days = fields.Integer(
        default=7, help="Spike: the trailing days (before the window) whose mean per window is the baseline."
    )

    # ---- actions
    action_email = fields.Boolean(string="Email", default=True)
    partner_ids = fields.Many2many("res.partner", string="Recipients", help="Emailed besides the rule's followers.")
    team_ids = fields.Many2many(
        "ipai.reliability.team",
        "ipai_alert_rule_team_rel",
        "rule_id",
        "team_id",
        string="Teams",
        help="The members and the default assignee of these owner teams are emailed.",
    )
    group_ids = fields.Many2many(
        "res.groups", string="User groups", help="Every user of these groups is emailed (e.g. Reliability / Manager)."
    )
    error_followers = fields.Boolean(
        string="Followers of the errors",
        default=True,
        help="Also email the people following the errors the message is about.",
    )
    action_activity = fields.Boolean(string="Activity")
    alert_user_id = fields.Many2one("res.users", string="Activity for")
    action_webhook = fields.Boolean(string="Webhook")
    webhook_url = fields.Char(
        string="Webhook URL", groups="ipai_reliability.group_ipai_reliability_manager", copy=False
    )
    webhook_format = fields.Selection(WEBHOOK_FORMATS, default="standard", required=True)
    # Write-only (ipai.webhook.secret.mixin); the form shows them under Webhook, hence the short labels.
    webhook_secret = fields.Char(string="Signing secret")
    webhook_secret_set = fields.Boolean(string="Secret set")

    # ---- volume
    rate_limit_count = fields.Integer(string="At most (messages)", default=5)
    rate_limit_minutes = fields.Integer(string="Per (minutes)", default=60)
    digest = fields.Boolean(
        help="Send the errors of each evaluation as one message (an error storm is one message, not thousands)."
    )
    max_attempts = fields.Integer(default=6, help="Attempts per delivery (the first included) before it fails.")

    # ---- state
    last_evaluated_at = fields.Datetime(readonly=True, copy=False)
    last_error_id = fields.Integer(string="New-error mark", readonly=True, copy=False, aggregator=False)
    pending_error_ids = fields.Json(readonly=True, copy=False, default=list)
    pending_overflow = fields.Integer(readonly=True, copy=False, default=0, aggregator=False)
    evaluation_note = fields.Char(readonly=True, copy=False, help="Why the last evaluation could not run, if so.")
    delivery_ids = fields.One2many("ipai.alert.delivery", "rule_id", string="Deliveries")
    delivery_count = fields.Integer(compute="_compute_delivery_count")
    delivery_failed_count = fields.Integer(compute="_compute_delivery_count")

    # Limits are checked by _check_numbers (clear messages) rather than SQL CHECKs, which
    # would fire first, on the INSERT, with PostgreSQL's wording.

    # ------------------------------------------------------------------ computes

    def _compute_delivery_count(self):
        groups = self.env["ipai.alert.delivery"]._read_group(
            [("rule_id", "in", self.ids)], ["rule_id", "state"], ["__count"]
        )
        totals, failed = {}, {}
        for rule, state, count in groups:
            totals[rule.id] = totals.get(rule.id, 0) + count
            if state == "failed":
                failed[rule.id] = failed.get(rule.id, 0) + count
        for rule in self:
            rule.delivery_count = totals.get(rule.id, 0)
            rule.delivery_failed_count = failed.get(rule.id, 0)

    # ------------------------------------------------------------------ validation

    @api.constrains(
        "trigger", "threshold", "window_minutes", "spike_factor", "baseline_days", "rate_limit_count",
        "rate_limit_minutes", "max_attempts",
    )  # fmt: skip
    def _check_numbers(self):
        for rule in self:
            if rule.window_minutes <= 0:
                raise ValidationError(
                    self.env._("The window must be at least one minute (got %s).", rule.window_minutes)
                )
            if rule.window_minutes > 7 * 24 * 60:
                raise ValidationError(self.env._("The window must be at most 7 days."))
            if rule.threshold < 0:
                raise ValidationError(self.env._("Occurrences must not be negative (got %s).", rule.threshold))
            if rule.trigger == "spike":
                if rule.spike_factor <= 1:
                    raise ValidationError(self.env._("A spike factor must be above 1 (got %s).", rule.spike_factor))
                if not 1 <= rule.baseline_days <= 30:
                    raise ValidationError(self.env._("The spike baseline must be 1 to 30 days."))
                if rule.baseline_days * 24 * 60 <= rule.window_minutes:
                    raise ValidationError(self.env._("The spike baseline must be longer than the window."))
                if rule.threshold < 1:
                    raise ValidationError(self.env._("A spike needs a minimum count of at least 1."))
            if rule.rate_limit_count <= 0 or rule.rate_limit_minutes <= 0:
                raise ValidationError(self.env._("The rate limit must be at least one message per minute or more."))
            if not 1 <= rule.max_attempts <= 20:
                raise ValidationError(self.env._("Attempts per delivery must be 1 to 20."))

    @api.constrains(
        "action_email", "action_activity", "action_webhook", "alert_user_id", "webhook_format", "webhook_secret"
    )
    def _check_actions(self):
        for rule in self:
            if not (rule.action_email or rule.action_activity or rule.action_webhook):
                raise ValidationError(self.env._("An alert rule needs at least one action (email, activity, webhook)."))
            if rule.action_activity and not rule.alert_user_id:
                raise ValidationError(self.env._("An activity action needs the user it is for."))
            if rule.action_webhook:
                sudo = rule.sudo()
                validate_webhook_url(sudo.webhook_url, self.env)
                pending = self.env.context.get("ipai_alert_secret_pending")
                if sudo.webhook_format == "standard" and not pending and not sudo._webhook_secret():
                    raise ValidationError(self.env._("A Standard Webhooks action needs a signing secret (whsec_...)."))

    @api.constrains("webhook_url")
    def _check_webhook_url(self):
        for rule in self.sudo():
            if rule.webhook_url or rule.action_webhook:
                validate_webhook_url(rule.webhook_url, self.env)

    @api.model_create_multi
    def create(self, vals_list):
        # The secret is not a column Odoo writes: store it once the rows exist, then check
        # the actions (a Standard Webhooks action needs it) with the secret in place.
        pending = []
        for vals in vals_list:
            if vals.get("webhook_url"):
                vals["webhook_url"] = validate_webhook_url(vals["webhook_url"], self.env)
            secret = vals.pop("webhook_secret", None)
            if secret:
                decode_webhook_secret(secret, self.env)
            pending.append(secret)
        records = super(IpaiAlertRule, self.with_context(ipai_alert_secret_pending=True)).create(vals_list)
        records = records.with_env(self.env)
        for rule, secret in zip(records, pending, strict=True):
            if secret:
                rule._store_webhook_secret(secret)
        records._check_actions()
        return records

    def write(self, vals):
        if vals.get("webhook_url"):
            vals["webhook_url"] = validate_webhook_url(vals["webhook_url"], self.env)
        if vals.get("webhook_secret"):
            decode_webhook_secret(vals["webhook_secret"], self.env)
        return super().write(vals)

    def copy_data(self, default=None):
        vals_list = super().copy_data(default=default)
        for vals in vals_list:
            # a copy has no URL nor secret: its webhook starts off until a manager sets both
            vals["action_webhook"] = False
            if not (vals.get("action_email") or vals.get("action_activity")):
                vals["action_email"] = True
        return vals_list

    # ------------------------------------------------------------------ secret

    def action_clear_webhook_secret(self):
        if not self.env.user.has_group("ipai_reliability.group_ipai_reliability_manager"):
            raise AccessError(self.env._("Only Reliability managers change webhook secrets."))
        self._clear_webhook_secret()
        return True

    # ------------------------------------------------------------------ actions

    def action_view_deliveries(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Deliveries of %s", self.name),
            "res_model": "ipai.alert.delivery",
            "view_mode": "list,form",
            "domain": [("rule_id", "=", self.id)],
            "context": {"default_rule_id": self.id},
        }

    def action_evaluate_now(self):
        if not self.env.user.has_group("ipai_reliability.group_ipai_reliability_manager"):
            raise AccessError(self.env._("Only Reliability managers run alert rules by hand."))
        queued = self.sudo()._evaluate()
        self.env["ipai.alert.delivery"]._trigger_delivery()
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "message": self.env._("%s deliveries queued.", queued),
                "type": "info",
                "next": {"type": "ir.actions.act_window_close"},
            },
        }

    # ------------------------------------------------------------------ evaluation

    @api.model
    def _cron_evaluate(self):
        """Evaluate every active rule (bounded per run); queue deliveries and wake their cron."""
        started = time.monotonic()
        queued = 0
        for rule in self.sudo().search([("active", "=", True)], order="last_evaluated_at asc nulls first, id"):
            if time.monotonic() - started > EVALUATE_BUDGET_SECONDS:
                break
            queued += rule._evaluate()
        if queued:
            self.env["ipai.alert.delivery"]._trigger_delivery()
        return queued

    @api.private
    def _evaluate(self, *, settle_seconds=SETTLE_SECONDS):
        """Evaluate these rules once; returns the number of deliveries queued."""
        queued = 0
        ops = self.env["ipai.ops"]
        if not ops.ops_is_local() or not ops.ops_schema_ready():
            return 0
        # each query of a rule gets at most EVALUATE_STATEMENT_SECONDS; a rule that fails or
        # times out is rolled back alone, says why on its form, and the others still run
        self.env.cr.execute("SET LOCAL statement_timeout = %s", [int(EVALUATE_STATEMENT_SECONDS * 1000)])
        try:
            for rule in self:
                try:
                    with self.env.cr.savepoint():
                        queued += rule._evaluate_one(settle_seconds)
                except UserError as exc:
                    rule.evaluation_note = str(exc)[:500]
                    _logger.warning("alert rule %s not evaluated: %s", rule.id, exc)
                except psycopg2.Error as exc:
                    rule.evaluation_note = self.env._(
                        "The last evaluation failed in the database (%(error)s); the next run tries again.",
                        error=type(exc).__name__,
                    )
                    _logger.warning("alert rule %s not evaluated: %s", rule.id, exc)
        finally:
            self.env.cr.execute("SET LOCAL statement_timeout TO DEFAULT")
        return queued

    def _evaluate_one(self, settle_seconds):
        self.ensure_one()
        cr = self.env.cr
        cr.execute("SELECT now() - make_interval(secs => %s), clock_timestamp()", [settle_seconds])
        upper, clock = cr.fetchone()
        where = self._condition_sql()
        matches, total = [], 0
        if self.trigger == "new":
            matches, total = self._match_new(where, upper)
        elif self.trigger == "regression":
            matches, total = self._match_regressions(where, upper)
        else:
            env_sql = self._environment_sql("o")
            recent = {ref for d in self._recent_deliveries(self.window_minutes) for ref in d.error_refs or []}
            if self.trigger == "frequency":
                matches, total = self._match_frequency(where, env_sql, clock, recent)
            else:
                matches, total = self._match_spike(where, env_sql, clock, recent)
        self.write({"last_evaluated_at": _naive_utc(upper), "evaluation_note": False})
        return self._dispatch(matches, total - len(matches))

    # -- conditions

    def _condition_sql(self):
        """The rule's conditions on ``ops.agent_errors e`` as one SQL predicate."""
        parts = [SQL("TRUE")]
        if self.failure_mode_ids:
            parts.append(SQL("e.code = ANY(%s)", self.failure_mode_ids.mapped("code")))
        if self.family:
            modes = self.env["ipai.failure.mode"].sudo().with_context(active_test=False)
            codes = modes.search([("family", "=", self.family)]).mapped("code")
            parts.append(SQL("e.code = ANY(%s)", codes))
        if self.min_severity:
            floor = SEVERITY_RANK[self.min_severity]
            parts.append(SQL("e.severity = ANY(%s)", [key for key, rank in SEVERITY_RANK.items() if rank >= floor]))
        if _csv_values(self.sources):
            parts.append(SQL("e.source = ANY(%s)", _csv_values(self.sources)))
        if _csv_values(self.services):
            parts.append(SQL("e.service = ANY(%s)", _csv_values(self.services)))
        if _csv_values(self.environments):
            env_sql = self._environment_sql("o")
            parts.append(
                SQL(
                    "EXISTS (SELECT 1 FROM ops.agent_error_occurrences o WHERE o.error_id = e.id AND %s)",
                    env_sql,
                )
            )
        return SQL(" AND ").join(parts)

    def _environment_sql(self, alias):
        values = _csv_values(self.environments)
        if not values:
            return SQL("TRUE")
        self.env.cr.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_schema = 'ops'"
            " AND table_name = 'agent_error_occurrences' AND column_name = 'environment'"
        )
        if not self.env.cr.fetchone():
            raise UserError(
                self.env._(
                    "The environment condition needs ops.agent_error_occurrences.environment "
                    "(ops migration 0010); run ipai-ops db migrate."
                )
            )
        return SQL("%s = ANY(%s)", SQL.identifier(alias, "environment"), values)

    # -- triggers

    def _match_new(self, where, upper):
        cr = self.env.cr
        if not self.last_error_id and not self.last_evaluated_at:
            # first run: start from now, never alert on history
            cr.execute("SELECT coalesce(max(id), 0) FROM ops.agent_errors")
            self.last_error_id = cr.fetchone()[0]
            return [], 0
        cr.execute(
            SQL(
                """
                WITH fresh AS (
                    SELECT e.id, e.created_at > %(upper)s AS unsettled, (%(where)s) AS hit
                      FROM ops.agent_errors e
                     WHERE e.id > %(mark)s
                     ORDER BY e.id
                     LIMIT %(scan)s),
                stop AS (SELECT min(id) AS id FROM fresh WHERE unsettled),
                walked AS (SELECT f.* FROM fresh f, stop WHERE stop.id IS NULL OR f.id < stop.id)
                SELECT (SELECT max(id) FROM walked),
                       (SELECT count(*) FROM walked WHERE hit),
                       ARRAY(SELECT id FROM walked WHERE hit ORDER BY id LIMIT %(cap)s)
                """,
                upper=upper,
                where=where,
                mark=self.last_error_id,
                scan=MAX_SCAN,
                cap=MAX_MATCHES,
            )
        )
        new_mark, total, ids = cr.fetchone()
        if new_mark:
            self.last_error_id = new_mark
        return list(ids), total

    def _match_regressions(self, where, upper):
        cr = self.env.cr
        if not self.last_evaluated_at:
            return [], 0
        cr.execute(
            SQL(
                """
                WITH hits AS (
                    SELECT e.id, e.regressed_at
                      FROM ops.agent_errors e
                     WHERE e.status = 'regressed'
                       AND e.regressed_at > %(since)s AND e.regressed_at <= %(upper)s
                       AND %(where)s)
                SELECT (SELECT count(*) FROM hits),
                       ARRAY(SELECT id FROM hits ORDER BY regressed_at, id LIMIT %(cap)s)
                """,
                since=SQL("%s AT TIME ZONE 'UTC'", self.last_evaluated_at),
                upper=upper,
                where=where,
                cap=MAX_MATCHES,
            )
        )
        total, ids = cr.fetchone()
        return list(ids), total

    def _match_frequency(self, where, env_sql, clock, recent):
        cr = self.env.cr
        cr.execute(
            SQL(
                """
                SELECT o.error_id
                  FROM ops.agent_error_occurrences o
                  JOIN ops.agent_errors e ON e.id = o.error_id
                 WHERE o.occurred_at > %(clock)s - make_interval(mins => %(window)s)
                   AND o.occurred_at <= %(clock)s AND %(env)s AND %(where)s
                   AND NOT (o.error_id = ANY(%(recent)s))
                 GROUP BY o.error_id
                HAVING count(*) > %(threshold)s
                 ORDER BY count(*) DESC, o.error_id
                """,
                clock=clock,
                window=self.window_minutes,
                env=env_sql,
                where=where,
                recent=sorted(recent),
                threshold=self.threshold,
            )
        )
        ids = [row[0] for row in cr.fetchall()]
        return ids[:MAX_MATCHES], len(ids)

    def _match_spike(self, where, env_sql, clock, recent):
        cr = self.env.cr
        window_s = self.window_minutes * 60
        baseline_s = self.baseline_days * 86400
        cr.execute(
            SQL(
                """
                WITH recent AS (
                    SELECT o.error_id, count(*) AS n
                      FROM ops.agent_error_occurrences o
                      JOIN ops.agent_errors e ON e.id = o.error_id
                     WHERE o.occurred_at > %(clock)s - make_interval(secs => %(window)s)
                       AND o.occurred_at <= %(clock)s AND %(env)s AND %(where)s
                       AND NOT (o.error_id = ANY(%(recent_ids)s))
                     GROUP BY o.error_id
                    HAVING count(*) >= %(min_count)s
                     ORDER BY count(*) DESC, o.error_id
                     LIMIT %(candidates)s),
                scored AS (
                    SELECT r.error_id, r.n,
                           (SELECT count(*) FROM ops.agent_error_occurrences o
                             WHERE o.error_id = r.error_id AND %(env)s
                               AND o.occurred_at > %(clock)s - make_interval(secs => %(baseline)s)
                               AND o.occurred_at <= %(clock)s - make_interval(secs => %(window)s)
                           )::float8 * %(window)s / (%(baseline)s - %(window)s) AS mean
                      FROM recent r)
                SELECT error_id FROM scored WHERE n > %(factor)s * mean ORDER BY n DESC, error_id
                """,
                clock=clock,
                window=window_s,
                baseline=baseline_s,
                env=env_sql,
                where=where,
                recent_ids=sorted(recent),
                min_count=max(self.threshold, 1),
                candidates=MAX_SPIKE_CANDIDATES,
                factor=self.spike_factor,
            )
        )
        ids = [row[0] for row in cr.fetchall()]
        return ids[:MAX_MATCHES], len(ids)

    # -- rate limit, digest, queueing

    def _recent_deliveries(self, minutes):
        since = fields.Datetime.now() - timedelta(minutes=minutes)
        return self.env["ipai.alert.delivery"].sudo().search([("rule_id", "=", self.id), ("create_date", ">=", since)])

    def _dispatch(self, matches, overflow):
        """Turn this run's matches (plus those waiting) into messages within the rate limit."""
        pending = [ref for ref in (self.pending_error_ids or []) if ref not in set(matches)]
        refs = pending + list(matches)
        overflow += self.pending_overflow or 0
        if not refs:
            return 0
        sent = len(set(self._recent_deliveries(self.rate_limit_minutes).mapped("message_uid")))
        budget = self.rate_limit_count - sent
        if budget <= 0:
            keep = refs[:MAX_PENDING]
            self.write({"pending_error_ids": keep, "pending_overflow": overflow + len(refs) - len(keep)})
            return 0
        self.write({"pending_error_ids": [], "pending_overflow": 0})
        Delivery = self.env["ipai.alert.delivery"].sudo()
        if self.digest or len(refs) > budget or overflow:
            return Delivery._queue_message(self, refs, overflow=overflow)
        queued = 0
        for ref in refs:
            queued += Delivery._queue_message(self, [ref])
        return queued
