"""The agent-run recorder: run a command, keep everything it said, type how it ended.

What a run keeps, when its row is written, and how it behaves without the database:
docs/agent_runs.md ("What one run keeps", "Without the database"). The options of one run
are a :class:`~ipai_ops.runs.spec.RunSpec`; its files are named in :mod:`ipai_ops.runs.layout`;
its record's format is :mod:`ipai_ops.runs.record`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shlex
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, BinaryIO

import psycopg2
import psycopg2.extensions

from ipai_ops import config, store
from ipai_ops.classify import classify
from ipai_ops.envelope import build_envelope, iso_utc
from ipai_ops.registry import Registry, default_registry
from ipai_ops.retry import Decision, RetryPolicy, decide
from ipai_ops.runs._sql import sql
from ipai_ops.runs.capture import DEFAULT_MAX_OUTPUT_BYTES, CappedLog, binary_sink, run_process
from ipai_ops.runs.context import deployment_env, redact_argv, settings_snapshot, trace_context
from ipai_ops.runs.events import EVENTS_CODE_INVALID, EventSummary, parse_events
from ipai_ops.runs.layout import AttemptDir, RunDir, new_run_id, prune_runs, write_json
from ipai_ops.runs.outcome import Outcome, program_name, type_outcome
from ipai_ops.runs.record import RESERVED_METADATA, RUN_RECORD_VERSION, Iteration, RunResult
from ipai_ops.runs.results import OutputSchema, structured_output, verdict, verification_report
from ipai_ops.runs.secrets import SecretValues
from ipai_ops.runs.spec import RunSetupError, RunSpec
from ipai_ops.store import ErrorOccurrence, OpsDatabaseUnavailable, connect, upsert_error
from ipai_ops.text import first_line, redact, redact_obj

log = logging.getLogger(__name__)

SOURCE = "agent"
DEFAULT_RETENTION_DAYS = 14
DEFAULT_KILL_GRACE = 5.0
_NO_VARIANT = "no variant_id (--variant-id, IPAI_OPS_RUN_VARIANT_ID or a metadata event): not comparable in A/B"


def _env_number(name: str, kind: type, default: Any) -> Any:
    text = os.environ.get(name)
    if text in (None, ""):
        return default
    try:
        value = kind(text)
    except ValueError:
        raise RunSetupError(f"{name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise RunSetupError(f"{name}={text!r} is not a finite number")
    return value


def _utc(moment: float) -> str:
    return iso_utc(datetime.fromtimestamp(moment, timezone.utc))


# --------------------------------------------------------------------------- the recorder


class _Database:
    """The recorder's connection: optional, and never a reason for the run to stop."""

    def __init__(self, dsn: str | None, enabled: bool, warn: Callable[[str], None]):
        self.dsn = dsn
        #: ``disabled`` for good when not enabled; else ``written`` or ``unavailable``.
        self.state = "disabled" if not enabled else "written"
        self._warn = warn
        self._conn = None
        self._warned = False

    def _fail(self, exc: BaseException) -> None:
        self.state = "unavailable"
        self.close()
        if self._warned:
            return
        self._warned = True
        if store.unavailable(exc) is not None:
            first = first_line(exc, "connection failed")
            self._warn(f"TRANSPORT.DATABASE_UNAVAILABLE: {first}; the run is recorded on disk only")
        else:
            first = first_line(exc, "database error")
            hint = " (is the ops schema migrated? ipai-ops db migrate)" if "does not exist" in first else ""
            self._warn(f"the ops database refused the run record: {first}{hint}; the run is recorded on disk only")

    def connection(self):
        if self.state != "written":
            return None
        if self._conn is None or self._conn.closed:
            try:
                self._conn = connect(self.dsn, application_name="ipai-ops run", connect_timeout=3)
            except OpsDatabaseUnavailable as exc:
                self._fail(exc)
                return None
        return self._conn

    def run(self, work: Callable[[Any], Any]) -> Any:
        conn = self.connection()
        if conn is None:
            return None
        try:
            result = work(conn)
        except (OpsDatabaseUnavailable, psycopg2.Error) as exc:
            with contextlib.suppress(Exception):
                conn.rollback()
            self._fail(exc)
            return None
        self.state = "written"
        return result

    def revive(self) -> None:
        """Allow one more connection attempt (the run's last sync); no second warning if it fails."""
        if self.state == "unavailable":
            self.state = "written"

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None


class RunRecorder:
    """Records runs of commands. Options here are per recorder; :meth:`run` takes per-run ones.

    ``stdout``/``stderr`` are where the command's output is teed (default: this process's
    own streams; ``quiet=True`` tees nothing). ``sleep`` and ``rng`` are injectable for
    tests; ``retry_delay_cap=0`` retries without waiting.
    """

    def __init__(
        self,
        *,
        dsn: str | None = None,
        use_db: bool = True,
        artifacts_dir: str | os.PathLike[str] | None = None,
        registry: Registry | None = None,
        max_output_bytes: int | None = None,
        retention_days: int | None = None,
        retry_delay_cap: float | None = None,
        kill_grace: float = DEFAULT_KILL_GRACE,
        quiet: bool = False,
        stdout: IO[Any] | None = None,
        stderr: IO[Any] | None = None,
        source: str = SOURCE,
        warn: Callable[[str], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ):
        self.dsn = dsn
        self.use_db = use_db
        self.artifacts_dir = config.run_artifacts_dir(artifacts_dir)
        self.registry = registry
        self.max_output_bytes = (
            max_output_bytes
            if max_output_bytes is not None
            else _env_number(config.IPAI_OPS_RUN_MAX_OUTPUT_BYTES, int, DEFAULT_MAX_OUTPUT_BYTES)
        )
        self.retention_days = (
            retention_days
            if retention_days is not None
            else _env_number(config.IPAI_OPS_RUN_RETENTION_DAYS, int, DEFAULT_RETENTION_DAYS)
        )
        self.retry_delay_cap = (
            retry_delay_cap
            if retry_delay_cap is not None
            else _env_number(config.IPAI_OPS_RUN_RETRY_DELAY_CAP, float, None)
        )
        if self.max_output_bytes < 1024:
            raise RunSetupError("max output bytes must be at least 1024")
        if self.retention_days < 1:
            raise RunSetupError("retention must be at least 1 day")
        if self.retry_delay_cap is not None and self.retry_delay_cap < 0:
            raise RunSetupError("the retry delay cap must be >= 0 seconds")
        if kill_grace < 0:
            raise RunSetupError("the kill grace must be >= 0 seconds")
        if use_db:
            try:
                store.check_dsn(config.dsn(dsn))
            except store.InvalidDsn as exc:
                raise RunSetupError(str(exc)) from None
        self.kill_grace = kill_grace
        self.quiet = quiet
        self._stdout = stdout
        self._stderr = stderr
        self.source = source
        self._warn_fn = warn
        self._sleep = sleep
        self._rng = rng

    # ------------------------------------------------------------------ small parts

    def _warn(self, message: str) -> None:
        # Not log.warning: without logging configured that would print the line twice.
        log.info("warning: %s", message)
        if self._warn_fn is not None:
            self._warn_fn(message)
        else:
            print(f"ipai-ops run: warning: {message}", file=sys.stderr)

    def _tees(self) -> tuple[BinaryIO | None, BinaryIO | None]:
        if self.quiet:
            return None, None
        return binary_sink(self._stdout or sys.stdout), binary_sink(self._stderr or sys.stderr)

    def prune(self, *, older_than_days: int | None = None, keep: Iterable[str] = ()) -> list[Path]:
        return prune_runs(self.artifacts_dir, older_than_days=older_than_days or self.retention_days, keep=keep)

    # ------------------------------------------------------------------ the run

    def run(self, spec: RunSpec | Sequence[str], /, **options: Any) -> RunResult:
        """Run ``spec`` (a :class:`RunSpec`, or an argv and its options) retrying transient failures,
        and record it. Raises only :class:`RunSetupError`."""
        spec = RunSpec.of(spec, **options)
        run_id = spec.run_id or new_run_id()
        environ = dict(os.environ if spec.env is None else spec.env)
        spec = RunSpec.of(
            spec,
            run_id=run_id,
            agent=spec.agent or program_name(spec.argv),
            variant_id=spec.variant_id or environ.get(config.IPAI_OPS_RUN_VARIANT_ID) or None,
            cwd=str(Path(spec.cwd).resolve()) if spec.cwd else os.getcwd(),
            env=environ,
            metadata=dict(spec.metadata or {}),
        )
        registry = self.registry or default_registry()
        schema = OutputSchema.load(spec.output_schema) if spec.output_schema is not None else None
        run_dir = RunDir.create(self.artifacts_dir, run_id)
        db = _Database(self.dsn, self.use_db, self._warn)
        if self.use_db:
            taken = db.run(lambda conn: _run_exists(conn, run_id))
            if taken:
                run_dir.remove()
                db.close()
                raise RunSetupError(f"run id {run_id!r} is already in ops.agent_runs; choose a new one")
        removed = self.prune(keep={run_id})
        if removed:
            log.info("retention: removed %s run director%s", len(removed), "y" if len(removed) == 1 else "ies")
        try:
            return _Run(
                recorder=self, registry=registry, db=db, spec=spec, run_dir=run_dir, output_schema=schema
            ).execute()
        finally:
            db.close()


def _run_exists(conn, run_id: str) -> bool:
    with conn, conn.cursor() as cur:
        cur.execute("SELECT 1 FROM ops.agent_runs WHERE run_id = %s", (run_id,))
        return cur.fetchone() is not None


class _Run:
    """The state of one run while it executes (private: RunRecorder.run is the API)."""

    def __init__(
        self,
        *,
        recorder: RunRecorder,
        registry: Registry,
        db: _Database,
        spec: RunSpec,
        run_dir: RunDir,
        output_schema: OutputSchema | None = None,
    ):
        self.r = recorder
        self.registry = registry
        self.db = db
        #: Resolved by RunRecorder.run: run_id, agent, cwd and env are set.
        self.spec = spec
        self.run_id: str = spec.run_id  # type: ignore[assignment]
        self.run_dir = run_dir
        environ: Mapping[str, str] = spec.env  # type: ignore[assignment]
        self.environ = environ
        #: The values of the environment's secret-named variables: masked in everything kept.
        self.secrets = SecretValues.from_environ(environ)
        # Fixed for the run: computed once, not on every save (start, each attempt, end).
        self.redacted_argv = redact_argv([self.secrets.mask(word) for word in spec.argv])
        self.command = shlex.join(self.redacted_argv)
        self.host = socket.gethostname()
        self.started = time.time()
        self.started_mono = time.monotonic()
        self.traceparent, self.trace_id, self.span_id = trace_context(environ)
        self.env_name = deployment_env(environ)
        self.settings = settings_snapshot(environ, self.env_name)
        self.output_schema = output_schema
        #: The agent session the next attempt resumes: given, then the last one reported.
        self.session_id = spec.session_id.strip() if spec.session_id else None
        self.iterations: list[Iteration] = []
        self.events = EventSummary()
        self.warnings: list[str] = []
        self.status = "running"
        self.finished: float | None = None
        self.duration_ms: int | None = None
        self.error_id: int | None = None
        self.code: str | None = None
        self.exit_status = 0
        # Keys a caller passes in ``metadata`` go first; the recorder's own win.
        self.extra = {k: v for k, v in redact_obj(dict(spec.metadata or {})).items() if k not in RESERVED_METADATA}

    # ------------------------------------------------------------------ record

    def metadata(self) -> dict[str, Any]:
        last = self.iterations[-1] if self.iterations else None
        meta: dict[str, Any] = {
            **self.extra,
            **self.events.metadata,
            "record_version": RUN_RECORD_VERSION,
            "variant_id": self.effective_variant_id,
            "argv": list(self.redacted_argv),
            "command": self.command,
            "cwd": self.spec.cwd,
            "host": self.host,
            "kind": self.spec.kind,
            "model": self.spec.model or self.events.model,
            "models": self.events.models,
            "timeout_seconds": self.spec.timeout,
            "max_attempts": self.spec.max_attempts,
            "trace_id": self.trace_id,
            "session_id": self.session_id,
            "verification": next((i.verification for i in reversed(self.iterations) if i.verification), None),
            "structured_output": next(
                (i.structured_output for i in reversed(self.iterations) if i.structured_output), None
            ),
            "settings": self.settings,
            "attempts": len(self.iterations),
            "iterations": [i.as_dict() for i in self.iterations],
            "exit_code": last.exit_code if last else None,
            "exit_status": last.exit_status if last else None,
            "code": self.code,
            "artifacts": {"run_dir": str(self.run_dir.path)},
            "warnings": self.all_warnings(),
            **self.events.as_metadata(),
        }
        return meta

    def result(self) -> RunResult:
        return RunResult(
            run_id=self.run_id,
            status=self.status,
            code=self.code,
            exit_status=self.exit_status,
            run_dir=self.run_dir.path,
            started_at=_utc(self.started),
            finished_at=_utc(self.finished) if self.finished else None,
            duration_ms=self.duration_ms,
            agent=self.spec.agent,
            source=self.r.source,
            task_ref=self.spec.task_ref,
            error_id=self.error_id,
            iterations=list(self.iterations),
            metadata=self.secrets.mask_obj(self.metadata()),
            db=self.db.state,
            warnings=self.secrets.mask_obj(self.all_warnings()),
        )

    @property
    def effective_variant_id(self) -> str | None:
        from_events = self.events.metadata.get("variant_id")
        return self.spec.variant_id or (str(from_events) if from_events not in (None, "") else None)

    def all_warnings(self) -> list[str]:
        if self.effective_variant_id is None:
            return [*self.warnings, _NO_VARIANT]
        return list(self.warnings)

    def save(self) -> RunResult:
        """Write the record so far to run.json and ops.agent_runs."""
        result = self.result()
        params = {
            "run_id": self.run_id,
            "source": self.r.source,
            "agent": self.spec.agent,
            "task_ref": self.spec.task_ref,
            "status": self.status,
            "started_at": result.started_at,
            "finished_at": result.finished_at,
            "duration_ms": result.duration_ms,
            "error_id": self.error_id,
            "metadata": json.dumps(result.metadata, default=str),
        }

        def work(conn):
            with conn, conn.cursor() as cur:
                cur.execute(sql("upsert_run"), params)

        self.db.run(work)
        result.db = self.db.state
        write_json(self.run_dir.run_file, result.as_dict())
        return result

    # ------------------------------------------------------------------ attempts

    def child_env(self, attempt: int, attempt_dir: AttemptDir) -> dict[str, str]:
        env = dict(self.environ)
        env[config.IPAI_RUN_ID] = self.run_id
        env[config.IPAI_RUN_ATTEMPT] = str(attempt)
        env[config.IPAI_RUN_EVENTS] = str(attempt_dir.events_file)
        env[config.IPAI_RUN_DIR] = str(attempt_dir.path)
        if self.traceparent:
            env[config.TRACEPARENT] = self.traceparent
        if self.session_id:
            env[config.IPAI_RUN_SESSION_ID] = self.session_id
        return env

    def execute(self) -> RunResult:
        self.save()
        attempt = 0
        interrupted = False
        while True:
            attempt += 1
            item, decision = self.attempt(attempt)
            self.iterations.append(item)
            self.status = "running" if decision and decision.retry else item.status
            self.save()
            if not (decision and decision.retry):
                break
            delay = decision.delay_seconds
            if self.r.retry_delay_cap is not None:
                delay = min(delay, self.r.retry_delay_cap)
            log.info("run %s: %s; retrying in %.1fs", self.run_id, decision.reason, delay)
            if delay > 0:
                try:
                    self.r._sleep(delay)
                except KeyboardInterrupt:  # Ctrl-C while waiting to retry: the run is cancelled
                    interrupted = True
                    self.warnings.append(f"cancelled by SIGINT before attempt {attempt + 1}")
                    break
        last = self.iterations[-1]
        self.finished = time.time()
        self.duration_ms = int((time.monotonic() - self.started_mono) * 1000)
        self.status = "cancelled" if interrupted else last.status
        self.exit_status = 128 + signal.SIGINT if interrupted else last.exit_status
        self.code = last.code
        # A database that went away during the run gets one more try, and then the whole
        # run: the errors it missed (same occurrence ids: nothing counts twice) and the row.
        if self.db.state == "unavailable":
            self.db.revive()
            self.sync_errors()
        self.error_id = last.error_id if last.status == "failed" else None  # kept when cancelled mid-retry
        return self.save()

    def sync_errors(self) -> None:
        for item in self.iterations:
            for path, attr in ((item.envelope, "error_id"), (item.events_envelope, "events_error_id")):
                if not path or getattr(item, attr) is not None or self.db.state == "unavailable":
                    continue
                envelope = json.loads(Path(path).read_text(encoding="utf-8"))
                setattr(item, attr, self._write_error(envelope, envelope["context"]["occurrence_id"]))

    def attempt(self, attempt: int) -> tuple[Iteration, Decision | None]:
        attempt_dir = self.run_dir.attempt(attempt)
        tee_out, tee_err = self.r._tees()
        out = CappedLog(attempt_dir.stdout_log, max_bytes=self.r.max_output_bytes, tee=tee_out, secrets=self.secrets)
        err = CappedLog(attempt_dir.stderr_log, max_bytes=self.r.max_output_bytes, tee=tee_err, secrets=self.secrets)
        started = time.time()
        try:
            proc = run_process(
                self.spec.argv,
                stdout=out,
                stderr=err,
                env=self.child_env(attempt, attempt_dir),
                cwd=self.spec.cwd,
                timeout=self.spec.timeout,
                kill_grace=self.r.kill_grace,
            )
        finally:
            out.close()
            err.close()
        finished = time.time()
        summary = parse_events(attempt_dir.events_file, reserved=RESERVED_METADATA - {"variant_id"})
        self.events.merge(summary)
        session_id = summary.session_id or self.session_id
        self.session_id = session_id
        verification = verification_report(summary, attempt)
        output = structured_output(summary, self.output_schema, attempt, self.secrets)
        outcome = type_outcome(
            self.registry,
            argv=self.spec.argv,
            returncode=proc.returncode,
            timed_out=proc.timed_out,
            timeout_seconds=self.spec.timeout,
            spawn_error=proc.spawn_error,
            cancelled_by=proc.cancelled_by,
            kind=self.spec.kind,
            stdout_text=out.raw_tail(),
            stderr_text=err.raw_tail(),
        )
        rejected = verdict(verification, output) if outcome.status == "succeeded" else None
        if rejected is not None:
            # The command exited 0 but its result is rejected: exit 1, so a CI step stops too.
            outcome = Outcome(
                "failed",
                1,
                rejected.reason,
                classify(self.registry, explicit_code=rejected.code),
                rejected.message,
                rejected.error_type,
                kind=outcome.kind,
            )
        item = Iteration(
            attempt=attempt,
            started_at=_utc(started),
            finished_at=_utc(finished),
            duration_ms=proc.duration_ms,
            status=outcome.status,
            exit_code=proc.returncode,
            exit_status=outcome.exit_status,
            code=outcome.code,
            typed_by=outcome.reason,
            message=redact(self.secrets.mask(outcome.message or "")) or None,
            stdout_log=str(out.path),
            stderr_log=str(err.path),
            events_file=str(attempt_dir.events_file),
            output={"stdout": out.stats(), "stderr": err.stats(), "max_bytes": self.r.max_output_bytes},
            timed_out=proc.timed_out,
            signal=outcome.signal,
            pid=proc.pid,
            kind=outcome.kind,
            tokens=summary.tokens_or_none(),
            tool_call_count=summary.tool_call_count,
            model=self.spec.model or summary.model,
            warnings=[redact(w) or w for w in proc.warnings],
            session_id=session_id,
            verification=verification,
            structured_output=output,
        )
        for warning in proc.warnings:
            self.warnings.append(f"attempt {attempt}: {warning}")
        decision = None
        if outcome.failed:
            self.record_failure(item, outcome=outcome, out=out, err=err, summary=summary, attempt_dir=attempt_dir)
            assert outcome.classification is not None
            if outcome.classification.mode.retryable:
                decision = decide(
                    outcome.classification.mode,
                    attempt,
                    max_attempts=self.spec.max_attempts,
                    base=RetryPolicy(),
                    rng=self.r._rng,
                )
            else:
                decision = Decision(False, 0.0, f"{outcome.code} is not retryable")
            item.retry = {
                "retry": decision.retry,
                "delay_seconds": round(decision.delay_seconds, 3),
                "reason": decision.reason,
            }
        if summary.unusable:
            self.record_unusable_events(item, summary, attempt_dir)
        return item, decision

    # ------------------------------------------------------------------ failures

    def context(self, attempt: int, occurrence_id: str) -> dict[str, Any]:
        return {
            "source": self.r.source,
            "service": self.spec.agent,
            "attempt": attempt,
            "occurrence_id": occurrence_id,
            "correlation_id": self.run_id,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "env": self.env_name,
            "run_id": self.run_id,
            "task_ref": self.spec.task_ref,
            "variant_id": self.effective_variant_id,
            "command": self.command,
            "session_id": self.session_id,
        }

    def _write_error(self, envelope: dict[str, Any], occurrence_id: str) -> int | None:
        occurrence = ErrorOccurrence.from_envelope(
            envelope,
            source=self.r.source,
            occurrence_id=occurrence_id,
            service=self.spec.agent,
            trace_id=self.trace_id,
            span_id=self.span_id,
        )
        upserted = self.db.run(lambda conn: upsert_error(conn, occurrence))
        return upserted.error_id if upserted is not None else None

    def record_failure(
        self,
        item: Iteration,
        *,
        outcome: Outcome,
        out: CappedLog,
        err: CappedLog,
        summary: EventSummary,
        attempt_dir: AttemptDir,
    ) -> None:
        assert outcome.classification is not None
        occurrence_id = f"{self.run_id}:{item.attempt}"
        program = program_name(self.spec.argv)
        envelope = build_envelope(
            outcome.classification,
            message=self.secrets.mask(outcome.message or ""),
            error_type=outcome.error_type,
            # One group per (agent, program, code): "1 failed" in two suites are two problems.
            frames=(f"{self.spec.agent}:{program}",),
            context=self.context(item.attempt, occurrence_id),
            details={
                "run_id": self.run_id,
                "attempt": item.attempt,
                "argv": list(self.redacted_argv),
                "cwd": self.spec.cwd,
                "typed_by": outcome.reason,
                "kind": outcome.kind,
                "signal": outcome.signal,
                "timed_out": item.timed_out,
                "timeout_seconds": self.spec.timeout,
                "output": item.output,
                "event_warnings": summary.warnings,
            },
            evidence={
                "exit_code": item.exit_code,
                "duration_ms": item.duration_ms,
                "stdout_tail": out.redacted_tail() or None,
                "stderr_tail": err.redacted_tail() or None,
                "tool_calls": summary.tool_calls,
                "tokens": summary.tokens_or_none(),
                "model": item.model,
                "artifacts": [item.stdout_log, item.stderr_log, item.events_file],
                "verification": item.verification,
                # Whether and why the output failed its schema; the data itself stays in the run record.
                "structured_output": (
                    {k: v for k, v in item.structured_output.items() if k != "data"} if item.structured_output else None
                ),
            },
            occurred_at=item.finished_at,
            previous_message=None if outcome.previous_message is None else self.secrets.mask(outcome.previous_message),
        )
        # Tool calls and event warnings come from the command: it may have echoed a secret.
        envelope = self.secrets.mask_obj(envelope)
        write_json(attempt_dir.envelope, envelope)
        item.envelope = str(attempt_dir.envelope)
        item.fingerprint = envelope["error"]["fingerprint"]
        item.occurrence_id = occurrence_id
        item.message = envelope["error"]["message"]
        item.error_id = self._write_error(envelope, occurrence_id)

    def record_unusable_events(self, item: Iteration, summary: EventSummary, attempt_dir: AttemptDir) -> None:
        """Events were written but none was usable: AGENT.RUN_METADATA_INVALID (the run's evidence is lost)."""
        occurrence_id = f"{self.run_id}:{item.attempt}:events"
        envelope = build_envelope(
            classify(self.registry, explicit_code=EVENTS_CODE_INVALID),
            message=f"run events file has {summary.lines} line(s) and none is a valid event",
            error_type="run.events_invalid",
            frames=(f"{self.spec.agent}:events",),
            context=self.context(item.attempt, occurrence_id),
            details={"run_id": self.run_id, "events_file": item.events_file, "warnings": summary.warnings},
            evidence={"duration_ms": item.duration_ms, "artifacts": [item.events_file]},
            occurred_at=item.finished_at,
        )
        envelope = self.secrets.mask_obj(envelope)
        write_json(attempt_dir.events_envelope, envelope)
        item.events_envelope = str(attempt_dir.events_envelope)
        item.events_error_id = self._write_error(envelope, occurrence_id)
        self.warnings.append(f"attempt {item.attempt}: {EVENTS_CODE_INVALID}: no usable line in {item.events_file}")


def record_run(spec: RunSpec | Sequence[str], /, **options: Any) -> RunResult:
    """Run ``spec`` once (plus retries of transient failures) with a new :class:`RunRecorder`.

    Options named like a :class:`RunSpec` field are the run's; the others the recorder's.
    """
    names = RunSpec.option_names()
    per_run = {k: v for k, v in options.items() if k in names}
    recorder = RunRecorder(**{k: v for k, v in options.items() if k not in names})
    return recorder.run(spec, **per_run)
