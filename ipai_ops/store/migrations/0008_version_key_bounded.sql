-- 0008: ops.version_key reads at most the first 256 characters of a version.
--
-- A release compare (resolved in R: does this occurrence's version regress it?) turned a
-- sender's 140,000-digit service.version, or an operator's mistyped resolved_in_version,
-- into a numeric overflow: every later occurrence of that error was refused as invalid
-- data. Versions are compared on their first 256 characters (the bridge keeps no more).

CREATE OR REPLACE FUNCTION ops.version_key(v text) RETURNS numeric[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN left(v, 256) ~ '[0-9]'
        THEN string_to_array(trim(BOTH '.' FROM regexp_replace(left(v, 256), '[^0-9]+', '.', 'g')), '.')::numeric[]
        ELSE '{}'::numeric[] END
$$;
