import base64
import dataclasses
import logging
import re
from pathlib import Path

import psycopg2
from odoo import api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError

from .ipai_agent_error import VERSION_RE
from .ipai_failure_mode import MANAGER_GROUP

_logger = logging.getLogger(__name__)

try:
    from ipai_ops import resolutions as ops_resolutions
except ImportError:  # pragma: no cover - declared in external_dependencies
    ops_resolutions = None

STAGES = [("draft", "Draft"), ("review", "Review"), ("done", "Done")]
#: Odoo field -> markdown record attribute, for the texts kept verbatim both ways.
TEXT_FIELDS = {
    "author": "author",
    "regression_test": "regression_test",
    "summary": "summary",
    "timeline": "timeline",
    "root_cause": "root_cause",
    "fix": "fix",
    "evidence": "evidence",
    "regression_notes": "regression_notes",
    "follow_ups": "follow_ups",
}


def _slugify(text):
    slug = re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-")
    return slug[:60].strip("-") or "resolution"


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
    other_fingerprints = fields.Text(
        string="More error groups", help="Further ops.agent_errors fingerprints this fix closes, one per line"
    )
    error_id = fields.Many2one("ipai.agent.error", ondelete="set null")
    error_ids = fields.Many2many(
        "ipai.agent.error", compute="_compute_error_ids", string="Error groups", help="Every listed fingerprint's error"
    )
    ref = fields.Char(
        string="Record id",
        copy=False,
        index=True,
        readonly=True,
        help="The docs/resolutions record's id (its file name without .md); set once, never changes",
    )
    origin = fields.Selection(
        [("odoo", "Odoo"), ("markdown", "docs/resolutions")], default="odoo", required=True, readonly=True, copy=False
    )
    source_path = fields.Char(
        string="Markdown file", readonly=True, copy=False, help="Where the record was imported from (repository path)"
    )
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
    timeline = fields.Text(string="Timeline (UTC)", help="Markdown table: time, event")
    evidence = fields.Text()
    regression_test = fields.Char(string="Regression test", help="tests/path/test_file.py::test_name")
    regression_notes = fields.Text(
        string="Regression test notes", help="What the test replays and why it fails before the fix"
    )
    follow_ups = fields.Text(string="Follow-ups", help="A markdown list, e.g. '- [ ] update the runbook'")
    incident_start = fields.Datetime()
    incident_end = fields.Datetime()
    date_done = fields.Date(copy=False, readonly=True)
    company_id = fields.Many2one("res.company", required=True, default=lambda self: self.env.company, index=True)
    runbook_html = fields.Html(related="failure_mode_id.runbook_html")
    color = fields.Integer(related="failure_mode_id.color")

    _ref_uniq = models.Constraint("UNIQUE(ref)", "A resolution record id is used once.")

    @api.model_create_multi
    def create(self, vals_list):
        Mode = self.env["ipai.failure.mode"].with_context(active_test=False)
        for vals in vals_list:
            if not vals.get("code") and vals.get("failure_mode_id"):
                vals["code"] = Mode.browse(vals["failure_mode_id"]).code
            if not vals.get("code"):
                raise UserError(self.env._("A resolution needs a failure code (or a failure mode)."))
            if not vals.get("failure_mode_id"):
                vals["failure_mode_id"] = Mode.search([("code", "=", vals["code"])], limit=1).id
            self._normalise_vals(vals, vals["code"])
            if not vals.get("fingerprint") and vals.get("error_id"):
                vals["fingerprint"] = self.env["ipai.agent.error"].browse(vals["error_id"]).fingerprint
        records = super().create(vals_list)
        for rec in records.filtered(lambda r: not r.ref):
            rec.ref = rec._new_ref()
        return records

    def write(self, vals):
        if "name" in vals or "other_fingerprints" in vals or "fingerprint" in vals:
            codes = {vals.get("code") or rec.code for rec in self}
            if len(codes) > 1 and "name" in vals:
                for rec in self:
                    super(IpaiResolution, rec).write(self._normalise_vals(dict(vals), vals.get("code") or rec.code))
                return True
            vals = self._normalise_vals(dict(vals), next(iter(codes), ""))
        return super().write(vals)

    @api.model
    def _normalise_vals(self, vals, code):
        """The forms a record has in markdown: the code once (the heading adds it), one
        fingerprint per line, the first listed one in ``fingerprint``."""
        name = vals.get("name")
        if name and code and name.startswith(f"{code}: ") and name[len(code) + 2 :].strip():
            vals["name"] = name[len(code) + 2 :].strip()
        if "other_fingerprints" in vals:
            others = [line.strip() for line in (vals["other_fingerprints"] or "").splitlines() if line.strip()]
            if "fingerprint" in vals and not vals["fingerprint"] and others:
                vals["fingerprint"] = others.pop(0)
            vals["other_fingerprints"] = "\n".join(others) or False
        if vals.get("fingerprint"):
            vals["fingerprint"] = vals["fingerprint"].strip()
        return vals

    def _new_ref(self):
        """``<YYYY-MM-DD>_<CODE>_<slug>``: the name its markdown file gets; unique."""
        self.ensure_one()
        day = self.date_done or fields.Date.context_today(self)
        base = f"{day:%Y-%m-%d}_{self.code}_{_slugify(self.name)}"
        ref, n = base, 1
        while self.sudo().with_context(active_test=False).search_count([("ref", "=", ref), ("id", "!=", self.id)]):
            n += 1
            ref = f"{base}-{n}"
        return ref

    def _fingerprint_list(self):
        self.ensure_one()
        others = [line.strip() for line in (self.other_fingerprints or "").splitlines() if line.strip()]
        return ([self.fingerprint] if self.fingerprint else []) + others

    @api.depends("fingerprint", "other_fingerprints", "error_id")
    def _compute_error_ids(self):
        Error = self.env["ipai.agent.error"]
        wanted = {fp for rec in self for fp in rec._fingerprint_list()}
        by_fp = {}
        if wanted and self.env["ipai.ops"].ops_schema_ready():
            by_fp = {error.fingerprint: error for error in Error.search([("fingerprint", "in", list(wanted))])}
        for rec in self:
            errors = rec.error_id.exists()
            for fp in rec._fingerprint_list():
                errors |= by_fp.get(fp, Error)
            rec.error_ids = errors

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

    @api.constrains("stage")
    def _check_analysis_before_review(self):
        # a reviewer reads what happened and why: neither may be empty past draft
        for rec in self:
            if rec.stage != "draft" and not ((rec.summary or "").strip() and (rec.root_cause or "").strip()):
                raise ValidationError(
                    self.env._("Resolution %(name)s needs a Summary and a Root cause before review.", name=rec.name)
                )

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
            rec._resolve_error_groups(rec.error_ids)
        return True

    def _resolve_error_groups(self, errors, *, lenient=False, problems=None):
        """Done closes the loop: every listed error group still open or regressed is resolved
        in the fix release. ``lenient`` (the markdown sync): a fix release that is not a
        release number (a commit sha) resolves without one, noted in ``problems``.
        Returns the fingerprints resolved."""
        self.ensure_one()
        errors = errors.filtered(lambda e: e.status in ("open", "regressed"))
        if not errors:
            return []
        version = (self.fixed_in_release or "").strip() or None
        if lenient and version and not VERSION_RE.match(version):
            if problems is not None:
                problems.append(
                    f"{self.source_path or self.ref}: resolved_in_version {version[:80]} is not a release number; "
                    "its error groups are resolved without one (any new occurrence regresses them)"
                )
            version = None
        errors._resolve(version)
        return errors.mapped("fingerprint")

    def _linked_error(self):
        self.ensure_one()
        return self.error_ids[:1]

    # ------------------------------------------------------------------ markdown (docs/resolutions)

    @api.private
    def export_filename(self):
        """The record's repository path: the file it came from, else
        ``docs/resolutions/<YYYY>/<MM>/<id>.md`` (the layout the resolution-ref gate checks)."""
        self.ensure_one()
        if self.source_path:
            return self.source_path
        ref = self.ref or self._new_ref()
        match = re.match(r"^(\d{4})-(\d{2})-\d{2}_", ref)
        folder = f"{match.group(1)}/{match.group(2)}/" if match else ""
        return f"docs/resolutions/{folder}{ref}.md"

    @api.private
    def to_record(self):
        """This record as an :class:`ipai_ops.resolutions.Resolution` (the markdown's fields)."""
        self.ensure_one()
        return ops_resolutions.Resolution(
            id=self.ref or self._new_ref(),
            code=self.code or "",
            title=self.name or "",
            stage=self.stage,
            status=self.outcome,
            fingerprints=tuple(self._fingerprint_list()),
            pr=self.pr_url or "",
            resolved_in_version=self.fixed_in_release or "",
            date=fields.Date.to_string(self.date_done) if self.date_done else "",
            owner=self.user_id.login or "",
            incident_start=fields.Datetime.to_string(self.incident_start) if self.incident_start else "",
            incident_end=fields.Datetime.to_string(self.incident_end) if self.incident_end else "",
            **{attr: self[name] or "" for name, attr in TEXT_FIELDS.items()},
        )

    @api.private
    def to_markdown(self):
        """This record in the docs/resolutions format (``ipai_ops.resolutions.dumps``)."""
        self.ensure_one()
        try:
            return ops_resolutions.dumps(self.to_record())
        except ops_resolutions.ResolutionFormatError as exc:
            raise UserError(
                self.env._(
                    "Resolution %(name)s cannot be written as markdown: %(reason)s", name=self.display_name, reason=exc
                )
            ) from None

    def action_export_markdown(self):
        self.ensure_one()
        if not self.code:
            raise UserError(self.env._("Set the failure code before exporting."))
        if not self.ref:
            self.ref = self._new_ref()
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

    @api.model
    def _vals_from_record(self, record, mode):
        vals = {
            "name": record.title,
            "code": record.code,
            "failure_mode_id": mode.id,
            "stage": record.stage,
            "outcome": record.status,
            "fingerprint": record.fingerprints[0] if record.fingerprints else False,
            "other_fingerprints": "\n".join(record.fingerprints[1:]) or False,
            "pr_url": record.pr or False,
            "fixed_in_release": record.resolved_in_version or False,
            "date_done": record.date or False,
            "incident_start": record.incident_start or False,
            "incident_end": record.incident_end or False,
        }
        for name, attr in TEXT_FIELDS.items():
            vals[name] = getattr(record, attr) or False
        return vals

    @api.private
    @api.model
    def resolutions_dir(self):
        """``docs/resolutions`` of the checkout the registry lives in (the registry path setting)."""
        return self.env["ipai.ops"].repo_root() / "docs" / "resolutions"

    @api.private
    @api.model
    def sync_from_markdown(self, directory=None):
        """Create/update resolutions from the docs/resolutions records; never deletes.

        A record is matched to its Odoo resolution by id (``ref``), so a record exported
        from Odoo and committed updates the same resolution. Each bad file is one line in
        ``problems`` and the others are still imported. A record that is (or becomes) done
        resolves its listed error groups as *Mark done* does, once: on the change, not on
        every run. Idempotent: a second run with the same files writes nothing.
        Returns ``{"created": [ids], "updated": {id: [fields]}, "unchanged": n,
        "resolved": [fingerprints], "problems": ["path: message"]}``.
        """
        root = self.env["ipai.ops"].repo_root().resolve()
        directory = Path(directory).resolve() if directory else self.resolutions_dir().resolve()
        base = root if directory.is_relative_to(root) else directory
        modes = {m.code: m for m in self.env["ipai.failure.mode"].with_context(active_test=False).search([])}
        loaded, bad = ops_resolutions.load_directory(directory, known_codes=modes, relative_to=base)
        result = {"created": [], "updated": {}, "unchanged": 0, "resolved": [], "problems": [p.format() for p in bad]}
        ids = [item.record.id for item in loaded]
        existing = {rec.ref: rec for rec in self.with_context(active_test=False).search([("ref", "in", ids)])}
        logins = {i.record.owner for i in loaded if i.record.owner}
        users = {
            u.login: u
            for u in self.env["res.users"].with_context(active_test=False).search([("login", "in", list(logins))])
        }
        fingerprints = [fp for item in loaded for fp in item.record.fingerprints]
        errors = {}
        if fingerprints and self.env["ipai.ops"].ops_schema_ready():
            errors = {
                e.fingerprint: e for e in self.env["ipai.agent.error"].search([("fingerprint", "in", fingerprints)])
            }
        for item in loaded:
            record = item.record
            vals = self._vals_from_record(record, modes[record.code])
            vals["source_path"] = item.path
            if record.owner and record.owner not in users:
                result["problems"].append(
                    f"{item.path}: owner {record.owner} is not an Odoo login; imported without an owner"
                )
            vals["user_id"] = users[record.owner].id if record.owner in users else False
            first = errors.get(record.fingerprints[0]) if record.fingerprints else None
            rec = existing.get(record.id)
            try:
                with self.env.cr.savepoint():
                    outcome, rec, changed = self._import_record(rec, record, vals, first, item.path)
                    if outcome == "created":
                        targets = rec.error_ids if rec.stage == "done" else rec.error_ids.browse()
                    elif outcome == "updated" and rec.stage == "done":
                        targets = rec.error_ids
                        if changed["was_done"]:
                            targets = targets.filtered(lambda e, seen=changed["before"]: e.fingerprint not in seen)
                    else:
                        targets = rec.error_ids.browse()
                    resolved = rec._resolve_error_groups(targets, lenient=True, problems=result["problems"])
            except (UserError, ValidationError, psycopg2.Error) as exc:
                reason = (exc.args[0] if exc.args else str(exc)) or type(exc).__name__
                result["problems"].append(f"{item.path}: {' '.join(str(reason).split())}")
                continue
            result["resolved"] += resolved
            if outcome == "created":
                result["created"].append(rec.id)
            elif outcome == "updated":
                result["updated"][rec.id] = changed["fields"]
            else:
                result["unchanged"] += 1
        _logger.info(
            "resolution sync from %s: %s created, %s updated, %s unchanged, %s error group(s) resolved, %s problem(s)",
            directory,
            len(result["created"]),
            len(result["updated"]),
            result["unchanged"],
            len(result["resolved"]),
            len(result["problems"]),
        )
        for problem in result["problems"]:
            _logger.warning("resolution sync: %s", problem)
        return result

    @api.model
    def _import_record(self, rec, record, vals, first, path):
        """Create or update one resolution from a markdown record: ``(outcome, rec, change)``."""
        Resolution = self.with_context(active_test=False, tracking_disable=True)
        if rec is None:
            vals.update({"ref": record.id, "origin": "markdown", "error_id": first.id if first else False})
            # No chatter line per import: the form shows the file (source_path), and a post
            # per record made an import of 500 records take 24 s instead of 3.6 s.
            rec = Resolution.with_context(mail_create_nolog=True, mail_create_nosubscribe=True).create(vals)
            return "created", rec, None
        rec = rec.with_context(tracking_disable=True)
        current = rec.to_record()
        changed = [f.name for f in dataclasses.fields(record) if getattr(current, f.name) != getattr(record, f.name)]
        link = {}
        if rec.source_path != path:
            link["source_path"] = path
        if first and rec.error_id != first:
            link["error_id"] = first.id
        if not changed:
            if link:
                rec.write(link)
            return "unchanged", rec, None
        change = {"fields": changed, "was_done": rec.stage == "done", "before": set(rec._fingerprint_list())}
        rec.write({**vals, **link})
        rec.message_post(body=self.env._("Updated from %(path)s: %(fields)s.", path=path, fields=", ".join(changed)))
        return "updated", rec, change

    @api.model
    def action_sync_markdown(self):
        if not self.env.su and not self.env.user.has_group(MANAGER_GROUP):
            raise AccessError(self.env._("Only Reliability managers may do this."))
        result = self.sudo().sync_from_markdown()
        message = self.env._(
            "%(created)s created, %(updated)s updated, %(unchanged)s unchanged, %(resolved)s error group(s) resolved.",
            created=len(result["created"]),
            updated=len(result["updated"]),
            unchanged=result["unchanged"],
            resolved=len(result["resolved"]),
        )
        if result["problems"]:
            message += "\n" + self.env._(
                "%(count)s file(s) not imported:\n%(problems)s",
                count=len(result["problems"]),
                problems="\n".join(result["problems"][:20]),
            )
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Resolutions synchronised from docs/resolutions"),
                "message": message,
                "type": "warning" if result["problems"] else "success",
                "sticky": bool(result["problems"]),
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    @api.model
    def _cron_sync_markdown(self):
        self.sync_from_markdown()
