import dataclasses
import io
import json
import tarfile
import uuid
from datetime import UTC, datetime, timedelta

import psycopg2.sql
from odoo.tests import TransactionCase, new_test_user

from ipai_ops import store as ops_store
from ipai_ops.classify import classify
from ipai_ops.envelope import build_envelope

from ..models.ipai_ops import local_dsn


def read_bundle(raw):
    """``(top directory, {member below it: bytes})`` of an escalation bundle's bytes."""
    members, tops = {}, set()
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
        for info in archive.getmembers():
            top, _, rest = info.name.partition("/")
            tops.add(top)
            members[rest] = archive.extractfile(info).read()
    if len(tops) != 1:
        raise AssertionError(f"a bundle has one top directory, got {sorted(tops)}")
    return tops.pop(), members


class CommittedOpsMixin:
    """Ops rows committed on a connection of their own, as the bridge and the CLI write them.

    ``ipai-ops escalate`` reads on its own connection: it sees committed rows only, never the
    test's transaction. Every row written here is deleted (committed) after the test.
    """

    def ops_connection(self):
        conn = ops_store.connect(local_dsn(self.env.cr.dbname), application_name="ipai-reliability-test")
        self.addCleanup(conn.close)
        return conn

    def commit_failure(
        self,
        message,
        *,
        code="WEBHOOK.SIGNATURE_INVALID",
        source="bridge",
        service="billing",
        service_version="2.3.4",
        trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
        span_id="00f067aa0ba902b7",
        run=None,
    ):
        """One occurrence of ``code`` with ``message`` left unredacted in the row and in its
        envelope (a writer that did not redact: the bundle must). ``run`` (a dict of
        ``ops.agent_runs`` columns) adds the run that failed with it.
        Returns ``dict(error_id, fingerprint, envelope, run_id)``."""
        envelope = build_envelope(
            classify(self.env["ipai.ops"].registry(), explicit_code=code),
            message=message,
            error_type="ValueError",
            context={
                "source": source,
                "service": service,
                "service_version": service_version,
                "env": "test",
                "trace_id": trace_id,
                "span_id": span_id,
                "correlation_id": f"corr-{uuid.uuid4().hex[:8]}",
            },
        )
        envelope["error"]["message"] = message
        envelope["error"]["fingerprint"] = fingerprint = f"fp1:{uuid.uuid4().hex}"
        conn = self.ops_connection()
        result = ops_store.upsert_error(
            conn,
            ops_store.ErrorOccurrence(
                source=source,
                occurrence_id=uuid.uuid4().hex,
                fingerprint=fingerprint,
                code=code,
                severity=envelope["error"]["severity"],
                message=message,
                error_type="ValueError",
                service=service,
                occurred_at=envelope["occurred_at"],
                trace_id=trace_id,
                span_id=span_id,
                service_version=service_version,
                sample=envelope,
            ),
        )
        self.addCleanup(self.delete_committed, "ops.agent_errors", "id", result.error_id)
        run_id = None
        if run is not None:
            run_id = run.get("run_id") or f"run-test-{uuid.uuid4().hex[:12]}"
            with conn.cursor() as cur:
                cur.execute(
                    "INSERT INTO ops.agent_runs (run_id, source, agent, status, started_at, finished_at, error_id,"
                    " metadata) VALUES (%s, 'cli', %s, 'failed', now() - interval '1 minute', now(), %s, %s::jsonb)",
                    (run_id, run.get("agent", "codex"), result.error_id, json.dumps(run.get("metadata") or {})),
                )
            conn.commit()
            self.addCleanup(self.delete_committed, "ops.agent_runs", "run_id", run_id)
        return {"error_id": result.error_id, "fingerprint": fingerprint, "envelope": envelope, "run_id": run_id}

    def delete_committed(self, table, column, value):
        """``DELETE FROM table WHERE column = value``, committed on a connection of its own."""
        conn = ops_store.connect(local_dsn(self.env.cr.dbname), application_name="ipai-reliability-test")
        try:
            with conn.cursor() as cur:
                cur.execute(
                    psycopg2.sql.SQL("DELETE FROM {} WHERE {} = %s").format(
                        psycopg2.sql.Identifier(*table.split(".")), psycopg2.sql.Identifier(column)
                    ),
                    (value,),
                )
            conn.commit()
        finally:
            conn.close()


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
        sample=None,
        previous_fingerprint=None,
    ):
        """One occurrence through ops.upsert_agent_error on the test cursor (rolled back after the test).
        ``sample`` is the envelope kept as the error's latest (a minimal one by default)."""
        fingerprint = fingerprint or f"fp1:test{uuid.uuid4().hex[:28]}"
        result = ops_store.upsert_error_on(
            self.env.cr,
            ops_store.ErrorOccurrence(
                source=source,
                occurrence_id=occurrence_id or uuid.uuid4().hex,
                fingerprint=fingerprint,
                code=code,
                severity=severity,
                message=message,
                error_type=error_type,
                service=service,
                occurred_at=occurred_at or datetime.now(UTC),
                trace_id=trace_id,
                service_version=service_version,
                sample=sample if sample is not None else {"ok": False},
                previous_fingerprint=previous_fingerprint,
            ),
        )
        self.env["ipai.agent.error"].invalidate_model()
        return {**dataclasses.asdict(result), "fingerprint": fingerprint}

    def error(self, result):
        return self.env["ipai.agent.error"].browse(result["error_id"])

    @staticmethod
    def hours_ago(hours):
        return datetime.now(UTC) - timedelta(hours=hours)
