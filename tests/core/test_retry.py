"""Backoff policy: full jitter under an exponential ceiling, driven by the failure mode."""

from __future__ import annotations

import random

import pytest

from ipai_ops.retry import RetryPolicy, decide, policy_for


def test_ceiling_doubles_until_the_cap():
    policy = RetryPolicy(base_seconds=2, cap_seconds=30)
    assert [policy.ceiling(n) for n in range(1, 7)] == [2, 4, 8, 16, 30, 30]
    assert policy.ceiling(10_000) == 30  # no overflow


def test_full_jitter_stays_within_bounds_and_spreads():
    policy = RetryPolicy(base_seconds=1, cap_seconds=60)
    rng = random.Random(42)
    delays = [policy.delay(4, rng=rng) for _ in range(2000)]
    assert all(0 <= d <= 8 for d in delays)
    assert min(delays) < 1 and max(delays) > 7  # full range, not a fixed schedule


def test_decide_uses_retryable_and_max_attempts(mini_registry):
    transport = mini_registry["TRANSPORT.DATABASE_UNAVAILABLE"]  # retryable, max_attempts 5
    args = mini_registry["INTENT.ARGS_INVALID"]  # not retryable
    rng = random.Random(1)
    assert policy_for(transport).max_attempts == 5
    assert decide(transport, 1, rng=rng).retry
    assert decide(transport, 4, rng=rng).retry
    last = decide(transport, 5, rng=rng)
    assert not last.retry and "exhausted" in last.reason
    assert not decide(args, 1).retry
    assert not decide(transport, 2, max_attempts=2).retry  # the intent's own limit wins


def test_invalid_policies_are_refused():
    with pytest.raises(ValueError):
        RetryPolicy(base_seconds=0)
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
