-- 0003: indexes for the Agent Errors console at 1M errors.
--
-- The console (Odoo view ipai_agent_error) exposes last_seen as
-- (last_seen AT TIME ZONE 'UTC'), because Odoo's Datetime fields are naive UTC; only
-- indexes on that expression serve its ORDER BY and time-range filters, and without
-- them every list/kanban request scanned the whole table (700+ ms at 1M rows,
-- benchmarks/console_queries.py). INCLUDE makes index-only scans possible: the view's
-- LEFT JOINs keep code and fingerprint referenced, and an index-only scan of an
-- expression needs its underlying column (last_seen).
CREATE INDEX agent_errors_console_recent_idx ON ops.agent_errors
    ((last_seen AT TIME ZONE 'UTC') DESC, id DESC)
    INCLUDE (last_seen, status, severity, code, count, fingerprint);
CREATE INDEX agent_errors_console_status_idx ON ops.agent_errors
    (status, (last_seen AT TIME ZONE 'UTC') DESC, id DESC)
    INCLUDE (last_seen, code, fingerprint);
CREATE INDEX agent_errors_console_severity_idx ON ops.agent_errors
    (severity, status DESC, (last_seen AT TIME ZONE 'UTC') DESC, id DESC)
    INCLUDE (last_seen, code, fingerprint);
