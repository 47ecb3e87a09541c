"""Operations summary: one page of the numbers an operator reads first, and the weekly mail.

A transient record (nothing stored: every figure is computed from the SQL views when the
page opens or its period changes), like a settings page:

- intents (the connector's published view ``ops.pulser_intents_v1``, read only when it
  exists: ipai_reliability stands alone, and without the connector the page says so);
- agent runs: retries, tokens and cost per provider and model (``ipai.agent.usage``);
- latency of test runs (``kind`` test) and of every other run (build steps: lint,
  typecheck, agent, untyped), average and p90 (nearest rank, as ``ipai-ops report baseline``);
- recent gate failures: failed test/lint/typecheck runs (with their run directory, where
  the logs and envelopes are) and CI.* errors (the ``ipai-ops gate`` codes, ingested from
  GitHub Actions);
- provider health over the last hour (``ipai.provider.health``).
"""

import logging
from datetime import timedelta

from markupsafe import Markup, escape
from odoo import api, fields, models

_logger = logging.getLogger(__name__)

PERIODS = [("1", "Last 24 hours"), ("7", "Last 7 days"), ("30", "Last 30 days")]
INTENTS_VIEW = "ops.pulser_intents_v1"
GATE_KINDS = ("test", "lint", "typecheck")
RECENT_LIMIT = 20

_INTENTS_SQL = """
    SELECT count(*),
           count(*) FILTER (WHERE state IN ('succeeded', 'failed', 'dead', 'cancelled')),
           count(*) FILTER (WHERE state = 'failed'),
           count(*) FILTER (WHERE state = 'dead'),
           coalesce(sum(greatest(attempts - 1, 0)), 0)
      FROM ops.pulser_intents_v1
     WHERE created_at >= %s
"""

_LATENCY_SQL = """
    SELECT CASE WHEN kind = 'test' THEN 'test' ELSE 'build' END AS what,
           count(*),
           avg(duration),
           percentile_disc(0.9) WITHIN GROUP (ORDER BY duration)
      FROM ipai_agent_run
     WHERE started_at >= %s AND duration IS NOT NULL AND status IN ('succeeded', 'failed')
     GROUP BY 1
"""

_USAGE_SQL = """
    SELECT provider, coalesce(model, ''), count(DISTINCT run_id), sum(input_tokens), sum(output_tokens),
           sum(total_tokens), sum(cost), bool_and(priced)
      FROM ipai_agent_usage
     WHERE started_at >= %s
     GROUP BY 1, 2
     ORDER BY sum(cost) DESC NULLS LAST, sum(total_tokens) DESC NULLS LAST, 1, 2
"""


class IpaiOpsSummary(models.TransientModel):
    _name = "ipai.ops.summary"
    _description = "Reliability: operations summary"

    period = fields.Selection(PERIODS, required=True, default="7")
    since = fields.Datetime(compute="_compute_figures")

    connector_installed = fields.Boolean(compute="_compute_figures")
    intents_total = fields.Integer(string="Intents", compute="_compute_figures")
    intents_finished = fields.Integer(string="Finished", compute="_compute_figures")
    intents_failed = fields.Integer(string="Failed", compute="_compute_figures")
    intents_dead = fields.Integer(string="Dead letters", compute="_compute_figures")
    intents_retries = fields.Integer(string="Intent retries", compute="_compute_figures")

    runs_total = fields.Integer(string="Agent runs", compute="_compute_figures")
    runs_failed = fields.Integer(string="Failed runs", compute="_compute_figures")
    runs_retries = fields.Integer(string="Run retries", compute="_compute_figures")
    tokens_total = fields.Integer(string="Tokens", compute="_compute_figures")
    cost_total = fields.Float(string="Cost (USD)", digits=(16, 2), compute="_compute_figures")
    unpriced_models = fields.Integer(string="Models without a price", compute="_compute_figures")
    usage_html = fields.Html(string="Tokens and cost per provider and model", compute="_compute_figures")

    test_runs = fields.Integer(compute="_compute_figures")
    test_latency_avg = fields.Float(string="Test avg (s)", digits=(16, 1), compute="_compute_figures")
    test_latency_p90 = fields.Float(string="Test p90 (s)", digits=(16, 1), compute="_compute_figures")
    build_runs = fields.Integer(compute="_compute_figures")
    build_latency_avg = fields.Float(string="Build avg (s)", digits=(16, 1), compute="_compute_figures")
    build_latency_p90 = fields.Float(string="Build p90 (s)", digits=(16, 1), compute="_compute_figures")

    gate_run_ids = fields.Many2many("ipai.agent.run", string="Failed gate runs", compute="_compute_figures")
    gate_error_ids = fields.Many2many("ipai.agent.error", string="CI gate errors", compute="_compute_figures")
    provider_health_ids = fields.Many2many(
        "ipai.provider.health", string="Providers with errors in the last hour", compute="_compute_figures"
    )
    provider_errors_last_hour = fields.Integer(string="Provider errors (1 h)", compute="_compute_figures")

    @api.depends("period")
    def _compute_figures(self):
        for summary in self:
            since = fields.Datetime.now() - timedelta(days=int(summary.period or "7"))
            summary.update({"since": since, **self._figures(since)})

    @api.model
    def _figures(self, since):
        cr = self.env.cr
        values = {"connector_installed": self.env["ipai.ops"].ops_schema_ready(INTENTS_VIEW)}
        if values["connector_installed"]:
            cr.execute(_INTENTS_SQL, [since])
            total, finished, failed, dead, retries = cr.fetchone()
        else:
            total = finished = failed = dead = retries = 0
        values.update(
            intents_total=total,
            intents_finished=finished,
            intents_failed=failed,
            intents_dead=dead,
            intents_retries=retries,
        )

        Run = self.env["ipai.agent.run"]
        period = [("started_at", ">=", since)]
        values["runs_total"] = Run.search_count(period)
        values["runs_failed"] = Run.search_count([*period, ("status", "=", "failed")])
        [(retries,)] = Run._read_group(period, aggregates=["retries:sum"])
        values["runs_retries"] = retries or 0

        latency = {"test": (0, 0.0, 0.0), "build": (0, 0.0, 0.0)}
        cr.execute(_LATENCY_SQL, [since])
        for what, count, avg, p90 in cr.fetchall():
            latency[what] = (count, float(avg or 0), float(p90 or 0))
        for what in ("test", "build"):
            count, avg, p90 = latency[what]
            values.update({f"{what}_runs": count, f"{what}_latency_avg": avg, f"{what}_latency_p90": p90})

        cr.execute(_USAGE_SQL, [since])
        usage = cr.fetchall()
        values["tokens_total"] = sum(row[5] or 0 for row in usage)
        values["cost_total"] = float(sum(row[6] or 0 for row in usage))
        values["unpriced_models"] = sum(1 for row in usage if not row[7])
        values["usage_html"] = self._usage_table(usage)

        values["gate_run_ids"] = Run.search(
            [*period, ("status", "=", "failed"), "|", ("kind", "in", GATE_KINDS), ("code", "=like", "CI.%")],
            limit=RECENT_LIMIT,
        )
        values["gate_error_ids"] = self.env["ipai.agent.error"].search(
            [("code", "=like", "CI.%"), ("last_seen", ">=", since)], order="last_seen desc", limit=RECENT_LIMIT
        )
        health = self.env["ipai.provider.health"].search([("errors_last_hour", ">", 0)])
        values["provider_health_ids"] = health
        values["provider_errors_last_hour"] = sum(health.mapped("errors_last_hour"))
        return values

    def _usage_table(self, rows):
        if not rows:
            return Markup("<p class='text-muted'>%s</p>") % self.env._("No agent runs in this period.")
        head = [
            self.env._("Provider"),
            self.env._("Model"),
            self.env._("Runs"),
            self.env._("Input tokens"),
            self.env._("Output tokens"),
            self.env._("Total tokens"),
            self.env._("Cost (USD)"),
        ]
        no_price = self.env._("no price")
        body = []
        for provider, model, runs, inp, out, total, cost, priced in rows:
            cells = [
                escape(provider),
                escape(model or "-"),
                f"{runs:,}",
                f"{inp or 0:,}",
                f"{out or 0:,}",
                f"{total or 0:,}",
                f"{cost:,.4f}" if priced and cost is not None else no_price,
            ]
            body.append(Markup("<tr>%s</tr>") % Markup("").join(Markup("<td>%s</td>") % c for c in cells))
        return Markup(
            "<table class='table table-sm o_ipai_ops_usage'><thead><tr>%s</tr></thead><tbody>%s</tbody></table>"
        ) % (Markup("").join(Markup("<th>%s</th>") % h for h in head), Markup("").join(body))

    # ------------------------------------------------------------------ drill-down

    def _window_action(self, xmlid, domain=(), context=None):
        action = self.env["ir.actions.act_window"]._for_xml_id(xmlid)
        action["domain"] = list(domain)
        action["context"] = context or {}
        return action

    def action_open_usage(self):
        self.ensure_one()
        return self._window_action(
            "ipai_reliability.ipai_agent_usage_action", [("started_at", ">=", fields.Datetime.to_string(self.since))]
        )

    def action_open_runs(self):
        self.ensure_one()
        return self._window_action(
            "ipai_reliability.ipai_agent_run_action", [("started_at", ">=", fields.Datetime.to_string(self.since))]
        )

    def action_open_provider_health(self):
        return self._window_action("ipai_reliability.ipai_provider_health_action")

    def action_open_intents(self):
        """The connector's intents list, when the connector is installed (never imported)."""
        self.ensure_one()
        action = self.env.ref("ipai_pulser_connector.ipai_pulser_intent_action", raise_if_not_found=False)
        if not action:
            return False
        return self._window_action(
            "ipai_pulser_connector.ipai_pulser_intent_action",
            [("create_date", ">=", fields.Datetime.to_string(self.since))],
        )

    # ------------------------------------------------------------------ weekly mail

    @api.model
    def _weekly_recipients(self):
        group = self.env.ref("ipai_reliability.group_ipai_reliability_manager")
        return group.sudo().all_user_ids.filtered(lambda u: u.active and u.partner_id.email).partner_id

    @api.model
    def _cron_send_weekly_summary(self):
        """Mail the last seven days' summary to the Reliability managers (cron *Reliability:
        weekly operations summary*); returns the ``mail.mail`` id, or None when no manager has an email."""
        partners = self._weekly_recipients()
        if not partners:
            _logger.info("weekly operations summary: no Reliability manager with an email, nothing sent")
            return None
        summary = self.create({"period": "7"})
        template = self.env.ref("ipai_reliability.mail_template_ipai_ops_summary_weekly")
        mail_id = template.send_mail(
            summary.id,
            force_send=True,
            email_values={"recipient_ids": [(6, 0, partners.ids)]},
        )
        return mail_id
