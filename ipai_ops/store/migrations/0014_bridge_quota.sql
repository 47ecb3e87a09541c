-- 0014: budgets per sender and source, shared by every bridge worker and replica.
--
-- The bridge's budgets (docs/bridge.md, "Budgets per sender and source") were counted per
-- worker process, so N workers (or replicas) let a sender write N times its budget. One row
-- per (sender, source) holds the count of the current clock minute and clock hour of the
-- database's clock. A worker does not come here per request: it takes a slice of the
-- budget (ops.bridge_quota_take) and spends it in memory, and comes back when it has spent
-- it. Rows are updated in place; a window that has turned counts from zero.

CREATE TABLE ops.bridge_quota (
    sender    text    NOT NULL,
    source    text    NOT NULL,
    minute    bigint  NOT NULL,  -- floor(epoch / 60) of the minute in_minute counts
    in_minute integer NOT NULL DEFAULT 0 CHECK (in_minute >= 0),
    hour      bigint  NOT NULL,  -- floor(epoch / 3600) of the hour in_hour counts
    in_hour   integer NOT NULL DEFAULT 0 CHECK (in_hour >= 0),
    PRIMARY KEY (sender, source)
);

COMMENT ON TABLE ops.bridge_quota IS
    'Occurrences granted to bridge workers per (sender, source) in the current minute and hour (ops.bridge_quota_take).';

-- Grant up to p_want occurrences, or a larger slice to spend locally: p_slice while there
-- is room, shrinking to a quarter of what is left near the limit (so a slice another
-- worker holds unspent when the window turns is small), never more than the room. A limit
-- of 0 is no limit. p_unspent occurrences of an earlier slice taken in hour p_unspent_hour
-- that its worker could not spend before its minute turned go back to that hour.
-- The row lock serialises the workers of one (sender, source); the answer says how long
-- the window lasts and which one is full, for Retry-After.
CREATE FUNCTION ops.bridge_quota_take(
    p_sender text, p_source text, p_want integer, p_slice integer,
    p_per_minute integer, p_per_hour integer, p_unspent integer, p_unspent_hour bigint,
    OUT granted integer, OUT minute_left double precision, OUT hour_left double precision,
    OUT minute_full boolean, OUT hour_full boolean, OUT hour_id bigint
)
LANGUAGE plpgsql AS $$
DECLARE
    t double precision := extract(epoch FROM clock_timestamp());
    m bigint := floor(t / 60);
    h bigint := floor(t / 3600);
    cur ops.bridge_quota%ROWTYPE;
    used_m bigint;
    used_h bigint;
    room bigint;
BEGIN
    INSERT INTO ops.bridge_quota AS q (sender, source, minute, hour)
    VALUES (p_sender, p_source, m, h)
    ON CONFLICT (sender, source) DO NOTHING;
    SELECT * INTO cur FROM ops.bridge_quota AS q
     WHERE q.sender = p_sender AND q.source = p_source
       FOR UPDATE;
    used_m := CASE WHEN cur.minute = m THEN cur.in_minute ELSE 0 END;
    used_h := CASE WHEN cur.hour = h THEN cur.in_hour ELSE 0 END;
    IF p_unspent > 0 AND p_unspent_hour = h THEN
        used_h := greatest(used_h - p_unspent, 0);
    END IF;
    room := least(
        CASE WHEN p_per_minute > 0 THEN p_per_minute - used_m ELSE 2147483647 END,
        CASE WHEN p_per_hour > 0 THEN p_per_hour - used_h ELSE 2147483647 END
    );
    granted := greatest(least(room, greatest(p_want, least(p_slice, ceil(room / 4.0)::bigint))), 0);
    UPDATE ops.bridge_quota AS q
       SET minute = m, in_minute = used_m + granted, hour = h, in_hour = used_h + granted
     WHERE q.sender = p_sender AND q.source = p_source;
    minute_left := (m + 1) * 60 - t;
    hour_left := (h + 1) * 3600 - t;
    minute_full := p_per_minute > 0 AND used_m + granted >= p_per_minute;
    hour_full := p_per_hour > 0 AND used_h + granted >= p_per_hour;
    hour_id := h;
END
$$;
