"""The intent state machine: the one place that says which transitions are legal.

    queued -> assigned -> running -> succeeded | failed | cancelled
                                  -> dead      (retryable failure, attempts exhausted)
    running/assigned -> queued                 (retry with backoff, expired lease)
    failed/dead -> queued                      (manual requeue)
    queued/assigned -> cancelled               (cancel before the handler ran)

Capacity never refuses work: there is no "rejected" state, intents wait in ``queued``.
"""

from __future__ import annotations

from .exceptions import StateConflict

QUEUED = "queued"
ASSIGNED = "assigned"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
CANCELLED = "cancelled"
DEAD = "dead"

STATES = (QUEUED, ASSIGNED, RUNNING, SUCCEEDED, FAILED, CANCELLED, DEAD)
STATE_LABELS = (
    (QUEUED, "Queued"),
    (ASSIGNED, "Assigned"),
    (RUNNING, "Running"),
    (SUCCEEDED, "Succeeded"),
    (FAILED, "Failed"),
    (CANCELLED, "Cancelled"),
    (DEAD, "Dead letter"),
)

TRANSITIONS: dict[str, frozenset[str]] = {
    QUEUED: frozenset({ASSIGNED, CANCELLED}),
    ASSIGNED: frozenset({RUNNING, QUEUED, CANCELLED, DEAD}),
    RUNNING: frozenset({SUCCEEDED, FAILED, CANCELLED, QUEUED, DEAD}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset({QUEUED}),
    CANCELLED: frozenset(),
    DEAD: frozenset({QUEUED}),
}

TERMINAL = frozenset({SUCCEEDED, FAILED, CANCELLED, DEAD})
#: States from which an operator may requeue.
REQUEUEABLE = frozenset({FAILED, DEAD})


def is_legal(old: str, new: str) -> bool:
    return new in TRANSITIONS.get(old, frozenset())


def check_transition(old: str, new: str) -> None:
    """Raise :class:`StateConflict` (INTENT.STATE_CONFLICT) unless ``old -> new`` is legal."""
    if old not in TRANSITIONS or new not in TRANSITIONS:
        raise StateConflict(
            f"unknown intent state in transition {old!r} -> {new!r}",
            details={"from": old, "to": new},
        )
    if not is_legal(old, new):
        allowed = sorted(TRANSITIONS[old])
        raise StateConflict(
            f"illegal intent transition {old} -> {new}; from {old} the allowed states are "
            f"{', '.join(allowed) if allowed else 'none (terminal)'}",
            details={"from": old, "to": new, "allowed": allowed},
        )
