from odoo import api, fields, models
from odoo.exceptions import ValidationError

try:
    from ipai_ops.taxonomy import SIGNATURE_TIERS
except ImportError:  # pragma: no cover
    SIGNATURE_TIERS = ("type", "message", "text")

FLAG_NAMES = ("IGNORECASE", "MULTILINE")


class IpaiFailureModeSignature(models.Model):
    _name = "ipai.failure.mode.signature"
    _description = "Failure mode signature"
    _order = "failure_mode_id, sequence, id"

    failure_mode_id = fields.Many2one("ipai.failure.mode", required=True, ondelete="cascade", index=True)
    sequence = fields.Integer(default=10)
    on = fields.Selection([(tier, tier) for tier in SIGNATURE_TIERS], required=True, default="message")
    pattern = fields.Char(required=True)
    flags = fields.Char(help="Comma-separated regex flags: IGNORECASE, MULTILINE")

    def _flag_names(self):
        """The names in ``flags``, upper-cased (unknown ones included: the constraint reports them)."""
        return {f.strip().upper() for f in (self.flags or "").split(",") if f.strip()}

    @api.private
    def flag_list(self):
        self.ensure_one()
        flags = self._flag_names()
        return [name for name in FLAG_NAMES if name in flags]

    @api.constrains("pattern", "flags")
    def _check_pattern(self):
        import re

        for sig in self:
            unknown = sig._flag_names() - set(FLAG_NAMES)
            if unknown:
                raise ValidationError(
                    self.env._(
                        "Unknown regex flags %(flags)s (allowed: IGNORECASE, MULTILINE).",
                        flags=", ".join(sorted(unknown)),
                    )
                )
            try:
                re.compile(sig.pattern)
            except re.error as exc:
                raise ValidationError(
                    self.env._(
                        "Signature pattern %(pattern)r does not compile: %(error)s", pattern=sig.pattern, error=exc
                    )
                ) from None
