/*-------------------------------------------------------------------------
 *
 * catalog.c
 *		Access to the extension's own tables: posthog_export.exports,
 *		posthog_export.runs and posthog_export.backfills.
 *
 * The tables belong to the role that created the extension; ordinary
 * roles may only read them, through row-level security that shows each
 * role its own exports.  Every write goes through this file, which runs
 * its statements as the tables' owner (security.c) with search_path
 * pinned to pg_catalog, so a caller can neither forge another role's runs nor
 * redirect our SQL through objects of its own.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "store/store.h"

/* 1 when a run left "running" was started under the current postmaster */
#define RUN_DIED_UNDER_THIS_POSTMASTER \
	"(CASE WHEN status = 'running' AND started_at OPERATOR(pg_catalog.>=) " \
	"pg_catalog.pg_postmaster_start_time() THEN 1 ELSE 0 END)"

/*
 * The library reads and writes the catalog of its own version: after the
 * new library is installed, the tables of an older version stay as they
 * were until ALTER EXTENSION ... UPDATE, and every use says so.
 */
static void
check_catalog_version(void)
{
	static bool checked = false;
	char	   *version;

	if (checked)
		return;
	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension "
					"WHERE extname OPERATOR(pg_catalog.=) '" PHX_EXTENSION_NAME "'",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the version of extension \"%s\"", PHX_EXTENSION_NAME);
	version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (strcmp(version, PHX_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"%s\" is at version %s, but its library is version %s",
						PHX_EXTENSION_NAME, version, PHX_VERSION),
				 errhint("Update it: ALTER EXTENSION %s UPDATE;", PHX_EXTENSION_NAME)));
	checked = true;
}

/* The most parameters one catalog statement takes (phx_export_insert). */
#define CATALOG_MAX_ARGS 18

/*
 * The parameters of one catalog statement, $1 ... $n in the order they
 * are added: each function states its SQL and its values, nothing else.
 */
typedef struct CatalogArgs
{
	int			n;
	Oid			types[CATALOG_MAX_ARGS];
	Datum		values[CATALOG_MAX_ARGS];
	char		nulls[CATALOG_MAX_ARGS];
} CatalogArgs;

/* Adds the next parameter; a null one has its type but no value. */
static void
arg(CatalogArgs *args, Oid type, Datum value, bool isnull)
{
	Assert(args->n < CATALOG_MAX_ARGS);
	args->types[args->n] = type;
	args->values[args->n] = isnull ? (Datum) 0 : value;
	args->nulls[args->n] = isnull ? 'n' : ' ';
	args->n++;
}

/* A text parameter; NULL is SQL NULL. */
static void
arg_text(CatalogArgs *args, const char *s)
{
	arg(args, TEXTOID, s ? CStringGetTextDatum(s) : (Datum) 0, s == NULL);
}

/* Executes a catalog statement (args may be NULL) as the catalog owner. */
static int
catalog_exec(const char *sql, CatalogArgs *args)
{
	PhxRoleSwitch sw;
	int			rc;
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		pushed = phx_snapshot_ensure();

	phx_become(phx_catalog_owner(), &sw);
	check_catalog_version();
	if (args)
		rc = SPI_execute_with_args(sql, args->n, args->types, args->values,
								   args->nulls, false, 0);
	else
		rc = SPI_execute_with_args(sql, 0, NULL, NULL, NULL, false, 0);
	phx_restore(&sw);
	phx_snapshot_release(pushed);
	/* SPI leaves its own procedure context current; the caller's results go elsewhere */
	MemoryContextSwitchTo(oldcxt);
	if (rc < 0)
		elog(ERROR, "posthog_export catalog statement failed: %s", SPI_result_code_string(rc));
	return rc;
}

static char *
get_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static List *
get_text_array(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	Datum	   *elems;
	bool	   *elemnulls;
	int			n;
	List	   *result = NIL;

	if (isnull)
		return NIL;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &elemnulls, &n);
	for (int i = 0; i < n; i++)
		if (!elemnulls[i])
			result = lappend(result, TextDatumGetCString(elems[i]));
	return result;
}

Datum
phx_text_list_to_array(List *list)
{
	Datum	   *elems;
	int			n = list_length(list);
	ListCell   *lc;

	if (n == 0)
		return PointerGetDatum(construct_empty_array(TEXTOID));
	elems = palloc(sizeof(Datum) * n);
	foreach(lc, list)
		elems[foreach_current_index(lc)] = CStringGetTextDatum((char *) lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

#define EXPORT_COLUMNS \
	"export_id, name, owner::oid, server_name, model, mode, schema_name, table_name, " \
	"\"interval\", include_events, exclude_events, lookback, timezone, start_offset, delay, " \
	"exclude_window_start, exclude_window_end, next_interval_start, paused, " \
	"consecutive_failures, retry_at"

static PhxExport *
export_from_tuple(HeapTuple tup, TupleDesc desc)
{
	PhxExport  *exp = palloc0(sizeof(PhxExport));
	bool		isnull;
	Datum		d;

	exp->export_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	exp->name = get_text(tup, desc, 2);
	exp->owner = DatumGetObjectId(SPI_getbinval(tup, desc, 3, &isnull));
	exp->server_name = get_text(tup, desc, 4);
	exp->model = get_text(tup, desc, 5);
	exp->mode = get_text(tup, desc, 6);
	exp->schema_name = get_text(tup, desc, 7);
	exp->table_name = get_text(tup, desc, 8);
	exp->interval = *DatumGetIntervalP(SPI_getbinval(tup, desc, 9, &isnull));
	exp->include_events = get_text_array(tup, desc, 10);
	exp->exclude_events = get_text_array(tup, desc, 11);
	exp->lookback = *DatumGetIntervalP(SPI_getbinval(tup, desc, 12, &isnull));
	exp->timezone = get_text(tup, desc, 13);
	exp->start_offset = *DatumGetIntervalP(SPI_getbinval(tup, desc, 14, &isnull));
	exp->delay = *DatumGetIntervalP(SPI_getbinval(tup, desc, 15, &isnull));
	d = SPI_getbinval(tup, desc, 16, &isnull);
	exp->has_exclude_window = !isnull;
	if (!isnull)
	{
		exp->exclude_start = DatumGetTimeADT(d);
		exp->exclude_end = DatumGetTimeADT(SPI_getbinval(tup, desc, 17, &isnull));
	}
	exp->next_interval_start = DatumGetTimestampTz(SPI_getbinval(tup, desc, 18, &isnull));
	exp->paused = DatumGetBool(SPI_getbinval(tup, desc, 19, &isnull));
	exp->consecutive_failures = DatumGetInt32(SPI_getbinval(tup, desc, 20, &isnull));
	d = SPI_getbinval(tup, desc, 21, &isnull);
	exp->has_retry_at = !isnull;
	if (!isnull)
		exp->retry_at = DatumGetTimestampTz(d);
	return exp;
}

/*
 * Looks an export up by name.  Roles other than the owner (and
 * superusers) get the same error as for a missing export: they may not
 * learn its settings, nor whether it exists.
 */
PhxExport *
phx_export_lookup(const char *name, bool missing_ok)
{
	CatalogArgs args = {0};
	PhxExport  *exp;

	arg_text(&args, name);
	catalog_exec("SELECT " EXPORT_COLUMNS
				 " FROM posthog_export.exports WHERE name OPERATOR(pg_catalog.=) $1",
				 &args);

	if (SPI_processed == 0)
	{
		if (missing_ok)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("export \"%s\" does not exist", name)));
	}
	exp = export_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
	SPI_freetuptable(SPI_tuptable);

	if (!superuser() && !has_privs_of_role(GetUserId(), exp->owner))
	{
		if (missing_ok)
			return NULL;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("export \"%s\" does not exist", name),
				 errhint("Only the owner of an export and superusers can see or use it.")));
	}
	return exp;
}

/* For the scheduler (which runs as a superuser): an export by id, or NULL. */
PhxExport *
phx_export_by_id(int32 export_id)
{
	CatalogArgs args = {0};
	PhxExport  *exp = NULL;

	arg(&args, INT4OID, Int32GetDatum(export_id), false);
	catalog_exec("SELECT " EXPORT_COLUMNS
				 " FROM posthog_export.exports WHERE export_id OPERATOR(pg_catalog.=) $1",
				 &args);
	if (SPI_processed > 0)
		exp = export_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
	SPI_freetuptable(SPI_tuptable);
	return exp;
}

/*
 * Every export the current role may run (all of them for a superuser),
 * unpaused ones only, in name order.
 */
List *
phx_export_list(void)
{
	List	   *result = NIL;
	bool		super = superuser();
	Oid			me = GetUserId();

	catalog_exec("SELECT " EXPORT_COLUMNS " FROM posthog_export.exports "
				 "WHERE NOT paused ORDER BY name", NULL);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		PhxExport  *exp = export_from_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc);

		if (super || has_privs_of_role(me, exp->owner))
			result = lappend(result, exp);
	}
	SPI_freetuptable(SPI_tuptable);
	return result;
}

bool
phx_export_has_backfill(int32 export_id)
{
	CatalogArgs args = {0};

	arg(&args, INT4OID, Int32GetDatum(export_id), false);
	catalog_exec("SELECT 1 FROM posthog_export.backfills WHERE export_id OPERATOR(pg_catalog.=) $1 "
				 "AND status IN ('queued', 'running', 'failed') LIMIT 1",
				 &args);
	return SPI_processed > 0;
}

/* The oldest unfinished backfill of the export, or NULL. */
PhxBackfill *
phx_backfill_next(PhxExport *exp)
{
	CatalogArgs args = {0};
	PhxBackfill *b = NULL;
	bool		isnull;

	arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	catalog_exec("SELECT backfill_id, next_start, end_at FROM posthog_export.backfills "
				 "WHERE export_id OPERATOR(pg_catalog.=) $1 AND status IN ('queued', 'running', 'failed') "
				 "ORDER BY backfill_id LIMIT 1",
				 &args);
	if (SPI_processed > 0)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		b = palloc0(sizeof(PhxBackfill));
		b->backfill_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		b->next_start = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull));
		b->end_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
	}
	SPI_freetuptable(SPI_tuptable);
	return b;
}

void
phx_backfill_advance(PhxBackfill *b, TimestampTz next_start)
{
	CatalogArgs args = {0};

	arg(&args, INT8OID, Int64GetDatum(b->backfill_id), false);
	arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(next_start), false);
	catalog_exec("UPDATE posthog_export.backfills SET next_start = $2, "
				 "status = CASE WHEN $2 OPERATOR(pg_catalog.>=) end_at THEN 'completed' ELSE 'running' END, "
				 "finished_at = CASE WHEN $2 OPERATOR(pg_catalog.>=) end_at THEN pg_catalog.clock_timestamp() END "
				 "WHERE backfill_id OPERATOR(pg_catalog.=) $1",
				 &args);
	b->next_start = next_start;
}

/* The scheduled interval starting at next_start is the next one to run. */
void
phx_export_advance(PhxExport *exp, TimestampTz next_start)
{
	CatalogArgs args = {0};

	arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(next_start), false);
	catalog_exec("UPDATE posthog_export.exports SET next_interval_start = $2 "
				 "WHERE export_id OPERATOR(pg_catalog.=) $1",
				 &args);
	exp->next_interval_start = next_start;
}

/*
 * Records the failure count after a run, when to retry (if has_retry_at)
 * and, when "pause", pauses the export with "reason".
 */
void
phx_export_set_failures(PhxExport *exp, int32 failures, bool has_retry_at,
						TimestampTz retry_at, bool pause, const char *reason)
{
	CatalogArgs args = {0};

	arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	arg(&args, INT4OID, Int32GetDatum(failures), false);
	arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(retry_at), !has_retry_at);
	arg(&args, BOOLOID, BoolGetDatum(pause), false);
	arg_text(&args, reason);
	catalog_exec("UPDATE posthog_export.exports SET consecutive_failures = $2, retry_at = $3, "
				 "paused = paused OR $4, paused_reason = CASE WHEN $4 THEN $5 ELSE paused_reason END "
				 "WHERE export_id OPERATOR(pg_catalog.=) $1",
				 &args);
	exp->consecutive_failures = failures;
	exp->has_retry_at = has_retry_at;
	exp->retry_at = retry_at;
	exp->paused |= pause;
}

/*
 * At scheduler start: runs left "running" by a crash or a restart are
 * marked failed (and resume from their committed cursor when next run).
 * A run whose export is locked is still alive in some backend and is left
 * alone.
 */
void
phx_mark_interrupted_runs(void)
{
	catalog_exec("UPDATE posthog_export.runs SET status = 'failed', "
				 "crashes = crashes OPERATOR(pg_catalog.+) " RUN_DIED_UNDER_THIS_POSTMASTER ", "
				 "error = 'interrupted: the run ended with its backend (server restart or crash); it resumes from its committed cursor', "
				 "finished_at = pg_catalog.clock_timestamp() "
				 "WHERE status = 'running' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l "
				 "WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) "
				 "AND l.classid = " CppAsString2(PHX_ADVISORY_LOCK_KEY) " AND l.objid::pg_catalog.int4 OPERATOR(pg_catalog.=) runs.export_id "
				 "AND l.objsubid = 2)",
				 NULL);
}

static PhxRun *
run_from_tuple(HeapTuple tup, TupleDesc desc)
{
	PhxRun	   *run = palloc0(sizeof(PhxRun));
	bool		isnull;

	run->run_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	run->status = get_text(tup, desc, 2);
	run->rows = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	run->bytes = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
	run->pages = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
	run->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	run->cursor = get_text_array(tup, desc, 7);
	run->rows_written = DatumGetInt64(SPI_getbinval(tup, desc, 8, &isnull));
	run->crashes = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
	return run;
}

#define RUN_COLUMNS "run_id, status, rows, bytes, pages, attempts, cursor, rows_written, crashes"

/*
 * Finds or creates the runs row of [start, end) and marks it running.
 * A completed interval is returned untouched (status "completed") unless
 * "force" asks to export it again from the beginning; a running or failed
 * one resumes from its committed cursor.
 */
PhxRun *
phx_run_begin(PhxExport *exp, TimestampTz start, TimestampTz end,
			  const char *trigger, bool force)
{
	CatalogArgs args = {0};
	CatalogArgs uargs = {0};
	PhxRun	   *run;

	arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	arg_text(&args, exp->name);
	arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(start), false);
	arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(end), false);
	arg_text(&args, trigger);
	catalog_exec("INSERT INTO posthog_export.runs "
				 "(export_id, export_name, interval_start, interval_end, status, trigger) "
				 "VALUES ($1, $2, $3, $4, 'pending', $5) "
				 "ON CONFLICT (export_id, interval_start, interval_end) DO NOTHING",
				 &args);
	catalog_exec("SELECT " RUN_COLUMNS " FROM posthog_export.runs "
				 "WHERE export_id OPERATOR(pg_catalog.=) $1 "
				 "AND interval_start OPERATOR(pg_catalog.=) $3 "
				 "AND interval_end OPERATOR(pg_catalog.=) $4 FOR UPDATE",
				 &args);
	if (SPI_processed != 1)
		elog(ERROR, "runs row of export \"%s\" vanished", exp->name);
	run = run_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
	SPI_freetuptable(SPI_tuptable);

	if (strcmp(run->status, "completed") == 0 && !force)
		return run;

	arg(&uargs, INT8OID, Int64GetDatum(run->run_id), false);
	arg(&uargs, BOOLOID, BoolGetDatum(force && strcmp(run->status, "completed") == 0), false);
	arg_text(&uargs, trigger);

	/*
	 * A row still "running" while we hold the export's lock was left by a
	 * backend that died without recording the end of the run; under this
	 * same postmaster that was a crash or a kill, not a restart.
	 */
	catalog_exec("UPDATE posthog_export.runs SET status = 'running', "
				 "crashes = crashes OPERATOR(pg_catalog.+) " RUN_DIED_UNDER_THIS_POSTMASTER ", "
				 "attempts = attempts OPERATOR(pg_catalog.+) 1, trigger = $3, "
				 "started_at = pg_catalog.clock_timestamp(), finished_at = NULL, error = NULL, "
				 "rows = CASE WHEN $2 THEN 0 ELSE rows END, "
				 "rows_written = CASE WHEN $2 THEN 0 ELSE rows_written END, "
				 "bytes = CASE WHEN $2 THEN 0 ELSE bytes END, "
				 "pages = CASE WHEN $2 THEN 0 ELSE pages END, "
				 "cursor = CASE WHEN $2 THEN NULL ELSE cursor END "
				 "WHERE run_id OPERATOR(pg_catalog.=) $1 RETURNING " RUN_COLUMNS,
				 &uargs);
	run = run_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
	SPI_freetuptable(SPI_tuptable);
	return run;
}

/*
 * Records progress: counters and the keyset cursor, committed in the same
 * transaction as the rows they count.  With "completed", the run ends too.
 */
void
phx_run_progress(PhxRun *run, PhxRunDelta *delta, List *cursor, bool completed)
{
	CatalogArgs args = {0};

	arg(&args, INT8OID, Int64GetDatum(run->run_id), false);
	arg(&args, INT8OID, Int64GetDatum(delta->rows), false);
	arg(&args, INT8OID, Int64GetDatum(delta->bytes), false);
	arg(&args, TEXTARRAYOID, cursor != NIL ? phx_text_list_to_array(cursor) : (Datum) 0,
		cursor == NIL);
	arg(&args, BOOLOID, BoolGetDatum(completed), false);
	arg(&args, INT4OID, Int32GetDatum(delta->pages), false);
	arg(&args, INT8OID, Int64GetDatum(delta->rows_written), false);
	catalog_exec("UPDATE posthog_export.runs SET "
				 "rows = rows OPERATOR(pg_catalog.+) $2, "
				 "bytes = bytes OPERATOR(pg_catalog.+) $3, "
				 "pages = pages OPERATOR(pg_catalog.+) $6, "
				 "rows_written = rows_written OPERATOR(pg_catalog.+) $7, "
				 "cursor = COALESCE($4, cursor), "
				 "status = CASE WHEN $5 THEN 'completed' ELSE status END, "
				 "crashes = CASE WHEN $5 THEN 0 ELSE crashes END, "
				 "finished_at = CASE WHEN $5 THEN pg_catalog.clock_timestamp() END "
				 "WHERE run_id OPERATOR(pg_catalog.=) $1",
				 &args);
	run->rows += delta->rows;
	run->bytes += delta->bytes;
	run->pages += delta->pages;
	run->rows_written += delta->rows_written;
	if (completed)
		run->status = "completed";
}

void
phx_run_failed(PhxRun *run, const char *message)
{
	CatalogArgs args = {0};

	arg(&args, INT8OID, Int64GetDatum(run->run_id), false);
	arg_text(&args, message);
	catalog_exec("UPDATE posthog_export.runs SET status = 'failed', error = $2, crashes = 0, "
				 "finished_at = pg_catalog.clock_timestamp() "
				 "WHERE run_id OPERATOR(pg_catalog.=) $1",
				 &args);
	run->status = "failed";
}

/* Whether an export of that name exists, whoever owns it (names are global). */
bool
phx_export_exists(const char *name)
{
	CatalogArgs args = {0};

	arg_text(&args, name);
	catalog_exec("SELECT 1 FROM posthog_export.exports WHERE name OPERATOR(pg_catalog.=) $1",
				 &args);
	return SPI_processed > 0;
}

int32
phx_export_insert(PhxExport *exp, Datum include, bool include_null,
				  Datum exclude, bool exclude_null)
{
	CatalogArgs args = {0};
	bool		isnull;

	arg_text(&args, exp->name);
	arg(&args, OIDOID, ObjectIdGetDatum(exp->owner), false);
	arg_text(&args, exp->server_name);
	arg_text(&args, exp->model);
	arg_text(&args, exp->mode);
	arg_text(&args, exp->schema_name);
	arg_text(&args, exp->table_name);
	arg(&args, INTERVALOID, IntervalPGetDatum(&exp->interval), false);
	arg(&args, TEXTARRAYOID, include, include_null);
	arg(&args, TEXTARRAYOID, exclude, exclude_null);
	arg(&args, INTERVALOID, IntervalPGetDatum(&exp->lookback), false);
	arg_text(&args, exp->timezone);
	arg(&args, INTERVALOID, IntervalPGetDatum(&exp->start_offset), false);
	arg(&args, INTERVALOID, IntervalPGetDatum(&exp->delay), false);
	arg(&args, TIMEOID, TimeADTGetDatum(exp->exclude_start), !exp->has_exclude_window);
	arg(&args, TIMEOID, TimeADTGetDatum(exp->exclude_end), !exp->has_exclude_window);
	arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(exp->next_interval_start), false);
	arg(&args, INT4OID, Int32GetDatum(0), false);
	catalog_exec("INSERT INTO posthog_export.exports (name, owner, server_name, model, mode, "
				 "schema_name, table_name, \"interval\", include_events, exclude_events, lookback, "
				 "timezone, start_offset, delay, exclude_window_start, exclude_window_end, "
				 "next_interval_start, consecutive_failures) "
				 "VALUES ($1, $2::pg_catalog.regrole, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
				 "$12, $13, $14, $15, $16, $17, $18) "
				 "RETURNING export_id",
				 &args);
	return DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

void
phx_export_delete(PhxExport *exp)
{
	CatalogArgs args = {0};

	arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	catalog_exec("DELETE FROM posthog_export.exports WHERE export_id OPERATOR(pg_catalog.=) $1",
				 &args);
}

/* Writes the schedule settings (and, with set_events, the event filters) of exp. */
void
phx_export_update(PhxExport *exp, bool set_events, Datum include, bool include_null,
				  Datum exclude, bool exclude_null)
{
	CatalogArgs args = {0};

	arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	arg(&args, INTERVALOID, IntervalPGetDatum(&exp->interval), false);
	arg_text(&args, exp->timezone);
	arg(&args, INTERVALOID, IntervalPGetDatum(&exp->start_offset), false);
	arg(&args, INTERVALOID, IntervalPGetDatum(&exp->delay), false);
	arg(&args, TIMEOID, TimeADTGetDatum(exp->exclude_start), !exp->has_exclude_window);
	arg(&args, TIMEOID, TimeADTGetDatum(exp->exclude_end), !exp->has_exclude_window);
	arg(&args, TEXTARRAYOID, include, include_null);
	arg(&args, TEXTARRAYOID, exclude, exclude_null);
	arg(&args, INTERVALOID, IntervalPGetDatum(&exp->lookback), false);
	arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(exp->next_interval_start), false);
	arg(&args, BOOLOID, BoolGetDatum(set_events), false);
	catalog_exec("UPDATE posthog_export.exports SET \"interval\" = $2, timezone = $3, "
				 "start_offset = $4, delay = $5, exclude_window_start = $6, exclude_window_end = $7, "
				 "include_events = CASE WHEN $12 THEN $8 ELSE include_events END, "
				 "exclude_events = CASE WHEN $12 THEN $9 ELSE exclude_events END, "
				 "lookback = $10, next_interval_start = $11 "
				 "WHERE export_id OPERATOR(pg_catalog.=) $1",
				 &args);
}

void
phx_export_set_paused(PhxExport *exp, bool paused, const char *reason)
{
	CatalogArgs args = {0};

	arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	arg(&args, BOOLOID, BoolGetDatum(paused), false);
	arg_text(&args, reason);
	/* unpausing also forgets the failures that paused it */
	catalog_exec("UPDATE posthog_export.exports SET paused = $2, paused_reason = $3, "
				 "consecutive_failures = CASE WHEN $2 THEN consecutive_failures ELSE 0 END, "
				 "retry_at = CASE WHEN $2 THEN retry_at END "
				 "WHERE export_id OPERATOR(pg_catalog.=) $1",
				 &args);
	exp->paused = paused;
}

int64
phx_backfill_insert(PhxExport *exp, TimestampTz start, TimestampTz end)
{
	CatalogArgs args = {0};
	bool		isnull;

	arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(start), false);
	arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(end), false);
	catalog_exec("INSERT INTO posthog_export.backfills (export_id, start_at, end_at, next_start) "
				 "VALUES ($1, $2, $3, $2) RETURNING backfill_id",
				 &args);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}
