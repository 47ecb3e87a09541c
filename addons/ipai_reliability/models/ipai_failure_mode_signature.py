import re

from odoo import api, fields, models
from odoo.exceptions import ValidationError

try:
    from ipai_ops import registry as ops_registry
    from ipai_ops.registry import SIGNATURE_SUBJECTS
except ImportError:  # pragma: no cover - declared in external_dependencies
    ops_registry = None
    SIGNATURE_SUBJECTS = ("type", "message", "text", "command")

#: Kept for importers of the first version of this module.
SIGNATURE_TIERS = SIGNATURE_SUBJECTS
FLAG_NAMES = ("IGNORECASE", "MULTILINE")
SUBJECT_SELECTION = [
    ("type", "Exception type"),
    ("message", "Message"),
    ("text", "Log / output text"),
    ("command", "Failed command"),
]
# The registry's named-group syntax (registry.CAPTURE_NAMES lists the allowed names).
_GROUP_NAME_RE = re.compile(r"\(\?P<([^>]+)>")


class IpaiFailureModeSignature(models.Model):
    _name = "ipai.failure.mode.signature"
    _description = "Failure mode signature"
    _order = "failure_mode_id, sequence, id"

    failure_mode_id = fields.Many2one("ipai.failure.mode", required=True, ondelete="cascade", index=True)
    sequence = fields.Integer(default=10)
    on = fields.Selection(
        [item for item in SUBJECT_SELECTION if item[0] in SIGNATURE_SUBJECTS],
        required=True,
        default="message",
        help="What the pattern is matched against: the exception type, the message, "
        "any log or output text, or the command that failed.",
    )
    pattern = fields.Char(
        required=True, help="An RE2 (linear-time) regular expression: no look-around, no back-references."
    )
    flags = fields.Char(help="Comma-separated regex flags: IGNORECASE, MULTILINE (kept in the registry's order)")
    has_priority = fields.Boolean(
        string="Own priority", help="This signature overrides its failure mode's priority (registry: priority)."
    )
    priority = fields.Integer(
        help="Used instead of the failure mode's priority when several codes match (only with Own priority)."
    )

    def _flag_names(self):
        """The names in ``flags``, upper-cased and in order (unknown ones included: the constraint reports them)."""
        names = []
        for raw in (self.flags or "").split(","):
            flag = raw.strip().upper()
            if flag and flag not in names:
                names.append(flag)
        return names

    @api.private
    def flag_list(self):
        """Known flag names in the order they were written (the registry keeps that order)."""
        self.ensure_one()
        return [name for name in self._flag_names() if name in FLAG_NAMES]

    @api.private
    def priority_value(self):
        """The registry's ``priority`` of this signature: an int, or ``None`` for the mode's own."""
        self.ensure_one()
        return self.priority if self.has_priority else None

    @api.constrains("pattern", "flags")
    def _check_pattern(self):
        for sig in self:
            unknown = set(sig._flag_names()) - set(FLAG_NAMES)
            if unknown:
                raise ValidationError(
                    self.env._(
                        "Unknown regex flags %(flags)s (allowed: IGNORECASE, MULTILINE).",
                        flags=", ".join(sorted(unknown)),
                    )
                )
            try:
                ops_registry.compile_pattern(sig.pattern, sig.flag_list())
            except ValueError as exc:
                raise ValidationError(
                    self.env._(
                        "Signature pattern %(pattern)r does not compile: %(error)s", pattern=sig.pattern, error=exc
                    )
                ) from None
            groups = {ops_registry.capture_name(g) for g in _GROUP_NAME_RE.findall(sig.pattern)}
            if unknown_groups := sorted(groups - ops_registry.CAPTURE_NAMES):
                raise ValidationError(
                    self.env._(
                        "Signature pattern %(pattern)r names groups that are not captures: %(groups)s "
                        "(use one of %(allowed)s).",
                        pattern=sig.pattern,
                        groups=", ".join(unknown_groups),
                        allowed=", ".join(sorted(ops_registry.CAPTURE_NAMES)),
                    )
                )
