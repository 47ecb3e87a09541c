import logging
import os
import secrets
from datetime import date

from odoo import api, fields, models
from odoo.tools import config as odoo_config

from ..services import signing

_logger = logging.getLogger(__name__)

PEPPER_OPTION = "ipai_pulser_pepper"
PEPPER_ENV = "IPAI_PULSER_PEPPER"


def _new_key_id(_records=None):
    return "pk_" + secrets.token_hex(8)


class IpaiPulserClient(models.Model):
    """An API client. Its signing key is derived, never stored (see services/signing.py)."""

    _name = "ipai.pulser.client"
    _description = "Pulser API Client"
    _order = "name, id"

    name = fields.Char(required=True)
    active = fields.Boolean(default=True)
    key_id = fields.Char(required=True, readonly=True, copy=False, default=_new_key_id, index=True)
    salt = fields.Char(
        required=True,
        readonly=True,
        copy=False,
        default=lambda self: secrets.token_hex(16),
        groups="ipai_reliability.group_ipai_reliability_manager",
    )
    secret_hash = fields.Char(
        string="Key fingerprint",
        readonly=True,
        copy=False,
        help="sha256 of the signing key: lets you check which key a client holds without storing it.",
    )
    last_used_at = fields.Datetime(readonly=True, copy=False)
    signature_scheme = fields.Selection(
        [(signing.SCHEME_V1, "v1 (deprecated)"), (signing.SCHEME_V2, "v2")],
        string="Signature scheme",
        readonly=True,
        copy=False,
        help="The scheme of this client's last signed request: v1 stops being accepted after "
        f"the date of the system parameter {signing.V1_UNTIL_PARAM} (default {signing.V1_UNTIL_DEFAULT}).",
    )
    intent_ids = fields.One2many("ipai.pulser.intent", "client_id", readonly=True)
    intent_count = fields.Integer(compute="_compute_intent_count")
    note = fields.Text()

    _key_id_uniq = models.Constraint("UNIQUE(key_id)", "The key id must be unique.")

    def _compute_intent_count(self):
        counts = dict(
            self.env["ipai.pulser.intent"]._read_group([("client_id", "in", self.ids)], ["client_id"], ["__count"])
        )
        for rec in self:
            rec.intent_count = counts.get(rec, 0)

    @api.model
    def _pepper(self):
        pepper = odoo_config.get(PEPPER_OPTION) or os.environ.get(PEPPER_ENV)
        if pepper:
            return pepper
        return self.env["ir.config_parameter"].sudo().get_param("database.secret") or ""

    def _signing_key(self):
        self.ensure_one()
        return signing.derive_signing_key(self._pepper(), self.key_id, self.sudo().salt)

    @api.model_create_multi
    def create(self, vals_list):
        records = super().create(vals_list)
        for rec in records.sudo():
            rec.secret_hash = signing.secret_hash(rec._signing_key())
        return records

    @api.model
    def _create_with_key(self, name):
        """Create a client and return ``(client, signing_key)``; the key is not stored."""
        client = self.create({"name": name})
        return client, client._signing_key()

    def _rotate(self):
        """A new salt: the old key stops working at once. Returns the new signing key."""
        self.ensure_one()
        self.sudo().write({"salt": secrets.token_hex(16)})
        key = self._signing_key()
        self.secret_hash = signing.secret_hash(key)
        return key

    def _show_key_action(self, key):
        # A sticky notification, not a record: the key is never written anywhere.
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Signing key for %(key_id)s (shown once)", key_id=self.key_id),
                "message": key,
                "sticky": True,
                "type": "warning",
            },
        }

    def action_show_new_key(self):
        """Rotate and show the key once (also used right after creating a client)."""
        self.ensure_one()
        return self._show_key_action(self._rotate())

    @api.model
    def _signature_v1_until(self):
        """The last day (UTC) v1 signatures are accepted, or None when the setting is not a
        date (then v1 is refused: a mistyped setting must not extend the window)."""
        raw = self.env["ir.config_parameter"].sudo().get_param(signing.V1_UNTIL_PARAM) or signing.V1_UNTIL_DEFAULT
        try:
            return date.fromisoformat(raw.strip())
        except ValueError:
            _logger.warning("ipai_pulser: %s=%r is not a date (YYYY-MM-DD): v1 is refused", signing.V1_UNTIL_PARAM, raw)
            return None

    @api.model
    def _find_by_key_id(self, key_id):
        return self.sudo().search([("key_id", "=", key_id), ("active", "=", True)], limit=1)
