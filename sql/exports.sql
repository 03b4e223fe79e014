-- create_export / drop_export / run_export argument checks (no network needed)
CREATE SERVER ph FOREIGN DATA WRAPPER posthog_export
  OPTIONS (url 'http://127.0.0.1:9', project_id '1', allow_http 'true', max_retries '0');

-- no user mapping yet
CREATE ROLE regress_phx_nomap;
GRANT USAGE ON FOREIGN SERVER ph TO regress_phx_nomap;
SET ROLE regress_phx_nomap;
SELECT posthog_export.create_export(name => 'ev', server => 'ph', check_server => false);
RESET ROLE;
REVOKE USAGE ON FOREIGN SERVER ph FROM regress_phx_nomap;
DROP ROLE regress_phx_nomap;
CREATE USER MAPPING FOR CURRENT_USER SERVER ph OPTIONS (api_key 'phx_regress_secret');
-- create_export's NOTICEs (what runs the export, where it starts: now()) are tested in TAP 022
SET client_min_messages = warning;

-- bad arguments
SELECT posthog_export.create_export(name => 'ev', server => 'nope', check_server => false);
SELECT posthog_export.create_export(name => 'ev', server => 'ph', model => 'clicks', check_server => false);
SELECT posthog_export.create_export(name => 'ev', server => 'ph', every => '2 hours', check_server => false);
SELECT posthog_export.create_export(name => 'ev', server => 'ph', every => '1 month', check_server => false);
SELECT posthog_export.create_export(name => 'ev', server => 'ph', mode => 'upsert', check_server => false);
SELECT posthog_export.create_export(name => 'ev', server => 'ph', lookback => '-1 day', check_server => false);
SELECT posthog_export.create_export(name => '', server => 'ph', check_server => false);
SELECT posthog_export.create_export(name => NULL, server => 'ph', check_server => false);
SELECT posthog_export.create_export(name => 'ev', server => 'ph', include_events => ARRAY['a', NULL], check_server => false);
-- a list that would not fit in a PostHog query (ClickHouse's 256 KiB max_query_size)
SELECT posthog_export.create_export(name => 'ev', server => 'ph',
  exclude_events => (SELECT array_agg(repeat('e', 200) || i) FROM generate_series(1, 400) i), check_server => false);

-- create_export checks the server with one query first, as check_server() does: here
-- the network policy refuses the loopback address; check_server => false skips the check
\set VERBOSITY terse
SELECT posthog_export.create_export(name => 'events', server => 'ph');
SELECT posthog_export.check_server('ph');
\set VERBOSITY default

-- the issue's example; "interval" is a keyword, so named notation quotes it
SELECT posthog_export.create_export(
  name => 'events', server => 'ph', model => 'events',
  schema_name => 'posthog_exports', table_name => 'events',
  every => '1 hour', exclude_events => ARRAY['$feature_flag_called'], check_server => false);
SELECT posthog_export.create_export(name => 'events', server => 'ph', check_server => false);
SELECT name, owner_type, (SELECT typowner FROM pg_type WHERE oid = owner_type) = current_user::regrole AS mine, server_name, model, mode, schema_name, table_name, "interval",
       include_events, exclude_events, lookback
  FROM posthog_export.exports;
-- the table was created with the model's columns, identifiers quoted
\d posthog_exports.events

-- merge mode creates the table with a primary key on uuid
SELECT posthog_export.create_export('Events Merge', 'ph', 'events', 'posthog_exports', 'Merged Events',
                                    '5 minutes', 'merge', check_server => false);
\d posthog_exports."Merged Events"

-- an existing table is used as it is; merge needs a unique key on uuid
CREATE TABLE posthog_exports.mine (uuid text, event text, extra int);
SELECT posthog_export.create_export('mine_merge', 'ph', table_name => 'mine', mode => 'merge', check_server => false);
SELECT posthog_export.create_export('mine_append', 'ph', table_name => 'mine', check_server => false);
-- a table sharing no column with the model is an error
CREATE TABLE posthog_exports.unrelated (a int, b text);
SELECT posthog_export.create_export('unrelated', 'ph', table_name => 'unrelated', check_server => false);

-- persons and sessions are merged, never appended; event filters are for events
SELECT posthog_export.create_export('p_append', 'ph', 'persons', mode => 'append', check_server => false);
SELECT posthog_export.create_export('p_filter', 'ph', 'persons', include_events => ARRAY['x'], check_server => false);
SELECT posthog_export.create_export('persons', 'ph', 'persons', check_server => false);
SELECT posthog_export.create_export('sessions', 'ph', 'sessions', every => '1 day', check_server => false);
SELECT name, model, mode, table_name, "interval", lookback, settle_window FROM posthog_export.exports
 WHERE model <> 'events' ORDER BY name;
-- they read their whole range on every run: nothing to settle
SELECT posthog_export.alter_export('persons', settle_every => '2 hours');
\d posthog_exports.persons
SELECT count(*) AS session_columns,
       string_agg(attname, ', ' ORDER BY attnum) FILTER (WHERE attnum <= 6) AS first_columns
  FROM pg_attribute WHERE attrelid = 'posthog_exports.sessions'::regclass AND attnum > 0;
SELECT pg_get_constraintdef(oid) FROM pg_constraint
 WHERE conrelid = 'posthog_exports.sessions'::regclass AND contype = 'p';

-- run_export checks its range before doing anything
CALL posthog_export.run_export('nope', '2026-11-20 00:00+00', '2026-11-20 01:00+00');
CALL posthog_export.run_export('events', '2026-11-20 01:00+00', '2026-11-20 00:00+00');
CALL posthog_export.run_export('events', '2026-11-20 00:30+00', '2026-11-20 01:00+00');
CALL posthog_export.run_export('events', '2026-11-20 00:00+00', 'infinity');
CALL posthog_export.run_export('events', '2026-11-20 00:00+00', '2026-11-20 01:00+00', force => true);
-- weeks start on Monday (UTC)
SELECT posthog_export.create_export('weekly', 'ph', table_name => 'events', every => '1 week', check_server => false);
CALL posthog_export.run_export('weekly', '2026-11-18 00:00+00', '2026-11-25 00:00+00');

-- schedule settings
SELECT posthog_export.create_export('tz', 'ph', table_name => 'events', every => '1 day', timezone => 'Mars/Olympus', check_server => false);
SELECT posthog_export.create_export('tz', 'ph', table_name => 'events', every => '1 hour', start_offset => '30 minutes', check_server => false);
SELECT posthog_export.create_export('tz', 'ph', table_name => 'events', every => '1 day', start_offset => '1 day', check_server => false);
SELECT posthog_export.create_export('tz', 'ph', table_name => 'events', every => '1 day', delay => '2 days', check_server => false);
SELECT posthog_export.create_export('tz', 'ph', table_name => 'events', exclude_window_start => '01:00', check_server => false);
SELECT posthog_export.create_export('daily_paris', 'ph', table_name => 'events', every => '1 day',
  timezone => 'Europe/Paris', start_offset => '2 hours', delay => '10 minutes',
  exclude_window_start => '23:00', exclude_window_end => '01:00', check_server => false);
-- the first scheduled interval is the first full period after creation, at 02:00 Paris time
SELECT next_interval_start > now() AND next_interval_start <= now() + interval '1 day' AS first_period_ahead,
       to_char(next_interval_start AT TIME ZONE 'Europe/Paris', 'HH24:MI') AS local_start,
       timezone, start_offset, delay, exclude_window_start, exclude_window_end
  FROM posthog_export.exports WHERE name = 'daily_paris';
-- run_export follows the local grid: UTC midnight is no boundary, 02:00 Paris (01:00 UTC) is
CALL posthog_export.run_export('daily_paris', '2026-11-20 00:00+00', '2026-11-21 00:00+00');
SELECT posthog_export.alter_export('daily_paris', every => '1 week', drop_exclude_window => true);
-- the schedule goes on where the daily grid stopped; its next interval ends at the next Monday 02:00
SELECT "interval", exclude_window_start, to_char(next_interval_start AT TIME ZONE 'Europe/Paris', 'HH24:MI') AS next_local,
       to_char((posthog_export.next_run(e) - e.delay) AT TIME ZONE 'Europe/Paris', 'Dy HH24:MI') AS next_interval_ends
  FROM posthog_export.exports e WHERE name = 'daily_paris';
SELECT posthog_export.alter_export('daily_paris', every => '3 days');
SELECT posthog_export.alter_export('events', include_events => ARRAY['$pageview']);
SELECT include_events, exclude_events FROM posthog_export.exports WHERE name = 'events';
SELECT posthog_export.alter_export('events', include_events => '{}', exclude_events => ARRAY['$feature_flag_called']);
SELECT include_events, exclude_events FROM posthog_export.exports WHERE name = 'events';
-- settle settings (late events): events only, a window of at least 0, a cadence of at least a second
SELECT posthog_export.create_export('late', 'ph', table_name => 'events', settle_window => '-1 hour', check_server => false);
SELECT posthog_export.create_export('late', 'ph', table_name => 'events', settle_every => '500 milliseconds', check_server => false);
SELECT posthog_export.create_export('late', 'ph', table_name => 'events', settle_window => '1 month', check_server => false);
SELECT posthog_export.create_export('late', 'ph', table_name => 'events', settle_every => '400 days', check_server => false);
SELECT posthog_export.create_export('late', 'ph', table_name => 'events', settle_window => '1 hour', settle_every => '1 hour', check_server => false);
SELECT posthog_export.create_export('late', 'ph', 'persons', table_name => 'late_persons', settle_window => '1 day', check_server => false);
SELECT posthog_export.alter_export('events', settle_window => '2 days', settle_every => '30 minutes');
SELECT settle_window, settle_every, next_settle_at IS NOT NULL AS pass_due FROM posthog_export.exports WHERE name = 'events';
SELECT posthog_export.alter_export('events', settle_window => '0');
SELECT settle_window, settle_every, next_settle_at IS NULL AS no_pass FROM posthog_export.exports WHERE name = 'events';
SELECT posthog_export.alter_export('events', settle_every => '0');
SELECT posthog_export.alter_export('events', settle_window => '1 day', settle_every => '1 hour');
SELECT name, settle_window, settle_every FROM posthog_export.exports WHERE name IN ('events', 'weekly') ORDER BY name;
SELECT export_name, late_rows_missed FROM posthog_export.status WHERE export_name = 'events';
-- before its first scheduled interval ran, nothing is exported: no exported_until, no lag; not running
SELECT export_name, exported_until, lag, running, waiting_for, source_bound
  FROM posthog_export.status WHERE export_name = 'events';
SELECT posthog_export.pause('daily_paris');
SELECT export_name, paused, paused_reason, next_run IS NULL AS no_next_run, failures_in_a_row, running
  FROM posthog_export.status WHERE export_name = 'daily_paris';
SELECT posthog_export.unpause('daily_paris');
SELECT export_name, paused, next_run IS NOT NULL AS has_next_run FROM posthog_export.status WHERE export_name = 'daily_paris';
-- backfill checks its range as run_export does, with the same messages
SELECT posthog_export.backfill('events', '2026-11-20 01:00+00', '2026-11-20 00:00+00');
SELECT posthog_export.backfill('events', '2026-11-20 00:30+00', '2026-11-20 01:00+00');
SELECT posthog_export.backfill('events', '2026-11-20 00:00+00', '2026-11-20 02:10+00');
SELECT posthog_export.backfill('events', '2026-11-20 00:00+00', 'infinity');
-- backfills end where the schedule begins
\set VERBOSITY terse
SELECT posthog_export.backfill('events', date_trunc('hour', now()) + interval '1 day', NULL);
\set VERBOSITY default
SELECT posthog_export.backfill('events', '2026-11-20 00:00+00', '2026-11-20 03:00+00') > 0 AS queued;
SELECT start_at, end_at, next_start, status FROM posthog_export.backfills;
SELECT * FROM posthog_export.progress;

-- other roles neither see nor use someone else's exports
CREATE ROLE regress_phx_other;
GRANT USAGE ON SCHEMA posthog_export TO regress_phx_other;
SET ROLE regress_phx_other;
SELECT count(*) FROM posthog_export.exports;
SELECT count(*) FROM posthog_export.runs;
SELECT posthog_export.drop_export('events');
CALL posthog_export.run_export('events', '2026-11-20 00:00+00', '2026-11-20 01:00+00');
-- ... nor write the catalog directly
INSERT INTO posthog_export.exports (name, owner_type, server_name, model, mode, schema_name, table_name, "interval", lookback)
  VALUES ('x', 'posthog_export."export events"', 'ph', 'events', 'append', 's', 't', '1 hour', '1 day');
UPDATE posthog_export.runs SET status = 'completed';
-- ... and cannot create an export on a server it has no USAGE on
SELECT posthog_export.create_export('theirs', 'ph', schema_name => 'regress_other', check_server => false);
RESET ROLE;

-- the api key is nowhere in the catalog
SELECT count(*) FROM posthog_export.exports e WHERE e::text LIKE '%phx_regress_secret%';

RESET client_min_messages;
SELECT posthog_export.drop_export('nope');
SELECT posthog_export.drop_export('nope', if_exists => true);
SELECT posthog_export.drop_export('Events Merge');
SELECT name FROM posthog_export.exports ORDER BY name;
-- dropping an export keeps its table
SELECT to_regclass('posthog_exports."Merged Events"') IS NOT NULL AS table_kept;

REVOKE USAGE ON SCHEMA posthog_export FROM regress_phx_other;
DROP ROLE regress_phx_other;
