-- Foreign tables of posthog_export: the options of tables and columns and
-- their validation, CREATE FOREIGN TABLE, and the HogQL that EXPLAIN shows.
-- No request is made: the server's url goes nowhere (port 9 of 127.0.0.1),
-- so every EXPLAIN below also shows that EXPLAIN without ANALYZE needs no
-- network (a request would fail with "could not connect").
SET client_min_messages = warning;
CREATE EXTENSION IF NOT EXISTS posthog_export;
RESET client_min_messages;
CREATE SERVER ph_fdw FOREIGN DATA WRAPPER posthog_export
  OPTIONS (url 'http://127.0.0.1:9', project_id '1', allow_http 'true', allow_loopback 'true', max_retries '0');
CREATE USER MAPPING FOR CURRENT_USER SERVER ph_fdw OPTIONS (api_key 'phx_fdw_regress_secret');
CREATE SCHEMA ph;

-- options of a foreign table: table, keyset; of a column: expression
CREATE FOREIGN TABLE ph.events (
  uuid text, event text, "timestamp" timestamptz, distinct_id text, properties jsonb,
  browser text OPTIONS (expression 'properties.$browser')
) SERVER ph_fdw;
CREATE FOREIGN TABLE ph.ev (id uuid OPTIONS (expression 'uuid'), ts timestamptz OPTIONS (expression 'timestamp'), event text)
  SERVER ph_fdw OPTIONS (table 'events', keyset 'ts, id');
CREATE FOREIGN TABLE ph.sessions (session_id text, "$vitals_lcp" float8, "$pageview_count" bigint, "$is_bounce" boolean,
  "$entry_utm_source" text) SERVER ph_fdw;
CREATE FOREIGN TABLE ph.raw_groups ("index" bigint, key text) SERVER ph_fdw;
SELECT c.relname, ft.ftoptions FROM pg_foreign_table ft JOIN pg_class c ON c.oid = ft.ftrelid
 WHERE c.relnamespace = 'ph'::regnamespace ORDER BY 1;
SELECT attname, attfdwoptions FROM pg_attribute WHERE attrelid = 'ph.events'::regclass AND attfdwoptions IS NOT NULL;

-- unknown options, options in the wrong place, malformed values
CREATE FOREIGN TABLE ph.bad (a text) SERVER ph_fdw OPTIONS (nosuch 'x');
CREATE FOREIGN TABLE ph.bad (a text) SERVER ph_fdw OPTIONS (api_key 'phx_misplaced');
CREATE FOREIGN TABLE ph.bad (a text) SERVER ph_fdw OPTIONS (url 'https://us.posthog.com');
CREATE FOREIGN TABLE ph.bad (a text OPTIONS (nosuch 'x')) SERVER ph_fdw;
CREATE FOREIGN TABLE ph.bad (a text OPTIONS (table 'events')) SERVER ph_fdw;
CREATE FOREIGN TABLE ph.bad (a text) SERVER ph_fdw OPTIONS (expression 'a');
CREATE FOREIGN TABLE ph.bad (a text) SERVER ph_fdw OPTIONS (table '');
CREATE FOREIGN TABLE ph.bad (a text) SERVER ph_fdw OPTIONS (table 'events', table 'persons');
CREATE FOREIGN TABLE ph.bad (a text) SERVER ph_fdw OPTIONS (keyset '');
CREATE FOREIGN TABLE ph.bad (a text OPTIONS (expression '')) SERVER ph_fdw;
CREATE FOREIGN TABLE ph.bad (a text OPTIONS (expression 'x', expression 'y')) SERVER ph_fdw;
CREATE FOREIGN TABLE ph.bad (a text) SERVER ph_fdw OPTIONS (table E'events\nx');
ALTER SERVER ph_fdw OPTIONS (ADD table 'events');
ALTER SERVER ph_fdw OPTIONS (ADD keyset 'a');
CREATE USER MAPPING FOR PUBLIC SERVER ph_fdw OPTIONS (api_key 'phx_x', expression 'a');
ALTER FOREIGN DATA WRAPPER posthog_export OPTIONS (ADD table 'events');
-- values the validator cannot judge are refused when the table is used
CREATE FOREIGN TABLE ph.bad_key (a text, j jsonb) SERVER ph_fdw OPTIONS (table 'events', keyset 'a, nosuch');
EXPLAIN (COSTS OFF) SELECT * FROM ph.bad_key;
ALTER FOREIGN TABLE ph.bad_key OPTIONS (SET keyset 'j');
EXPLAIN (COSTS OFF) SELECT * FROM ph.bad_key;
ALTER FOREIGN TABLE ph.bad_key OPTIONS (SET keyset 'a,,');
EXPLAIN (COSTS OFF) SELECT * FROM ph.bad_key;
-- a table name that is not a plain name is quoted as a HogQL identifier, never pasted
ALTER FOREIGN TABLE ph.bad_key OPTIONS (DROP keyset, SET table 'events where 1');
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM ph.bad_key;
DROP FOREIGN TABLE ph.bad_key;
-- the table options can be changed and dropped
ALTER FOREIGN TABLE ph.ev OPTIONS (DROP keyset);
ALTER FOREIGN TABLE ph.ev OPTIONS (ADD keyset 'ts, id');
ALTER FOREIGN TABLE ph.events ALTER COLUMN browser OPTIONS (SET expression 'properties.$os');
ALTER FOREIGN TABLE ph.events ALTER COLUMN browser OPTIONS (SET expression 'properties.$browser');

-- EXPLAIN: the HogQL sent, values as placeholders
EXPLAIN (VERBOSE, COSTS OFF) SELECT * FROM ph.events;
EXPLAIN (VERBOSE, COSTS OFF) SELECT uuid FROM ph.events WHERE event = '$pageview' AND distinct_id LIKE 'user%';
EXPLAIN (VERBOSE, COSTS OFF) SELECT uuid FROM ph.events WHERE event IN ('a', 'b') OR distinct_id IS NULL;
EXPLAIN (VERBOSE, COSTS OFF) SELECT uuid FROM ph.events WHERE event <> 'x';
EXPLAIN (VERBOSE, COSTS OFF) SELECT uuid FROM ph.events WHERE "timestamp" >= now() - interval '1 day';
EXPLAIN (VERBOSE, COSTS OFF) SELECT uuid FROM ph.events WHERE properties->>'$browser' = 'Chrome';
EXPLAIN (VERBOSE, COSTS OFF) SELECT uuid FROM ph.events WHERE browser = 'Chrome';
EXPLAIN (VERBOSE, COSTS OFF) SELECT uuid FROM ph.events WHERE md5(uuid) = 'x' AND event = 'y';
EXPLAIN (VERBOSE, COSTS OFF) SELECT event, count(*), count(DISTINCT distinct_id), min("timestamp") FROM ph.events
  GROUP BY event HAVING count(*) > 10;
EXPLAIN (VERBOSE, COSTS OFF) SELECT sum("$pageview_count"), avg("$vitals_lcp"), max("$vitals_lcp") FROM ph.sessions WHERE NOT "$is_bounce";
EXPLAIN (VERBOSE, COSTS OFF) SELECT session_id FROM ph.sessions WHERE "$entry_utm_source" NOT IN ('google', 'x');
EXPLAIN (VERBOSE, COSTS OFF) SELECT session_id, "$vitals_lcp" FROM ph.sessions ORDER BY "$vitals_lcp" DESC LIMIT 10;
EXPLAIN (VERBOSE, COSTS OFF) SELECT uuid FROM ph.events WHERE event = 'x' ORDER BY "timestamp" LIMIT 5 OFFSET 2;
EXPLAIN (VERBOSE, COSTS OFF) SELECT id FROM ph.ev WHERE event = 'x';
EXPLAIN (VERBOSE, COSTS OFF) SELECT key FROM ph.raw_groups WHERE "index" = 1;
SET plan_cache_mode = force_generic_plan;
PREPARE q(text, int) AS SELECT uuid FROM ph.events WHERE event = $1 LIMIT $2;
EXPLAIN (VERBOSE, COSTS OFF) EXECUTE q('$pageview', 3);
DEALLOCATE q;
RESET plan_cache_mode;
-- the key is in no EXPLAIN output above; a scan does make a request (which fails here)
\set VERBOSITY terse
SELECT count(*) FROM ph.events;
\set VERBOSITY default

DROP SCHEMA ph CASCADE;
DROP SERVER ph_fdw CASCADE;
