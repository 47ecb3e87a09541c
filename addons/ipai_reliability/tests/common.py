import uuid
from datetime import UTC, datetime, timedelta

from odoo.tests import TransactionCase, new_test_user

UPSERT = "SELECT * FROM ops.upsert_agent_error(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)"


class ReliabilityCase(TransactionCase):
    """Users of each role and helpers that write real ops rows on the test's cursor."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.company = cls.env.company
        cls.rel_user = new_test_user(
            cls.env, login="rel_user", groups="base.group_user,ipai_reliability.group_ipai_reliability_user"
        )
        cls.rel_manager = new_test_user(
            cls.env, login="rel_manager", groups="base.group_user,ipai_reliability.group_ipai_reliability_manager"
        )
        cls.plain_user = new_test_user(cls.env, login="plain_user", groups="base.group_user")
        cls.Error = cls.env["ipai.agent.error"]
        cls.Mode = cls.env["ipai.failure.mode"]

    def upsert(
        self,
        fingerprint=None,
        *,
        code="WEBHOOK.SIGNATURE_INVALID",
        source="odoo",
        service="odoo",
        severity="high",
        message="Signature mismatch for event 42",
        error_type="ValueError",
        occurrence_id=None,
        occurred_at=None,
        service_version=None,
        trace_id=None,
    ):
        """One occurrence through ops.upsert_agent_error on the test cursor (rolled back after the test)."""
        fingerprint = fingerprint or f"fp1:test{uuid.uuid4().hex[:28]}"
        self.env.cr.execute(
            UPSERT,
            (
                source,
                occurrence_id or uuid.uuid4().hex,
                fingerprint,
                code,
                severity,
                message,
                error_type,
                service,
                occurred_at or datetime.now(UTC),
                trace_id,
                None,
                service_version,
                '{"ok": false}',
            ),
        )
        error_id, count, is_new, status = self.env.cr.fetchone()
        self.env["ipai.agent.error"].invalidate_model()
        return {"error_id": error_id, "count": count, "is_new": is_new, "status": status, "fingerprint": fingerprint}

    def error(self, result):
        return self.env["ipai.agent.error"].browse(result["error_id"])

    @staticmethod
    def hours_ago(hours):
        return datetime.now(UTC) - timedelta(hours=hours)
