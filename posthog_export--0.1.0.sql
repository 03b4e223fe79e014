/* posthog_export--0.1.0.sql */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "CREATE EXTENSION posthog_export" to load this file. \quit

-- The foreign data wrapper only carries connection options: a SERVER holds
-- the PostHog URL and project, a USER MAPPING holds the API key (readable,
-- like any user mapping's options, only by its user and superusers).
CREATE FUNCTION @extschema@.fdw_validator(text[], oid)
RETURNS void
AS 'MODULE_PATHNAME', 'posthog_export_fdw_validator'
LANGUAGE C STRICT;

CREATE FOREIGN DATA WRAPPER posthog_export
  VALIDATOR @extschema@.fdw_validator;

-- One row per export.  Written only by the functions below (they run their
-- catalog statements as the extension's owner); read through row-level
-- security that shows each role its own exports.
CREATE TABLE @extschema@.exports (
    export_id      serial PRIMARY KEY,
    name           text NOT NULL UNIQUE CHECK (name <> ''),
    owner          regrole NOT NULL,
    server_name    text NOT NULL,
    model          text NOT NULL CHECK (model IN ('events', 'persons', 'sessions')),
    mode           text NOT NULL CHECK (mode IN ('append', 'merge')),
    schema_name    text NOT NULL,
    table_name     text NOT NULL,
    "interval"     interval NOT NULL,
    include_events text[],
    exclude_events text[],
    lookback       interval NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT pg_catalog.now()
);

-- One row per exported interval [interval_start, interval_end).  Its
-- counters and cursor commit in the same transaction as the rows they
-- describe, so a run that dies resumes exactly where it stopped.
CREATE TABLE @extschema@.runs (
    run_id         bigserial PRIMARY KEY,
    export_id      integer NOT NULL REFERENCES @extschema@.exports ON DELETE CASCADE,
    export_name    text NOT NULL,
    interval_start timestamptz NOT NULL,
    interval_end   timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    trigger        text NOT NULL,
    rows           bigint NOT NULL DEFAULT 0,
    rows_written   bigint NOT NULL DEFAULT 0,
    bytes          bigint NOT NULL DEFAULT 0,
    pages          integer NOT NULL DEFAULT 0,
    attempts       integer NOT NULL DEFAULT 0,
    started_at     timestamptz,
    finished_at    timestamptz,
    cursor         text[],
    error          text,
    UNIQUE (export_id, interval_start, interval_end),
    CHECK (interval_start < interval_end)
);
CREATE INDEX ON @extschema@.runs (export_id, interval_end);

COMMENT ON TABLE @extschema@.exports IS 'PostHog exports: what to pull, from which server, into which table';
COMMENT ON TABLE @extschema@.runs IS 'One row per exported interval: status, rows, bytes, pages, timings, error';
COMMENT ON COLUMN @extschema@.runs.rows IS 'rows received from PostHog';
COMMENT ON COLUMN @extschema@.runs.rows_written IS 'rows inserted or updated in the destination (a merge skips unchanged rows)';
COMMENT ON COLUMN @extschema@.runs.cursor IS 'keyset position after the last committed page';

REVOKE ALL ON @extschema@.exports, @extschema@.runs FROM PUBLIC;
GRANT SELECT ON @extschema@.exports, @extschema@.runs TO PUBLIC;
ALTER TABLE @extschema@.exports ENABLE ROW LEVEL SECURITY;
ALTER TABLE @extschema@.runs ENABLE ROW LEVEL SECURITY;
CREATE POLICY exports_owner ON @extschema@.exports FOR SELECT
    USING (pg_catalog.pg_has_role(owner, 'USAGE'));
CREATE POLICY runs_owner ON @extschema@.runs FOR SELECT
    USING (EXISTS (SELECT 1 FROM @extschema@.exports e
                   WHERE e.export_id OPERATOR(pg_catalog.=) runs.export_id));

SELECT pg_catalog.pg_extension_config_dump('@extschema@.exports', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.exports_export_id_seq', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.runs', '');
SELECT pg_catalog.pg_extension_config_dump('@extschema@.runs_run_id_seq', '');

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
    lookback       interval DEFAULT NULL)
RETURNS integer
AS 'MODULE_PATHNAME', 'posthog_export_create_export'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION @extschema@.create_export IS 'create an export owned by the current role';

CREATE FUNCTION @extschema@.drop_export(name text, if_exists boolean DEFAULT false)
RETURNS boolean
AS 'MODULE_PATHNAME', 'posthog_export_drop_export'
LANGUAGE C CALLED ON NULL INPUT VOLATILE;

COMMENT ON FUNCTION @extschema@.drop_export IS 'drop an export and its run history (the destination table is kept)';

CREATE PROCEDURE @extschema@.run_export(
    name     text,
    start_at timestamptz,
    end_at   timestamptz,
    force    boolean DEFAULT false)
AS 'MODULE_PATHNAME', 'posthog_export_run_export'
LANGUAGE C;

COMMENT ON PROCEDURE @extschema@.run_export IS 'export every interval of [start_at, end_at), committing page by page';
