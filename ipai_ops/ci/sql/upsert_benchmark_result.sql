-- One category score of one subject; re-scoring the same subject under the same
-- benchmark version replaces the row (subject, category, benchmark_version is unique).
INSERT INTO ops.agent_benchmark_results
    (subject, run_id, agent, variant_id, benchmark_version, category, score, weight,
     composite, tier, details, scored_at)
VALUES
    (%(subject)s, %(run_id)s, %(agent)s, %(variant_id)s, %(benchmark_version)s, %(category)s,
     %(score)s, %(weight)s, %(composite)s, %(tier)s, %(details)s::jsonb, now())
ON CONFLICT (subject, category, benchmark_version) DO UPDATE SET
    run_id = EXCLUDED.run_id,
    agent = EXCLUDED.agent,
    variant_id = EXCLUDED.variant_id,
    score = EXCLUDED.score,
    weight = EXCLUDED.weight,
    composite = EXCLUDED.composite,
    tier = EXCLUDED.tier,
    details = EXCLUDED.details,
    scored_at = now();
