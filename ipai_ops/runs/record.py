"""The run record: what ``run.json`` and ``ops.agent_runs`` hold (docs/agent_runs.md, "What one run keeps").

:data:`RUN_RECORD_VERSION` is the format's version (``record_version`` in both).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: 2: iterations and metadata gain ``session_id``, ``verification``, ``structured_output``.
RUN_RECORD_VERSION = 2
#: Metadata keys the recorder owns: an events file cannot overwrite them.
RESERVED_METADATA = frozenset(
    {
        "record_version",
        "variant_id",
        "command",
        "argv",
        "cwd",
        "model",
        "models",
        "host",
        "kind",
        "settings",
        "iterations",
        "attempts",
        "exit_code",
        "exit_status",
        "code",
        "tokens",
        "tokens_by_model",
        "tool_calls",
        "tool_call_count",
        "tool_calls_failed",
        "tool_summary",
        "events",
        "event_warnings",
        "artifacts",
        "warnings",
        "timeout_seconds",
        "max_attempts",
        "trace_id",
        "session_id",
        "verification",
        "structured_output",
    }
)


@dataclass
class Iteration:
    """One execution of the command (an attempt)."""

    attempt: int
    started_at: str
    finished_at: str
    duration_ms: int
    status: str
    exit_code: int | None
    exit_status: int
    code: str | None
    typed_by: str
    message: str | None
    stdout_log: str
    stderr_log: str
    events_file: str
    output: dict[str, Any]
    timed_out: bool = False
    signal: str | None = None
    kind: str | None = None
    #: The command's process id (= its process group id: it runs in its own session).
    pid: int | None = None
    envelope: str | None = None
    fingerprint: str | None = None
    occurrence_id: str | None = None
    error_id: int | None = None
    events_envelope: str | None = None
    events_error_id: int | None = None
    tokens: dict[str, int] | None = None
    tool_call_count: int = 0
    model: str | None = None
    retry: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    #: The agent session this attempt ran in (given, or reported by a ``session`` event).
    session_id: str | None = None
    #: The verification report of this attempt (see :mod:`ipai_ops.runs.results`).
    verification: dict[str, Any] | None = None
    #: The JSON the agent returned in this attempt, and whether it validates.
    structured_output: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RunResult:
    """A recorded run: what ``ipai-ops run --format json`` prints and ``run.json`` holds."""

    run_id: str
    status: str
    code: str | None
    exit_status: int
    run_dir: Path
    started_at: str
    finished_at: str | None
    duration_ms: int | None
    agent: str
    source: str
    task_ref: str | None
    error_id: int | None
    iterations: list[Iteration]
    metadata: dict[str, Any]
    #: ``written``, ``disabled`` (use_db=False) or ``unavailable``.
    db: str
    warnings: list[str] = field(default_factory=list)

    @property
    def attempts(self) -> int:
        return len(self.iterations)

    @property
    def exit_code(self) -> int | None:
        return self.iterations[-1].exit_code if self.iterations else None

    @property
    def verification(self) -> dict[str, Any] | None:
        """The newest attempt's verification report (its ``attempt`` names the iteration it verified)."""
        return self.metadata.get("verification")

    @property
    def structured_output(self) -> dict[str, Any] | None:
        return self.metadata.get("structured_output")

    @property
    def session_id(self) -> str | None:
        return self.metadata.get("session_id")

    @property
    def envelope(self) -> dict[str, Any] | None:
        """The last failed attempt's envelope, read back from its file."""
        for item in reversed(self.iterations):
            if item.envelope:
                return json.loads(Path(item.envelope).read_text(encoding="utf-8"))
        return None

    def as_dict(self) -> dict[str, Any]:
        return {
            "record_version": RUN_RECORD_VERSION,
            "run_id": self.run_id,
            "source": self.source,
            "agent": self.agent,
            "task_ref": self.task_ref,
            "status": self.status,
            "code": self.code,
            "exit_status": self.exit_status,
            "exit_code": self.exit_code,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_ms": self.duration_ms,
            "error_id": self.error_id,
            "run_dir": str(self.run_dir),
            "db": self.db,
            "warnings": self.warnings,
            "metadata": self.metadata,
        }
