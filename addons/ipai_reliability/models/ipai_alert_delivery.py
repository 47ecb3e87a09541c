"""Alert deliveries: one message of one rule on one channel, sent by a cron, retried with backoff.

A message (one error, or a digest of many) is queued as one delivery per channel of its
rule, all sharing ``message_uid``, which is also the webhook's ``webhook-id`` so a
receiver can drop a retried delivery it already handled. ``payload`` is the snapshot of
the errors taken when the message was queued: retries send the same text.

Webhooks are signed per Standard Webhooks (``standardwebhooks`` library: ``webhook-id``,
``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of id.timestamp.body>``).
A failed attempt is retried after an exponential delay with equal jitter
(:func:`backoff_seconds`), up to the rule's ``max_attempts``; ``last_error`` says why
in words of our own (status code, exception type, redacted receiver text), never the URL,
which can carry a token (Slack's do).
"""

import json
import logging
import uuid
from datetime import UTC, timedelta

import requests
from odoo import api, fields, models
from odoo.exceptions import UserError
from odoo.tools import SQL

_logger = logging.getLogger(__name__)

try:
    from standardwebhooks.webhooks import Webhook
except ImportError:  # pragma: no cover - declared in external_dependencies
    Webhook = None

try:
    from ipai_ops.retry import RetryPolicy
    from ipai_ops.text import redact
except ImportError:  # pragma: no cover
    redact = RetryPolicy = None

CHANNELS = [("email", "Email"), ("activity", "Activity"), ("webhook", "Webhook")]
STATES = [("queued", "Queued"), ("retrying", "Retrying"), ("sent", "Sent"), ("failed", "Failed")]
#: Backoff between attempts, under c = min(1 h, 60 s * 2 ** (attempt - 1)): "equal jitter"
#: (c/2 + uniform(0, c/2), AWS Architecture Blog, 2015) rather than the full jitter of
#: ipai_ops.retry, so a receiver that is down is never asked again within c/2.
BACKOFF = RetryPolicy(base_seconds=60.0, cap_seconds=3600.0, max_attempts=20) if RetryPolicy else None
#: Seconds to connect, and to wait for each read of the answer: a hanging receiver costs a
#: cron run little. One number, not a (connect, read) pair: Odoo's test harness compares it.
WEBHOOK_TIMEOUT = 10
#: Deliveries one cron run attempts, at most, and the seconds it spends before stopping.
#: Errors a message lists (the payload counts the rest).
MAX_LISTED = 50
MAX_ERROR_TEXT = 500
MAX_MESSAGE_TEXT = 300
USER_AGENT = "ipai-reliability-alerts/1"
TRIGGER_EVENT = {
    "new": "ipai.alert.new_error",
    "regression": "ipai.alert.regression",
    "frequency": "ipai.alert.frequency",
    "spike": "ipai.alert.spike",
}


def backoff_seconds(attempt):
    """Seconds before attempt ``attempt + 1`` after failed attempt ``attempt`` (1-based)."""
    return BACKOFF.ceiling(attempt) / 2 + BACKOFF.delay(attempt) / 2


def _clip(text, limit):
    text = (text or "").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


class IpaiAlertDelivery(models.Model):
    _name = "ipai.alert.delivery"
    _inherit = ["ipai.delivery.queue.mixin"]
    _description = "Alert delivery"
    _order = "create_date desc, id desc"
    _rec_name = "subject"
    _delivery_cron_xmlid = "ipai_reliability.ir_cron_ipai_reliability_alert_deliver"

    rule_id = fields.Many2one("ipai.alert.rule", required=True, ondelete="cascade", index=True, readonly=True)
    message_uid = fields.Char(string="Message id", required=True, index=True, readonly=True)
    channel = fields.Selection(CHANNELS, required=True, readonly=True)
    state = fields.Selection(STATES, required=True, default="queued", index=True, readonly=True)
    trigger = fields.Selection(related="rule_id.trigger")
    subject = fields.Char(readonly=True)
    error_id = fields.Many2one("ipai.agent.error", readonly=True, help="The (first) error reported.")
    error_refs = fields.Json(string="Error ids", readonly=True)
    error_count = fields.Integer(string="Errors", readonly=True)
    payload = fields.Json(readonly=True, help="The errors as they were when the message was queued.")
    attempts = fields.Integer(readonly=True, default=0)
    next_attempt_at = fields.Datetime(readonly=True, index=True, default=fields.Datetime.now)
    sent_at = fields.Datetime(readonly=True)
    response_status = fields.Integer(string="HTTP status", readonly=True, aggregator=False)
    last_error = fields.Char(readonly=True)

    _attempts_check = models.Constraint("CHECK (attempts >= 0)", "Attempts cannot be negative.")

    # ------------------------------------------------------------------ queueing

    @api.model
    def _queue_message(self, rule, refs, *, overflow=0):
        """Queue one message about the errors ``refs`` (ops ids) on each channel of ``rule``."""
        errors = self._error_snapshot(refs[:MAX_LISTED])
        if not errors:
            return 0
        total = len(refs) + overflow
        payload = self._payload(rule, errors, total)
        uid = f"msg_{uuid.uuid4().hex}"
        channels = [
            name
            for name, on in (
                ("email", rule.action_email),
                ("activity", rule.action_activity),
                ("webhook", rule.action_webhook),
            )
            if on
        ]
        self.create(
            [
                {
                    "rule_id": rule.id,
                    "message_uid": uid,
                    "channel": channel,
                    "subject": payload["subject"],
                    "error_id": errors[0]["id"],
                    "error_refs": list(refs),
                    "error_count": total,
                    "payload": payload,
                }
                for channel in channels
            ]
        )
        return len(channels)

    @api.model
    def _error_snapshot(self, refs):
        if not refs:
            return []
        self.env.cr.execute(
            SQL(
                """
                SELECT e.id, e.code, e.severity, e.status, e.source, e.service, left(e.message, %s), e.count,
                       e.first_seen, e.last_seen, e.last_service_version
                  FROM ops.agent_errors e WHERE e.id = ANY(%s)
                """,
                MAX_ERROR_TEXT,
                list(refs),
            )
        )
        rows = {row[0]: row for row in self.env.cr.fetchall()}
        base_url = self.env["ir.config_parameter"].sudo().get_param("web.base.url", "").rstrip("/")
        keys = ("id", "code", "severity", "status", "source", "service", "message", "count", "first_seen",
                "last_seen", "release")  # fmt: skip
        errors = []
        for ref in refs:
            if ref not in rows:
                continue  # deleted (merged, retention) since it matched
            item = dict(zip(keys, rows[ref], strict=True))
            item["message"] = redact(_clip(item["message"], MAX_MESSAGE_TEXT))
            for key in ("first_seen", "last_seen"):
                item[key] = item[key].isoformat() if item[key] else None
            item["url"] = f"{base_url}/odoo/ipai.agent.error/{item['id']}"
            errors.append(item)
        return errors

    @api.model
    def _payload(self, rule, errors, total):
        first = errors[0]
        label = dict(rule._fields["trigger"]._description_selection(self.env))[rule.trigger]
        if total == 1:
            subject = self.env._("[%(label)s] %(code)s: %(message)s", label=label, code=first["code"],
                                 message=_clip(first["message"], 120))  # fmt: skip
        else:
            subject = self.env._("[%(label)s] %(rule)s: %(n)s errors", label=label, rule=rule.name, n=total)
        return {
            "subject": subject,
            "rule": {"id": rule.id, "name": rule.name, "trigger": rule.trigger},
            "trigger": rule.trigger,
            "total": total,
            "listed": len(errors),
            "errors": errors,
        }

    @api.private
    def _attempt(self):
        """One attempt of this delivery; records the outcome, schedules a retry or gives up."""
        self.ensure_one()
        send = {"email": self._send_email, "activity": self._send_activity, "webhook": self._send_webhook}
        try:
            # DeliveryFailed is caught INSIDE the savepoint: what the attempt wrote (a mail in
            # state exception, deleted below) stays; anything unexpected rolls it all back.
            with self.env.cr.savepoint():
                try:
                    status, problem = send[self.channel](), None
                except DeliveryFailed as exc:
                    status, problem = exc.status, str(exc)
        except (UserError, ValueError) as exc:
            status, problem = None, redact(_clip(str(exc), 400))
        except Exception as exc:
            _logger.exception("alert delivery %s: unexpected failure", self.id)
            status, problem = (
                None,
                self.env._(
                    "internal error (%(type)s: %(text)s)", type=type(exc).__name__, text=redact(_clip(str(exc), 200))
                ),
            )
        attempts = self.attempts + 1
        values = {"attempts": attempts, "response_status": status or 0}
        if problem is None:
            values.update(state="sent", sent_at=fields.Datetime.now(), last_error=False)
        elif attempts >= self.rule_id.max_attempts:
            values.update(state="failed", last_error=problem)
        else:
            delay = backoff_seconds(attempts)
            values.update(
                state="retrying", last_error=problem, next_attempt_at=fields.Datetime.now() + timedelta(seconds=delay)
            )
        self.write(values)
        if problem is not None:
            _logger.info("alert delivery %s (%s) attempt %s failed: %s", self.id, self.channel, attempts, problem)
        return problem is None

    # -- channels

    def _recipients(self):
        """Partners with an email: the rule's followers and recipients, its teams (members and
        default assignee), its user groups and, if asked, the followers of the listed errors."""
        rule = self.rule_id
        teams = rule.team_ids
        partners = (
            rule.message_partner_ids
            | rule.partner_ids
            | (teams.member_ids | teams.user_id).partner_id
            | rule.group_ids.all_user_ids.partner_id
        )
        listed = [e["id"] for e in (self.payload or {}).get("errors", [])]
        if rule.error_followers and listed:
            followers = (
                self.env["mail.followers"]
                .sudo()
                .search([("res_model", "=", "ipai.agent.error"), ("res_id", "in", listed)])
            )
            partners |= followers.partner_id
        return partners.filtered(lambda p: p.email and p.active)

    def _send_email(self):
        partners = self._recipients()
        if not partners:
            raise DeliveryFailed(self.env._("no recipient with an email address (followers, recipients, teams)"))
        template = self.env.ref("ipai_reliability.ipai_alert_mail_template")
        mail_id = template.send_mail(
            self.id,
            force_send=False,
            email_values={"recipient_ids": [(6, 0, partners.ids)]},
        )
        mail = self.env["mail.mail"].sudo().browse(mail_id)
        mail.send(raise_exception=False)
        mail = mail.exists()
        if mail and mail.state != "sent":
            reason = redact(_clip(mail.failure_reason or mail.failure_type or "not sent", 400))
            mail.unlink()  # our retry sends a new one; the failed mail.mail must not be re-sent by mail's queue
            raise DeliveryFailed(self.env._("email not sent: %s", reason))

    def _send_activity(self):
        rule = self.rule_id
        user = rule.alert_user_id
        if not user or not user.active:
            raise DeliveryFailed(self.env._("the activity's user is not set or archived"))
        payload = self.payload or {}
        lines = "\n".join(
            f"{e['code']} ({e['severity']}, {e['count']}x): {e['message'] or ''}" for e in payload.get("errors", [])
        )
        error_model = self.env["ipai.agent.error"]
        target = rule
        if self.error_count == 1 and self.error_id and hasattr(error_model, "activity_schedule"):
            target = self.error_id  # the error itself once it carries activities
        target.sudo().activity_schedule(
            "mail.mail_activity_data_todo",
            user_id=user.id,
            summary=_clip(self.subject, 200),
            note=lines,
        )

    def _send_webhook(self):
        rule = self.rule_id.sudo()
        url = rule.webhook_url
        if not url:
            raise DeliveryFailed(self.env._("the rule has no webhook URL any more"))
        payload = self.payload or {}
        body = self._webhook_body(rule.webhook_format, payload)
        secret = rule._webhook_secret()
        if not secret and rule.webhook_format == "standard":
            raise DeliveryFailed(self.env._("the rule has no signing secret"))
        return send_webhook(self.env, url, body, message_id=self.message_uid, secret=secret)

    @api.model
    def _webhook_body(self, fmt, payload):
        if fmt == "slack":
            errors = payload.get("errors", [])
            lines = [
                f"• <{e['url']}|{e['code']}> ({e['severity']}, {e['count']}x) {e['message'] or ''}" for e in errors
            ]
            more = payload.get("total", len(errors)) - len(errors)
            if more > 0:
                lines.append(self.env._("… and %s more", more))
            text = payload.get("subject", "")
            body = {
                "text": text,
                "blocks": [
                    {"type": "section", "text": {"type": "mrkdwn", "text": f"*{text}*"}},
                    {"type": "section", "text": {"type": "mrkdwn", "text": _clip("\n".join(lines), 2900)}},
                ],
            }
        else:
            body = {
                "type": TRIGGER_EVENT.get(payload.get("trigger"), "ipai.alert"),
                "timestamp": fields.Datetime.now().isoformat() + "Z",
                "data": payload,
            }
        return json.dumps(body, separators=(",", ":"), sort_keys=True, default=str)


def send_webhook(env, url, body, *, message_id, secret=None, user_agent=USER_AGENT):
    """POST ``body`` (JSON text) to ``url``, signed per Standard Webhooks when ``secret``
    (``whsec_...``) is given, ``message_id`` being the ``webhook-id`` a receiver deduplicates
    on. Returns the 2xx status; raises :class:`DeliveryFailed` (text safe to store: never
    the URL) otherwise. Also used by the Pulser connector's completion webhooks."""
    now = fields.Datetime.now()
    headers = {"Content-Type": "application/json", "User-Agent": user_agent}
    if secret:
        headers.update(
            {
                "webhook-id": message_id,
                "webhook-timestamp": str(int(now.replace(tzinfo=UTC).timestamp())),
                "webhook-signature": Webhook(secret).sign(message_id, now, body),
            }
        )
    try:
        response = requests.post(
            url, data=body.encode(), headers=headers, timeout=WEBHOOK_TIMEOUT, allow_redirects=False
        )
    except requests.Timeout:
        raise DeliveryFailed(env._("timed out after %s s", WEBHOOK_TIMEOUT)) from None
    except requests.ConnectionError as exc:
        # requests' text names the URL (with its path, a Slack token): say what happened in our words
        inner = exc.args[0] if exc.args else exc
        reason = type(getattr(inner, "reason", None) or inner).__name__
        raise DeliveryFailed(env._("could not connect (%s)", reason)) from None
    except requests.RequestException as exc:
        raise DeliveryFailed(env._("request failed (%s)", type(exc).__name__)) from None
    with response:
        if 200 <= response.status_code < 300:
            return response.status_code
        text = redact(_clip(response.text[:2000], 200)) if response.content else ""
        raise DeliveryFailed(f"HTTP {response.status_code}{': ' + text if text else ''}", status=response.status_code)


class DeliveryFailed(Exception):
    """An attempt that did not deliver; the text is safe to store (no URL, no secret)."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status
