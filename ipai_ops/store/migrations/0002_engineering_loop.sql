-- 0002: A/B comparisons of agent variants (ipai-ops bench compare).
-- One row per (comparison, category): the two variants' means, the delta of the
-- candidate against the baseline with its bootstrap confidence interval, and the verdict.

CREATE TABLE ops.agent_ab_comparisons (
    id                 bigserial PRIMARY KEY,
    comparison_id      text          NOT NULL,
    baseline_variant   text          NOT NULL,
    candidate_variant  text          NOT NULL,
    benchmark_version  integer       NOT NULL,
    category           text          NOT NULL,
    n_baseline         integer       NOT NULL,
    n_candidate        integer       NOT NULL,
    mean_baseline      numeric(8, 4),
    mean_candidate     numeric(8, 4),
    delta              numeric(8, 4),
    ci_low             numeric(8, 4),
    ci_high            numeric(8, 4),
    confidence         numeric(5, 4) NOT NULL,
    resamples          integer       NOT NULL,
    seed               bigint        NOT NULL,
    verdict            text          NOT NULL,
    details            jsonb         NOT NULL DEFAULT '{}'::jsonb,
    compared_at        timestamptz   NOT NULL DEFAULT now(),
    CONSTRAINT agent_ab_comparisons_verdict_check
        CHECK (verdict IN ('better', 'worse', 'no evidence')),
    CONSTRAINT agent_ab_comparisons_key UNIQUE (comparison_id, category)
);
COMMENT ON TABLE ops.agent_ab_comparisons IS
    'A/B comparisons of agent variants: per-category delta (candidate - baseline), bootstrap CI, verdict.';
CREATE INDEX agent_ab_comparisons_variants_idx
    ON ops.agent_ab_comparisons (baseline_variant, candidate_variant, compared_at DESC);
