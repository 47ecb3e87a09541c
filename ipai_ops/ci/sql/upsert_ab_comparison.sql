-- One category of one A/B comparison; the comparison id is a content hash, so
-- comparing the same data with the same settings again changes nothing but compared_at.
INSERT INTO ops.agent_ab_comparisons
    (comparison_id, baseline_variant, candidate_variant, benchmark_version, category,
     n_baseline, n_candidate, mean_baseline, mean_candidate, delta, ci_low, ci_high,
     confidence, resamples, seed, verdict, details)
VALUES
    (%(comparison_id)s, %(baseline)s, %(candidate)s, %(version)s, %(category)s,
     %(n_baseline)s, %(n_candidate)s, %(mean_baseline)s, %(mean_candidate)s, %(delta)s,
     %(ci_low)s, %(ci_high)s, %(confidence)s, %(resamples)s, %(seed)s, %(verdict)s,
     %(details)s::jsonb)
ON CONFLICT (comparison_id, category) DO UPDATE SET compared_at = now();
