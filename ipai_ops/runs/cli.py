"""Commands ``run`` and ``escalate`` of ``ipai-ops`` (wiring only; the logic is in the sibling modules).

``ipai-ops run`` exits with the command's own status (124 on timeout, 128+n when killed
by signal n, 127/126 when it cannot be started), so it drops into CI scripts unchanged;
2 means the recorder itself was misused and nothing ran.
"""

from __future__ import annotations

import argparse
import sys

from ipai_ops import config
from ipai_ops.cli import CliError, add_dsn_argument, add_format_argument, emit_json, float_in, positive_int
from ipai_ops.runs.capture import DEFAULT_MAX_OUTPUT_BYTES
from ipai_ops.runs.escalate import DEFAULT_MAX_LOG_BYTES
from ipai_ops.runs.outcome import KINDS
from ipai_ops.runs.recorder import DEFAULT_KILL_GRACE, DEFAULT_RETENTION_DAYS

_positive_seconds = float_in(0, low_open=True, unit="seconds")
_non_negative_seconds = float_in(0, unit="seconds")


def _add_artifacts_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--artifacts",
        default=None,
        metavar="DIR",
        help=f"directory holding one directory per run (env {config.IPAI_OPS_RUN_ARTIFACTS}; "
        "default $XDG_STATE_HOME/ipai-ops/runs)",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser(
        "run",
        help="run a command as a recorded agent step: full logs, typed failure, ops.agent_runs, retries",
        description=(
            "Run COMMAND, tee and keep its stdout/stderr (redacted, size-capped), read its events file "
            f"(${config.IPAI_RUN_EVENTS}), type a failure (BUILD.TEST_FAILED, BUILD.TIMEOUT, ...), retry "
            "transient ones, and record it all in ops.agent_runs / ops.agent_errors. Put -- before COMMAND."
        ),
    )
    run.add_argument("--agent", help="agent or service name (default: the program's name, e.g. pytest)")
    run.add_argument(
        "--variant-id",
        default=None,
        help=f"agent variant for A/B comparison, stored as metadata.variant_id (env {config.IPAI_OPS_RUN_VARIANT_ID})",
    )
    run.add_argument("--task-ref", help="the task this run works on (ops.agent_runs.task_ref)")
    run.add_argument("--model", help="the model the agent uses (default: the one its usage events name)")
    run.add_argument(
        "--kind",
        choices=KINDS,
        help="what COMMAND is, when its name does not say (types a non-zero exit as that BUILD code)",
    )
    run.add_argument("--timeout", type=_positive_seconds, metavar="SECONDS", help="kill the command after this long")
    run.add_argument(
        "--kill-grace",
        type=_non_negative_seconds,
        default=DEFAULT_KILL_GRACE,
        metavar="SECONDS",
        help=f"on timeout, SIGTERM then SIGKILL after this long (default {DEFAULT_KILL_GRACE:g})",
    )
    run.add_argument(
        "--max-attempts",
        type=positive_int,
        metavar="N",
        help="attempts in all when the failure is retryable (default: the failure mode's max_attempts)",
    )
    run.add_argument(
        "--retry-delay-cap",
        type=_non_negative_seconds,
        default=None,
        metavar="SECONDS",
        help=f"longest wait before a retry; 0 retries at once (env {config.IPAI_OPS_RUN_RETRY_DELAY_CAP})",
    )
    run.add_argument("--run-id", help="record under this run id (default run-<UTC stamp>-<random>)")
    run.add_argument(
        "--session-id",
        help="the agent session to resume, passed as $IPAI_RUN_SESSION_ID (a session event changes it for retries)",
    )
    run.add_argument(
        "--output-schema",
        metavar="FILE",
        help="JSON Schema the agent's structured output (an output event) must meet; "
        "otherwise the attempt is AGENT.OUTPUT_SCHEMA_INVALID",
    )
    _add_artifacts_argument(run)
    run.add_argument(
        "--max-output-bytes",
        type=positive_int,
        default=None,
        metavar="N",
        help=f"bytes kept on disk per stream and attempt, head and tail (env {config.IPAI_OPS_RUN_MAX_OUTPUT_BYTES}; "
        f"default {DEFAULT_MAX_OUTPUT_BYTES})",
    )
    run.add_argument(
        "--retention-days",
        type=positive_int,
        default=None,
        metavar="DAYS",
        help="run directories older than this are deleted when a run starts "
        f"(env {config.IPAI_OPS_RUN_RETENTION_DAYS}; default {DEFAULT_RETENTION_DAYS})",
    )
    run.add_argument("--prune", action="store_true", help="only delete run directories older than --retention-days")
    run.add_argument("--quiet", action="store_true", help="do not tee the command's output to the terminal")
    run.add_argument("--no-db", action="store_true", help="record on disk only (no ops.agent_runs row)")
    add_dsn_argument(run)
    add_format_argument(run)
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="COMMAND", help="-- then the command and its args")
    run.set_defaults(handler=cmd_run)

    esc = subparsers.add_parser(
        "escalate",
        help="write the evidence bundle (.tar.gz) of a run, an error or an intent for the owner team",
        description=(
            "Bundle a failure's evidence as the runbooks' Escalation section asks: ids, the command as run, "
            "settings (redacted), the typed error, envelope, timestamps and logs. Prints the archive's path."
        ),
    )
    esc.add_argument("ref", metavar="ID", help="a run id, an error id or fp1: fingerprint, or intent:<ref or id>")
    esc.add_argument("--out", default=None, metavar="DIR", help="directory to write the archive to (default: .)")
    _add_artifacts_argument(esc)
    esc.add_argument(
        "--max-log-bytes",
        type=positive_int,
        default=DEFAULT_MAX_LOG_BYTES,
        metavar="N",
        help=f"bytes copied per log file, head and tail (default {DEFAULT_MAX_LOG_BYTES})",
    )
    esc.add_argument("--no-db", action="store_true", help="bundle a run from its run directory only")
    add_dsn_argument(esc)
    add_format_argument(esc)
    esc.set_defaults(handler=cmd_escalate)


def cmd_run(args: argparse.Namespace) -> int:
    from ipai_ops.runs.recorder import RunRecorder
    from ipai_ops.runs.spec import RunSetupError, RunSpec

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    try:
        recorder = RunRecorder(
            dsn=args.dsn,
            use_db=not args.no_db,
            artifacts_dir=args.artifacts,
            max_output_bytes=args.max_output_bytes,
            retention_days=args.retention_days,
            retry_delay_cap=args.retry_delay_cap,
            kill_grace=args.kill_grace,
            quiet=args.quiet,
            # stdout carries the JSON record: the command's stdout goes to stderr then.
            stdout=sys.stderr if args.format == "json" else sys.stdout,
            stderr=sys.stderr,
        )
        if args.prune:
            if command:
                raise CliError("--prune takes no command")
            removed = recorder.prune()
            if args.format == "json":
                emit_json({"removed": [str(p) for p in removed], "artifacts": str(recorder.artifacts_dir)})
            else:
                print(
                    f"removed {len(removed)} run director{'y' if len(removed) == 1 else 'ies'} older than "
                    f"{recorder.retention_days} day(s) from {recorder.artifacts_dir}"
                )
            return 0
        if not command:
            raise CliError("no command given: ipai-ops run [OPTIONS] -- COMMAND [ARG ...]")
        spec = RunSpec(
            command,
            agent=args.agent,
            variant_id=args.variant_id,
            task_ref=args.task_ref,
            model=args.model,
            kind=args.kind,
            timeout=args.timeout,
            max_attempts=args.max_attempts,
            run_id=args.run_id,
            session_id=args.session_id,
            output_schema=args.output_schema,
        )
        result = recorder.run(spec)
    except RunSetupError as exc:
        raise CliError(str(exc)) from None
    seconds = (result.duration_ms or 0) / 1000
    what = f"{result.status} {result.code}" if result.code else result.status
    error = f"; error {result.error_id}" if result.error_id is not None else ""
    db = "" if result.db == "written" else f"; database {result.db}"
    print(
        f"ipai-ops run: {result.run_id} {what} (exit {result.exit_status}, {result.attempts} attempt(s), "
        f"{seconds:.1f}s); artifacts {result.run_dir}{error}{db}",
        file=sys.stderr,
    )
    if args.format == "json":
        emit_json(result.as_dict())
    return result.exit_status


def cmd_escalate(args: argparse.Namespace) -> int:
    from ipai_ops.runs.escalate import EscalationError, escalate

    try:
        result = escalate(
            args.ref,
            dsn=args.dsn,
            use_db=not args.no_db,
            out_dir=args.out,
            artifacts_dir=args.artifacts,
            max_log_bytes=args.max_log_bytes,
        )
    except EscalationError as exc:
        raise CliError(str(exc), failure_code=exc.failure_code) from None
    for warning in result.manifest.get("warnings") or []:
        print(f"ipai-ops escalate: warning: {warning}", file=sys.stderr)
    if args.format == "json":
        emit_json(result.as_dict())
    else:
        print(result.path)
    return 0
