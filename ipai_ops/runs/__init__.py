"""Agent runs: record a command's run (``ipai-ops run``) and bundle a failure for escalation.

Public API::

    from ipai_ops.runs import record_run, RunRecorder, RunSpec, RunResult, escalate

See docs/agent_runs.md for what is captured, the typing rules and the bundle layout.
"""

from __future__ import annotations

from ipai_ops.runs.escalate import EscalationError, EscalationResult, escalate
from ipai_ops.runs.layout import prune_runs
from ipai_ops.runs.outcome import Outcome, infer_kind, type_outcome
from ipai_ops.runs.record import Iteration, RunResult
from ipai_ops.runs.recorder import RunRecorder, record_run
from ipai_ops.runs.spec import RunSetupError, RunSpec

__all__ = [
    "EscalationError",
    "EscalationResult",
    "Iteration",
    "Outcome",
    "RunRecorder",
    "RunResult",
    "RunSetupError",
    "RunSpec",
    "escalate",
    "infer_kind",
    "prune_runs",
    "record_run",
    "type_outcome",
]
