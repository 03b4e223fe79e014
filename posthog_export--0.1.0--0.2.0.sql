/* posthog_export--0.1.0--0.2.0.sql: upgrade from 0.1.0 (ALTER EXTENSION posthog_export UPDATE) */

\echo Use "ALTER EXTENSION posthog_export UPDATE TO '0.2.0'" to load this file. \quit

-- A backend that dies running an interval (a crash, a kill) leaves its run
-- "running"; the next attempt counts it, and the export pauses at two in a
-- row instead of crashing the cluster again and again.
ALTER TABLE @extschema@.runs ADD COLUMN crashes integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN @extschema@.runs.crashes IS 'backends that died running this interval in a row (crash or kill); at 2 the export pauses';

-- Late rows (events): a completed interval is counted again at the source
-- every settle_every for settle_window after it was exported; rows that
-- became visible meanwhile are written, later ones reported.
ALTER TABLE @extschema@.exports ADD COLUMN settle_window interval NOT NULL DEFAULT '1 day';
ALTER TABLE @extschema@.exports ADD COLUMN settle_every interval NOT NULL DEFAULT '1 hour';
ALTER TABLE @extschema@.exports ADD COLUMN next_settle_at timestamptz;
ALTER TABLE @extschema@.runs ADD COLUMN settled_at timestamptz;
ALTER TABLE @extschema@.runs ADD COLUMN source_rows bigint;
ALTER TABLE @extschema@.runs ADD COLUMN late_rows bigint NOT NULL DEFAULT 0;
ALTER TABLE @extschema@.runs ADD COLUMN late_missed bigint NOT NULL DEFAULT 0;
COMMENT ON COLUMN @extschema@.exports.settle_window IS 'events: how long after an interval was exported it is checked for rows that became visible late (0: never)';
COMMENT ON COLUMN @extschema@.exports.settle_every IS 'events: how often an exported interval is checked for late rows during settle_window';
COMMENT ON COLUMN @extschema@.exports.next_settle_at IS 'when the next settle check of a completed interval is due (NULL: none pending)';
COMMENT ON COLUMN @extschema@.runs.settled_at IS 'when the interval was last checked for late rows (a settle check)';
COMMENT ON COLUMN @extschema@.runs.source_rows IS 'rows PostHog counted for the interval at the last settle check';
COMMENT ON COLUMN @extschema@.runs.late_rows IS 'rows that became visible after the interval was exported, found and written by settle checks';
COMMENT ON COLUMN @extschema@.runs.late_missed IS 'rows that became visible after settle_window: reported by a WARNING, not written';

-- Persons and sessions read their whole range again on every run: nothing
-- to settle.  The intervals 0.1.0 exported count as checked now, with the
-- rows they received, so the update sends no checks over the whole
-- history; those exported less than settle_window ago go on being checked.
UPDATE @extschema@.exports SET settle_window = '0' WHERE model <> 'events';
UPDATE @extschema@.runs SET settled_at = pg_catalog.now(), source_rows = rows WHERE status = 'completed';
UPDATE @extschema@.exports e SET next_settle_at = pg_catalog.now() OPERATOR(pg_catalog.+) e.settle_every
 WHERE e.model = 'events'
   AND EXISTS (SELECT 1 FROM @extschema@.runs r
                WHERE r.export_id OPERATOR(pg_catalog.=) e.export_id AND r.status = 'completed'
                  AND (r.finished_at OPERATOR(pg_catalog.+) e.settle_window) OPERATOR(pg_catalog.>) pg_catalog.now());

-- create_export() and alter_export() take the two settle settings, last.
DROP FUNCTION @extschema@.create_export(text, text, text, text, text, interval, text, text[], text[],
                                        interval, text, interval, interval, time, time);
CREATE FUNCTION @extschema@.create_export(
    name           text,
    server         text,
    model          text DEFAULT 'events',
    schema_name    text DEFAULT 'posthog_exports',
    table_name     text DEFAULT NULL,
    "interval"     interval DEFAULT '1 hour',
    mode           text DEFAULT NULL,
    include_events text[] DEFAULT NULL,
    exclude_events text[] DEFAULT NULL,
    lookback       interval DEFAULT NULL,
    timezone       text DEFAULT 'UTC',
    start_offset   interval DEFAULT '0',
    delay          interval DEFAULT '1 minute',
    exclude_window_start time DEFAULT NULL,
    exclude_window_end   time DEFAULT NULL,
    settle_window  interval DEFAULT NULL,
    settle_every   interval DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'posthog_export_create_export'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION @extschema@.create_export IS 'create an export owned by the current role';

DROP FUNCTION @extschema@.alter_export(text, interval, text, interval, interval, time, time, boolean,
                                       text[], text[], interval);
CREATE FUNCTION @extschema@.alter_export(
    name           text,
    "interval"     interval DEFAULT NULL,
    timezone       text DEFAULT NULL,
    start_offset   interval DEFAULT NULL,
    delay          interval DEFAULT NULL,
    exclude_window_start time DEFAULT NULL,
    exclude_window_end   time DEFAULT NULL,
    drop_exclude_window  boolean DEFAULT false,
    include_events text[] DEFAULT NULL,
    exclude_events text[] DEFAULT NULL,
    lookback       interval DEFAULT NULL,
    settle_window  interval DEFAULT NULL,
    settle_every   interval DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'posthog_export_alter_export'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION @extschema@.alter_export IS 'change settings of an export (NULL arguments keep theirs)';

-- The status view's next_run comes from the scheduler's own computation
-- (C) instead of a second one in SQL, and the view gains late_rows_missed.
--
-- When an export runs next (NULL when paused), as the scheduler computes it:
-- when its next interval is over (plus the delay) or a settle check is due,
-- not before its retry time, and outside its exclude window.
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
       (SELECT COALESCE(sum(r.late_missed), 0) FROM @extschema@.runs r
         WHERE r.export_id = e.export_id)::bigint AS late_rows_missed,
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

-- run_due(raise_on_failure => true) ends with an error when an export
-- failed, after running all of them, so that pg_cron records the job as
-- failed; the default keeps 0.1.0's behaviour (WARNINGs only).
DROP PROCEDURE @extschema@.run_due();
CREATE PROCEDURE @extschema@.run_due(raise_on_failure boolean DEFAULT false)
AS 'MODULE_PATHNAME', 'posthog_export_run_due'
LANGUAGE C;

COMMENT ON PROCEDURE @extschema@.run_due IS 'run the due work of every export the caller may run (for pg_cron, or without the background worker); raise_on_failure: end with an error when an export failed, so pg_cron records a failure';
