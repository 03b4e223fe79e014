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

-- An export's owner is the owner of a type that stands for it: an empty
-- enum in this schema, "export <name>" ("export_<id>" when that is too long
-- for an identifier), closed to PUBLIC.  Postgres's own ownership machinery
-- acts on it in every session: REASSIGN OWNED moves the export, DROP OWNED
-- drops it (an event trigger drops the row), DROP ROLE is refused while
-- the role owns one.  The types are not members of the extension, so that
-- pg_dump dumps them with their owners; exports.owner_type holds each as
-- a regtype, dumped by name, so a restore links them again.  The owners
-- 0.1.0 recorded must exist: an export whose owner was dropped under it
-- (0.1.0 kept no dependency) is refused here, to be fixed by hand.
ALTER TABLE @extschema@.exports ADD COLUMN owner_type regtype;
DO $phx$
DECLARE
  e record;
  type_name text;
BEGIN
  FOR e IN SELECT x.export_id, x.name, x.owner::pg_catalog.oid AS owner, r.rolname
             FROM @extschema@.exports x
             LEFT JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) x.owner::pg_catalog.oid
            ORDER BY x.export_id
  LOOP
    IF e.rolname IS NULL THEN
      RAISE EXCEPTION 'export "%" is owned by a role that does not exist (OID %)', e.name, e.owner
        USING ERRCODE = 'object_not_in_prerequisite_state',
              DETAIL = 'posthog_export 0.1.0 kept no dependency on the owner of an export; 0.2.0 does, and needs an owner that exists.',
              HINT = pg_catalog.format('Give it an existing owner (UPDATE @extschema@.exports SET owner = ''role'' WHERE name = %L) or delete it (DELETE FROM @extschema@.exports WHERE name = %L), then update again.', e.name, e.name);
    END IF;
    type_name := CASE WHEN pg_catalog.octet_length('export ' OPERATOR(pg_catalog.||) e.name) OPERATOR(pg_catalog.<) 64
                      THEN 'export ' OPERATOR(pg_catalog.||) e.name
                      ELSE 'export_' OPERATOR(pg_catalog.||) e.export_id END;
    EXECUTE pg_catalog.format('CREATE TYPE @extschema@.%I AS ENUM ()', type_name);
    -- created by this script, it would be a member of the extension
    EXECUTE pg_catalog.format('ALTER EXTENSION posthog_export DROP TYPE @extschema@.%I', type_name);
    EXECUTE pg_catalog.format('REVOKE ALL ON TYPE @extschema@.%I FROM PUBLIC', type_name);
    EXECUTE pg_catalog.format('COMMENT ON TYPE @extschema@.%I IS %L', type_name,
      pg_catalog.format('its owner is the owner of export "%s" (REASSIGN OWNED moves the export, DROP OWNED drops it)', e.name));
    EXECUTE pg_catalog.format('ALTER TYPE @extschema@.%I OWNER TO %I', type_name, e.rolname);
    UPDATE @extschema@.exports SET owner_type = pg_catalog.format('@extschema@.%I', type_name)::pg_catalog.regtype
     WHERE export_id OPERATOR(pg_catalog.=) e.export_id;
  END LOOP;
END
$phx$;
ALTER TABLE @extschema@.exports ALTER COLUMN owner_type SET NOT NULL;
ALTER TABLE @extschema@.exports ADD UNIQUE (owner_type);
DROP POLICY exports_owner ON @extschema@.exports;
ALTER TABLE @extschema@.exports DROP COLUMN owner;
CREATE POLICY exports_owner ON @extschema@.exports FOR SELECT
    USING (pg_catalog.pg_has_role((SELECT t.typowner FROM pg_catalog.pg_type t
                                    WHERE t.oid OPERATOR(pg_catalog.=) owner_type), 'USAGE'));
COMMENT ON COLUMN @extschema@.exports.owner_type IS 'the type whose owner is the export''s owner, the role it runs as (REASSIGN OWNED moves it, DROP OWNED drops the export; posthog_export.status shows the owner)';

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

-- Per export: its owner, the last success, how far the exported data lags behind
-- now (NULL until its first scheduled interval ran), when it runs next (after its retry time and outside its exclude
-- window), failures in a row, and whether PostHog's request budget is
-- what holds it back: source_bound when a run of it waits for the budget
-- now, or its last run waited for it most of the time.
CREATE VIEW @extschema@.status WITH (security_invoker = true) AS
SELECT e.name AS export_name,
       (SELECT t.typowner::pg_catalog.regrole FROM pg_catalog.pg_type t WHERE t.oid = e.owner_type) AS owner,
       e.model, e."interval", e.paused, e.paused_reason,
       (SELECT max(r.finished_at) FROM @extschema@.runs r
         WHERE r.export_id = e.export_id AND r.status = 'completed') AS last_success,
       CASE WHEN s.ran THEN e.next_interval_start END AS exported_until,
       CASE WHEN s.ran THEN pg_catalog.now() - e.next_interval_start END AS lag,
       @extschema@.next_run(e) AS next_run,
       e.consecutive_failures AS failures_in_a_row,
       (SELECT count(*) FROM @extschema@.backfills b
         WHERE b.export_id = e.export_id AND b.status <> 'completed') AS backfills_pending,
       -- a run holds the export's advisory lock (with or without the preloaded library)
       EXISTS (SELECT 1 FROM pg_catalog.pg_locks l
                WHERE l.locktype = 'advisory' AND l.granted
                  AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                                     WHERE d.datname = pg_catalog.current_database())
                  AND l.classid = 7366776 AND l.objid = e.export_id AND l.objsubid = 2) AS running,
       (SELECT COALESCE(sum(r.late_missed), 0) FROM @extschema@.runs r
         WHERE r.export_id = e.export_id)::bigint AS late_rows_missed,
       w.waiting_for, w.waiting_until,
       w.waiting_for IS NOT NULL
       OR COALESCE((SELECT r.waited * 2 > r.finished_at - r.started_at
                      FROM @extschema@.runs r
                     WHERE r.export_id = e.export_id AND r.status = 'completed'
                     ORDER BY r.finished_at DESC LIMIT 1), false) AS source_bound
  FROM @extschema@.exports e
       -- until its first scheduled interval has run, nothing is exported
       CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM @extschema@.runs r
                                           WHERE r.export_id = e.export_id AND r.status = 'completed'
                                             AND r.interval_end = e.next_interval_start) AS ran) s
       -- what a run of it waits for in PostHog's request budget, if anything
       LEFT JOIN LATERAL (SELECT p.waiting_for, p.waiting_until FROM @extschema@.progress_info() p
                           WHERE p.export_id = e.export_id AND p.waiting_for IS NOT NULL LIMIT 1) w ON true;

GRANT SELECT ON @extschema@.progress, @extschema@.status TO PUBLIC;
GRANT EXECUTE ON FUNCTION @extschema@.progress_info() TO PUBLIC;

-- Every table column, view and function says what it is (\d+, \df+, \dv+).
COMMENT ON TABLE @extschema@.backfills IS 'Past ranges queued by backfill(): run one interval at a time, oldest first, after the scheduled intervals';
COMMENT ON COLUMN @extschema@.exports.export_id IS 'identifier of the export';
COMMENT ON COLUMN @extschema@.exports.name IS 'name of the export, unique in the database';
COMMENT ON COLUMN @extschema@.exports.server_name IS 'foreign server (FOREIGN DATA WRAPPER posthog_export) it reads from';
COMMENT ON COLUMN @extschema@.exports.model IS 'what it exports: events, persons, sessions or hogql (the owner''s own query)';
COMMENT ON COLUMN @extschema@.exports.mode IS 'append (insert every row) or merge (upsert on the model''s key)';
COMMENT ON COLUMN @extschema@.exports.schema_name IS 'schema of the destination table';
COMMENT ON COLUMN @extschema@.exports.table_name IS 'destination table';
COMMENT ON COLUMN @extschema@.exports."interval" IS 'length of one exported interval: 5 minutes, 15 minutes, 1 hour, 1 day or 1 week';
COMMENT ON COLUMN @extschema@.exports.include_events IS 'events: only these event names (NULL: all)';
COMMENT ON COLUMN @extschema@.exports.exclude_events IS 'events: never these event names';
COMMENT ON COLUMN @extschema@.exports.lookback IS 'events: how far before an interval an event''s own timestamp may lie; sessions: how far back a session may have started';
COMMENT ON COLUMN @extschema@.exports.created_at IS 'when the export was created';
COMMENT ON COLUMN @extschema@.exports.timezone IS 'time zone in which daily and weekly intervals start';
COMMENT ON COLUMN @extschema@.exports.start_offset IS 'daily and weekly intervals start this long after local midnight (Monday for weeks)';
COMMENT ON COLUMN @extschema@.exports.delay IS 'how long after an interval ends it is exported (for late ingestion)';
COMMENT ON COLUMN @extschema@.exports.exclude_window_start IS 'no run starts between exclude_window_start and exclude_window_end, local time';
COMMENT ON COLUMN @extschema@.exports.exclude_window_end IS 'end of the exclude window, local time (may wrap midnight)';
COMMENT ON COLUMN @extschema@.exports.next_interval_start IS 'start of the next scheduled interval: every interval before it, from the first, was exported';
COMMENT ON COLUMN @extschema@.exports.paused IS 'true: no run starts until unpause()';
COMMENT ON COLUMN @extschema@.exports.paused_reason IS 'why it paused itself (repeated failures, crashes), or NULL';
COMMENT ON COLUMN @extschema@.exports.consecutive_failures IS 'failed scheduled runs in a row; at posthog_export.max_failures the export pauses';
COMMENT ON COLUMN @extschema@.exports.retry_at IS 'after a failure: no scheduled run before this time (backoff)';
COMMENT ON COLUMN @extschema@.backfills.backfill_id IS 'identifier of the backfill, as backfill() returned it';
COMMENT ON COLUMN @extschema@.backfills.export_id IS 'the export it belongs to';
COMMENT ON COLUMN @extschema@.backfills.start_at IS 'start of the range (an interval boundary)';
COMMENT ON COLUMN @extschema@.backfills.end_at IS 'end of the range (an interval boundary)';
COMMENT ON COLUMN @extschema@.backfills.next_start IS 'the next interval of the range to run';
COMMENT ON COLUMN @extschema@.backfills.status IS 'queued, running, completed or failed';
COMMENT ON COLUMN @extschema@.backfills.created_at IS 'when backfill() queued it';
COMMENT ON COLUMN @extschema@.backfills.finished_at IS 'when its last interval completed';
COMMENT ON COLUMN @extschema@.runs.run_id IS 'identifier of the run';
COMMENT ON COLUMN @extschema@.runs.export_id IS 'the export it belongs to';
COMMENT ON COLUMN @extschema@.runs.export_name IS 'the export''s name when it ran';
COMMENT ON COLUMN @extschema@.runs.interval_start IS 'start of the exported interval';
COMMENT ON COLUMN @extschema@.runs.interval_end IS 'end of the exported interval (excluded)';
COMMENT ON COLUMN @extschema@.runs.status IS 'running, completed or failed (pending only inside the transaction that creates the row)';
COMMENT ON COLUMN @extschema@.runs.trigger IS 'what started it: schedule, backfill or manual (run_export)';
COMMENT ON COLUMN @extschema@.runs.bytes IS 'response bytes received from PostHog';
COMMENT ON COLUMN @extschema@.runs.pages IS 'pages (successful requests) received';
COMMENT ON COLUMN @extschema@.runs.attempts IS 'times the interval was started';
COMMENT ON COLUMN @extschema@.runs.started_at IS 'when its latest attempt started';
COMMENT ON COLUMN @extschema@.runs.finished_at IS 'when it completed or failed';
COMMENT ON COLUMN @extschema@.runs.error IS 'why its latest attempt failed (message and detail; never the API key)';
COMMENT ON VIEW @extschema@.status IS 'One row per export: owner, last success, how far behind, next run, failures, backfills, late rows missed, waits for PostHog''s request budget';
COMMENT ON VIEW @extschema@.progress IS 'Runs in flight, live (needs the library in shared_preload_libraries): rows, bytes, pages, rate, what a request waits for';
COMMENT ON FUNCTION @extschema@.progress_info() IS 'the runs in flight in this database that the caller may see (what the progress view shows)';
COMMENT ON FUNCTION @extschema@.fdw_validator(text[], oid) IS 'validates the options of posthog_export servers and user mappings';

-- alter_export(): the schedule argument is named every (interval is an
-- SQL keyword), and it takes the settle settings and moves an export to
-- another server or owner (all last).
DROP FUNCTION @extschema@.alter_export(text, interval, text, interval, interval, time, time, boolean,
                                       text[], text[], interval);
CREATE FUNCTION @extschema@.alter_export(
    name           text,
    every          interval DEFAULT NULL,
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
    settle_every   interval DEFAULT NULL,
    server         text DEFAULT NULL,
    owner          regrole DEFAULT NULL,
    columns        jsonb DEFAULT NULL,
    filter         text DEFAULT NULL,
    filter_values  jsonb DEFAULT NULL,
    query          text DEFAULT NULL,
    key            text[] DEFAULT NULL)
RETURNS void
AS 'MODULE_PATHNAME', 'posthog_export_alter_export'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION @extschema@.alter_export IS 'change settings of an export (NULL arguments keep theirs)';

-- What an export depends on, kept consistent as Postgres keeps its own
-- objects' dependencies (pg_depend cannot point at rows of a table):
-- ALTER SERVER ... RENAME carries the exports along, DROP SERVER is refused
-- while exports use the server (CASCADE drops them too), DROP OWNED drops
-- the roles' exports, DROP TYPE of an export's type is refused (CASCADE
-- drops the export), such a type keeps its name and schema, and DROP
-- EXTENSION drops the types.  ENABLE ALWAYS: also with
-- session_replication_role = replica.  REASSIGN OWNED, ALTER TYPE ... OWNER
-- and DROP ROLE need no trigger: they act on the exports' types.
CREATE FUNCTION @extschema@.track_dependencies()
RETURNS event_trigger
AS 'MODULE_PATHNAME', 'posthog_export_track_dependencies'
LANGUAGE C;

COMMENT ON FUNCTION @extschema@.track_dependencies IS 'event triggers: DROP SERVER, ALTER SERVER RENAME, DROP OWNED, DROP TYPE, ALTER TYPE and DROP EXTENSION keep exports consistent';

CREATE EVENT TRIGGER posthog_export_dropped ON sql_drop
    WHEN TAG IN ('DROP SERVER', 'DROP FOREIGN DATA WRAPPER', 'DROP OWNED', 'DROP EXTENSION', 'DROP TYPE')
    EXECUTE FUNCTION @extschema@.track_dependencies();
CREATE EVENT TRIGGER posthog_export_dropping ON ddl_command_start
    WHEN TAG IN ('DROP OWNED', 'DROP EXTENSION')
    EXECUTE FUNCTION @extschema@.track_dependencies();
CREATE EVENT TRIGGER posthog_export_altered ON ddl_command_end
    WHEN TAG IN ('ALTER SERVER', 'ALTER TYPE')
    EXECUTE FUNCTION @extschema@.track_dependencies();
ALTER EVENT TRIGGER posthog_export_dropped ENABLE ALWAYS;
ALTER EVENT TRIGGER posthog_export_dropping ENABLE ALWAYS;
ALTER EVENT TRIGGER posthog_export_altered ENABLE ALWAYS;

-- Response text is UTF-8 and is written without conversion: a database
-- with another encoding is refused now, not at the first export.
DO $phx$
BEGIN
    IF pg_catalog.getdatabaseencoding() OPERATOR(pg_catalog.<>) 'UTF8' THEN
        RAISE EXCEPTION 'posthog_export needs a database with UTF8 encoding'
            USING ERRCODE = 'feature_not_supported',
                  DETAIL = pg_catalog.format('This database uses %s.', pg_catalog.getdatabaseencoding()),
                  HINT = 'Create the extension in a database created with ENCODING ''UTF8'' (CREATE DATABASE ... ENCODING ''UTF8'' TEMPLATE template0).';
    END IF;
END
$phx$;

-- create_export(): the schedule argument is named every (interval is an
-- SQL keyword); it takes the settle settings, and checks the server with
-- one query before it creates the export (check_server => false skips
-- it); check_server() makes that check alone.
DROP FUNCTION @extschema@.create_export(text, text, text, text, text, interval, text, text[], text[],
                                        interval, text, interval, interval, time, time);
CREATE FUNCTION @extschema@.create_export(
    name           text,
    server         text,
    model          text DEFAULT 'events',
    schema_name    text DEFAULT 'posthog_exports',
    table_name     text DEFAULT NULL,
    every          interval DEFAULT '1 hour',
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
    settle_every   interval DEFAULT NULL,
    check_server   boolean DEFAULT true,
    columns        jsonb DEFAULT NULL,
    filter         text DEFAULT NULL,
    filter_values  jsonb DEFAULT NULL,
    query          text DEFAULT NULL,
    key            text[] DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'posthog_export_create_export'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION @extschema@.create_export IS 'create an export owned by the current role';

-- One cheap query to a PostHog server with the caller's user mapping:
-- URL, project, key and scope; create_export(check_server => true) runs it.
CREATE FUNCTION @extschema@.check_server(server text)
RETURNS text
AS 'MODULE_PATHNAME', 'posthog_export_check_server'
LANGUAGE C STRICT VOLATILE;

COMMENT ON FUNCTION @extschema@.check_server IS 'check a PostHog server (URL, project, API key and its scope) with one cheap query; returns what answered or raises why not';

-- run_due(raise_on_failure => true) ends with an error when an export
-- failed, after running all of them, so that pg_cron records the job as
-- failed; the default keeps 0.1.0's behaviour (WARNINGs only).
DROP PROCEDURE @extschema@.run_due();
CREATE PROCEDURE @extschema@.run_due(raise_on_failure boolean DEFAULT false)
AS 'MODULE_PATHNAME', 'posthog_export_run_due'
LANGUAGE C;

COMMENT ON PROCEDURE @extschema@.run_due IS 'run the due work of every export the caller may run (for pg_cron, or without the background worker); raise_on_failure: end with an error when an export failed, so pg_cron records a failure';

-- Ad-hoc HogQL as a set of records, typed by the caller's column
-- definition list: one request as the calling role (its user mapping),
-- values as HogQL {placeholders}; a result PostHog may have cut off
-- (hasMore, or 50000 rows) is an error.
CREATE FUNCTION @extschema@.query(server text, hogql text, "values" jsonb DEFAULT NULL)
RETURNS SETOF record
AS 'MODULE_PATHNAME', 'posthog_export_query'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION @extschema@.query IS 'run one HogQL query on a PostHog server as the current role, values filling its {placeholders}; returns its rows as records (give a column definition list), or an error if PostHog has more rows than it returned';

-- The handler: foreign tables over PostHog's HogQL tables (fdw/).  0.1.0's
-- wrapper had none, so no foreign table could be read; the warning that
-- ALTER FOREIGN DATA WRAPPER gives about existing foreign tables is moot
-- (client_min_messages is restored after the script).
CREATE FUNCTION @extschema@.fdw_handler()
RETURNS fdw_handler
AS 'MODULE_PATHNAME', 'posthog_export_fdw_handler'
LANGUAGE C STRICT;

SET client_min_messages = error;
ALTER FOREIGN DATA WRAPPER posthog_export HANDLER @extschema@.fdw_handler;
RESET client_min_messages;

COMMENT ON FUNCTION @extschema@.fdw_handler() IS 'the handler of the posthog_export foreign data wrapper: foreign tables over PostHog''s HogQL tables';

-- Exports users shape themselves: extra columns computed by PostHog from
-- HogQL expressions, a HogQL filter with its values, and the hogql model
-- (any SELECT, merged on a key).  Exports of 0.1.0 have none (NULL).
ALTER TABLE @extschema@.exports DROP CONSTRAINT exports_model_check;
ALTER TABLE @extschema@.exports ADD CONSTRAINT exports_model_check
    CHECK (model IN ('events', 'persons', 'sessions', 'hogql'));
ALTER TABLE @extschema@.exports ADD COLUMN columns jsonb CHECK (pg_catalog.jsonb_typeof(columns) = 'object');
ALTER TABLE @extschema@.exports ADD COLUMN filter text;
ALTER TABLE @extschema@.exports ADD COLUMN filter_values jsonb CHECK (pg_catalog.jsonb_typeof(filter_values) = 'object');
ALTER TABLE @extschema@.exports ADD COLUMN query text;
ALTER TABLE @extschema@.exports ADD COLUMN key text[];
COMMENT ON COLUMN @extschema@.exports.columns IS 'extra destination columns: column name -> HogQL expression PostHog computes (the owner''s HogQL); model hogql: each column of its query -> its ClickHouse type, as the probe at create_export / alter_export found them (set by the extension); NULL: none';
COMMENT ON COLUMN @extschema@.exports.filter IS 'a HogQL boolean expression added to the model''s WHERE (the owner''s HogQL; values in filter_values); NULL: none';
COMMENT ON COLUMN @extschema@.exports.filter_values IS 'the values of the filter''s {placeholders}: placeholder -> value, sent as HogQL values; NULL: none';
COMMENT ON COLUMN @extschema@.exports.query IS 'model hogql: the owner''s HogQL SELECT, with {start} and {end} bound to each interval';
COMMENT ON COLUMN @extschema@.exports.key IS 'model hogql: the columns that identify a row (merge key and keyset); NULL: none';
