"""Suggest signature: from a code's taught examples, a linear-time pattern a person accepts."""

import base64

from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.fields import Command
from odoo.tools import SQL

try:
    from ipai_ops.classify.suggest import SuggestError, suggest_signature
    from ipai_ops.registry import compile_pattern
except ImportError:  # pragma: no cover
    suggest_signature = compile_pattern = None
    SuggestError = ValueError

#: Other labelled texts the suggestion is checked against: messages of errors with another
#: (non-fallback) code, and the taught examples of other codes (the newest ones).
MAX_OTHERS = 5000


class IpaiFailureModeSuggest(models.TransientModel):
    _name = "ipai.failure.mode.suggest"
    _description = "Suggest a signature from taught examples"

    failure_mode_id = fields.Many2one("ipai.failure.mode", required=True, readonly=True, ondelete="cascade")
    code = fields.Char(related="failure_mode_id.code")
    pattern = fields.Char(
        required=True, help="An RE2 (linear-time) regular expression matched against each error's message."
    )
    examples = fields.Integer(string="Taught examples matched", readonly=True)
    others_checked = fields.Integer(string="Other labelled texts checked (none matched)", readonly=True)

    @api.private
    @api.model
    def _labelled(self, mode):
        """(taught texts of ``mode``, other labelled texts)."""
        cr = self.env.cr
        cr.execute(SQL("SELECT text FROM ops.classification_examples WHERE code = %s ORDER BY id", mode.code))
        mine = [row[0] for row in cr.fetchall()]
        cr.execute(
            SQL(
                "(SELECT text FROM ops.classification_examples WHERE code <> %s ORDER BY id DESC LIMIT %s)"
                " UNION ALL (SELECT message FROM ops.agent_errors WHERE code <> %s AND code NOT IN %s"
                " AND message IS NOT NULL ORDER BY last_seen DESC LIMIT %s)",
                mode.code,
                MAX_OTHERS,
                mode.code,
                tuple(self.env["ipai.agent.error"]._fallback_codes()),
                MAX_OTHERS,
            )
        )
        others = [row[0] for row in cr.fetchall()]
        examples = self.env["ipai.failure.mode.example"].search([("failure_mode_id", "!=", mode.id)])
        others += [text for text in examples.mapped("text") if text]
        return mine, others

    @api.private
    @api.model
    def suggestion_for(self, mode):
        """Create values suggesting a signature for ``mode``; UserError when none can be."""
        if not self.env["ipai.ops"].ops_is_local():
            raise UserError(self.env._("Taught examples live in the ops schema, which is not in Odoo's database."))
        mine, others = self._labelled(mode)
        if not mine:
            raise UserError(
                self.env._(
                    "%(code)s has no taught example yet: use Set failure code on its errors first.", code=mode.code
                )
            )
        try:
            found = suggest_signature(mine, others)
        except (SuggestError, ValueError) as exc:
            raise UserError(
                self.env._("No signature to suggest for %(code)s: %(why)s", code=mode.code, why=exc)
            ) from None
        return {
            "failure_mode_id": mode.id,
            "pattern": found.pattern,
            "examples": found.examples,
            "others_checked": found.others_checked,
        }

    def action_accept(self):
        """Add the signature (after checking it again, as a person may have edited it), export
        and check the registry, write it back with the runbook quoting it, or attach both."""
        self.ensure_one()
        Mode = self.env["ipai.failure.mode"]
        Mode._check_manager()
        mode = self.failure_mode_id
        try:
            regex = compile_pattern(self.pattern)
        except ValueError as exc:
            raise UserError(self.env._("The signature does not compile: %(error)s", error=exc)) from None
        mine, others = self._labelled(mode)
        if missed := [t for t in mine if not regex.search(t)]:
            raise UserError(self.env._("The signature misses %(n)s taught example(s).", n=len(missed)))
        if matched := [t for t in others if t and regex.search(t)]:
            raise UserError(
                self.env._(
                    "The signature also matches %(n)s other labelled text(s), e.g. %(text)s",
                    n=len(matched),
                    text=matched[0][:160],
                )
            )
        mode.write({"signature_ids": [Command.create({"on": "message", "pattern": self.pattern})]})
        text = Mode.checked_registry_yaml(header=Mode._registry_file_header())
        runbook = mode.runbook_with_signature("message", self.pattern)
        written = Mode.write_registry_back(text, {mode.runbook_path: runbook} if runbook else None)
        if written:
            mode.message_post(
                body=self.env._(
                    "Signature %(pattern)s added; written back to %(path)s.", pattern=self.pattern, path=written
                )
            )
        else:
            files = [("failure_modes.yaml", text, "application/x-yaml")]
            if runbook:
                files.append((mode.runbook_path.rsplit("/", 1)[-1], runbook, "text/markdown"))
            attachments = self.env["ir.attachment"].create(
                [
                    {
                        "name": name,
                        "datas": base64.b64encode(body.encode()),
                        "mimetype": mimetype,
                        "res_model": mode._name,
                        "res_id": mode.id,
                    }
                    for name, body, mimetype in files
                ]
            )
            mode.message_post(
                body=self.env._(
                    "Signature %(pattern)s added. Registry write-back is off: commit the attached files "
                    "(ssot/errors/failure_modes.yaml and the runbook quoting the signature).",
                    pattern=self.pattern,
                ),
                attachment_ids=attachments.ids,
            )
        return {
            "type": "ir.actions.act_window",
            "res_model": mode._name,
            "res_id": mode.id,
            "view_mode": "form",
            "target": "current",
        }
