-- 0007: taught examples for the learned layer of classification (docs/architecture.md,
-- "Classification"; ipai-ops classify teach / train).
--
-- A person who decides the right code of an error (in Odoo, or with `ipai-ops classify
-- teach`) leaves a labelled example here: the text that was classified, the code chosen,
-- who and when. `ipai-ops classify train --dsn` trains on every example whose code is still
-- active in the registry; an example of a code that was deprecated or removed later stays
-- here (nothing taught is lost) and is counted as skipped until its code is back.

CREATE TABLE ops.classification_examples (
    id            bigserial   PRIMARY KEY,
    code          text        NOT NULL CHECK (code ~ '^[A-Z][A-Z0-9_]*(\.[A-Z][A-Z0-9_]*)+$'),
    error_type    text        CHECK (error_type IS NULL OR length(error_type) <= 512),
    text          text        NOT NULL CHECK (length(btrim(text)) > 0 AND length(text) <= 16384),
    -- The error it was taught from, if any, and the code it had then.
    error_id      bigint      REFERENCES ops.agent_errors (id) ON DELETE SET NULL,
    previous_code text,
    taught_by     text        NOT NULL CHECK (length(btrim(taught_by)) > 0 AND length(taught_by) <= 256),
    taught_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX classification_examples_code_idx ON ops.classification_examples (code, taught_at);
CREATE INDEX classification_examples_error_idx ON ops.classification_examples (error_id)
    WHERE error_id IS NOT NULL;
COMMENT ON TABLE ops.classification_examples IS
    'Labelled examples people taught (text, chosen code, who, when): the learned layer trains on them.';
