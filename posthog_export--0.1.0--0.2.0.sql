/* posthog_export--0.1.0--0.2.0.sql: upgrade from 0.1.0 (ALTER EXTENSION posthog_export UPDATE) */

\echo Use "ALTER EXTENSION posthog_export UPDATE TO '0.2.0'" to load this file. \quit

-- A backend that dies running an interval (a crash, a kill) leaves its run
-- "running"; the next attempt counts it, and the export pauses at two in a
-- row instead of crashing the cluster again and again.
ALTER TABLE @extschema@.runs ADD COLUMN crashes integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN @extschema@.runs.crashes IS 'backends that died running this interval in a row (crash or kill); at 2 the export pauses';
