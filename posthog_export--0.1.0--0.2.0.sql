/* posthog_export--0.1.0--0.2.0.sql: upgrade from 0.1.0 (ALTER EXTENSION posthog_export UPDATE) */

\echo Use "ALTER EXTENSION posthog_export UPDATE TO '0.2.0'" to load this file. \quit

-- A backend that dies running an interval (a crash, a kill) leaves its run
-- "running"; the next attempt counts it, and the export pauses at two in a
-- row instead of crashing the cluster again and again.
ALTER TABLE @extschema@.runs ADD COLUMN crashes integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN @extschema@.runs.crashes IS 'backends that died running this interval in a row (crash or kill); at 2 the export pauses';

-- The status view's next_run comes from the scheduler's own computation
-- (C) instead of a second one in SQL; the view's columns stay the same.
--
-- When an export runs next (NULL when paused), as the scheduler computes it:
-- when its next interval is over (plus the delay), not before its retry
-- time, and outside its exclude window.
CREATE FUNCTION @extschema@.next_run(export @extschema@.exports)
RETURNS timestamptz
AS 'MODULE_PATHNAME', 'posthog_export_next_run'
LANGUAGE C STRICT STABLE;

COMMENT ON FUNCTION @extschema@.next_run IS 'when the export runs next, as the scheduler computes it (NULL when paused)';

GRANT EXECUTE ON FUNCTION @extschema@.next_run(@extschema@.exports) TO PUBLIC;

-- PostHog's request budget: the time each run waited for it, what a run
-- in flight waits for (progress), and whether an export is source-bound
-- (status).  progress_info() gains two columns, so it and the views over
-- it are made again.
ALTER TABLE @extschema@.runs ADD COLUMN waited interval NOT NULL DEFAULT '0';
COMMENT ON COLUMN @extschema@.runs.waited IS 'time its requests waited for PostHog''s request budget (requests_per_hour, max_concurrent_requests, a 429)';

DROP VIEW @extschema@.status;
DROP VIEW @extschema@.progress;
DROP FUNCTION @extschema@.progress_info();

CREATE FUNCTION @extschema@.progress_info(
    OUT pid integer, OUT export_id integer, OUT interval_start timestamptz,
    OUT interval_end timestamptz, OUT started_at timestamptz, OUT updated_at timestamptz,
    OUT rows bigint, OUT bytes bigint, OUT pages integer, OUT current_page_bytes bigint,
    OUT waiting_for text, OUT waiting_until timestamptz)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'posthog_export_progress_info'
LANGUAGE C STRICT VOLATILE;

-- Runs in flight, live, like pg_stat_progress_copy: rows and bytes so far
-- (committed or not), pages, the page being received, the rate, and what a
-- request waits for in PostHog's request budget (until when, if known).
CREATE VIEW @extschema@.progress WITH (security_invoker = true) AS
SELECT p.pid, e.name AS export_name, e.model, p.interval_start, p.interval_end,
       p.started_at, p.updated_at, p.rows, p.bytes, p.pages, p.current_page_bytes,
       round(p.rows / GREATEST(extract(epoch FROM pg_catalog.clock_timestamp() - p.started_at), 0.001))::bigint
         AS rows_per_second,
       p.waiting_for, p.waiting_until
  FROM @extschema@.progress_info() p
  JOIN @extschema@.exports e ON e.export_id = p.export_id;

-- Per export: the last success, how far the exported data lags behind
-- now, when it runs next (after its retry time and outside its exclude
-- window), failures in a row, and whether PostHog's request budget is
-- what holds it back: source_bound when a run of it waits for the budget
-- now, or its last run waited for it most of the time.
CREATE VIEW @extschema@.status WITH (security_invoker = true) AS
SELECT e.name AS export_name, e.model, e."interval", e.paused, e.paused_reason,
       (SELECT max(r.finished_at) FROM @extschema@.runs r
         WHERE r.export_id = e.export_id AND r.status = 'completed') AS last_success,
       e.next_interval_start AS exported_until,
       pg_catalog.now() - e.next_interval_start AS lag,
       @extschema@.next_run(e) AS next_run,
       e.consecutive_failures AS failures_in_a_row,
       (SELECT count(*) FROM @extschema@.backfills b
         WHERE b.export_id = e.export_id AND b.status <> 'completed') AS backfills_pending,
       EXISTS (SELECT 1 FROM @extschema@.progress_info() p WHERE p.export_id = e.export_id) AS running,
       (SELECT p.waiting_for FROM @extschema@.progress_info() p
         WHERE p.export_id = e.export_id AND p.waiting_for IS NOT NULL LIMIT 1) AS waiting_for,
       (SELECT p.waiting_until FROM @extschema@.progress_info() p
         WHERE p.export_id = e.export_id AND p.waiting_for IS NOT NULL LIMIT 1) AS waiting_until,
       EXISTS (SELECT 1 FROM @extschema@.progress_info() p
                WHERE p.export_id = e.export_id AND p.waiting_for IS NOT NULL)
       OR COALESCE((SELECT r.waited * 2 > r.finished_at - r.started_at
                      FROM @extschema@.runs r
                     WHERE r.export_id = e.export_id AND r.status = 'completed'
                     ORDER BY r.finished_at DESC LIMIT 1), false) AS source_bound
  FROM @extschema@.exports e;

GRANT SELECT ON @extschema@.progress, @extschema@.status TO PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.progress_info() TO PUBLIC;
