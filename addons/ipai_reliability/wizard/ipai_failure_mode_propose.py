"""Create a failure mode from an unclassified error: propose a code and a signature."""

import base64
import json
import re

from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.fields import Command

from ..models.ipai_failure_mode import FALLBACK_FAMILY, FAMILY_SELECTION, SEVERITIES
from ..models.ipai_failure_mode_signature import SIGNATURE_SUBJECTS, SUBJECT_SELECTION

try:
    from ipai_ops.fingerprint import normalize_message
    from ipai_ops.registry import SIGNATURE_SUBJECTS, compile_pattern
    from ipai_ops.runbooks import REQUIRED_SECTIONS
except ImportError:  # pragma: no cover
    normalize_message = compile_pattern = None
    REQUIRED_SECTIONS = SIGNATURE_SUBJECTS = ()


_PLACEHOLDER_RE = re.compile(r"'<str>'|\"<str>\"|<(?:pem|url|email|uuid|ts|date|time|hex|ip|path|n)>")
_STOP_WORDS = {"a", "an", "the", "of", "to", "in", "on", "for", "is", "was", "be", "by", "at", "and", "or", "with"}
# Bounded, lazy: the registry asks for linear patterns (no unbounded .* between literals).
_WILDCARD = ".{1,200}?"


def propose_signature(message):
    """A regex matching every message with the same normalised shape as ``message``."""
    normalized = normalize_message(message)
    parts = []
    position = 0
    for match in _PLACEHOLDER_RE.finditer(normalized):
        parts.append(re.escape(normalized[position : match.start()]))
        parts.append(_WILDCARD)
        position = match.end()
    parts.append(re.escape(normalized[position:]))
    pattern = "".join(parts)
    pattern = re.sub(r"(\\ |\s)+", r"\\s+", pattern)
    while pattern.startswith(_WILDCARD):
        pattern = pattern[len(_WILDCARD) :]
    while pattern.endswith(_WILDCARD):
        pattern = pattern[: -len(_WILDCARD)]
    return pattern[:500]


def _segment(text, fallback):
    seg = re.sub(r"[^A-Z0-9_]+", "_", (text or "").upper()).strip("_")
    if not seg or not seg[0].isalpha():
        seg = fallback
    return seg[:40]


def propose_code(message, *, prefix):
    words = [
        w
        for w in re.findall(r"[A-Za-z][A-Za-z0-9]+", _PLACEHOLDER_RE.sub(" ", normalize_message(message)))
        if w.lower() not in _STOP_WORDS
    ]
    name = _segment("_".join(words[:4]), "UNKNOWN_ERROR")
    return f"{_segment(prefix, 'APP')}.{name}"


def runbook_stub(code, title, signature, on="message"):
    sections = {
        "Signatures": f"- `{on}`: `{signature}`",
        "What the user sees": "TODO: what the error looks like where it surfaces.",
        "Impact and severity": "TODO: who is affected and how badly.",
        "Likely causes": "1. TODO",
        "Diagnosis": "```sh\n# TODO: commands that confirm the cause\n```",
        "Recovery": "1. TODO",
        "Verify": "TODO: how to see that it is fixed (the error group stops growing).",
        "Escalation": "TODO: who to call.",
        "Prevention": "TODO: the test, alert or check that keeps it from coming back.",
    }
    lines = [f"# {code}: {title}", "", "Created in Odoo from an unclassified error; complete every section.", ""]
    for section in REQUIRED_SECTIONS:
        lines += [f"## {section}", "", sections.get(section, "TODO"), ""]
    return "\n".join(lines)


class IpaiFailureModePropose(models.TransientModel):
    _name = "ipai.failure.mode.propose"
    _description = "Create a failure mode from an unclassified error"

    error_id = fields.Many2one("ipai.agent.error", required=True, readonly=True)
    message = fields.Text(related="error_id.message")
    normalized_message = fields.Text(compute="_compute_normalized_message")
    code = fields.Char(required=True)
    name = fields.Char(string="Title", required=True)
    severity = fields.Selection(SEVERITIES, required=True, default="medium")
    family = fields.Selection(
        [item for item in FAMILY_SELECTION if item[0] != FALLBACK_FAMILY],
        required=True,
        default="runtime",
        help="What kind of failure this is; Unknown is the fallback code's alone.",
    )
    priority = fields.Integer(help="Added to the family's rank when several codes match the same error; 0 = none.")
    signature_on = fields.Selection(
        [item for item in SUBJECT_SELECTION if item[0] in SIGNATURE_SUBJECTS], default="message", required=True
    )
    signature_pattern = fields.Char(
        required=True, help="An RE2 (linear-time) regular expression: no look-around, no back-references."
    )
    signature_priority = fields.Integer(
        help="Overrides the failure mode's priority for this signature; 0 = use the failure mode's."
    )
    description = fields.Text(required=True)
    retryable = fields.Boolean()
    runbook_markdown = fields.Text(
        compute="_compute_runbook_markdown",
        store=True,
        readonly=False,
        string="Runbook",
        help="The runbook in Markdown, kept on the failure mode (and written to "
        "docs/runbooks/failures/<CODE>.md when registry write-back is on). Edit it here or later on the failure mode.",
    )
    duplicate_ids = fields.Many2many(
        "ipai.failure.mode",
        compute="_compute_duplicates",
        string="Possible duplicates",
        help="Active failure modes with this code, or whose signatures already match this error's text.",
    )
    create_anyway = fields.Boolean(
        help="Create the failure mode although the ones listed may already cover this error."
    )

    @api.depends("error_id")
    def _compute_normalized_message(self):
        for wiz in self:
            wiz.normalized_message = normalize_message(wiz.error_id.message or wiz.error_id.error_type or "")

    @api.private
    @api.model
    def proposal_for(self, error):
        """Create values proposing a failure mode for ``error`` (code, title, signature)."""
        message = error.message or error.error_type or ""
        normalized = normalize_message(message)
        code = propose_code(message, prefix=error.service or error.source or "APP")
        name = (normalized[:100] or "Unnamed failure").strip()
        signature_on = "message" if error.message else "type"
        signature = propose_signature(message)
        return {
            "error_id": error.id,
            "code": code,
            "name": name,
            "severity": error.severity or "medium",
            "signature_on": signature_on,
            "signature_pattern": signature,
            "description": self.env._(
                "Created from unclassified error %(fp)s (%(count)s occurrences): %(message)s",
                fp=error.fingerprint,
                count=error.count,
                message=normalized[:300],
            ),
        }

    @api.depends("code", "name", "signature_pattern", "signature_on")
    def _compute_runbook_markdown(self):
        # a stub with every required section; changing the code or signature starts it again
        for wiz in self:
            code = (wiz.code or "").strip()
            wiz.runbook_markdown = runbook_stub(code, wiz.name or "", wiz.signature_pattern or "", wiz.signature_on)

    @api.depends("error_id", "code")
    def _compute_duplicates(self):
        Mode = self.env["ipai.failure.mode"].with_context(active_test=False)
        for wiz in self:
            if not wiz.error_id:
                wiz.duplicate_ids = False
                continue
            code = (wiz.code or "").strip()
            same_code = Mode.search([("code", "=", code)]) if code else Mode
            wiz.duplicate_ids = same_code | wiz._modes_matching_error()

    def _modes_matching_error(self):
        """Active, non-fallback failure modes a signature of which matches this error: another
        proposal (or a registry sync) since the error arrived already covers it. Command
        signatures are left out: a command names a step (``make``, ``npm test``), and the
        classifier needs more than it to decide a code."""
        subjects = {
            on: self.with_context(propose_subject_on=on)._subject() for on in SIGNATURE_SUBJECTS if on != "command"
        }
        matching = self.env["ipai.failure.mode"]
        signatures = self.env["ipai.failure.mode.signature"].search(
            [("failure_mode_id.lifecycle", "=", "active"), ("failure_mode_id.fallback", "=", False)]
        )
        for signature in signatures:
            if signature.failure_mode_id in matching or not subjects.get(signature.on):
                continue
            try:
                regex = compile_pattern(signature.pattern, signature._flag_names())
            except ValueError:
                continue  # the signature's own constraint reports it
            if regex.search(subjects[signature.on]):
                matching |= signature.failure_mode_id
        return matching

    def _subject(self):
        """What the signature is matched against on this error: its type, message, the text
        the latest envelope kept (message, output tails, evidence lines) or its failed command."""
        error = self.error_id
        try:
            sample = json.loads(error.sample) if error.sample else {}
        except ValueError:
            sample = {}
        evidence = sample.get("evidence") if isinstance(sample, dict) else None
        evidence = evidence if isinstance(evidence, dict) else {}
        classification = evidence.get("classification")
        classification = classification if isinstance(classification, dict) else {}
        on = self.env.context.get("propose_subject_on") or self.signature_on
        if on == "type":
            return error.error_type or ""
        if on == "message":
            return error.message or ""
        if on == "command":
            captures = classification.get("captures")
            command = captures.get("command") if isinstance(captures, dict) else None
            return command if isinstance(command, str) else ""
        texts = [error.message or ""]
        texts += [evidence[key] for key in ("stdout_tail", "stderr_tail") if isinstance(evidence.get(key), str)]
        lines = classification.get("lines")
        if isinstance(lines, list):
            texts += [line["text"] for line in lines if isinstance(line, dict) and isinstance(line.get("text"), str)]
        return "\n".join(texts)

    def _validate(self):
        self.ensure_one()
        code = self.code.strip()
        Mode = self.env["ipai.failure.mode"].with_context(active_test=False)
        if Mode.search_count([("code", "=", code)]):
            raise UserError(self.env._("The failure code %(code)s already exists.", code=code))
        try:
            # The classifier runs RE2 (linear time) on sender text; a pattern it cannot run is refused here.
            regex = compile_pattern(self.signature_pattern)
        except ValueError as exc:
            raise UserError(
                self.env._(
                    "The signature %(pattern)s does not compile: %(error)s.\n"
                    "Signatures run with RE2 in linear time on sender text: look-around ((?=, (?!, (?<=, (?<!) "
                    "and back-references (\\1) are not available; match the text itself instead.",
                    pattern=self.signature_pattern,
                    error=exc,
                )
            ) from None
        subject = self._subject()
        if not subject and self.signature_on == "command":
            raise UserError(self.env._("This error has no failed command to match a command signature against."))
        if not regex.search(subject):
            raise UserError(self.env._("The signature does not match this error's own %(on)s.", on=self.signature_on))

    def action_create(self):
        self.ensure_one()
        Mode = self.env["ipai.failure.mode"]
        Mode._check_manager()
        self._validate()
        code = self.code.strip()
        duplicates = self.duplicate_ids - Mode.search([("code", "=", code)])
        if duplicates and not self.create_anyway:
            raise UserError(
                self.env._(
                    "%(codes)s already match this error: it was probably classified since it arrived. "
                    "Open the error again (Set failure code), or tick Create anyway.",
                    codes=", ".join(duplicates.mapped("code")),
                )
            )
        fallback = Mode.search([("fallback", "=", True)], order="sequence desc", limit=1)
        others = Mode.search([("fallback", "=", False)], order="sequence desc", limit=1)
        sequence = (others.sequence + 1) if others else 10
        if fallback and sequence >= fallback.sequence:
            fallback.sudo().sequence = sequence + 1
        stub = (self.runbook_markdown or "").strip() or runbook_stub(
            code, self.name, self.signature_pattern, self.signature_on
        )
        stub += "\n"
        mode = Mode.create(
            {
                "code": code,
                "name": self.name,
                "category": code.split(".")[0],
                "severity": self.severity,
                "family": self.family,
                "priority": self.priority,
                "description": self.description,
                "retryable": self.retryable,
                "lifecycle": "active",
                "runbook_path": f"docs/runbooks/failures/{code}.md",
                "runbook_markdown": stub,
                "sequence": sequence,
                "origin": "odoo",
                "signature_ids": [
                    Command.create(
                        {
                            "on": self.signature_on,
                            "pattern": self.signature_pattern,
                            "has_priority": bool(self.signature_priority),
                            "priority": self.signature_priority,
                        }
                    )
                ],
            }
        )
        text = Mode.checked_registry_yaml(header=Mode._registry_file_header())
        # the source error takes the new code and becomes its first taught example
        self.error_id._teach(mode)
        written = self._write_back(text, code, stub)
        if written:
            mode.message_post(body=self.env._("Written back to %(path)s.", path=written))
            return self._open(mode)
        attachments = self.env["ir.attachment"].create(
            [
                {
                    "name": "failure_modes.yaml",
                    "datas": base64.b64encode(text.encode()),
                    "mimetype": "application/x-yaml",
                    "res_model": mode._name,
                    "res_id": mode.id,
                },
                {
                    "name": f"{code}.md",
                    "datas": base64.b64encode(stub.encode()),
                    "mimetype": "text/markdown",
                    "res_model": mode._name,
                    "res_id": mode.id,
                },
            ]
        )
        mode.message_post(
            body=self.env._(
                "Registry write-back is off: commit the attached failure_modes.yaml to ssot/errors/ "
                "and the runbook stub to docs/runbooks/failures/."
            ),
            attachment_ids=attachments.ids,
        )
        return self._open(mode)

    def _open(self, mode):
        """Close the dialog and open the new failure mode (its chatter holds the files to commit
        when write-back is off)."""
        return {
            "type": "ir.actions.act_window",
            "res_model": "ipai.failure.mode",
            "res_id": mode.id,
            "view_mode": "form",
            "target": "current",
        }

    @api.private
    def _write_back(self, text, code, stub):
        """Write the registry (and a runbook stub, unless one exists) when write-back is on."""
        runbook = f"docs/runbooks/failures/{code}.md"
        exists = (self.env["ipai.ops"].repo_root() / runbook).exists()
        return self.env["ipai.failure.mode"].write_registry_back(text, {} if exists else {runbook: stub})
