import base64
import re

from odoo import api, fields, models
from odoo.exceptions import UserError, ValidationError

STAGES = [("draft", "Draft"), ("review", "Review"), ("done", "Done")]


def _yaml_scalar(value):
    """A YAML-safe plain or quoted scalar for the front matter."""
    text = "" if value in (None, False) else str(value)
    if not text or re.search(r"[:#\[\]{},&*!|>'\"%@`]|^\s|\s$|^-", text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return text


class IpaiResolution(models.Model):
    _name = "ipai.resolution"
    _description = "Resolution record"
    _inherit = ["mail.thread", "mail.activity.mixin"]
    _order = "stage_sequence, write_date desc, id desc"

    name = fields.Char(string="What happened", required=True, tracking=True)
    failure_mode_id = fields.Many2one("ipai.failure.mode", string="Failure mode", tracking=True, index=True)
    code = fields.Char(
        compute="_compute_code", store=True, readonly=False, required=True, tracking=True, string="Failure code"
    )
    fingerprint = fields.Char(string="Error group", index=True, tracking=True, help="ops.agent_errors fingerprint")
    error_id = fields.Many2one("ipai.agent.error", ondelete="set null")
    stage = fields.Selection(
        STAGES, default="draft", required=True, tracking=True, group_expand="_group_expand_stage", copy=False
    )
    stage_sequence = fields.Integer(compute="_compute_stage_sequence", store=True)
    outcome = fields.Selection(
        [("resolved", "Resolved"), ("mitigated", "Mitigated (workaround only)")], default="resolved", required=True
    )
    user_id = fields.Many2one("res.users", string="Owner", default=lambda self: self.env.user, tracking=True)
    author = fields.Char(help="GitHub handle of the author")
    summary = fields.Text()
    root_cause = fields.Text()
    fix = fields.Text()
    pr_url = fields.Char(string="PR link", tracking=True)
    fixed_in_release = fields.Char(string="Fixed in release", tracking=True)
    evidence = fields.Text()
    regression_test = fields.Char(string="Regression test", help="tests/path/test_file.py::test_name")
    follow_ups = fields.Text(string="Follow-ups", help="One per line")
    incident_start = fields.Datetime()
    incident_end = fields.Datetime()
    date_done = fields.Date(copy=False, readonly=True)
    company_id = fields.Many2one("res.company", required=True, default=lambda self: self.env.company, index=True)
    runbook_html = fields.Html(related="failure_mode_id.runbook_html")
    color = fields.Integer(related="failure_mode_id.color")

    @api.model_create_multi
    def create(self, vals_list):
        for vals in vals_list:
            if not vals.get("code") and vals.get("failure_mode_id"):
                vals["code"] = self.env["ipai.failure.mode"].browse(vals["failure_mode_id"]).code
            if not vals.get("code"):
                raise UserError(self.env._("A resolution needs a failure code (or a failure mode)."))
        return super().create(vals_list)

    @api.depends("failure_mode_id")
    def _compute_code(self):
        for rec in self:
            rec.code = rec.failure_mode_id.code or rec.code

    @api.depends("stage")
    def _compute_stage_sequence(self):
        order = {key: index for index, (key, __) in enumerate(STAGES)}
        for rec in self:
            rec.stage_sequence = order.get(rec.stage, 0)

    @api.model
    def _group_expand_stage(self, values, domain):
        return [key for key, __ in STAGES]

    @api.constrains("pr_url")
    def _check_pr_url(self):
        for rec in self:
            if rec.pr_url and not re.match(r"^https?://\S+$", rec.pr_url):
                raise ValidationError(self.env._("The PR link must be an http(s) URL."))

    @api.constrains("incident_start", "incident_end")
    def _check_window(self):
        for rec in self:
            if rec.incident_start and rec.incident_end and rec.incident_end < rec.incident_start:
                raise ValidationError(self.env._("The incident window ends before it starts."))

    # ------------------------------------------------------------------ stages

    def action_submit_review(self):
        self.write({"stage": "review"})
        return True

    def action_back_to_draft(self):
        self.write({"stage": "draft", "date_done": False})
        return True

    def action_done(self):
        """Done needs the root cause, the fix and its PR; the linked error is resolved in the release."""
        for rec in self:
            missing = [
                label
                for field_name, label in (
                    ("code", self.env._("failure code")),
                    ("root_cause", self.env._("root cause")),
                    ("fix", self.env._("fix")),
                    ("pr_url", self.env._("PR link")),
                )
                if not rec[field_name]
            ]
            if missing:
                raise UserError(
                    self.env._(
                        "Resolution %(name)s cannot be done yet; fill in: %(missing)s.",
                        name=rec.name,
                        missing=", ".join(missing),
                    )
                )
        self.write({"stage": "done", "date_done": fields.Date.context_today(self)})
        for rec in self:
            error = rec._linked_error()
            if error and error.status in ("open", "regressed"):
                error._resolve(rec.fixed_in_release or None)
        return True

    def _linked_error(self):
        self.ensure_one()
        if self.error_id.exists():
            return self.error_id
        if self.fingerprint:
            return self.env["ipai.agent.error"].search([("fingerprint", "=", self.fingerprint)], limit=1)
        return self.env["ipai.agent.error"]

    # ------------------------------------------------------------------ markdown export

    def _slug(self):
        slug = re.sub(r"[^a-z0-9]+", "-", (self.name or "").lower().split(":", 1)[-1]).strip("-")
        return slug[:60].strip("-") or "resolution"

    @api.private
    def export_filename(self):
        """``docs/resolutions/<YYYY>/<MM>/<YYYY-MM-DD>_<CODE>_<slug>.md``."""
        self.ensure_one()
        day = self.date_done or fields.Date.context_today(self)
        return f"docs/resolutions/{day:%Y}/{day:%m}/{day:%Y-%m-%d}_{self.code}_{self._slug()}.md"

    @api.private
    def to_markdown(self):
        """This record in the docs/resolutions/_template.md format."""
        self.ensure_one()
        day = self.date_done or fields.Date.context_today(self)
        fingerprints = [fp for fp in {self.fingerprint, self.error_id.fingerprint} if fp]
        front = [
            "---",
            f"code: {_yaml_scalar(self.code)}",
            "fingerprints:",
            *(f"  - {_yaml_scalar(fp)}" for fp in sorted(fingerprints)),
            f"status: {self.outcome}",
            f"pr: {_yaml_scalar(self.pr_url or '')}",
            f"resolved_in_version: {_yaml_scalar(self.fixed_in_release or '')}",
            f"regression_test: {_yaml_scalar(self.regression_test or '')}",
            f"date: {day:%Y-%m-%d}",
            f"author: {_yaml_scalar(self.author or self.user_id.login or '')}",
            "---",
            "",
        ]
        title = (
            (self.name or "").split(":", 1)[-1].strip()
            if (self.name or "").startswith(self.code or "\0")
            else self.name
        )
        start = fields.Datetime.to_string(self.incident_start) if self.incident_start else "?"
        end = fields.Datetime.to_string(self.incident_end) if self.incident_end else "?"
        follow_ups = [line.strip().lstrip("-").strip() for line in (self.follow_ups or "").splitlines() if line.strip()]
        body = [
            f"# {self.code}: {title}",
            "",
            "## Summary",
            "",
            self.summary or "-",
            "",
            "## Timeline (UTC)",
            "",
            "| Time | Event |",
            "|---|---|",
            f"| {start} | first occurrence (`ops.agent_errors.first_seen`) |",
            f"| {end} | last occurrence in the incident window |",
            f"| {self.date_done or '?'} | fix deployed in {self.fixed_in_release or '?'} |",
            "",
            "## Root cause",
            "",
            self.root_cause or "-",
            "",
            "## Fix",
            "",
            (self.fix or "-") + (f"\n\nPR: {self.pr_url}" if self.pr_url else ""),
            "",
            "## Evidence",
            "",
            self.evidence or "-",
            "",
            "## Regression test",
            "",
            f"`{self.regression_test}`" if self.regression_test else "-",
            "",
            "## Follow-ups",
            "",
            *([f"- [ ] {item}" for item in follow_ups] or ["- none"]),
            "",
        ]
        return "\n".join(front + body)

    def action_export_markdown(self):
        self.ensure_one()
        if not self.code:
            raise UserError(self.env._("Set the failure code before exporting."))
        attachment = self.env["ir.attachment"].create(
            {
                "name": self.export_filename().rsplit("/", 1)[-1],
                "datas": base64.b64encode(self.to_markdown().encode()),
                "mimetype": "text/markdown",
                "res_model": self._name,
                "res_id": self.id,
            }
        )
        return {"type": "ir.actions.act_url", "url": f"/web/content/{attachment.id}?download=true", "target": "self"}
