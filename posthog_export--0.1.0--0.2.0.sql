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

CREATE OR REPLACE VIEW @extschema@.status WITH (security_invoker = true) AS
SELECT e.name AS export_name, e.model, e."interval", e.paused, e.paused_reason,
       (SELECT max(r.finished_at) FROM @extschema@.runs r
         WHERE r.export_id = e.export_id AND r.status = 'completed') AS last_success,
       e.next_interval_start AS exported_until,
       pg_catalog.now() - e.next_interval_start AS lag,
       @extschema@.next_run(e) AS next_run,
       e.consecutive_failures AS failures_in_a_row,
       (SELECT count(*) FROM @extschema@.backfills b
         WHERE b.export_id = e.export_id AND b.status <> 'completed') AS backfills_pending,
       EXISTS (SELECT 1 FROM @extschema@.progress_info() p WHERE p.export_id = e.export_id) AS running
  FROM @extschema@.exports e;

GRANT EXECUTE ON FUNCTION @extschema@.next_run(@extschema@.exports) TO PUBLIC;
