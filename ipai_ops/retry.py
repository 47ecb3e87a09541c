"""Retry policy: exponential backoff with full jitter, driven by the failure mode.

``delay(attempt) = uniform(0, min(cap, base * 2 ** (attempt - 1)))`` ("full
jitter", AWS Architecture Blog, 2015): retries from many workers spread out
instead of arriving together. Only a mode with ``retryable: true`` is retried,
at most ``max_attempts`` attempts in all (the first run included).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from ipai_ops.registry import FailureMode

DEFAULT_MAX_ATTEMPTS = 3


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 2.0
    cap_seconds: float = 300.0
    max_attempts: int = DEFAULT_MAX_ATTEMPTS

    def __post_init__(self) -> None:
        if self.base_seconds <= 0 or self.cap_seconds < self.base_seconds:
            raise ValueError("need 0 < base_seconds <= cap_seconds")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay after failed attempt number ``attempt`` (1-based)."""
        exponent = min(max(attempt, 1) - 1, 62)
        return min(self.cap_seconds, self.base_seconds * (2**exponent))

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> float:
        return (rng or random).uniform(0.0, self.ceiling(attempt))


@dataclass(frozen=True)
class Decision:
    retry: bool
    delay_seconds: float
    reason: str


def policy_for(mode: FailureMode, *, base: RetryPolicy | None = None) -> RetryPolicy:
    base = base or RetryPolicy()
    return RetryPolicy(
        base_seconds=base.base_seconds,
        cap_seconds=base.cap_seconds,
        max_attempts=mode.max_attempts or base.max_attempts,
    )


def decide(
    mode: FailureMode,
    attempt: int,
    *,
    max_attempts: int | None = None,
    base: RetryPolicy | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """Whether failed attempt ``attempt`` (1-based) of an operation that failed with ``mode`` runs again.

    ``max_attempts`` (e.g. set on an intent) overrides the mode's own limit.
    """
    policy = policy_for(mode, base=base)
    limit = max_attempts or policy.max_attempts
    if not mode.retryable:
        return Decision(False, 0.0, f"{mode.code} is not retryable")
    if attempt >= limit:
        return Decision(False, 0.0, f"attempts exhausted ({attempt}/{limit})")
    return Decision(True, policy.delay(attempt, rng=rng), f"retry {attempt + 1}/{limit}")
