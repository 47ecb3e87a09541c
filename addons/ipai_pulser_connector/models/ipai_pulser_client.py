import logging
import os
import re
import secrets
from datetime import date

from odoo import api, fields, models
from odoo.addons.ipai_reliability.models.ipai_alert_rule import validate_webhook_url
from odoo.exceptions import AccessError, ValidationError
from odoo.tools import config as odoo_config

from ..services import signing

_logger = logging.getLogger(__name__)

PEPPER_OPTION = "ipai_pulser_pepper"
PEPPER_ENV = "IPAI_PULSER_PEPPER"
#: Requests per minute a new client may make (0: no limit). Clients that existed before
#: scopes and limits keep no limit (migrations/19.0.1.1.0).
DEFAULT_RATE_LIMIT_PER_MINUTE = 600
#: One entry of a scope: ``*`` (every type), an intent type, or a prefix ending in ``.*``.
_SCOPE_ENTRY = re.compile(r"\*|[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*(?:\.\*)?")


def parse_scope(text):
    """The entries of a scope (comma-, space- or newline-separated), or ValueError naming the
    first malformed one. Empty text is an empty scope: no intent type is allowed."""
    entries = [entry for entry in re.split(r"[\s,]+", text or "") if entry]
    for entry in entries:
        if not _SCOPE_ENTRY.fullmatch(entry):
            raise ValueError(entry)
    return entries


def scope_allows(entries, intent_type):
    """True when one of ``entries`` (:func:`parse_scope`) covers ``intent_type``."""
    for entry in entries:
        if entry in ("*", intent_type):
            return True
        if entry.endswith(".*") and intent_type.startswith(entry[:-1]):
            return True
    return False


def _new_key_id(_records=None):
    return "pk_" + secrets.token_hex(8)


class IpaiPulserClient(models.Model):
    """An API client. Its signing key is derived, never stored (see services/signing.py)."""

    _name = "ipai.pulser.client"
    _description = "Pulser API Client"
    _inherit = ["ipai.webhook.secret.mixin"]
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
    # ---- scope and rate limit (checked by the API on every request)
    allowed_intent_types = fields.Text(
        string="Allowed intent types",
        help="The intent types this client may submit, separated by commas or new lines: a type "
        "(odoo.healthcheck), a prefix ending in .* (odoo.*), or * for every type. Empty: none "
        "(the API answers 403 API.SCOPE_DENIED).",
    )
    rate_limit_per_minute = fields.Integer(
        string="Requests per minute",
        default=DEFAULT_RATE_LIMIT_PER_MINUTE,
        help="Signed requests (submit, poll, cancel) this client may make per clock minute, counted "
        "in the database for every Odoo worker together; beyond it the API answers 429 with "
        "Retry-After. 0: no limit.",
    )
    # ---- completion webhook
    webhook_url = fields.Char(
        string="Completion webhook URL",
        groups="ipai_reliability.group_ipai_reliability_manager",
        copy=False,
        help="When set, every intent of this client that reaches a final state (succeeded, failed, "
        "dead, cancelled) is POSTed there, signed per Standard Webhooks, retried with backoff.",
    )
    # webhook_secret, webhook_secret_set: write-only (ipai.webhook.secret.mixin)
    webhook_delivery_ids = fields.One2many("ipai.pulser.webhook.delivery", "client_id", readonly=True)
    webhook_delivery_count = fields.Integer(compute="_compute_webhook_delivery_count")

    _key_id_uniq = models.Constraint("UNIQUE(key_id)", "The key id must be unique.")
    _rate_limit_positive = models.Constraint(
        "CHECK(rate_limit_per_minute >= 0)", "The rate limit cannot be negative (0: no limit)."
    )

    def _compute_intent_count(self):
        counts = dict(
            self.env["ipai.pulser.intent"]._read_group([("client_id", "in", self.ids)], ["client_id"], ["__count"])
        )
        for rec in self:
            rec.intent_count = counts.get(rec, 0)

    def _compute_webhook_delivery_count(self):
        counts = dict(
            self.env["ipai.pulser.webhook.delivery"]._read_group(
                [("client_id", "in", self.ids)], ["client_id"], ["__count"]
            )
        )
        for rec in self:
            rec.webhook_delivery_count = counts.get(rec, 0)

    @api.constrains("allowed_intent_types")
    def _check_allowed_intent_types(self):
        for rec in self:
            try:
                parse_scope(rec.allowed_intent_types)
            except ValueError as exc:
                raise ValidationError(
                    self.env._("%(entry)r is not an intent type, a prefix ending in .* or *.", entry=exc.args[0])
                ) from None

    @api.constrains("webhook_url")
    def _check_webhook_url(self):
        for rec in self.sudo():
            if rec.webhook_url:
                validate_webhook_url(rec.webhook_url, self.env)

    def _scope(self):
        self.ensure_one()
        return parse_scope(self.allowed_intent_types)

    def _allows_intent_type(self, intent_type):
        return scope_allows(self._scope(), intent_type)

    def _check_rate_limit(self):
        """Charge one request to this client's budget of the current minute (one count for
        every Odoo worker, ``ipai.pulser.client.rate``); raises API.RATE_LIMITED when spent."""
        self.ensure_one()
        if self.rate_limit_per_minute > 0:
            self.env["ipai.pulser.client.rate"]._take(self, self.rate_limit_per_minute)

    def action_generate_webhook_secret(self):
        """A fresh ``whsec_`` secret, stored and shown once (like the signing key)."""
        self.ensure_one()
        if not self.env.user.has_group("ipai_reliability.group_ipai_reliability_manager"):
            raise AccessError(self.env._("Only Reliability managers change webhook secrets."))
        secret = self.new_webhook_secret()
        self._store_webhook_secret(secret)
        return {
            "type": "ir.actions.client",
            "tag": "display_notification",
            "params": {
                "title": self.env._("Webhook signing secret for %(key_id)s (shown once)", key_id=self.key_id),
                "message": secret,
                "sticky": True,
                "type": "warning",
                "next": {"type": "ir.actions.client", "tag": "soft_reload"},
            },
        }

    def action_view_webhook_deliveries(self):
        self.ensure_one()
        return {
            "type": "ir.actions.act_window",
            "name": self.env._("Webhook deliveries of %s", self.name),
            "res_model": "ipai.pulser.webhook.delivery",
            "view_mode": "list,form",
            "domain": [("client_id", "=", self.id)],
        }

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
    def _create_with_key(self, name, **vals):
        """Create a client (with ``vals``) and return ``(client, signing_key)``; the key is not stored."""
        client = self.create({"name": name, **vals})
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
