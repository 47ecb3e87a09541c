import base64
import logging
import os
import re

import yaml
from markupsafe import Markup
from odoo import api, fields, models
from odoo.exceptions import AccessError, UserError, ValidationError
from odoo.fields import Command
from odoo.tools import html_sanitize

try:
    from ipai_ops import registry as ops_registry
    from ipai_ops import runbooks as ops_runbooks
except ImportError:  # pragma: no cover - declared in external_dependencies
    ops_runbooks = ops_registry = None

from .runbook_summary import business_summary_html

_logger = logging.getLogger(__name__)

SEVERITIES = [("critical", "Critical"), ("high", "High"), ("medium", "Medium"), ("low", "Low")]
SEVERITY_COLOR = {"critical": 1, "high": 2, "medium": 3, "low": 10}
FAMILIES = ops_registry.FAMILIES if ops_registry else ()
FALLBACK_FAMILY = ops_registry.FALLBACK_FAMILY if ops_registry else "unknown"
#: The registry's failure families (``registry.FAMILIES``) and the fallback's ``unknown``.
FAMILY_SELECTION = [(family, family.capitalize()) for family in FAMILIES] + [(FALLBACK_FAMILY, "Unknown")]
CI_BEHAVIORS = [("block", "Block"), ("warn", "Warn"), ("retry", "Retry"), ("ignore", "Ignore")]
MANAGER_GROUP = "ipai_reliability.group_ipai_reliability_manager"
CODE_RE = re.compile(r"^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$")
RUNBOOK_RE = re.compile(r"^docs/runbooks/failures/[A-Z0-9_.]+\.md$")
YAML_HEADER = (
    "# Failure-mode registry: the single source of truth for failure codes.\n"
    "# Exported from Odoo (Reliability app). Check with `ipai-ops ssot check`.\n\n"
)

# The scalar fields a registry sync compares and writes (signatures are compared apart).
_SYNCED_FIELDS = (
    "name",
    "category",
    "severity",
    "family",
    "priority",
    "description",
    "runbook_path",
    "runbook_markdown",
    "retryable",
    "http_status",
    "lifecycle",
    "aliases",
    "ci_behavior",
    "max_attempts",
    "owner",
    "fallback",
    "sequence",
    "origin",
)


class IpaiFailureMode(models.Model):
    _name = "ipai.failure.mode"
    _description = "Failure mode"
    _inherit = ["mail.thread"]
    _order = "sequence, code"
    _rec_name = "code"
    _rec_names_search = ["code", "name", "aliases"]

    code = fields.Char(
        required=True, index=True, tracking=True, help="Dot-namespaced code, e.g. WEBHOOK.SIGNATURE_INVALID"
    )
    name = fields.Char(string="Title", required=True, tracking=True)
    sequence = fields.Integer(default=10000, help="Position in the registry file: classification order.")
    category = fields.Char(required=True, index=True, help="Equals the first segment of the code.")
    severity = fields.Selection(SEVERITIES, required=True, default="medium", tracking=True)
    family = fields.Selection(
        FAMILY_SELECTION,
        required=True,
        default="runtime",
        index=True,
        tracking=True,
        help="What kind of failure this is (test, compile, dependency, network, ...). "
        "Unknown belongs to the fallback code alone.",
    )
    priority = fields.Integer(
        help="Added to the family's rank when signatures of several codes match the same error "
        "(ssot/errors/error_codes.md, Precedence); 0 = none.",
    )
    description = fields.Text(required=True)
    retryable = fields.Boolean(tracking=True)
    http_status = fields.Integer(string="HTTP status", help="0 = none")
    max_attempts = fields.Integer(help="0 = the retry policy's default")
    lifecycle = fields.Selection(
        [("active", "Active"), ("deprecated", "Deprecated")], required=True, default="active", tracking=True
    )
    aliases = fields.Char(help="Comma-separated legacy flat codes that resolve to this code")
    runbook_path = fields.Char(string="Runbook", help="Repository-relative path of the runbook markdown")
    runbook_markdown = fields.Text(
        string="Runbook (Markdown)",
        help="Edited here or read from runbook_path by the registry sync (which replaces it with the file's text).",
    )
    runbook_html = fields.Html(compute="_compute_runbook_html", store=True, sanitize=True, readonly=True)
    signature_ids = fields.One2many("ipai.failure.mode.signature", "failure_mode_id", string="Signatures", copy=True)
    example_ids = fields.One2many(
        "ipai.failure.mode.example",
        "failure_mode_id",
        string="Examples",
        copy=True,
        help="Real texts this code is for; every one must classify to this code.",
    )
    owner = fields.Char()
    ci_behavior = fields.Selection(CI_BEHAVIORS, string="CI behaviour")
    replaced_by_id = fields.Many2one("ipai.failure.mode", string="Replaced by", ondelete="set null")
    fallback = fields.Boolean(help="The code of errors that match no signature")
    origin = fields.Selection(
        [("registry", "Registry"), ("odoo", "Created in Odoo")],
        default="odoo",
        required=True,
        help="Codes created in Odoo are kept active by the sync until they reach the registry file.",
    )
    company_id = fields.Many2one("res.company", help="Empty: shared by every company")
    color = fields.Integer(compute="_compute_color")
    error_ids = fields.One2many("ipai.agent.error", "failure_mode_id", string="Errors")
    resolution_ids = fields.One2many("ipai.resolution", "failure_mode_id", string="Resolutions")
    error_count = fields.Integer(compute="_compute_error_stats", string="Errors (groups)")
    occurrence_count = fields.Integer(compute="_compute_error_stats", string="Occurrences")
    open_error_count = fields.Integer(compute="_compute_error_stats", string="Open errors")
    last_seen = fields.Datetime(compute="_compute_error_stats")
    resolution_count = fields.Integer(compute="_compute_resolution_count")

    _code_uniq = models.Constraint("UNIQUE(code)", "A failure code must be unique.")

    # ------------------------------------------------------------------ computes

    @api.depends("runbook_markdown", "description", "name", "family", "severity", "retryable", "max_attempts", "owner")
    def _compute_runbook_html(self):
        # opens with the generated "For business users" block (runbook_summary.py)
        for mode in self:
            body = ops_runbooks.render_html(mode.runbook_markdown) if mode.runbook_markdown else ""
            mode.runbook_html = html_sanitize(business_summary_html(mode) + Markup(body))

    @api.depends("severity")
    def _compute_color(self):
        for mode in self:
            mode.color = SEVERITY_COLOR.get(mode.severity, 0)

    def _compute_error_stats(self):
        stats = {}
        codes = [c for c in self.mapped("code") if c]
        Error = self.env["ipai.agent.error"]
        if codes and Error.has_access("read"):
            for code, count, occurrences, last_seen in Error._read_group(
                [("code", "in", codes)], ["code"], ["__count", "count:sum", "last_seen:max"]
            ):
                stats[code] = [count, occurrences, last_seen, 0]
            for code, count in Error._read_group(
                [("code", "in", codes), ("status", "in", ("open", "regressed"))], ["code"], ["__count"]
            ):
                stats.setdefault(code, [0, 0, False, 0])[3] = count
        for mode in self:
            count, occurrences, last_seen, open_count = stats.get(mode.code, (0, 0, False, 0))
            mode.error_count = count
            mode.occurrence_count = occurrences
            mode.last_seen = last_seen
            mode.open_error_count = open_count

    def _compute_resolution_count(self):
        counts = dict(
            self.env["ipai.resolution"]._read_group(
                [("failure_mode_id", "in", self.ids)], ["failure_mode_id"], ["__count"]
            )
        )
        for mode in self:
            mode.resolution_count = counts.get(mode, 0)

    # ------------------------------------------------------------------ constraints

    @api.constrains("code", "category", "runbook_path", "http_status", "max_attempts", "family", "fallback")
    def _check_registry_contract(self):
        for mode in self:
            if not CODE_RE.match(mode.code or ""):
                raise ValidationError(
                    self.env._(
                        "Failure code %(code)s must look like CATEGORY.NAME (upper case, dot-separated).",
                        code=mode.code,
                    )
                )
            if mode.category != mode.code.split(".")[0]:
                raise ValidationError(
                    self.env._(
                        "The category of %(code)s must be %(category)s (the code's first segment).",
                        code=mode.code,
                        category=mode.code.split(".")[0],
                    )
                )
            if mode.runbook_path and not RUNBOOK_RE.match(mode.runbook_path):
                raise ValidationError(self.env._("The runbook path must look like docs/runbooks/failures/<CODE>.md."))
            if mode.http_status and not 400 <= mode.http_status <= 599:
                raise ValidationError(self.env._("The HTTP status must be between 400 and 599 (or 0 for none)."))
            if mode.max_attempts and not 1 <= mode.max_attempts <= 100:
                raise ValidationError(self.env._("Max attempts must be between 1 and 100 (or 0 for the default)."))
            if mode.fallback != (mode.family == FALLBACK_FAMILY):
                raise ValidationError(
                    self.env._(
                        "The family of %(code)s must be Unknown if and only if it is the fallback code.",
                        code=mode.code,
                    )
                )

    # ------------------------------------------------------------------ registry <-> records

    @api.model
    def _vals_from_mode(self, mode, sequence, root):
        markdown = False
        if mode.runbook and root is not None:
            path = root / mode.runbook
            if path.is_file():
                markdown = path.read_text(encoding="utf-8")
        return {
            "code": mode.code,
            "name": mode.title,
            "category": mode.category,
            "severity": mode.severity,
            "family": mode.family,
            "priority": mode.priority or 0,
            "description": mode.description,
            "runbook_path": mode.runbook or False,
            "runbook_markdown": markdown,
            "retryable": bool(mode.retryable),
            "http_status": mode.http_status or 0,
            "lifecycle": mode.lifecycle,
            "aliases": ",".join(mode.aliases) or False,
            "ci_behavior": mode.ci_behavior or False,
            "max_attempts": mode.max_attempts or 0,
            "owner": mode.owner or False,
            "fallback": bool(mode.fallback),
            "sequence": sequence,
            "origin": "registry",
        }

    @staticmethod
    def _signature_tuples_from_mode(mode):
        """``(on, pattern, flags, priority)`` per signature: flags in the registry's order,
        priority ``None`` when the signature uses its mode's."""
        return [(sig.on, sig.pattern, ",".join(sig.flags), sig.priority) for sig in mode.signatures]

    def _signature_tuples(self):
        self.ensure_one()
        return [(sig.on, sig.pattern, ",".join(sig.flag_list()), sig.priority_value()) for sig in self.signature_ids]

    def _example_texts(self):
        self.ensure_one()
        return list(self.example_ids.mapped("text"))

    def _changed_fields(self, vals):
        self.ensure_one()
        changed = []
        for name in _SYNCED_FIELDS:
            current = self[name]
            wanted = vals[name]
            if self._fields[name].type in ("char", "text", "selection"):
                current, wanted = current or False, wanted or False
            if current != wanted:
                changed.append(name)
        return changed

    @api.private
    @api.model
    def sync_from_registry(self, registry=None, *, post=True):
        """Create/update failure modes from the registry; deprecate removed codes (never delete).

        Idempotent: a second run with the same registry writes nothing.
        Returns ``{"created": [...], "updated": {code: [fields]}, "deprecated": [...], "unchanged": n}``.
        """
        service = self.env["ipai.ops"]
        registry = registry or service.registry()
        root = service.repo_root()
        modes = self.with_context(active_test=False, tracking_disable=True)
        existing = {rec.code: rec for rec in modes.search([])}
        result = {"created": [], "updated": {}, "deprecated": [], "unchanged": 0}
        touched = {}
        for index, mode in enumerate(registry.modes, start=1):
            vals = self._vals_from_mode(mode, index * 10, root)
            signatures = self._signature_tuples_from_mode(mode)
            sig_commands = [Command.clear()] + [
                Command.create(
                    {
                        "sequence": pos,
                        "on": on,
                        "pattern": pattern,
                        "flags": flags or False,
                        "has_priority": priority is not None,
                        "priority": priority or 0,
                    }
                )
                for pos, (on, pattern, flags, priority) in enumerate(signatures, start=1)
            ]
            examples = list(mode.examples)
            example_commands = [Command.clear()] + [
                Command.create({"sequence": pos, "text": text}) for pos, text in enumerate(examples, start=1)
            ]
            rec = existing.get(mode.code)
            if rec is None:
                rec = modes.create({**vals, "signature_ids": sig_commands[1:], "example_ids": example_commands[1:]})
                result["created"].append(mode.code)
                if post:
                    rec.message_post(body=self.env._("Created by the registry sync from %(path)s.", path=registry.path))
            else:
                changed = rec._changed_fields(vals)
                if rec._signature_tuples() != signatures:
                    changed.append("signatures")
                if rec._example_texts() != examples:
                    changed.append("examples")
                if changed:
                    write = {name: vals[name] for name in changed if name in vals}
                    if "signatures" in changed:
                        write["signature_ids"] = sig_commands
                    if "examples" in changed:
                        write["example_ids"] = example_commands
                    rec.write(write)
                    result["updated"][mode.code] = changed
                    if post:
                        rec.message_post(
                            body=self.env._("Registry sync updated: %(fields)s.", fields=", ".join(sorted(changed)))
                        )
                else:
                    result["unchanged"] += 1
            touched[mode.code] = rec
        for mode in registry.modes:
            rec = touched[mode.code]
            target = touched.get(mode.replaced_by) if mode.replaced_by else modes.browse()
            if rec.replaced_by_id != target:
                rec.replaced_by_id = target
                result["updated"].setdefault(mode.code, []).append("replaced_by")
        for code, rec in existing.items():
            if code in touched or rec.lifecycle == "deprecated" or rec.origin != "registry":
                continue
            rec.lifecycle = "deprecated"
            result["deprecated"].append(code)
            if post:
                rec.message_post(
                    body=self.env._(
                        "Deprecated by the registry sync: %(code)s is no longer in %(path)s.",
                        code=code,
                        path=registry.path,
                    )
                )
        _logger.info(
            "registry sync: %s created, %s updated, %s deprecated, %s unchanged",
            len(result["created"]),
            len(result["updated"]),
            len(result["deprecated"]),
            result["unchanged"],
        )
        return result

    def _to_failure_mode(self):
        """This record as an :class:`ipai_ops.registry.FailureMode` (so key order matches ``as_dict``)."""
        self.ensure_one()
        signatures = []
        for sig in self.signature_ids:
            flags = tuple(sig.flag_list())
            signatures.append(
                ops_registry.Signature(
                    on=sig.on,
                    pattern=sig.pattern,
                    regex=ops_registry.compile_pattern(sig.pattern, flags),
                    flags=flags,
                    priority=sig.priority_value(),
                )
            )
        return ops_registry.FailureMode(
            code=self.code,
            title=self.name,
            category=self.category,
            severity=self.severity,
            description=self.description or "",
            runbook=self.runbook_path or f"docs/runbooks/failures/{self.code}.md",
            retryable=bool(self.retryable),
            http_status=self.http_status or None,
            signatures=tuple(signatures),
            lifecycle=self.lifecycle,
            aliases=tuple(a.strip() for a in (self.aliases or "").split(",") if a.strip()),
            ci_behavior=self.ci_behavior or None,
            max_attempts=self.max_attempts or None,
            owner=self.owner or None,
            fallback=bool(self.fallback),
            replaced_by=self.replaced_by_id.code or None,
            family=self.family or FALLBACK_FAMILY,
            priority=self.priority or 0,
            examples=tuple(self._example_texts()),
        )

    @api.private
    @api.model
    def export_registry_yaml(self, header=None):
        """Every failure mode (all companies, registry order) as registry YAML text."""
        # every mode, by design: the export is the whole registry (a few hundred rows at most)
        modes = self.sudo().with_context(active_test=False).search([], order="sequence, code")  # pylint: disable=no-search-all
        registry = ops_registry.Registry(tuple(rec._to_failure_mode() for rec in modes))
        body = yaml.safe_dump(registry.to_yaml_document(), sort_keys=False, allow_unicode=True, width=100)
        return (YAML_HEADER if header is None else header) + body

    @api.model
    def _registry_file_header(self):
        """The leading comment block of the registry file (kept on write-back), else a default."""
        path = self.env["ipai.ops"].registry_path()
        try:
            lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
        except OSError:
            return YAML_HEADER
        header = []
        for line in lines:
            if line.startswith("#") or not line.strip():
                header.append(line)
            else:
                break
        return "".join(header) or YAML_HEADER

    @api.private
    @api.model
    def check_exported_yaml(self, text=None):
        """Problems ``ipai_ops.registry.parse_registry`` finds in the export (empty list = valid)."""
        __, problems = ops_registry.parse_registry(text or self.export_registry_yaml(), source="odoo-export")
        return problems

    @api.private
    @api.model
    def checked_registry_yaml(self, header=None):
        """The registry export, or a UserError listing what the registry check finds in it."""
        text = self.export_registry_yaml(header=header)
        problems = self.check_exported_yaml(text)
        if problems:
            raise UserError(
                self.env._(
                    "The registry would not pass the check:\n%(problems)s",
                    problems="\n".join(p.format() for p in problems[:20]),
                )
            )
        return text

    @api.private
    @api.model
    def write_registry_back(self, text, runbooks=None):
        """Write the registry YAML ``text`` (and ``runbooks``: {repository-relative path: text})
        when write-back is enabled and the files are writable; the registry path written, or
        None (then the caller attaches the files for a person to commit)."""
        params = self.env["ir.config_parameter"].sudo()
        if params.get_param("ipai_reliability.registry_writeback", "False").lower() not in ("1", "true", "yes"):
            return None
        ops = self.env["ipai.ops"]
        path = ops.registry_path()
        if not (path.is_file() and os.access(path, os.W_OK)):
            _logger.warning("registry write-back enabled but %s is not writable", path)
            return None
        root = ops.repo_root().resolve()
        targets = []
        for relative, body in (runbooks or {}).items():
            target = (root / relative).resolve()
            if root not in target.parents or not RUNBOOK_RE.match(relative):
                raise UserError(self.env._("Refusing to write %(path)s: not a runbook path.", path=relative))
            targets.append((target, body))
        # All or nothing: a registry written without the runbook that quotes its signatures
        # would fail the registry check; then the caller attaches both for a person instead.
        if unwritable := [t for t, _ in targets if not os.access(t if t.exists() else t.parent, os.W_OK)]:
            _logger.warning("registry write-back enabled but %s is not writable", unwritable[0])
            return None
        for target, body in targets:
            target.write_text(body, encoding="utf-8")
        path.write_text(text, encoding="utf-8")
        return str(path)

    @api.private
    def runbook_with_signature(self, on, pattern):
        """The code's runbook file text with ``- `on: ON` / `PATTERN``` added to its Signatures
        section (the registry check asks every runbook to quote its code's signatures), or None
        when the file is not there."""
        self.ensure_one()
        if not self.runbook_path:
            return None
        try:
            text = (self.env["ipai.ops"].repo_root() / self.runbook_path).read_text(encoding="utf-8")
        except OSError:
            return None
        entry = f"- `on: {on}` / `{pattern}`"
        if f"`{pattern}`" in text:
            return text
        head = text.find("## Signatures")
        if head < 0:
            return text.rstrip("\n") + f"\n\n## Signatures\n\n{entry}\n"
        end = text.find("\n## ", head + 5)
        end = len(text) if end < 0 else end
        return text[:head] + text[head:end].rstrip("\n") + "\n" + entry + "\n\n" + text[end:].lstrip("\n")

    # ------------------------------------------------------------------ actions

    def _check_manager(self):
        if not self.env.su and not self.env.user.has_group(MANAGER_GROUP):
            raise AccessError(self.env._("Only Reliability managers may do this."))

    @api.model
    def action_sync_registry(self):
        self._check_manager()
        result = self.sudo().sync_from_registry()
        message = self.env._(
            "%(created)s created, %(updated)s updated, %(deprecated)s deprecated, %(unchanged)s unchanged.",
            created=len(result["created"]),
            updated=len(result["updated"]),
            deprecated=len(result["deprecated"]),
            unchanged=result["unchanged"],
        )
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Registry synchronised"),
                "message": message,
                "type": "success",
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    @api.model
    def _cron_sync_registry(self):
        self.env["ipai.ops"].ensure_schema()
        self.sync_from_registry()

    @api.model
    def action_export_yaml(self):
        """Download the registry YAML built from Odoo's records (after checking it)."""
        self._check_manager()
        text = self.checked_registry_yaml()
        attachment = self.env["ir.attachment"].create(
            {
                "name": "failure_modes.yaml",
                "datas": base64.b64encode(text.encode()),
                "mimetype": "application/x-yaml",
                "res_model": self._name,
            }
        )
        return {"type": "ir.actions.act_url", "url": f"/web/content/{attachment.id}?download=true", "target": "self"}

    def action_write_runbook(self):
        """Put the runbook edited in Odoo in the repository: written to its file (with the
        registry, checked) when registry write-back is on, else attached for a person to commit."""
        self.ensure_one()
        self._check_manager()
        markdown = (self.runbook_markdown or "").strip()
        if not markdown or not self.runbook_path:
            raise UserError(self.env._("%(code)s has no runbook text or runbook path to write.", code=self.code))
        missing = [
            s for s in ops_runbooks.REQUIRED_SECTIONS if not re.search(rf"^## {re.escape(s)}\s*$", markdown, re.M)
        ]
        if missing:
            raise UserError(
                self.env._(
                    "The runbook lacks the sections ipai-ops ssot check asks for: %(sections)s.",
                    sections=", ".join(missing),
                )
            )
        text = self.checked_registry_yaml(header=self._registry_file_header())
        body = markdown + "\n"
        if self.write_registry_back(text, {self.runbook_path: body}):
            self.message_post(body=self.env._("Runbook written to %(path)s.", path=self.runbook_path))
            return True
        attachment = self.env["ir.attachment"].create(
            {
                "name": self.runbook_path.rsplit("/", 1)[-1],
                "datas": base64.b64encode(body.encode()),
                "mimetype": "text/markdown",
                "res_model": self._name,
                "res_id": self.id,
            }
        )
        self.message_post(
            body=self.env._(
                "Registry write-back is off (or %(registry)s is not writable): commit the attached runbook "
                "to %(path)s.",
                registry=self.env["ipai.ops"].registry_path(),
                path=self.runbook_path,
            ),
            attachment_ids=attachment.ids,
        )
        return True

    def action_suggest_signature(self):
        """Suggest a signature from this code's taught examples (a person accepts it)."""
        self.ensure_one()
        self._check_manager()
        Suggest = self.env["ipai.failure.mode.suggest"]
        wizard = Suggest.create(Suggest.suggestion_for(self))
        return {
            "type": "ir.actions.act_window",
            "res_model": Suggest._name,
            "res_id": wizard.id,
            "view_mode": "form",
            "target": "new",
            "name": self.env._("Suggest signature"),
        }

    def action_view_errors(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("ipai_reliability.ipai_agent_error_action")
        action["domain"] = [("code", "=", self.code)]
        action["context"] = {}
        return action

    def action_view_resolutions(self):
        self.ensure_one()
        action = self.env["ir.actions.act_window"]._for_xml_id("ipai_reliability.ipai_resolution_action")
        action["domain"] = [("failure_mode_id", "=", self.id)]
        action["context"] = {"default_failure_mode_id": self.id}
        return action
