-- 0005: indexes for the Agent Runs list (Odoo view ipai_agent_run) and for error deletes.
--
-- The list orders and filters by (started_at AT TIME ZONE 'UTC') (Odoo's naive-UTC
-- Datetime), newest first; the error form counts runs by error_id; and deleting an
-- ops.agent_errors row sets agent_runs.error_id to NULL through the foreign key, which
-- without an index on error_id scans every run.
CREATE INDEX agent_runs_recent_idx ON ops.agent_runs ((started_at AT TIME ZONE 'UTC') DESC, id DESC);
CREATE INDEX agent_runs_error_idx ON ops.agent_runs (error_id) WHERE error_id IS NOT NULL;
