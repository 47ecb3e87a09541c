"""The escalation bundle: one archive with everything the owner team needs (runbooks, "Escalation").

What the archive holds, the manifest's keys and the rules for reading run files are
docs/agent_runs.md, "The escalation bundle". The paths in a run record are data any writer
of ``ops.agent_runs`` (or of the run directory) controls, and a server (the Odoo button) may
build the bundle for a user who must not read its other files: files are read only inside
the run's own directory, never through a symbolic link, regular files with one link only.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import stat
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

from ipai_ops import __version__, config
from ipai_ops.envelope import envelope_errors, iso_utc
from ipai_ops.registry import Registry, default_registry
from ipai_ops.runs._sql import sql
from ipai_ops.runs.capture import LineRedactor
from ipai_ops.runs.context import trace_ids
from ipai_ops.runs.layout import ATTEMPT_FILES, ATTEMPT_RE, RUN_FILE, RUN_ID_RE
from ipai_ops.runs.secrets import EMPTY, SET, SETTINGS_NAMES, SecretValues, recorded_settings
from ipai_ops.store import OpsDatabaseUnavailable, connect, query
from ipai_ops.text import redact, redact_obj

#: 2: ``settings.agent``, ``ids.session_id``, ``verification`` and ``structured_output`` added.
BUNDLE_VERSION = 2
#: Each log file is copied up to this many bytes (head and tail kept around a marker).
DEFAULT_MAX_LOG_BYTES = 5 * 1024 * 1024
_FINGERPRINT_RE = re.compile(r"^fp\d+:[0-9a-f]{32}$")
#: An envelope file bigger than this is not read (the recorder's are a few KiB).
_MAX_ENVELOPE_BYTES = 16 * 1024 * 1024
KINDS = ("run", "error", "intent")


class EscalationError(Exception):
    """The reference cannot be bundled (unknown id, no intent table): one clear line."""

    def __init__(self, message: str, *, failure_code: str | None = None):
        super().__init__(message)
        self.failure_code = failure_code


@dataclass
class EscalationResult:
    path: Path
    kind: str
    manifest: dict[str, Any]
    members: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "kind": self.kind, "members": self.members, "manifest": self.manifest}


def parse_ref(ref: str) -> tuple[str, str]:
    """``(kind, value)`` of a reference: explicit ``intent:``/``run:``/``error:`` prefixes,
    else a fingerprint or a number is an error, anything else a run id."""
    ref = ref.strip()
    for kind in KINDS:
        prefix = f"{kind}:"
        if ref.startswith(prefix) and not _FINGERPRINT_RE.match(ref):
            value = ref[len(prefix) :].strip()
            if not value:
                raise EscalationError(f"{ref!r}: nothing after {prefix!r}")
            return kind, value
    if _FINGERPRINT_RE.match(ref) or (ref.isdigit() and len(ref) < 19):
        return "error", ref
    if not ref:
        raise EscalationError("an id is required: a run id, an error id or fingerprint, or intent:<ref>")
    return "run", ref


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _clean(value: Any) -> Any:
    return redact_obj(_jsonable(value))


def _rows(cur) -> list[dict[str, Any]]:
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _exists(cur, relation: str) -> bool:
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (relation,))
    return bool(cur.fetchone()[0])


class _Refused(Exception):
    """A run file that exists but must not be read (symlink, not a regular file, hard link)."""


def _open_in(root: Path, parts: list[str]) -> int:
    """An fd of ``root/parts...`` opened without following a symlink at any component below
    ``root``; regular files with one link only. Raises ``FileNotFoundError`` or :class:`_Refused`."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in parts[:-1]:
            try:
                child = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _Refused(f"{part} is a symbolic link or not a directory") from None
                raise
            os.close(fd)
            fd = child
        try:
            # O_NONBLOCK: a FIFO planted under the name must not hang the bundle.
            child = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Refused("it is a symbolic link") from None
            raise
    finally:
        os.close(fd)
    info = os.fstat(child)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(child)
        raise _Refused("not a regular file" if not stat.S_ISREG(info.st_mode) else "it has other hard links")
    return child


def _read_fd(fd: int, limit: int | None) -> tuple[bytes, int, bool]:
    """(bytes, size, cut): the whole file, or head and tail around a marker past ``limit``."""
    with os.fdopen(fd, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if limit is None or size <= limit:
            return handle.read(), size, False
        half = limit // 2
        head = handle.read(half)
        handle.seek(size - half)
        marker = f"\n[... {size - 2 * half} bytes omitted from the bundle ...]\n".encode()
        return head + marker + handle.read(), size, True


class _Gather:
    """Collects the facts of one reference from the database and the run directories."""

    def __init__(self, *, dsn: str | None, use_db: bool, artifacts_dir: Path, registry: Registry):
        self.dsn = dsn
        self.use_db = use_db
        self.artifacts_dir = artifacts_dir
        self.registry = registry
        self.conn = None
        self.db_error: OpsDatabaseUnavailable | None = None
        self.run: dict[str, Any] | None = None
        self.run_source: str | None = None
        self.error: dict[str, Any] | None = None
        self.intent: dict[str, Any] | None = None
        self.intent_events: list[dict[str, Any]] = []
        self.envelope: dict[str, Any] | None = None
        self.envelope_source: str | None = None
        self.warnings: list[str] = []
        #: Secret values to mask in every file: this process's, and those an old run record leaked.
        self.secrets = SecretValues.from_environ(os.environ)

    def run_dir(self) -> Path | None:
        run_id = (self.run or {}).get("run_id")
        if isinstance(run_id, str) and RUN_ID_RE.match(run_id):
            return self.artifacts_dir / run_id
        return None

    def run_file(
        self, path: Any, attempt: Any, name: str, what: str, *, limit: int | None = None
    ) -> tuple[bytes, int, bool] | None:
        """A file of one attempt, read only where the recorder writes it: ``<run dir>/<attempt>/<name>``.

        ``path`` is what the run record says; anything else (another directory, ``..``, a
        symlink on the way) is a warning, never a read. ``None`` when missing or refused.
        """
        run_dir = self.run_dir()
        attempt = str(attempt)
        expected = run_dir / attempt / name if run_dir is not None and ATTEMPT_RE.match(attempt) else None
        if expected is None or not isinstance(path, str) or os.path.normpath(path) != str(expected):
            where = run_dir if run_dir is not None else self.artifacts_dir
            self.warnings.append(f"{what} {path} is outside the run directory {where}: not read")
            return None
        try:
            fd = _open_in(self.artifacts_dir, [run_dir.name, attempt, name])
        except FileNotFoundError:
            return None
        except _Refused as exc:
            self.warnings.append(f"{what} {path} refused ({exc}): not read")
            return None
        except OSError as exc:
            self.warnings.append(f"{what} {path} unreadable ({exc.strerror}): not read")
            return None
        return _read_fd(fd, limit)

    def cursor(self):
        if not self.use_db:
            return None
        if self.conn is None and self.db_error is None:
            try:
                self.conn = connect(self.dsn, application_name="ipai-ops escalate")
                self.conn.autocommit = True
            except OpsDatabaseUnavailable as exc:
                self.db_error = exc
        return self.conn.cursor() if self.conn is not None else None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    # ------------------------------------------------------------------ lookups

    def load_error(self, ref: str) -> bool:
        cur = self.cursor()
        if cur is None:
            return False
        with cur:
            if not _exists(cur, "ops.agent_errors"):
                return False
            ref_id = int(ref) if ref.isdigit() and len(ref) < 19 else None
            cur.execute(query("show_error"), {"ref": ref, "ref_id": ref_id})
            rows = _rows(cur)
        if not rows:
            return False
        self.error = rows[0]
        return True

    def load_run_row(self, run_id: str) -> bool:
        cur = self.cursor()
        if cur is None:
            return False
        with cur:
            if not _exists(cur, "ops.agent_runs"):
                return False
            cur.execute(sql("get_run"), {"run_id": run_id})
            rows = _rows(cur)
        if not rows:
            return False
        self._set_run(rows[0], "ops.agent_runs")
        return True

    def load_run_file(self, run_id: str) -> bool:
        if not RUN_ID_RE.match(run_id):
            return False
        path = self.artifacts_dir / run_id / RUN_FILE
        try:
            data, _, _ = _read_fd(_open_in(self.artifacts_dir, [run_id, RUN_FILE]), None)
            record = json.loads(data.decode("utf-8"))
        except _Refused as exc:
            self.warnings.append(f"{path} refused ({exc}): not read")
            return False
        except OSError:
            return False
        except ValueError as exc:
            self.warnings.append(f"{path} is not JSON ({exc}): not read")
            return False
        if not isinstance(record, dict):
            self.warnings.append(f"{path} is not a run record (not a JSON object): not read")
            return False
        self._set_run(record, str(path))
        return True

    def _set_run(self, record: dict[str, Any], source: str) -> None:
        """Keep a run record, with ``metadata.iterations`` as a list of objects whatever was stored.

        Both sources are data some writer controls (``ops.agent_runs`` is open to every writer of
        the ops schema, run.json to anyone on the machine): the bundle must not crash on either.
        """
        meta = record.get("metadata")
        if not isinstance(meta, dict):
            if meta is not None:
                self.warnings.append(f"run metadata in {source} is not an object: ignored")
            meta = {}
        iterations = meta.get("iterations")
        if iterations is not None and (
            not isinstance(iterations, list) or not all(isinstance(i, dict) for i in iterations)
        ):
            self.warnings.append(f"run iterations in {source} are not a list of objects: the malformed ones ignored")
            iterations = [i for i in iterations if isinstance(i, dict)] if isinstance(iterations, list) else []
            meta = {**meta, "iterations": iterations}
        settings = meta.get("settings")
        if isinstance(settings, dict) and "variables" in settings:
            # Runs recorded before the allowlist kept secret values here: shown as [set], masked everywhere.
            variables, leaked = recorded_settings(settings.get("variables"))
            meta = {**meta, "settings": {**settings, "variables": variables}}
            if leaked:
                self.secrets = self.secrets.merged(SecretValues(leaked))
        self.run = {**record, "metadata": meta}
        self.run_source = source

    def load_run(self, run_id: str) -> bool:
        found = self.load_run_row(run_id) or self.load_run_file(run_id)
        if found and self.run_source == "ops.agent_runs":
            # The database row has no log tails; the run directory, when still there, has the files.
            run_dir = ((self.run.get("metadata") or {}).get("artifacts") or {}).get("run_dir")
            if run_dir and not Path(run_dir).is_dir():
                self.warnings.append(f"run directory {run_dir} no longer exists (retention, or another machine)")
        return found

    def run_for_error(self, error_id: int) -> None:
        cur = self.cursor()
        if cur is None:
            return
        with cur:
            cur.execute(sql("latest_run_for_error"), {"error_id": error_id})
            row = cur.fetchone()
        if row:
            self.load_run(row[0])

    def error_for_run(self) -> None:
        meta = (self.run or {}).get("metadata") or {}
        error_id = (self.run or {}).get("error_id")
        if error_id is None:
            for item in reversed(meta.get("iterations") or []):
                if item.get("error_id") is not None:
                    error_id = item["error_id"]
                    break
        if error_id is not None:
            self.load_error(str(error_id))
        elif self.use_db and self.db_error is None:
            fingerprint = next(
                (i.get("fingerprint") for i in reversed(meta.get("iterations") or []) if i.get("fingerprint")), None
            )
            if fingerprint:
                self.load_error(fingerprint)

    def load_intent(self, ref: str) -> None:
        cur = self.cursor()
        if cur is None:
            raise self.db_error or EscalationError("intents live in Odoo's database: --no-db cannot bundle one")
        with cur:
            if not _exists(cur, "ops.pulser_intents_v1"):
                raise EscalationError(
                    "this database has no intent table (the view ops.pulser_intents_v1): is ipai_pulser_connector "
                    "installed, and is --dsn Odoo's database rather than a separate ops database?",
                    failure_code="INTENT.NOT_FOUND",
                )
            ref_id = int(ref) if ref.isdigit() and len(ref) < 10 else None
            cur.execute(sql("intent"), {"ref": ref, "ref_id": ref_id})
            row = cur.fetchone()
            if row is None:
                raise EscalationError(f"no intent with ref or id {ref!r}", failure_code="INTENT.NOT_FOUND")
            self.intent = row[0]
            if _exists(cur, "ops.pulser_intent_events_v1"):
                cur.execute(sql("intent_events"), {"intent_id": self.intent.get("id")})
                self.intent_events = [r[0] for r in cur.fetchall()]
        envelope = self.intent.get("failure_envelope")
        if isinstance(envelope, dict):
            self.envelope, self.envelope_source = envelope, "ops.pulser_intents_v1.failure_envelope"
        if self.intent.get("ops_error_id"):
            self.load_error(str(self.intent["ops_error_id"]))
        if self.error is None and isinstance(envelope, dict):
            fingerprint = (envelope.get("error") or {}).get("fingerprint")
            if fingerprint:
                self.load_error(fingerprint)

    # ------------------------------------------------------------------ the envelope

    def run_envelope(self) -> None:
        """The run's own last failed attempt's envelope (the file), if still on disk."""
        meta = (self.run or {}).get("metadata") or {}
        wanted = (self.error or {}).get("fingerprint")
        for item in reversed(meta.get("iterations") or []):
            path = item.get("envelope")
            if not path or (wanted and item.get("fingerprint") not in (None, wanted)):
                continue
            warned = len(self.warnings)
            found = self.run_file(
                path, item.get("attempt"), "envelope.json", "envelope file", limit=_MAX_ENVELOPE_BYTES
            )
            if found is None or found[2]:
                if len(self.warnings) == warned:
                    self.warnings.append(f"envelope file {path} is gone")
                continue
            try:
                self.envelope = json.loads(found[0].decode("utf-8"))
                self.envelope_source = path
                return
            except ValueError:
                self.warnings.append(f"envelope file {path} is unreadable")
        if self.envelope is None and self.error and isinstance(self.error.get("sample"), dict):
            self.envelope = self.error["sample"]
            self.envelope_source = "ops.agent_errors.sample (the newest occurrence of the fingerprint)"


def _agent_settings(meta: dict[str, Any]) -> dict[str, Any]:
    """The coding agent's provider settings by name (``AGENT_*``, ``CODING_AGENT_CMD``: set or
    empty, never a value), and the model and time limit the run had."""
    variables = (meta.get("settings") or {}).get("variables")
    named = {
        str(name): EMPTY if value in (None, "", EMPTY) else SET
        for name, value in (variables.items() if isinstance(variables, dict) else ())
        if str(name).startswith("AGENT_") or name in SETTINGS_NAMES
    }
    return {
        "variables": named,
        "model": meta.get("model"),
        "timeout_seconds": meta.get("timeout_seconds"),
        "max_attempts": meta.get("max_attempts"),
    }


def _verification_summary(report: Any) -> dict[str, Any] | None:
    """Which iteration was verified and how it went (the checks and their evidence are in run.json)."""
    if not isinstance(report, dict):
        return None
    keys = ("attempt", "status", "total", "passed", "failed", "failed_checks")
    return {k: report.get(k) for k in keys}


def _output_summary(slot: Any) -> dict[str, Any] | None:
    if not isinstance(slot, dict):
        return None
    return {k: slot.get(k) for k in ("attempt", "present", "schema", "valid", "errors")}


def _manifest(g: _Gather, *, kind: str, ref: str, now: datetime) -> dict[str, Any]:
    run = g.run or {}
    meta = run.get("metadata") or {}
    error = g.error or {}
    intent = g.intent or {}
    envelope = g.envelope or {}
    env_error = envelope.get("error") or {}
    env_context = envelope.get("context") or {}
    code = (
        error.get("code")
        or env_error.get("code")
        or intent.get("failure_code")
        or run.get("code")
        or run.get("error_code")
        or meta.get("code")
    )
    mode = g.registry.get(code) if code else None
    fingerprint = error.get("fingerprint") or env_error.get("fingerprint")
    intent_trace, intent_span = trace_ids(intent.get("traceparent"))
    iterations = meta.get("iterations") or []

    if g.intent is not None:
        command: dict[str, Any] = {
            "intent_type": intent.get("intent_type"),
            "args": intent.get("args"),
            "source": intent.get("source"),
            "idempotency_key": intent.get("idempotency_key"),
        }
    elif g.run is not None:
        command = {"argv": meta.get("argv"), "shell": meta.get("command"), "cwd": meta.get("cwd")}
    else:
        command = {"shell": env_context.get("command")}

    settings = {
        "env": env_context.get("env") or (meta.get("settings") or {}).get("env"),
        "service": env_context.get("service") or error.get("service") or run.get("agent"),
        "service_version": env_context.get("service_version") or error.get("last_service_version"),
        "model": meta.get("model") or (envelope.get("evidence") or {}).get("model"),
        "host": meta.get("host"),
        "variables": (meta.get("settings") or {}).get("variables"),
        "versions": (meta.get("settings") or {}).get("versions"),
        "agent": _agent_settings(meta),
    }
    artifacts: list[dict[str, Any]] = []
    for item in iterations:
        for key in ("stdout_log", "stderr_log", "events_file", "envelope"):
            if item.get(key):
                artifacts.append({"attempt": item.get("attempt"), "kind": key, "path": item[key]})
    return {
        "bundle_version": BUNDLE_VERSION,
        "generator": f"ipai-ops {__version__}",
        "kind": kind,
        "ref": ref,
        "ids": {
            "run_id": run.get("run_id"),
            "intent_ref": intent.get("ref"),
            "intent_id": intent.get("id"),
            "error_id": error.get("id"),
            "fingerprint": fingerprint,
            "trace_id": env_context.get("trace_id")
            or intent_trace
            or meta.get("trace_id")
            or error.get("last_trace_id"),
            "span_id": env_context.get("span_id") or intent_span or error.get("last_span_id"),
            "correlation_id": env_context.get("correlation_id") or intent.get("correlation_id") or run.get("run_id"),
            "occurrence_ids": [i["occurrence_id"] for i in iterations if i.get("occurrence_id")],
            "session_id": meta.get("session_id"),
        },
        "command": command,
        "settings": settings,
        "error": {
            "code": code,
            "title": mode.title if mode else None,
            "category": mode.category if mode else env_error.get("category"),
            "severity": error.get("severity") or env_error.get("severity"),
            "retryable": mode.retryable if mode else env_error.get("retryable"),
            "error_type": error.get("error_type") or env_error.get("error_type"),
            "message": error.get("message") or env_error.get("message"),
            "matched_by": env_error.get("matched_by"),
            "signature": env_error.get("signature"),
            "runbook": (mode.runbook if mode else None) or env_error.get("runbook"),
            "owner": mode.owner if mode else None,
            "status": error.get("status"),
            "count": error.get("count"),
            "show": f"ipai-ops errors show {fingerprint}" if fingerprint else None,
        },
        "status": {"run": run.get("status"), "intent": intent.get("state"), "attempts": len(iterations) or None},
        "verification": _verification_summary(meta.get("verification")),
        "structured_output": _output_summary(meta.get("structured_output")),
        "timestamps": {
            "first_seen": error.get("first_seen"),
            "last_seen": error.get("last_seen"),
            "occurred_at": envelope.get("occurred_at"),
            "started_at": run.get("started_at") or intent.get("started_at"),
            "finished_at": run.get("finished_at") or intent.get("finished_at"),
            "intent_created_at": intent.get("created_at"),
            "bundled_at": iso_utc(now),
        },
        "artifacts": {
            "run_dir": (meta.get("artifacts") or {}).get("run_dir") or run.get("run_dir"),
            "files": artifacts,
        },
        "sources": {"run": g.run_source, "envelope": g.envelope_source},
    }


_README = """\
Escalation bundle ({kind} {ref}), made by ipai-ops on {bundled_at}.

Failure: {code}{title}
Owner team: {owner}.  Runbook: {runbook}

What to do with it
  1. Attach this archive to the escalation for the owner team above (docs/runbooks/index.md,
     "Escalation"). It holds the evidence that section asks for: manifest.json (ids, the
     command as run, settings, the typed error, UTC timestamps, artifact paths),
     envelope.json, error.json, the run or intent record, and the logs still on disk (logs/).
  2. Check the envelope:      ipai-ops envelope validate envelope.json
     See the error group:     {show}
  3. Secrets were redacted ([REDACTED:...] markers) from everything in here. Look through
     it anyway before sharing it outside the team.
{problems}
"""


def escalate(
    ref: str,
    *,
    dsn: str | None = None,
    use_db: bool = True,
    out_dir: str | Path | None = None,
    artifacts_dir: str | Path | None = None,
    registry: Registry | None = None,
    max_log_bytes: int = DEFAULT_MAX_LOG_BYTES,
    now: datetime | None = None,
) -> EscalationResult:
    """Write the escalation bundle of ``ref``; raise :class:`EscalationError` when it is unknown."""
    if max_log_bytes < 1024:
        raise EscalationError("the log size limit must be at least 1024 bytes")
    kind, value = parse_ref(ref)
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    g = _Gather(
        dsn=dsn,
        use_db=use_db,
        artifacts_dir=config.run_artifacts_dir(artifacts_dir),
        registry=registry or default_registry(),
    )
    try:
        if kind == "intent":
            g.load_intent(value)
        elif kind == "error":
            if not use_db:
                raise EscalationError(
                    "errors live in the ops database: an error id or fingerprint needs it (no --no-db)"
                )
            if not g.load_error(value):
                if g.db_error is not None:
                    raise g.db_error
                raise EscalationError(f"no error with id or fingerprint {value!r} in ops.agent_errors")
            g.run_for_error(int(g.error["id"]))
            g.run_envelope()
        else:
            if not g.load_run(value):
                if g.db_error is not None:
                    raise g.db_error
                raise EscalationError(
                    f"no run, error or intent {value!r}: not in ops.agent_runs, not under {g.artifacts_dir} "
                    "(an error is a number or fp1:..., an intent is intent:<ref>)"
                    + "".join(f"; {w}" for w in g.warnings)
                )
            g.error_for_run()
            g.run_envelope()
        if g.db_error is not None:
            g.warnings.append(f"TRANSPORT.DATABASE_UNAVAILABLE: {g.db_error}; bundled from the run directory only")
        return _write_bundle(g, kind=kind, ref=ref, value=value, out_dir=out_dir, now=now, max_log_bytes=max_log_bytes)
    finally:
        g.close()


def _write_bundle(
    g: _Gather, *, kind: str, ref: str, value: str, out_dir: str | Path | None, now: datetime, max_log_bytes: int
) -> EscalationResult:
    manifest = _manifest(g, kind=kind, ref=ref, now=now)
    problems = envelope_errors(g.envelope) if g.envelope is not None else ["no failure envelope found"]
    manifest["envelope_problems"] = problems
    files: dict[str, bytes] = {}

    def dump(value: Any) -> bytes:
        return _dump(g.secrets.mask_obj(_clean(value)))

    if g.envelope is not None:
        files["envelope.json"] = dump(g.envelope)
    if g.error is not None:
        files["error.json"] = dump(g.error)
    if g.run is not None:
        files["run.json"] = dump(g.run)
    if g.intent is not None:
        files["intent.json"] = dump({"intent": g.intent, "events": g.intent_events})

    copied, missing = [], []
    meta = (g.run or {}).get("metadata") or {}
    for item in meta.get("iterations") or []:
        attempt = str(item.get("attempt", "x"))
        stdout_log = item.get("stdout_log")
        if not stdout_log or not isinstance(stdout_log, str):
            continue
        base = os.path.dirname(stdout_log)
        run_dir = g.run_dir()
        if run_dir is None or os.path.normpath(base) != str(run_dir / attempt):
            g.warnings.append(f"logs in {base} are outside the run directory {run_dir or g.artifacts_dir}: not copied")
            continue
        for name in ATTEMPT_FILES:
            path = os.path.join(base, name)
            member = f"logs/{attempt}/{name}"
            found = g.run_file(path, attempt, name, "log file", limit=max_log_bytes)
            if found is None:
                if name in ("stdout.log", "stderr.log") or item.get("envelope") == path:
                    missing.append(path)
                continue
            data, size, cut = found
            redactor = LineRedactor(g.secrets)
            files[member] = redactor.feed(data) + redactor.flush()
            copied.append({"path": path, "member": member, "bytes": size, "truncated": cut})
    manifest["artifacts"]["copied"] = copied
    manifest["artifacts"]["missing"] = missing
    manifest["warnings"] = g.warnings

    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", value).strip("-")[:80] or "x"
    name = f"escalation-{kind}-{safe}-{stamp}"
    target_dir = Path(out_dir).expanduser() if out_dir else Path.cwd()
    try:
        target_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # FileExistsError too: the path is a file
        raise EscalationError(f"cannot write the bundle to {target_dir}: {exc.strerror}") from None
    path = (target_dir / f"{name}.tar.gz").resolve()
    counter = 1
    while path.exists():
        counter += 1
        path = (target_dir / f"{name}-{counter}.tar.gz").resolve()

    err = manifest["error"]
    files["README.txt"] = _README.format(
        kind=kind,
        ref=redact(ref),
        bundled_at=manifest["timestamps"]["bundled_at"],
        code=err["code"] or "(no typed error found)",
        title=f": {err['title']}" if err.get("title") else "",
        owner=err.get("owner") or "unknown (no registry entry)",
        runbook=err.get("runbook") or "docs/runbooks/index.md",
        show=err.get("show") or "ipai-ops errors list",
        problems=(
            "\nThe envelope has problems (see manifest.json, envelope_problems):\n"
            + "".join(f"  - {p}\n" for p in problems)
            if problems
            else ""
        ),
    ).encode("utf-8")
    manifest["members"] = sorted([*files, "manifest.json"])
    files["README.txt"] = g.secrets.mask_bytes(files["README.txt"])
    files["manifest.json"] = dump(manifest)

    mtime = now.timestamp()
    try:
        with tarfile.open(path, "w:gz") as archive:
            for member in [
                "manifest.json",
                "README.txt",
                *sorted(k for k in files if k not in ("manifest.json", "README.txt")),
            ]:
                data = files[member]
                info = tarfile.TarInfo(f"{name}/{member}")
                info.size = len(data)
                info.mtime = mtime
                info.mode = 0o644
                archive.addfile(info, io.BytesIO(data))
    except OSError as exc:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)  # no half-written archive left to be attached
        raise EscalationError(f"cannot write the bundle {path}: {exc.strerror or exc}") from None
    return EscalationResult(
        path, kind, json.loads(files["manifest.json"]), [f"{name}/{m}" for m in manifest["members"]]
    )


def _dump(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False) + "\n").encode("utf-8")
