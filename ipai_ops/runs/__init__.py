"""Agent runs: record a command's run (``ipai-ops run``) and bundle a failure for escalation.

Public API::

    from ipai_ops.runs import record_run, RunRecorder, RunResult, escalate

See docs/agent_runs.md for what is captured, the typing rules and the bundle layout.
"""

from __future__ import annotations

from ipai_ops.runs.escalate import EscalationError, EscalationResult, escalate
from ipai_ops.runs.outcome import Outcome, infer_kind, type_outcome
from ipai_ops.runs.recorder import Iteration, RunRecorder, RunResult, RunSetupError, prune_runs, record_run

__all__ = [
    "EscalationError",
    "EscalationResult",
    "Iteration",
    "Outcome",
    "RunRecorder",
    "RunResult",
    "RunSetupError",
    "escalate",
    "infer_kind",
    "prune_runs",
    "record_run",
    "type_outcome",
]
