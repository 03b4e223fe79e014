/*-------------------------------------------------------------------------
 *
 * catalog.c
 *		The exports and backfills tables: reading export definitions,
 *		writing them, and advancing their schedule and backfills (the runs
 *		table is runs.c's).
 *
 * The tables belong to the role that created the extension; ordinary
 * roles may only read them, through row-level security that shows each
 * role its own exports.  Every write goes through catalog_spi.c, which runs
 * its statements as the tables' owner (security.c) with search_path
 * pinned to pg_catalog, so a caller can neither forge another role's runs nor
 * redirect our SQL through objects of its own.
 *
 * The rows are not catalog objects, so pg_depend and pg_shdepend cannot
 * point at them.  An export's owner is therefore the owner of a type that
 * stands for it (ownership.c; exports.owner_type), read from pg_type
 * whenever an export is read, so REASSIGN OWNED, DROP OWNED and DROP ROLE
 * act on it as on any object.  Its server is kept by name; the functions
 * at the end follow a renamed or dropped server (and a dropped type),
 * called by the event triggers of api/dependencies.c.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "store/catalog_spi.h"

/*
 * The owner is the owner of the export's type, NULL if that is gone (its
 * DROP was not seen: event triggers do not fire in single-user mode).
 */
#define EXPORT_COLUMNS \
	"export_id, name, (SELECT t.typowner FROM pg_catalog.pg_type t " \
	"WHERE t.oid OPERATOR(pg_catalog.=) owner_type::pg_catalog.oid), server_name, model, mode, " \
	"schema_name, table_name, " \
	"\"interval\", include_events, exclude_events, lookback, timezone, start_offset, delay, " \
	"exclude_window_start, exclude_window_end, next_interval_start, paused, " \
	"consecutive_failures, retry_at, settle_window, settle_every, next_settle_at, " \
	"owner_type::pg_catalog.oid, columns, filter, filter_values, query, key"

/* ... as a condition: the export's owner is $1 */
#define EXPORT_OWNER_IS_1 \
	"EXISTS (SELECT 1 FROM pg_catalog.pg_type t WHERE t.oid OPERATOR(pg_catalog.=) owner_type::pg_catalog.oid " \
	"AND t.typowner OPERATOR(pg_catalog.=) $1)"

static PhxExport *
export_from_tuple(HeapTuple tup, TupleDesc desc)
{
	PhxExport  *exp = palloc0(sizeof(PhxExport));
	bool		isnull;
	Datum		d;

	exp->export_id = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
	exp->name = phx_catalog_get_text(tup, desc, 2);
	d = SPI_getbinval(tup, desc, 3, &isnull);
	exp->owner = isnull ? InvalidOid : DatumGetObjectId(d);
	exp->server_name = phx_catalog_get_text(tup, desc, 4);
	exp->model = phx_catalog_get_text(tup, desc, 5);
	exp->mode = phx_catalog_get_text(tup, desc, 6);
	exp->schema_name = phx_catalog_get_text(tup, desc, 7);
	exp->table_name = phx_catalog_get_text(tup, desc, 8);
	exp->interval = *DatumGetIntervalP(SPI_getbinval(tup, desc, 9, &isnull));
	exp->include_events = phx_catalog_get_text_array(tup, desc, 10);
	exp->exclude_events = phx_catalog_get_text_array(tup, desc, 11);
	exp->lookback = *DatumGetIntervalP(SPI_getbinval(tup, desc, 12, &isnull));
	exp->timezone = phx_catalog_get_text(tup, desc, 13);
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
	exp->settle_window = *DatumGetIntervalP(SPI_getbinval(tup, desc, 22, &isnull));
	exp->settle_every = *DatumGetIntervalP(SPI_getbinval(tup, desc, 23, &isnull));
	d = SPI_getbinval(tup, desc, 24, &isnull);
	exp->has_next_settle_at = !isnull;
	if (!isnull)
		exp->next_settle_at = DatumGetTimestampTz(d);
	exp->owner_type = DatumGetObjectId(SPI_getbinval(tup, desc, 25, &isnull));
	exp->columns = phx_catalog_get_named_texts(tup, desc, 26, false);
	exp->filter = phx_catalog_get_text(tup, desc, 27);
	exp->filter_values = phx_catalog_get_named_texts(tup, desc, 28, true);
	exp->query = phx_catalog_get_text(tup, desc, 29);
	exp->key = phx_catalog_get_text_array(tup, desc, 30);
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

	phx_catalog_arg_text(&args, name);
	phx_catalog_exec("SELECT " EXPORT_COLUMNS
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

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(export_id), false);
	phx_catalog_exec("SELECT " EXPORT_COLUMNS
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

	phx_catalog_exec("SELECT " EXPORT_COLUMNS " FROM posthog_export.exports "
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

/* The oldest unfinished backfill of the export, or NULL. */
PhxBackfill *
phx_backfill_next(PhxExport *exp)
{
	CatalogArgs args = {0};
	PhxBackfill *b = NULL;
	bool		isnull;

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_exec("SELECT backfill_id, next_start, end_at FROM posthog_export.backfills "
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

	phx_catalog_arg(&args, INT8OID, Int64GetDatum(b->backfill_id), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(next_start), false);
	phx_catalog_exec("UPDATE posthog_export.backfills SET next_start = $2, "
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

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(next_start), false);
	phx_catalog_exec("UPDATE posthog_export.exports SET next_interval_start = $2 "
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

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg(&args, INT4OID, Int32GetDatum(failures), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(retry_at), !has_retry_at);
	phx_catalog_arg(&args, BOOLOID, BoolGetDatum(pause), false);
	phx_catalog_arg_text(&args, reason);
	phx_catalog_exec("UPDATE posthog_export.exports SET consecutive_failures = $2, retry_at = $3, "
					 "paused = paused OR $4, paused_reason = CASE WHEN $4 THEN $5 ELSE paused_reason END "
					 "WHERE export_id OPERATOR(pg_catalog.=) $1",
					 &args);
	exp->consecutive_failures = failures;
	exp->has_retry_at = has_retry_at;
	exp->retry_at = retry_at;
	exp->paused |= pause;
}

/* Whether an export of that name exists, whoever owns it (names are global). */
bool
phx_export_exists(const char *name)
{
	CatalogArgs args = {0};

	phx_catalog_arg_text(&args, name);
	phx_catalog_exec("SELECT 1 FROM posthog_export.exports WHERE name OPERATOR(pg_catalog.=) $1",
					 &args);
	return SPI_processed > 0;
}

int32
phx_export_insert(PhxExport *exp, Datum include, bool include_null,
				  Datum exclude, bool exclude_null)
{
	CatalogArgs args = {0};
	bool		isnull;
	int32		export_id;

	/* the id first: it may name the owner's type, which the row points at */
	phx_catalog_exec("SELECT pg_catalog.nextval('posthog_export.exports_export_id_seq')::pg_catalog.int4", NULL);
	export_id = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	exp->owner_type = phx_owner_type_create(export_id, exp->name, exp->owner);

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(export_id), false);
	phx_catalog_arg_text(&args, exp->name);
	phx_catalog_arg(&args, OIDOID, ObjectIdGetDatum(exp->owner_type), false);
	phx_catalog_arg_text(&args, exp->server_name);
	phx_catalog_arg_text(&args, exp->model);
	phx_catalog_arg_text(&args, exp->mode);
	phx_catalog_arg_text(&args, exp->schema_name);
	phx_catalog_arg_text(&args, exp->table_name);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->interval), false);
	phx_catalog_arg(&args, TEXTARRAYOID, include, include_null);
	phx_catalog_arg(&args, TEXTARRAYOID, exclude, exclude_null);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->lookback), false);
	phx_catalog_arg_text(&args, exp->timezone);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->start_offset), false);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->delay), false);
	phx_catalog_arg(&args, TIMEOID, TimeADTGetDatum(exp->exclude_start), !exp->has_exclude_window);
	phx_catalog_arg(&args, TIMEOID, TimeADTGetDatum(exp->exclude_end), !exp->has_exclude_window);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(exp->next_interval_start), false);
	phx_catalog_arg(&args, INT4OID, Int32GetDatum(0), false);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->settle_window), false);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->settle_every), false);
	phx_catalog_arg_named_texts(&args, exp->columns, false);
	phx_catalog_arg_text(&args, exp->filter);
	phx_catalog_arg_named_texts(&args, exp->filter_values, true);
	phx_catalog_arg_text(&args, exp->query);
	phx_catalog_arg_text_list(&args, exp->key);
	phx_catalog_exec("INSERT INTO posthog_export.exports (export_id, name, owner_type, server_name, model, mode, "
					 "schema_name, table_name, \"interval\", include_events, exclude_events, lookback, "
					 "timezone, start_offset, delay, exclude_window_start, exclude_window_end, "
					 "next_interval_start, consecutive_failures, settle_window, settle_every, "
					 "columns, filter, filter_values, query, key) "
					 "VALUES ($1, $2, $3::pg_catalog.regtype, $4, $5, $6, $7, $8, $9, $10, $11, $12, "
					 "$13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26)",
					 &args);
	exp->export_id = export_id;
	return export_id;
}

void
phx_export_delete(PhxExport *exp)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_exec("DELETE FROM posthog_export.exports WHERE export_id OPERATOR(pg_catalog.=) $1",
					 &args);
	phx_owner_type_drop(exp->owner_type);
}

/*
 * Writes the schedule and settle settings, the custom columns, filter,
 * query and key (and, with set_events, the event filters) of exp; exp's next_settle_at too when the settle settings
 * change (else a settle pass may have moved it meanwhile).  The schedule
 * (next_interval_start) is left alone: a run may be advancing it, and a
 * new grid goes on from where it is (api/export_functions.c).
 */
void
phx_export_update(PhxExport *exp, bool set_events, Datum include, bool include_null,
				  Datum exclude, bool exclude_null)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->interval), false);
	phx_catalog_arg_text(&args, exp->timezone);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->start_offset), false);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->delay), false);
	phx_catalog_arg(&args, TIMEOID, TimeADTGetDatum(exp->exclude_start), !exp->has_exclude_window);
	phx_catalog_arg(&args, TIMEOID, TimeADTGetDatum(exp->exclude_end), !exp->has_exclude_window);
	phx_catalog_arg(&args, TEXTARRAYOID, include, include_null);
	phx_catalog_arg(&args, TEXTARRAYOID, exclude, exclude_null);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->lookback), false);
	phx_catalog_arg(&args, BOOLOID, BoolGetDatum(set_events), false);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->settle_window), false);
	phx_catalog_arg(&args, INTERVALOID, IntervalPGetDatum(&exp->settle_every), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(exp->next_settle_at), !exp->has_next_settle_at);
	phx_catalog_arg_named_texts(&args, exp->columns, false);
	phx_catalog_arg_text(&args, exp->filter);
	phx_catalog_arg_named_texts(&args, exp->filter_values, true);
	phx_catalog_arg_text(&args, exp->query);
	phx_catalog_arg_text_list(&args, exp->key);
	phx_catalog_exec("UPDATE posthog_export.exports SET \"interval\" = $2, timezone = $3, "
					 "start_offset = $4, delay = $5, exclude_window_start = $6, exclude_window_end = $7, "
					 "include_events = CASE WHEN $11 THEN $8 ELSE include_events END, "
					 "exclude_events = CASE WHEN $11 THEN $9 ELSE exclude_events END, "
					 "lookback = $10, "
					 "settle_window = $12, settle_every = $13, "
					 /* exp's next_settle_at, when the settle settings change */
					 "next_settle_at = CASE WHEN settle_window IS DISTINCT FROM $12 "
					 "OR settle_every IS DISTINCT FROM $13 THEN $14 ELSE next_settle_at END, "
					 "columns = $15, filter = $16, filter_values = $17, query = $18, key = $19 "
					 "WHERE export_id OPERATOR(pg_catalog.=) $1",
					 &args);
}

void
phx_export_set_paused(PhxExport *exp, bool paused, const char *reason)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg(&args, BOOLOID, BoolGetDatum(paused), false);
	phx_catalog_arg_text(&args, reason);
	/* unpausing also forgets the failures that paused it */
	phx_catalog_exec("UPDATE posthog_export.exports SET paused = $2, paused_reason = $3, "
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

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(start), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(end), false);
	phx_catalog_exec("INSERT INTO posthog_export.backfills (export_id, start_at, end_at, next_start) "
					 "VALUES ($1, $2, $3, $2) RETURNING backfill_id",
					 &args);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * Whether the extension is installed in this database at this library's
 * version: the DDL hooks and event triggers (api/dependencies.c) do
 * nothing otherwise (no extension here, or a catalog still to update).
 */
bool
phx_catalog_is_current(void)
{
	bool		current;

	if (!OidIsValid(get_extension_oid(PHX_EXTENSION_NAME, true)))
		return false;
	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension "
					"WHERE extname OPERATOR(pg_catalog.=) '" PHX_EXTENSION_NAME "'",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		return false;
	current = strcmp(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
					 PHX_VERSION) == 0;
	SPI_freetuptable(SPI_tuptable);
	return current && OidIsValid(get_relname_relid("exports",
													get_namespace_oid(PHX_SCHEMA_NAME, true)));
}

/* Every export of the last catalog statement's rows. */
static List *
exports_from_result(void)
{
	List	   *result = NIL;

	for (uint64 i = 0; i < SPI_processed; i++)
		result = lappend(result, export_from_tuple(SPI_tuptable->vals[i], SPI_tuptable->tupdesc));
	SPI_freetuptable(SPI_tuptable);
	return result;
}

/* The exports (whoever owns them) that use the server, in name order. */
List *
phx_exports_using_server(const char *server_name)
{
	CatalogArgs args = {0};

	phx_catalog_arg_text(&args, server_name);
	phx_catalog_exec("SELECT " EXPORT_COLUMNS " FROM posthog_export.exports "
					 "WHERE server_name OPERATOR(pg_catalog.=) $1 ORDER BY name",
					 &args);
	return exports_from_result();
}

/* The exports the role owns, in name order. */
List *
phx_exports_owned_by(Oid role)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, OIDOID, ObjectIdGetDatum(role), false);
	phx_catalog_exec("SELECT " EXPORT_COLUMNS " FROM posthog_export.exports "
					 "WHERE " EXPORT_OWNER_IS_1 " ORDER BY name",
					 &args);
	return exports_from_result();
}

/* The export the type stands for (whoever owns it), or NULL. */
PhxExport *
phx_export_by_owner_type(Oid type)
{
	CatalogArgs args = {0};
	List	   *found;

	phx_catalog_arg(&args, OIDOID, ObjectIdGetDatum(type), false);
	phx_catalog_exec("SELECT " EXPORT_COLUMNS " FROM posthog_export.exports "
					 "WHERE owner_type::pg_catalog.oid OPERATOR(pg_catalog.=) $1",
					 &args);
	found = exports_from_result();
	return found == NIL ? NULL : linitial(found);
}

/* The types that stand for the owners of all exports (DROP EXTENSION drops them). */
List *
phx_exports_owner_types(void)
{
	List	   *types = NIL;
	bool		isnull;

	phx_catalog_exec("SELECT owner_type::pg_catalog.oid FROM posthog_export.exports", NULL);
	for (uint64 i = 0; i < SPI_processed; i++)
		types = lappend_oid(types, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
																	SPI_tuptable->tupdesc, 1, &isnull)));
	SPI_freetuptable(SPI_tuptable);
	return types;
}

/* ALTER SERVER old RENAME TO new: the exports follow their server. */
void
phx_exports_rename_server(const char *old_name, const char *new_name)
{
	CatalogArgs args = {0};

	phx_catalog_arg_text(&args, old_name);
	phx_catalog_arg_text(&args, new_name);
	phx_catalog_exec("UPDATE posthog_export.exports SET server_name = $2 "
					 "WHERE server_name OPERATOR(pg_catalog.=) $1",
					 &args);
}

/*
 * alter_export(server => ..., owner => ...): writes exp's server, and
 * gives its type to exp's owner (as ALTER TYPE ... OWNER TO would).
 */
void
phx_export_set_server_owner(PhxExport *exp)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg_text(&args, exp->server_name);
	phx_catalog_exec("UPDATE posthog_export.exports SET server_name = $2 "
					 "WHERE export_id OPERATOR(pg_catalog.=) $1",
					 &args);
	phx_owner_type_set_owner(exp->owner_type, exp->owner);
}
