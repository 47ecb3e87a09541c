"""A/B verdicts on synthetic data with and without a real difference."""

from __future__ import annotations

import json
import random

from ipai_ops.ci import ab


def _samples(rng: random.Random, n: int, mean: float, spread: float, prefix: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for i in range(n):
        evidence = min(100.0, max(0.0, rng.gauss(mean, spread)))
        risk = min(100.0, max(0.0, rng.gauss(70, 10)))
        subject = f"run:{prefix}{i:03d}"
        out.setdefault("evidence", {})[subject] = round(evidence, 2)
        out.setdefault("risk", {})[subject] = round(risk, 2)
        out.setdefault("composite", {})[subject] = round((evidence + risk) / 2, 2)
    return out


def test_real_difference_is_better():
    rng = random.Random(1)
    a = _samples(rng, 40, 55, 10, "a")
    b = _samples(rng, 40, 75, 10, "b")
    result = ab.compare("A", "B", a, b, benchmark_version=1, resamples=2000)
    cats = {c.category: c for c in result.categories}
    assert cats["composite"].verdict == "better"
    assert cats["evidence"].verdict == "better"
    assert cats["evidence"].ci_low > 10  # ~+20 points, interval well above 0
    assert cats["risk"].verdict == "no evidence"  # same distribution in both
    assert result.as_dict()["summary"].startswith("B is better than A: composite +")
    # Swapping the roles flips the verdict.
    assert ab.compare("B", "A", b, a, benchmark_version=1, resamples=2000).verdict.verdict == "worse"


def test_no_real_difference_is_no_evidence():
    rng = random.Random(3)
    a = _samples(rng, 40, 60, 15, "a")
    b = _samples(rng, 40, 60, 15, "b")
    result = ab.compare("A", "B", a, b, benchmark_version=1, resamples=2000)
    assert {c.category: c.verdict for c in result.categories} == dict.fromkeys(
        ("composite", "evidence", "risk"), "no evidence"
    )
    overall = result.verdict
    assert overall.ci_low < 0 < overall.ci_high
    assert "includes 0" in overall.reason


def test_false_positive_rate_on_null_data_stays_near_nominal():
    # 60 datasets with no real difference: a 95% interval should exclude 0 about 5% of
    # the time. The bound is loose so the test states the property, not the noise.
    claimed = 0
    for seed in range(60):
        rng = random.Random(10_000 + seed)
        a = {"composite": _samples(rng, 30, 60, 15, "a")["composite"]}
        b = {"composite": _samples(rng, 30, 60, 15, "b")["composite"]}
        claimed += ab.compare("A", "B", a, b, benchmark_version=1, resamples=400).verdict.verdict != "no evidence"
    assert claimed <= 6  # <= 10%


def test_power_on_a_real_difference():
    found = 0
    for seed in range(30):
        rng = random.Random(20_000 + seed)
        a = {"composite": _samples(rng, 30, 60, 15, "a")["composite"]}
        b = {"composite": _samples(rng, 30, 80, 15, "b")["composite"]}
        found += ab.compare("A", "B", a, b, benchmark_version=1, resamples=400).verdict.verdict == "better"
    assert found >= 27


def test_too_few_runs_refuses_a_verdict_even_with_a_large_gap():
    a = {"composite": {"run:a1": 40.0, "run:a2": 42.0, "run:a3": 41.0}}
    b = {"composite": {"run:b1": 90.0, "run:b2": 91.0, "run:b3": 92.0}}
    result = ab.compare("A", "B", a, b, benchmark_version=1, resamples=500)
    assert result.verdict.verdict == "no evidence"
    assert result.verdict.reason == "too few runs (baseline 3, candidate 3; need 5 each)"
    assert result.verdict.delta == 50.0


def test_deterministic_for_a_fixed_seed():
    rng = random.Random(3)
    a, b = _samples(rng, 20, 60, 10, "a"), _samples(rng, 20, 64, 10, "b")
    one = ab.compare("A", "B", a, b, benchmark_version=1, resamples=1000, seed=7)
    two = ab.compare("A", "B", a, b, benchmark_version=1, resamples=1000, seed=7)
    assert one == two
    other = ab.compare("A", "B", a, b, benchmark_version=1, resamples=1000, seed=8)
    assert other.comparison_id != one.comparison_id


def _insert_scored(conn, variant: str, values: list[float]) -> None:
    with conn, conn.cursor() as cur:
        for i, value in enumerate(values):
            subject = f"run:{variant}{i}"
            cur.execute(
                "INSERT INTO ops.agent_benchmark_results"
                " (subject, variant_id, category, score, weight, composite, tier)"
                " VALUES (%s, %s, 'evidence', %s, 1, %s, 'baseline')",
                (subject, variant, value, value),
            )


def test_compare_cli_stores_and_prints(run_cli, ops_dsn, ops_conn):
    rng = random.Random(4)
    _insert_scored(ops_conn, "A", [round(rng.gauss(50, 5), 2) for _ in range(12)])
    _insert_scored(ops_conn, "B", [round(rng.gauss(70, 5), 2) for _ in range(12)])
    args = ("bench", "compare", "--variant", "A", "--variant", "B", "--resamples", "1000", "--dsn", ops_dsn)
    text = run_cli(*args)
    assert text.code == 0, text.err
    assert "verdict: B is better than A" in text.out
    as_json = json.loads(run_cli(*args, "--format", "json").out)
    assert as_json["verdict"] == "better" and as_json["stored"] is True
    with ops_conn.cursor() as cur:
        cur.execute(
            "SELECT comparison_id, category, verdict, n_baseline, n_candidate FROM ops.agent_ab_comparisons"
            " ORDER BY category"
        )
        rows = cur.fetchall()
    # Same data, same settings: one comparison stored once, per category.
    assert [(r[1], r[2], r[3], r[4]) for r in rows] == [("composite", "better", 12, 12), ("evidence", "better", 12, 12)]
    assert {r[0] for r in rows} == {as_json["comparison_id"]}


def test_compare_cli_errors(run_cli, ops_dsn):
    one = run_cli("bench", "compare", "--variant", "A", "--dsn", ops_dsn)
    assert one.code == 2 and "exactly twice" in one.err
    none = run_cli("bench", "compare", "--variant", "A", "--variant", "Z", "--dsn", ops_dsn)
    assert none.code == 1 and "no benchmark results for variant(s) A, Z" in none.err
