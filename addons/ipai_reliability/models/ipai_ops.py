"""The shared service other addons use to reach the ops schema and the registry.

``record_failure`` writes on its OWN cursor and commits it: a business
transaction that rolls back still leaves its error in ``ops.agent_errors``.
Migrations run on their own psycopg2 connection because ``ipai_ops.store.migrate``
toggles autocommit and takes a session advisory lock, neither of which may
happen on Odoo's cursor.
"""

import contextlib
import dataclasses
import logging
import tempfile
from datetime import timedelta
from pathlib import Path

import psycopg2
import psycopg2.extensions
from odoo import api, fields, models, sql_db
from odoo.exceptions import UserError
from odoo.tools import SQL

_logger = logging.getLogger(__name__)

try:
    from ipai_ops import config as ops_config
    from ipai_ops import registry as ops_registry
    from ipai_ops import store as ops_store
    from ipai_ops.runs.escalate import EscalationError, escalate
    from ipai_ops.text import redacted_first_line
except ImportError:  # pragma: no cover - declared in external_dependencies
    ops_config = ops_store = ops_registry = escalate = redacted_first_line = None
    EscalationError = Exception

PARAM_REGISTRY_PATH = "ipai_reliability.registry_path"
PARAM_OPS_DSN = "ipai_reliability.ops_dsn"
PARAM_REGISTRY_WRITEBACK = "ipai_reliability.registry_writeback"
ESCALATION_MIMETYPE = "application/gzip"
PARAM_ESCALATION_RETENTION_DAYS = "ipai_reliability.escalation_retention_days"
DEFAULT_ESCALATION_RETENTION_DAYS = 30
#: The records the escalation buttons attach bundles to (console error, agent run, intent).
ESCALATION_MODELS = ("ipai.agent.error", "ipai.agent.run", "ipai.pulser.intent")
ESCALATION_GC_BATCH = 500


def local_dsn(dbname):
    """A libpq DSN for Odoo's own database, from Odoo's configuration."""
    __, info = sql_db.connection_info_for(dbname)
    info = {key: value for key, value in info.items() if value not in (None, False, "")}
    if "dsn" in info:
        return info["dsn"]
    info["dbname"] = info.pop("database")
    info["application_name"] = "ipai-reliability"
    return psycopg2.extensions.make_dsn(**info)


class IpaiOps(models.AbstractModel):
    _name = "ipai.ops"
    _description = "Reliability: ops schema and failure-mode registry service"

    # ------------------------------------------------------------------ configuration

    @api.model
    def _param(self, key, default=None):
        return self.env["ir.config_parameter"].sudo().get_param(key, default)

    @api.private
    @api.model
    def ops_dsn(self):
        """The DSN of a SEPARATE ops database, or None when ops lives in Odoo's database."""
        return (self._param(PARAM_OPS_DSN) or "").strip() or None

    @api.private
    @api.model
    def ops_is_local(self):
        return self.ops_dsn() is None

    @api.private
    @api.model
    def registry_path(self):
        configured = (self._param(PARAM_REGISTRY_PATH) or "").strip()
        if configured:
            return Path(configured)
        return ops_config.repo_root() / "ssot" / "errors" / "failure_modes.yaml"

    @api.private
    @api.model
    def repo_root(self):
        """The root runbook paths hang off: ipai_ops' one rule, for the configured registry."""
        return ops_config.repo_root(registry=self.registry_path())

    @api.private
    @api.model
    def registry(self):
        """The validated :class:`ipai_ops.registry.Registry`, re-read when the file changes."""
        path = self.registry_path()
        try:
            return ops_registry.default_registry(path)
        except FileNotFoundError:
            raise UserError(self.env._("The failure-mode registry %(path)s does not exist.", path=path)) from None
        except ops_registry.RegistryError as exc:
            raise UserError(
                self.env._(
                    "The failure-mode registry %(path)s is invalid:\n%(problems)s",
                    path=path,
                    problems="\n".join(p.format() for p in exc.problems[:20]),
                )
            ) from None

    # ------------------------------------------------------------------ connections

    @contextlib.contextmanager
    def _own_connection(self):
        """A psycopg2 connection to the ops database that is never Odoo's cursor."""
        dsn = self.ops_dsn() or local_dsn(self.env.cr.dbname)
        try:
            conn = ops_store.connect(dsn, application_name="ipai-reliability")
        except ops_store.OpsDatabaseUnavailable as exc:
            raise UserError(str(exc)) from None
        try:
            yield conn
        finally:
            conn.close()

    @api.private
    @api.model
    def ensure_schema(self):
        """Apply pending ops migrations on an own connection; returns the applied names."""
        with self._own_connection() as conn:
            try:
                applied = ops_store.migrate(conn)
            except ops_store.MigrationError as exc:
                raise UserError(str(exc)) from None
        names = [f"{m.version:04d}_{m.name}" for m in applied]
        if names:
            _logger.info("ops schema: applied migrations %s", ", ".join(names))
        return names

    @api.private
    @api.model
    def ops_schema_ready(self, table="ops.agent_errors"):
        """True when ``table`` is readable through Odoo's cursor (the console's condition)."""
        self.env.cr.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return bool(self.env.cr.fetchone()[0])

    @api.private
    @api.model
    def create_ops_view(self, view, *, select_sql, columns, source):
        """(Re)create the SQL view ``view`` of an ``_auto = False`` model over an ops table.

        When ``source`` is not in Odoo's database (ops lives elsewhere, see
        readme/CONFIGURE.md), the view is an empty stand-in with the same ``columns``
        ((name, SQL type) pairs), so the model's views load and show nothing.
        """
        self.env.cr.execute(SQL("DROP VIEW IF EXISTS %s", SQL.identifier(view)))
        if self.ops_schema_ready(source):
            body = SQL(select_sql)
        else:
            body = SQL(
                "SELECT %s WHERE false",
                SQL(", ").join(SQL("NULL::%s AS %s", SQL(typ), SQL.identifier(col)) for col, typ in columns),
            )
        self.env.cr.execute(SQL("CREATE VIEW %s AS %s", SQL.identifier(view), body))

    # ------------------------------------------------------------------ writing failures

    @api.private
    @api.model
    def record_failure(self, envelope, *, occurrence_id, source="odoo", service=None, service_version=None):
        """Upsert one occurrence of ``envelope`` into ``ops.agent_errors`` and commit it at once.

        :param envelope: a failure envelope (``ipai_ops.envelope.build_envelope``)
        :param occurrence_id: unique per ``source``; a redelivery with the same id is counted once
        :return: ``dict(error_id, count, is_new, status)``
        """
        if not isinstance(envelope, dict) or not isinstance(envelope.get("error"), dict):
            raise ValueError("record_failure needs a failure envelope with an 'error' object")
        if not occurrence_id:
            raise ValueError("record_failure needs an occurrence_id")
        error = envelope["error"]
        context = envelope.get("context") or {}
        if not error.get("fingerprint") or not error.get("code"):
            raise ValueError("the envelope's error has no fingerprint or code")
        occ = ops_store.ErrorOccurrence.from_envelope(
            envelope,
            source=source or context.get("source") or "odoo",
            occurrence_id=occurrence_id,
            service=service,
            service_version=service_version,
        )
        if self.ops_dsn():
            with self._own_connection() as conn:
                return dataclasses.asdict(ops_store.upsert_error(conn, occ))
        # A cursor of its own, committed when the block exits: independent of the caller's
        # transaction (in test mode the registry hands out a test cursor instead).
        with self.env.registry.cursor() as cr:
            return dataclasses.asdict(ops_store.upsert_error_on(cr, occ))

    @api.private
    @api.model
    def envelope_for_exception(self, exc, *, context, evidence=None, stacktrace=None, details=None):
        """A classified failure envelope for ``exc`` (``ipai_ops.record.failure_from_exception``,
        the one way every producer records a failure: same code, same fingerprint)."""
        from ipai_ops.record import failure_from_exception

        context = dict(context or {})
        return failure_from_exception(
            self.registry(),
            exc,
            source=context.pop("source", None) or "odoo",
            service=context.pop("service", None) or "odoo",
            occurrence_id=context.pop("occurrence_id", None),
            context=context,
            evidence=evidence,
            stacktrace=stacktrace,
            details=details,
        ).envelope

    # ------------------------------------------------------------------ escalation bundle

    def _escalation_failure(self, ref, message, code=None):
        return UserError(
            self.env._(
                "The escalation bundle of %(ref)s could not be built: %(problem)s",
                ref=ref,
                problem=f"{code}: {message}" if code else message,
            )
        )

    @api.model
    def _escalation_bundle(self, ref, *, record, dsn=None):
        """The action that downloads :meth:`_escalation_attachment`'s bundle (the buttons)."""
        attachment = self._escalation_attachment(ref, record=record, dsn=dsn)
        return {"type": "ir.actions.act_url", "url": f"/web/content/{attachment.id}?download=true", "target": "self"}

    @api.model
    def _escalation_attachment(self, ref, *, record, dsn=None):
        """Write the escalation bundle of ``ref`` (``ipai-ops escalate``), attach it to ``record``
        and return the attachment.

        :param ref: an ``escalate`` reference: an ops error id or ``fp1:`` fingerprint, or
            ``intent:<ref or id>``
        :param record: the record the bundle is about; whoever may read it may download the
            bundle (the attachment is linked to it)
        :param dsn: the database to read; default the ops database (:meth:`ops_dsn`, else
            Odoo's own). Intents live in Odoo's database: pass :func:`local_dsn` for them.

        The bundle is read on a connection of its own, so it holds what is committed: the
        caller's uncommitted changes are not in it. Unknown references and an unreachable
        database raise :class:`~odoo.exceptions.UserError` (with the typed code where one fits).
        """
        record.ensure_one()
        record.check_access("read")
        dsn = dsn or self.ops_dsn() or local_dsn(self.env.cr.dbname)
        registry = self.registry()
        with tempfile.TemporaryDirectory(prefix="ipai-escalation-") as tmp:
            try:
                result = escalate(ref, dsn=dsn, out_dir=tmp, registry=registry)
            except EscalationError as exc:
                raise self._escalation_failure(ref, str(exc), exc.failure_code) from None
            except (ops_store.OpsDatabaseUnavailable, psycopg2.Error) as exc:
                # unreachable, or the connection dropped mid-read: the one mapping says which
                down = ops_store.unavailable(exc)
                if down is not None:
                    raise self._escalation_failure(ref, str(down), down.failure_code) from None
                # e.g. no privilege on the ops schema, or a schema older than this code
                _logger.warning("escalation bundle of %s: database error", ref, exc_info=True)
                raise self._escalation_failure(ref, redacted_first_line(exc, "database error")) from None
            data = result.path.read_bytes()
            name = result.path.name
        # sudo: linking an attachment needs write access on the record; reading the record is
        # what this bundle requires (checked above), and reading it again is what downloading
        # the attachment requires (ir.attachment checks the linked record).
        attachment = (
            self.env["ir.attachment"]
            .sudo()
            .create(
                {
                    "name": name,
                    "raw": data,
                    "mimetype": ESCALATION_MIMETYPE,
                    "res_model": record._name,
                    "res_id": record.id,
                    "description": self.env._("Escalation bundle of %(ref)s (ipai-ops escalate)", ref=ref),
                }
            )
        )
        _logger.info("escalation bundle %s (%s bytes) for %s by uid %s", name, len(data), ref, self.env.uid)
        return attachment

    # ------------------------------------------------------------------ escalation bundle retention

    @api.model
    def _escalation_retention_days(self):
        """Days an escalation bundle attachment is kept; 0 keeps them forever, None = misconfigured."""
        raw = (self._param(PARAM_ESCALATION_RETENTION_DAYS) or "").strip()
        if not raw:
            return DEFAULT_ESCALATION_RETENTION_DAYS
        try:
            days = int(raw)
        except ValueError:
            days = -1
        if days < 0:
            _logger.warning(
                "%s = %r is not a whole number of days >= 0: escalation bundles are not deleted",
                PARAM_ESCALATION_RETENTION_DAYS,
                raw,
            )
            return None
        return days

    @api.model
    def _gc_escalation_bundles(self, batch_size=ESCALATION_GC_BATCH):
        """Delete escalation bundle attachments older than the retention (cron
        *Reliability: delete old escalation bundles*); returns how many were deleted.

        Only what the escalation buttons create is touched: gzip attachments named
        ``escalation-*`` on the records those buttons attach them to. In a cron each batch is
        committed and reported (``ir.cron._commit_progress``), and the scheduler runs the job
        again while some are left; called from code, it deletes everything in one transaction.
        """
        days = self._escalation_retention_days()
        if not days:
            return 0
        cutoff = fields.Datetime.now() - timedelta(days=days)
        domain = [
            ("res_model", "in", ESCALATION_MODELS),
            ("mimetype", "=", ESCALATION_MIMETYPE),
            ("name", "=like", "escalation-%"),
            ("create_date", "<", cutoff),
        ]
        Attachment = self.env["ir.attachment"].sudo()
        in_cron = bool(self.env.context.get("ir_cron_progress_id"))
        deleted = 0
        while True:
            batch = Attachment.search(domain, order="id", limit=batch_size)
            if not batch:
                break
            batch.unlink()
            deleted += len(batch)
            full = len(batch) == batch_size
            if in_cron:
                remaining = Attachment.search_count(domain) if full else 0
                if not self.env["ir.cron"]._commit_progress(len(batch), remaining=remaining):
                    break  # out of time: the scheduler runs the job again for the rest
            if not full:
                break
        if deleted:
            _logger.info("deleted %s escalation bundle(s) older than %s day(s)", deleted, days)
        return deleted
