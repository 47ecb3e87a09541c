"""The ops schema in PostgreSQL: migrations and the writers.

SQL lives in ``migrations/*.sql`` and ``queries/*.sql`` (loaded with
importlib.resources); Python only moves parameters and results.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import lru_cache
from importlib import resources
from typing import Any, Protocol

import psycopg2
import psycopg2.errors
import psycopg2.extensions

from ipai_ops import config
from ipai_ops.text import first_line, redact, redacted_first_line

#: pg_advisory_lock key for migrations: the first 8 bytes of sha256("ipai_ops.migrate").
MIGRATION_LOCK_KEY = int.from_bytes(hashlib.sha256(b"ipai_ops.migrate").digest()[:8], "big", signed=True)

Connection = psycopg2.extensions.connection


class OpsDatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached (or refused us): retry later. Maps to TRANSPORT.DATABASE_UNAVAILABLE."""

    failure_code = "TRANSPORT.DATABASE_UNAVAILABLE"


class MigrationError(Exception):
    """A migration failed or an applied migration was edited. Maps to MIGRATION.APPLY_FAILED."""

    failure_code = "MIGRATION.APPLY_FAILED"


def _redacted_dsn(dsn: str) -> str:
    return re.sub(r"(://[^:/@\s]+:)[^@\s]+@", r"\1***@", re.sub(r"password=\S+", "password=***", dsn))


class InvalidDsn(ValueError):
    """A DSN libpq cannot parse: a configuration error, never worth retrying."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"invalid PostgreSQL DSN: {reason}")


def check_dsn(dsn: str) -> str:
    """``dsn`` when libpq can parse it, else :class:`InvalidDsn` with a redacted reason.

    psycopg2's message quotes the unparsable piece of the DSN, which may be its password.
    """
    try:
        psycopg2.extensions.parse_dsn(dsn)
    except psycopg2.ProgrammingError as exc:
        raise InvalidDsn(redact(_redacted_dsn(first_line(exc, "unparsable")))) from None
    return dsn


def connect(
    dsn: str | None = None,
    *,
    application_name: str = "ipai-ops",
    connect_timeout: int = 5,
    statement_timeout_ms: int | None = None,
    lock_timeout_ms: int | None = None,
    tcp_user_timeout_ms: int | None = None,
    name_target: bool = True,
) -> Connection:
    """A psycopg2 connection to the ops database, or :class:`OpsDatabaseUnavailable` /
    :class:`InvalidDsn` with one clear line: how every holder (the CLI, the run recorder,
    the middleware, the bridge, Odoo's own connection) opens it.

    ``statement_timeout_ms`` / ``lock_timeout_ms`` are set for the session (a hung or locked
    PostgreSQL must not pin the caller); ``tcp_user_timeout_ms`` turns on TCP keepalives and
    bounds unacknowledged sends, so a peer that vanished mid-query is noticed.
    ``name_target=False`` keeps the host, user and database out of the error, for a caller
    whose error text may reach a remote party (a webhook sender's 503).
    """
    target = check_dsn(config.dsn(dsn))
    options: dict[str, int] = {}
    if tcp_user_timeout_ms is not None:
        options = {
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 2,
            "tcp_user_timeout": int(tcp_user_timeout_ms),
        }
    try:
        conn = psycopg2.connect(target, application_name=application_name, connect_timeout=connect_timeout, **options)
    except psycopg2.OperationalError as exc:
        where = f" ({_redacted_dsn(target)})" if name_target else ""
        reason = redacted_first_line(exc, "connection failed")
        raise OpsDatabaseUnavailable(f"ops database unreachable{where}: {reason}") from None
    settings = {"statement_timeout": statement_timeout_ms, "lock_timeout": lock_timeout_ms}
    settings = {name: str(int(value)) for name, value in settings.items() if value is not None}
    if settings:
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                # Session-wide: a SET inside a transaction would vanish with its rollback.
                for name, value in settings.items():
                    cur.execute("SELECT set_config(%s, %s, false)", (name, value))
            conn.autocommit = False
        except psycopg2.Error as exc:
            conn.close()
            raise OpsDatabaseUnavailable(f"ops database unusable: {redacted_first_line(exc)}") from None
    return conn


def unavailable(exc: BaseException) -> OpsDatabaseUnavailable | None:
    """The one mapping of a database error: :class:`OpsDatabaseUnavailable` (retry later,
    ``TRANSPORT.DATABASE_UNAVAILABLE``) when ``exc`` says PostgreSQL is not there or went
    away (connection refused or lost, a closed connection, a server-side timeout), with its
    redacted first line; None when the database answered and refused the request (a missing
    table, bad data): retrying would not help."""
    if isinstance(exc, OpsDatabaseUnavailable):
        return exc
    if isinstance(exc, (psycopg2.OperationalError, psycopg2.InterfaceError)):
        return OpsDatabaseUnavailable(f"ops database unavailable: {redacted_first_line(exc)}")
    return None


# --------------------------------------------------------------------------- migrations


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str = field(repr=False)

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@lru_cache(maxsize=1)
def migrations() -> tuple[Migration, ...]:
    found = []
    for item in resources.files("ipai_ops.store").joinpath("migrations").iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", item.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), item.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration numbers must be 1..N without gaps, found {versions}")
    return tuple(found)


def head_version() -> int:
    return migrations()[-1].version


class NamedQueries:
    """The SQL files of one package by name, ``<package>/<folder>/<name>.sql``: the one loader
    of the project's SQL (importlib.resources, so an installed wheel has them too; each file
    is read once). The store's own queries are :data:`query`; ``ipai_ops.runs`` and
    ``ipai_ops.ci`` keep theirs beside their code and bind their own."""

    def __init__(self, package: str, folder: str = "queries") -> None:
        self.package = package
        self.folder = folder
        self._text: dict[str, str] = {}

    def __call__(self, name: str) -> str:
        text = self._text.get(name)
        if text is None:
            path = resources.files(self.package).joinpath(self.folder, f"{name}.sql")
            text = self._text[name] = path.read_text(encoding="utf-8")
        return text


#: A named query of the store, ``queries/<name>.sql``.
query = NamedQueries(__name__)


_BOOKKEEPING = """
CREATE SCHEMA IF NOT EXISTS ops;
CREATE TABLE IF NOT EXISTS ops.schema_migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
"""


def applied_versions(conn: Connection) -> dict[int, str]:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('ops.schema_migrations') IS NOT NULL")
        if not cur.fetchone()[0]:
            return {}
        cur.execute("SELECT version, checksum FROM ops.schema_migrations ORDER BY version")
        return dict(cur.fetchall())


def migrate(conn: Connection, *, up_to: int | None = None) -> list[Migration]:
    """Apply pending migrations, each in its own transaction, under a session advisory lock.

    Concurrent callers serialise on the lock; the later ones find nothing to do.
    An applied migration whose file changed is an error, never re-run. ``up_to`` stops
    after that version (upgrade tests start from an older schema).
    """
    conn.rollback()
    previous_autocommit = conn.autocommit
    conn.autocommit = True
    applied: list[Migration] = []
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            conn.autocommit = False
            with conn, conn.cursor() as cur:
                cur.execute(_BOOKKEEPING)
            done = applied_versions(conn)
            for migration in migrations():
                if up_to is not None and migration.version > up_to:
                    break
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name}.sql changed after it was "
                            "applied; add a new migration instead of editing an applied one"
                        )
                    continue
                try:
                    with conn, conn.cursor() as cur:
                        cur.execute(migration.sql)
                        cur.execute(
                            "INSERT INTO ops.schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg2.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql failed: "
                        f"{(exc.pgerror or str(exc)).strip()}"
                    ) from None
                applied.append(migration)
        finally:
            conn.rollback()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    finally:
        conn.autocommit = previous_autocommit
    return applied


def status(conn: Connection) -> dict[str, Any]:
    done = applied_versions(conn)
    head = head_version()
    return {
        "applied": sorted(done),
        "head": head,
        "pending": [m.version for m in migrations() if m.version not in done],
        "at_head": head in done and all(m.version in done for m in migrations()),
    }


# --------------------------------------------------------------------------- writers


#: An occurrence's context fields (migration 0010): JSON names of both writers' input.
CONTEXT_FIELDS = (
    "environment",
    "gen_ai_provider",
    "gen_ai_operation",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "gen_ai_input_tokens",
    "gen_ai_output_tokens",
)


class PendingSample(Protocol):
    """A sample still to build: its writer decides whether it is stored (the bridge builds only
    the samples ``ops.write_occurrences`` keeps; ipai_ops.bridge.writer.Samples)."""

    def build(self, occurrence: ErrorOccurrence) -> dict[str, Any] | None:
        """The sample of ``occurrence``, or None to keep the stored one."""


@dataclass(frozen=True)
class ErrorOccurrence:
    """One occurrence of an error, as every writer (bridge, Odoo, CLI, CI ingest) hands it over."""

    source: str
    occurrence_id: str
    fingerprint: str
    code: str
    severity: str
    message: str
    occurred_at: datetime | str
    error_type: str | None = None
    service: str | None = None
    trace_id: str | None = None
    span_id: str | None = None
    service_version: str | None = None
    #: The error's sample when this occurrence is its latest (the stored one stays when None),
    #: or one still to build (:class:`PendingSample`), built when written.
    sample: dict[str, Any] | PendingSample | None = None
    #: The key grouping version 1 gave this failure, when it differs from ``fingerprint``
    #: (envelope ``error.previous_fingerprint``): attaches it to the existing group.
    previous_fingerprint: str | None = None
    #: Where and with what it happened (migration 0010, docs/specs/telemetry_v1.md):
    #: ``deployment.environment.name``, and the GenAI call that failed (OpenTelemetry GenAI
    #: semantic conventions). The writers cap the texts and keep only non-negative integer
    #: token counts.
    environment: str | None = None
    gen_ai_provider: str | None = None
    gen_ai_operation: str | None = None
    gen_ai_request_model: str | None = None
    gen_ai_response_model: str | None = None
    gen_ai_input_tokens: int | None = None
    gen_ai_output_tokens: int | None = None

    @classmethod
    def from_envelope(
        cls, envelope: dict[str, Any], *, source: str, occurrence_id: str, **fields: Any
    ) -> ErrorOccurrence:
        """The occurrence a failure envelope describes; ``fields`` that are not None win.

        Code, fingerprint, severity, message and type come from ``envelope["error"]``;
        service, version and trace ids from ``envelope["context"]``; the envelope is the sample.
        """
        error = envelope["error"]
        context = envelope.get("context") or {}
        values: dict[str, Any] = {
            "source": source,
            "occurrence_id": str(occurrence_id),
            "fingerprint": error["fingerprint"],
            "code": error["code"],
            "severity": error.get("severity") or "medium",
            "message": error.get("message") or "",
            "occurred_at": envelope.get("occurred_at") or datetime.now(timezone.utc).isoformat(),
            "error_type": error.get("error_type"),
            "service": context.get("service"),
            "trace_id": context.get("trace_id"),
            "span_id": context.get("span_id"),
            "service_version": context.get("service_version"),
            "sample": envelope,
            "previous_fingerprint": error.get("previous_fingerprint"),
            "environment": context.get("env"),
        }
        values.update({name: value for name, value in fields.items() if value is not None})
        return cls(**values)

    def context(self) -> dict[str, Any]:
        """The ``ops.occurrence_context`` fields (``p_context`` of ``ops.upsert_agent_error``)."""
        return {name: getattr(self, name) for name in CONTEXT_FIELDS}

    def stored_sample(self) -> dict[str, Any] | None:
        """The sample as written: a pending one built now."""
        sample = self.sample
        if sample is None or isinstance(sample, dict):
            return sample
        return sample.build(self)

    def as_json(self) -> dict[str, Any]:
        sample = self.stored_sample()
        out = asdict(self if sample is self.sample else replace(self, sample=sample))
        if isinstance(self.occurred_at, datetime):
            out["occurred_at"] = self.occurred_at.isoformat()
        return out

    def _row(self) -> dict[str, Any]:
        """:meth:`as_json` without its deep copy (the batch writer's hot path: the row is
        serialised at once)."""
        out = dict(self.__dict__)
        if isinstance(self.occurred_at, datetime):
            out["occurred_at"] = self.occurred_at.isoformat()
        sample = self.sample
        if sample is not None and not isinstance(sample, dict):
            out["sample"] = sample.build(self)
        return out


@dataclass(frozen=True)
class UpsertResult:
    error_id: int
    count: int
    is_new: bool
    status: str


@dataclass(frozen=True)
class BatchResult:
    received: int
    new_occurrences: int
    errors_touched: int


_DEADLOCK_RETRIES = 3


def _retrying(conn: Connection, work):
    """Run ``work(cursor)`` in one transaction, retrying serialization failures and deadlocks."""
    for attempt in range(1, _DEADLOCK_RETRIES + 1):
        try:
            with conn, conn.cursor() as cur:
                return work(cur)
        except (psycopg2.errors.DeadlockDetected, psycopg2.errors.SerializationFailure):
            if attempt == _DEADLOCK_RETRIES:
                raise
            time.sleep(0.01 * attempt)
        except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
            raise unavailable(exc) from exc
    raise AssertionError("unreachable")


def upsert_error_on(cur: Any, occ: ErrorOccurrence) -> UpsertResult:
    """``ops.upsert_agent_error`` for one occurrence on the caller's cursor; commits nothing.

    For a caller that owns the transaction (Odoo's own cursor, a test); others use
    :func:`upsert_error`.
    """
    cur.execute(
        "SELECT * FROM ops.upsert_agent_error("
        "%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s::jsonb)",
        (
            occ.source,
            occ.occurrence_id,
            occ.fingerprint,
            occ.code,
            occ.severity,
            occ.message,
            occ.error_type,
            occ.service,
            occ.occurred_at,
            occ.trace_id,
            occ.span_id,
            occ.service_version,
            json.dumps(sample, default=str) if (sample := occ.stored_sample()) is not None else None,
            occ.previous_fingerprint,
            json.dumps(occ.context()),
        ),
    )
    return UpsertResult(*cur.fetchone())


def upsert_error(conn: Connection, occ: ErrorOccurrence) -> UpsertResult:
    """Upsert one occurrence through ``ops.upsert_agent_error`` and commit."""
    return _retrying(conn, lambda cur: upsert_error_on(cur, occ))


def encode_batch(occurrences: Iterable[ErrorOccurrence | dict[str, Any]]) -> str:
    return json.dumps([o if isinstance(o, dict) else o._row() for o in occurrences], default=str, separators=(",", ":"))


def write_batch(conn: Connection, occurrences: Sequence[ErrorOccurrence | dict[str, Any]]) -> BatchResult:
    """Write many occurrences in ONE round trip (``ops.write_agent_errors``) and commit.

    Returns only after the commit: a caller may acknowledge its sender then. Pending samples
    are built here. Dicts with the :class:`ErrorOccurrence` field names are accepted as they are.

    Of the new occurrences of one error, ``ops.write_occurrences`` (migration 0013) stores the
    sample of the latest (``occurred_at`` descending, then ``occurrence_id`` descending in the
    database's collation), and keeps the stored sample when that one brings none: a writer
    that thins samples keeps at least that one (ipai_ops.bridge.writer.Samples).
    """
    if not occurrences:
        return BatchResult(0, 0, 0)
    payload = encode_batch(occurrences)

    def work(cur):
        cur.execute("SELECT * FROM ops.write_agent_errors(%s::jsonb)", (payload,))
        return BatchResult(*cur.fetchone())

    return _retrying(conn, work)


# --------------------------------------------------------------------------- retention


def purge_occurrences(conn: Connection, *, older_than_days: int, chunk: int = 10_000) -> int:
    """Delete occurrences older than N days, ``chunk`` rows per transaction.

    Aggregates in ``ops.agent_errors`` (count, first/last seen) are never touched:
    a purged occurrence stays counted. A redelivery of a purged occurrence would
    count again, which is why retention must exceed every sender's retry window.
    """
    return purge_in_chunks(conn, "purge_occurrences", older_than_days=older_than_days, chunk=chunk)


def trim_groups(conn: Connection, *, keep: int, min_age_seconds: int = 3600, chunk: int = 10_000) -> int:
    """Cap the stored occurrences of every error group at its first and its ``keep`` most
    recent; others older than ``min_age_seconds`` are deleted, ``chunk`` rows per
    transaction. Storage stays bounded in a storm; the counts stay exact (never touched),
    and a redelivery within ``min_age_seconds`` (the senders' retry window) still meets its
    key. Returns the rows deleted."""
    if keep < 1:
        raise ValueError("keep must be >= 1")
    if min_age_seconds < 0 or chunk < 1:
        raise ValueError("min_age_seconds must be >= 0 and chunk >= 1")
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT error_id, now() - make_interval(secs => %s) FROM ops.agent_error_occurrences"
            " GROUP BY error_id HAVING count(*) > %s ORDER BY error_id",
            (min_age_seconds, keep + 1),
        )
        groups = cur.fetchall()
    sql = query("trim_group_occurrences")
    total = 0
    for error_id, cutoff in groups:
        while True:
            with conn, conn.cursor() as cur:
                cur.execute(sql, {"error_id": error_id, "keep": keep, "cutoff": cutoff, "chunk": chunk})
                deleted = cur.rowcount
            total += deleted
            if deleted < chunk:
                break
    return total


def purge_in_chunks(conn: Connection, query_name: str, *, older_than_days: int, chunk: int = 10_000) -> int:
    """Run the named purge query (``%(days)s``, ``%(chunk)s``) one transaction per chunk until done."""
    if older_than_days < 1:
        raise ValueError("older_than_days must be >= 1")
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    total = 0
    sql = query(query_name)
    while True:
        with conn, conn.cursor() as cur:
            cur.execute(sql, {"days": older_than_days, "chunk": chunk})
            deleted = cur.rowcount
        total += deleted
        if deleted < chunk:
            return total
