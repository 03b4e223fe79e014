/*-------------------------------------------------------------------------
 *
 * export_functions.c
 *		SQL functions that define exports: create_export(),
 *		alter_export(), drop_export(), pause(), unpause(), backfill().
 *
 * Settings are validated here, by one function for a new or a changed
 * definition (check_definition), so a run never meets a malformed export.  The export belongs to the role that creates it; the catalog
 * row is written as the extension's owner (see catalog.c).  alter_export()
 * can move an export to another server or owner, checked up front as
 * create_export() checks them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"
#include "pgtime.h"
#include "nodes/parsenodes.h"

#include "worker/worker.h"

PG_FUNCTION_INFO_V1(posthog_export_create_export);
PG_FUNCTION_INFO_V1(posthog_export_drop_export);
PG_FUNCTION_INFO_V1(posthog_export_alter_export);
PG_FUNCTION_INFO_V1(posthog_export_pause);
PG_FUNCTION_INFO_V1(posthog_export_unpause);
PG_FUNCTION_INFO_V1(posthog_export_backfill);
PG_FUNCTION_INFO_V1(posthog_export_check_server);

static char *
text_arg(FunctionCallInfo fcinfo, int n, const char *argname, bool required)
{
	if (PG_ARGISNULL(n))
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("%s must not be null", argname)));
		return NULL;
	}
	return text_to_cstring(PG_GETARG_TEXT_PP(n));
}

/*
 * The list travels as a HogQL value, which PostHog prints into the SQL it
 * sends ClickHouse, whose max_query_size is 256 KiB: a list too long for
 * that would fail every run, so it is refused here, leaving room for the
 * rest of the query.
 */
#define PHX_MAX_EVENT_LIST_BYTES	65536

static void
check_event_list_size(ArrayType *arr, const char *argname)
{
	ArrayIterator it = array_create_iterator(arr, 0, NULL);
	Datum		d;
	bool		isnull;
	int64		bytes = 0;

	while (array_iterate(it, &d, &isnull))
	{
		text	   *t = DatumGetTextPP(d);
		const char *p = VARDATA_ANY(t);
		int			len = VARSIZE_ANY_EXHDR(t);

		/* as ClickHouse gets it: quoted, escaped, separated by ", " */
		bytes += len + 4;
		for (int i = 0; i < len; i++)
			if (p[i] == '\'' || p[i] == '\\')
				bytes++;
	}
	array_free_iterator(it);
	if (bytes > PHX_MAX_EVENT_LIST_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("%s is too long for a PostHog query", argname),
				 errdetail("The event names take " INT64_FORMAT " bytes in the query PostHog runs; at most %d fit beside the rest of the query under ClickHouse's 256 KiB max_query_size.",
						   bytes, PHX_MAX_EVENT_LIST_BYTES),
				 errhint("List the few events you do not want in exclude_events, or export every event and filter in PostgreSQL.")));
}

/* An event list: NULL or empty means no filter; NULL elements are refused. */
static Datum
event_list_arg(FunctionCallInfo fcinfo, int n, const char *argname, bool *isnull)
{
	ArrayType  *arr;

	*isnull = true;
	if (PG_ARGISNULL(n))
		return (Datum) 0;
	arr = PG_GETARG_ARRAYTYPE_P(n);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", argname)));
	if (array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not contain nulls", argname)));
	if (ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)) == 0)
		return (Datum) 0;
	check_event_list_size(arr, argname);
	*isnull = false;
	return PointerGetDatum(arr);
}

/* The include_events and exclude_events arguments, at n and n + 1. */
typedef struct EventFilters
{
	Datum		include;
	bool		include_null;	/* NULL or empty: no filter */
	Datum		exclude;
	bool		exclude_null;
} EventFilters;

static void
event_filters_arg(FunctionCallInfo fcinfo, int n, EventFilters *f)
{
	f->include = event_list_arg(fcinfo, n, "include_events", &f->include_null);
	f->exclude = event_list_arg(fcinfo, n + 1, "exclude_events", &f->exclude_null);
}

/* The exclude window arguments at n and n + 1, if given (both or neither). */
static bool
exclude_window_arg(FunctionCallInfo fcinfo, int n, PhxExport *exp)
{
	if (PG_ARGISNULL(n) && PG_ARGISNULL(n + 1))
		return false;
	if (PG_ARGISNULL(n) || PG_ARGISNULL(n + 1))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("exclude_window_start and exclude_window_end go together")));
	exp->has_exclude_window = true;
	exp->exclude_start = PG_GETARG_TIMEADT(n);
	exp->exclude_end = PG_GETARG_TIMEADT(n + 1);
	return true;
}

static void
check_mode(const PhxExport *exp, const PhxModel *m)
{
	if (strcmp(exp->mode, "append") != 0 && strcmp(exp->mode, "merge") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mode \"%s\"", exp->mode),
				 errhint("Valid modes are append and merge.")));
	if (strcmp(exp->mode, "append") == 0 && m->staged)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the %s model can only be exported in merge mode", m->name)));
}

static void
check_interval(const Interval *interval)
{
	if (!phx_interval_is_supported(interval))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported interval \"%s\"",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(interval)))),
				 errhint("Supported intervals are 5 minutes, 15 minutes, 1 hour, 1 day and 1 week.")));
}

/* Validates the schedule settings of exp (timezone, offset, delay). */
static void
check_schedule(const PhxExport *exp)
{
	int64		len = phx_interval_usecs(&exp->interval);
	int64		off = phx_interval_usecs(&exp->start_offset);

	if (pg_tzset(exp->timezone) == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("time zone \"%s\" not recognized", exp->timezone)));
	if (exp->start_offset.month != 0 || off < 0 || (off != 0 && off >= len))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("start_offset must be at least zero and shorter than the interval")));
	if (off != 0 && len < USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("start_offset applies to daily and weekly intervals only"),
				 errdetail("Shorter intervals are aligned to the UTC clock.")));
	if (exp->delay.month != 0 || phx_interval_usecs(&exp->delay) < 0 ||
		phx_interval_usecs(&exp->delay) > USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("delay must be between 0 and 1 day")));
}

/* The longest settle_window and settle_every. */
#define PHX_MAX_SETTLE_DAYS 365

/* A settle setting: no months (they vary in length), at most a year. */
static void
check_settle_interval(const Interval *iv, const char *argname)
{
	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s cannot be given in months or years", argname),
				 errhint("Give it in days, hours, minutes or seconds, as in '30 days'.")));
	if (phx_interval_usecs(iv) > PHX_MAX_SETTLE_DAYS * USECS_PER_DAY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be at most %d days", argname, PHX_MAX_SETTLE_DAYS)));
}

/*
 * The settle settings: settle_window at least zero ('0' turns settling
 * off), settle_every at least a second and shorter than the window (so
 * that a check falls within it); events only ("sets_settle": they are
 * being given).
 */
static void
check_settle(const PhxExport *exp, const PhxModel *m, bool sets_settle)
{
	if (sets_settle && strcmp(m->name, "events") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("settle_window and settle_every apply to the events model only"),
				 errdetail("Every %s run reads its whole range again, so no row of it can arrive too late.",
						   m->name)));
	check_settle_interval(&exp->settle_window, "settle_window");
	check_settle_interval(&exp->settle_every, "settle_every");
	if (phx_interval_usecs(&exp->settle_window) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("settle_window must not be negative"),
				 errhint("'0' turns settling off.")));
	if (phx_interval_usecs(&exp->settle_every) < USECS_PER_SEC)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("settle_every must be at least 1 second")));
	if (phx_interval_usecs(&exp->settle_window) > 0 &&
		phx_interval_usecs(&exp->settle_every) >= phx_interval_usecs(&exp->settle_window))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("settle_every must be shorter than settle_window"),
				 errdetail("The checks within settle_window write the late rows they find; the first one after it only reports them.")));
}

/*
 * Validates an export's definition, new (create_export) or changed
 * (alter_export), so that a run never meets a malformed export.
 * "sets_filters" and "sets_settle" say whether event filters and settle
 * settings are being set.
 */
static void
check_definition(const PhxExport *exp, const PhxModel *m, bool sets_filters, bool sets_settle)
{
	if (exp->name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("export name must not be empty")));
	if (exp->schema_name[0] == '\0' || exp->table_name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema_name and table_name must not be empty")));
	check_mode(exp, m);
	if (sets_filters && strcmp(m->name, "events") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("include_events and exclude_events apply to the events model only")));
	check_interval(&exp->interval);
	if (exp->lookback.month < 0 || phx_interval_usecs(&exp->lookback) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lookback must not be negative")));
	check_schedule(exp);
	check_settle(exp, m, sets_settle);
}

/*
 * The columns, filter, filter_values, query and key arguments, from n on
 * (the last five of create_export() and alter_export()), into exp; NULL
 * keeps what exp has, an empty object, string or array clears it.
 * Returns whether any was given.
 */
static bool
shape_args(FunctionCallInfo fcinfo, int n, PhxExport *exp)
{
	bool		given = false;

	if (PG_NARGS() < n + 5)
		return false;
	if (!PG_ARGISNULL(n))
		exp->columns = phx_named_texts_arg(PG_GETARG_JSONB_P(n), "columns", false);
	if (!PG_ARGISNULL(n + 1))
	{
		exp->filter = text_to_cstring(PG_GETARG_TEXT_PP(n + 1));
		/* no filter, no values: the stored ones go too (unless new ones are given) */
		if (exp->filter[0] == '\0')
		{
			exp->filter = NULL;
			exp->filter_values = NIL;
		}
	}
	if (!PG_ARGISNULL(n + 2))
		exp->filter_values = phx_named_texts_arg(PG_GETARG_JSONB_P(n + 2), "filter_values", true);
	if (!PG_ARGISNULL(n + 3))
	{
		exp->query = text_to_cstring(PG_GETARG_TEXT_PP(n + 3));
		if (exp->query[0] == '\0')
			exp->query = NULL;
	}
	if (!PG_ARGISNULL(n + 4))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(n + 4);
		Datum	   *elems;
		bool	   *elemnulls;
		int			nelems;

		if (ARR_NDIM(arr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("key must be a one-dimensional array")));
		if (array_contains_nulls(arr))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("key must not contain nulls")));
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &elemnulls, &nelems);
		exp->key = NIL;
		for (int i = 0; i < nelems; i++)
			exp->key = lappend(exp->key, TextDatumGetCString(elems[i]));
	}
	for (int i = n; i < n + 5; i++)
		given |= !PG_ARGISNULL(i);
	return given;
}

/* The first full period after now: where a new schedule starts. */
static TimestampTz
first_full_period(PhxExport *exp)
{
	return phx_interval_next(exp, phx_interval_floor(exp, GetCurrentTimestamp()));
}

/* The model's default lookback: 7 days for events, 3 days for sessions (the bound of their scan). */
static Interval
default_lookback(const PhxModel *m)
{
	Interval	lookback = {0};

	lookback.day = m->default_lookback_hours / 24;
	lookback.time = (int64) (m->default_lookback_hours % 24) * USECS_PER_HOUR;
	return lookback;
}

/*
 * The export create_export()'s arguments define, with the defaults of its
 * model (mode, table name, lookback); returns the model.
 */
static const PhxModel *
create_export_args(FunctionCallInfo fcinfo, PhxExport *exp, EventFilters *filters)
{
	const PhxModel *m;

	exp->name = text_arg(fcinfo, 0, "name", true);
	exp->server_name = text_arg(fcinfo, 1, "server", true);
	exp->model = text_arg(fcinfo, 2, "model", true);
	exp->schema_name = text_arg(fcinfo, 3, "schema_name", true);
	exp->table_name = text_arg(fcinfo, 4, "table_name", false);
	if (PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("every (the interval) must not be null")));
	exp->interval = *PG_GETARG_INTERVAL_P(5);
	exp->mode = text_arg(fcinfo, 6, "mode", false);
	event_filters_arg(fcinfo, 7, filters);

	m = phx_model_by_name(exp->model);
	exp->model = (char *) m->name;
	if (exp->mode == NULL)
		exp->mode = m->staged ? "merge" : "append";
	if (exp->table_name == NULL)
		exp->table_name = pstrdup(m->name);
	exp->lookback = PG_ARGISNULL(9) ? default_lookback(m) : *PG_GETARG_INTERVAL_P(9);
	exp->timezone = PG_ARGISNULL(10) ? "UTC" : text_to_cstring(PG_GETARG_TEXT_PP(10));
	if (!PG_ARGISNULL(11))
		exp->start_offset = *PG_GETARG_INTERVAL_P(11);
	if (PG_ARGISNULL(12))
		exp->delay.time = USECS_PER_MINUTE;
	else
		exp->delay = *PG_GETARG_INTERVAL_P(12);
	(void) exclude_window_arg(fcinfo, 13, exp);
	/* settling is for events; the others read their whole range every run */
	exp->settle_every.time = USECS_PER_HOUR;
	if (strcmp(m->name, "events") == 0)
		exp->settle_window.day = 1;
	if (!PG_ARGISNULL(15))
		exp->settle_window = *PG_GETARG_INTERVAL_P(15);
	if (!PG_ARGISNULL(16))
		exp->settle_every = *PG_GETARG_INTERVAL_P(16);
	return m;
}

/* Creates the destination table now (or checks it), as the owner with a pinned search_path. */
static void
prepare_destination(PhxExport *exp, const PhxModel *m)
{
	PhxRoleSwitch sw;
	PhxDestination *dest;

	phx_become(exp->owner, &sw);
	dest = phx_destination_open(exp, phx_shaped_model(m, exp));
	phx_restore(&sw);
	phx_destination_close(dest);
}

/*
 * Does a pg_cron job of this database, one the role can see, call
 * run_due()?  (pg_cron shows a role only its own jobs; a job in another
 * database, or of another role, is not seen.)
 */
static bool
cron_job_runs_due(void)
{
	bool		pushed;
	bool		found = false;

	pushed = phx_snapshot_ensure();
	/* has_table_privilege() of a NULL oid (no such table) is NULL, not an error */
	if (SPI_execute("SELECT pg_catalog.has_table_privilege(c::pg_catalog.oid, 'SELECT') IS TRUE "
					"FROM (SELECT pg_catalog.to_regclass('cron.job') AS c) t",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		bool		isnull;

		if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) &&
			SPI_execute("SELECT 1 FROM cron.job WHERE active "
						"AND command OPERATOR(pg_catalog.~*) 'posthog_export\\s*\\.\\s*run_due'",
						true, 1) == SPI_OK_SELECT)
			found = SPI_processed > 0;
	}
	phx_snapshot_release(pushed);
	return found;
}

/*
 * What a DBA needs to know about a new export: whether anything will run
 * it by itself (the scheduler, or a pg_cron job calling run_due()), and
 * that it starts at the next interval, so earlier data needs a backfill.
 */
static void
notice_how_it_runs(const PhxExport *exp)
{
	bool		preloaded = phx_worker_shared != NULL;
	bool		wanted = phx_database_wanted(get_database_name(MyDatabaseId));

	if ((!preloaded || !phx_scheduler_enabled || !wanted) && !cron_job_runs_due())
		ereport(NOTICE,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("nothing will run export \"%s\" by itself", exp->name),
				 !preloaded ?
				 errdetail("posthog_export is not in shared_preload_libraries, and no pg_cron job of this database that you can see calls posthog_export.run_due().") :
				 !phx_scheduler_enabled ?
				 errdetail("posthog_export.scheduler is off, and no pg_cron job of this database that you can see calls posthog_export.run_due().") :
				 errdetail("posthog_export.databases does not list this database, and no pg_cron job of this database that you can see calls posthog_export.run_due()."),
				 errhint("Add posthog_export to shared_preload_libraries (and restart), or schedule CALL posthog_export.run_due() with pg_cron; or run it by hand with run_export().")));
	ereport(NOTICE,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("export \"%s\" starts with the interval at %s; earlier data needs a backfill",
					exp->name, phx_ts_str(exp->next_interval_start)),
			 errhint("Queue the past with: SELECT posthog_export.backfill(%s, start_at => NULL);  (NULL: from the project's first data)",
					 quote_literal_cstr(exp->name))));
}

/*
 * The hogql model's part of a new or changed definition: its columns are
 * its query's (columns given by the caller are refused); merge needs a
 * key; the query is probed (LIMIT 0) as the owner, through the export's
 * server, and its columns and types are stored with the export.  Invalid
 * HogQL fails here with PostHog's error, before anything is written.
 */
static void
hogql_definition(FunctionCallInfo fcinfo, int shape_arg, PhxExport *exp)
{
	PhxRoleSwitch sw;
	PhxServerConfig *cfg;

	if (!PG_ARGISNULL(shape_arg))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("columns do not apply to the hogql model"),
				 errdetail("The columns of a hogql export are those of its query.")));
	if (strcmp(exp->mode, "merge") == 0 && exp->key == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a hogql export in merge mode needs a key"),
				 errhint("Give key => ARRAY['column', ...]: the columns of the query that identify a row.")));
	phx_become(exp->owner, &sw);
	cfg = phx_get_server_config(exp->server_name, exp->owner);
	exp->columns = phx_hogql_probe(cfg, exp->name, exp->query, exp->key);
	phx_restore(&sw);
}

/*
 * create_export(..., check_server, columns, filter, filter_values, query,
 * key): the arguments are in the order of the SQL function.
 */
#define CREATE_EXPORT_CHECK_ARG 17
#define CREATE_EXPORT_SHAPE_ARG 18

Datum
posthog_export_create_export(PG_FUNCTION_ARGS)
{
	PhxExport	exp = {0};
	EventFilters filters;
	const PhxModel *m;
	int32		export_id;
	PhxServerConfig *cfg;
	bool		check = PG_NARGS() <= CREATE_EXPORT_CHECK_ARG || PG_ARGISNULL(CREATE_EXPORT_CHECK_ARG) ||
		PG_GETARG_BOOL(CREATE_EXPORT_CHECK_ARG);

	phx_check_database_encoding();
	m = create_export_args(fcinfo, &exp, &filters);
	exp.owner = GetUserId();
	check_definition(&exp, m, !filters.include_null || !filters.exclude_null,
					 !PG_ARGISNULL(15) || !PG_ARGISNULL(16));
	(void) shape_args(fcinfo, CREATE_EXPORT_SHAPE_ARG, &exp);
	phx_check_shape(&exp, m);
	if (m == &phx_hogql_model_proto)
	{
		/* a key names rows: merge on it unless told; the table after the export */
		if (PG_ARGISNULL(6) && exp.key != NIL)
			exp.mode = "merge";
		if (PG_ARGISNULL(4))
			exp.table_name = exp.name;
	}

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (phx_export_exists(exp.name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("export \"%s\" already exists", exp.name)));
	/* fails now, not at the first run, on a missing server, USAGE or user mapping */
	cfg = phx_get_server_config(exp.server_name, exp.owner);

	exp.next_interval_start = first_full_period(&exp);
	if (m == &phx_hogql_model_proto)
	{
		/* the query's probe gives its columns and types */
		/* the query's probe is the server check: one request, even with check_server => false */
		hogql_definition(fcinfo, CREATE_EXPORT_SHAPE_ARG, &exp);
		m = phx_model_for_export(&exp);
		prepare_destination(&exp, m);
	}
	else if (check && (exp.columns != NIL || exp.filter != NULL))
	{
		/* the probe checks the server too, and gives a new table its columns' types */
		phx_probe_shape(m, &exp, cfg);
		prepare_destination(&exp, m);
	}
	else
	{
		prepare_destination(&exp, m);
		/* last: the table is checked before a request is spent on PostHog */
		if (check)
			(void) phx_check_server(cfg);
	}
	export_id = phx_export_insert(&exp, filters.include, filters.include_null,
								  filters.exclude, filters.exclude_null);
	notice_how_it_runs(&exp);
	SPI_finish();
	phx_wake_scheduler();
	PG_RETURN_INT32(export_id);
}

/*
 * drop_export(name, if_exists): drops the export and its history.  A run
 * in flight is waited for, as DROP TABLE waits for its lock (lock_timeout
 * limits the wait), so that its last pages keep their runs row until the
 * end and no new run starts meanwhile.
 */
Datum
posthog_export_drop_export(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name", true);
	bool		if_exists = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	PhxExport  *exp;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	exp = phx_export_lookup(name, if_exists);
	if (exp != NULL)
	{
		/* a run in flight finishes first, or its pages would lose their history */
		phx_lock_export_for_change(exp, "dropping");
		exp = phx_export_lookup(name, if_exists);
	}
	if (exp == NULL)
	{
		ereport(NOTICE,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("export \"%s\" does not exist, skipping", name)));
		SPI_finish();
		PG_RETURN_BOOL(false);
	}
	phx_export_delete(exp);
	SPI_finish();
	PG_RETURN_BOOL(true);
}

/* Applies the settings alter_export() was given (NULL: unchanged) to exp. */
static void
alter_export_args(FunctionCallInfo fcinfo, PhxExport *exp)
{
	if (!PG_ARGISNULL(1))
		exp->interval = *PG_GETARG_INTERVAL_P(1);
	if (!PG_ARGISNULL(2))
		exp->timezone = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (!PG_ARGISNULL(3))
		exp->start_offset = *PG_GETARG_INTERVAL_P(3);
	if (!PG_ARGISNULL(4))
		exp->delay = *PG_GETARG_INTERVAL_P(4);
	(void) exclude_window_arg(fcinfo, 5, exp);
	if (!PG_ARGISNULL(7) && PG_GETARG_BOOL(7))
		exp->has_exclude_window = false;
	if (!PG_ARGISNULL(10))
		exp->lookback = *PG_GETARG_INTERVAL_P(10);
	if (!PG_ARGISNULL(11))
		exp->settle_window = *PG_GETARG_INTERVAL_P(11);
	if (!PG_ARGISNULL(12))
		exp->settle_every = *PG_GETARG_INTERVAL_P(12);
}

static bool
intervals_equal(const Interval *a, const Interval *b)
{
	return DatumGetBool(DirectFunctionCall2(interval_eq, IntervalPGetDatum(a), IntervalPGetDatum(b)));
}

/* Whether the change moves the grid: the interval, timezone or offset. */
static bool
grid_changed(const PhxExport *old, const PhxExport *exp)
{
	return !intervals_equal(&old->interval, &exp->interval) ||
		strcmp(old->timezone, exp->timezone) != 0 ||
		!intervals_equal(&old->start_offset, &exp->start_offset);
}

/*
 * A new grid keeps next_interval_start where the old grid stopped: the
 * schedule's next interval runs from there to the first boundary of the
 * new grid (phx_interval_end()), then follows the new grid, so every
 * instant is exported exactly once.  That is refused when a run of the
 * old grid lies ahead of the schedule or is unfinished
 * (phx_grid_change_problem()).  The caller holds the export's lock.
 */
static void
check_grid_change(PhxExport *exp)
{
	char	   *hint = NULL;
	char	   *problem = phx_grid_change_problem(exp, &hint);

	if (problem)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot change the interval, timezone or start_offset of export \"%s\" now", exp->name),
				 errdetail_internal("%s", problem),
				 errhint("%s", hint)));
}

static bool
alter_args_change_grid(FunctionCallInfo fcinfo)
{
	return !PG_ARGISNULL(1) || !PG_ARGISNULL(2) || !PG_ARGISNULL(3);
}

/*
 * New settle settings: the next settle pass is due now (it finds the
 * checks due under the new settings, which costs no request when there is
 * none), or never with settling off.  Turned on, the intervals completed
 * meanwhile count as checked now (see phx_settle_mark_checked()).
 */
static void
settle_settings_changed(const PhxExport *old, PhxExport *exp)
{
	bool		on = phx_interval_usecs(&exp->settle_window) > 0;

	if (intervals_equal(&old->settle_window, &exp->settle_window) &&
		intervals_equal(&old->settle_every, &exp->settle_every))
		return;
	exp->has_next_settle_at = on;
	exp->next_settle_at = GetCurrentTimestamp();
	if (on && phx_interval_usecs(&old->settle_window) <= 0)
		phx_settle_mark_checked(exp);
}

/*
 * alter_export(server => ..., owner => ...): a new owner needs what
 * ALTER ... OWNER TO needs (a superuser, or a member of the new owner
 * among the roles that may use the export); both are checked up front for
 * the owner the export will run as: USAGE on the server and a user
 * mapping, and the destination table's privileges (or CREATE on its
 * schema).  Returns whether either changes.
 */
static bool
server_owner_args(FunctionCallInfo fcinfo, PhxExport *exp, int server_arg, int owner_arg)
{
	bool		changed = false;

	if (!PG_ARGISNULL(server_arg))
	{
		char	   *server = text_to_cstring(PG_GETARG_TEXT_PP(server_arg));

		changed |= strcmp(server, exp->server_name) != 0;
		exp->server_name = server;
	}
	if (!PG_ARGISNULL(owner_arg) && PG_GETARG_OID(owner_arg) != exp->owner)
	{
		Oid			owner = PG_GETARG_OID(owner_arg);

		if (!superuser() && !is_member_of_role(GetUserId(), owner))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("must be member of role \"%s\" to give it export \"%s\"",
							phx_role_name(owner), exp->name),
					 errdetail("As with ALTER ... OWNER TO, the new owner must be a role you are a member of.")));
		exp->owner = owner;
		changed = true;
	}
	return changed;
}

/*
 * New columns or filter are tried against PostHog before they are saved
 * (models/custom.c), with the owner's user mapping, as a run sends them.
 */
static void
probe_as_owner(PhxExport *exp)
{
	PhxRoleSwitch sw;
	PhxServerConfig *cfg;

	phx_become(exp->owner, &sw);
	cfg = phx_get_server_config(exp->server_name, exp->owner);
	phx_restore(&sw);
	phx_probe_shape(phx_model_by_name(exp->model), exp, cfg);
}

/* Whether the filter or its values differ (the lists in the same key order: jsonb's). */
static bool
filter_changed(const PhxExport *old, const PhxExport *exp)
{
	ListCell   *a;
	ListCell   *b;

	if ((old->filter == NULL) != (exp->filter == NULL) ||
		(old->filter && strcmp(old->filter, exp->filter) != 0) ||
		list_length(old->filter_values) != list_length(exp->filter_values))
		return true;
	forboth(a, old->filter_values, b, exp->filter_values)
	{
		PhxNamedText *x = lfirst(a);
		PhxNamedText *y = lfirst(b);

		if (strcmp(x->name, y->name) != 0 || strcmp(x->text, y->text) != 0)
			return true;
	}
	return false;
}

/* Whether a hogql export's query or key differ. */
static bool
hogql_query_or_key_changed(const PhxExport *old, const PhxExport *exp)
{
	ListCell   *a;
	ListCell   *b;

	if ((old->query == NULL) != (exp->query == NULL) ||
		(old->query && strcmp(old->query, exp->query) != 0) ||
		list_length(old->key) != list_length(exp->key))
		return true;
	forboth(a, old->key, b, exp->key)
		if (strcmp(lfirst(a), lfirst(b)) != 0)
			return true;
	return false;
}

/*
 * A run of the export that is unfinished and has committed a cursor
 * resumes from it under the export's query and key: under new ones it
 * would write rows twice or skip them, so they cannot change before it is
 * finished.  The caller holds the export's lock (no run is in flight).
 */
static void
check_no_run_with_cursor(PhxExport *exp)
{
	char	   *start = NULL;
	char	   *end = NULL;
	char	   *range = phx_run_with_cursor(exp, &start, &end);

	if (range)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("cannot change the query or key of export \"%s\" now", exp->name),
				 errdetail("Its interval %s was interrupted after some pages were written; it resumes from its cursor under the current query and key.",
						   range),
				 errhint("Finish or rerun the interval first (CALL posthog_export.run_export(%s, '%s', '%s'), or let the export retry it), then change them.",
						 quote_literal_cstr(exp->name), start, end)));
}

/* alter_export(..., server, owner, columns, filter, filter_values, query, key) */
#define ALTER_EXPORT_SHAPE_ARG 15

/* alter_export(name, ...): changes the given settings (NULL: unchanged). */
Datum
posthog_export_alter_export(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name", true);
	/* given lists replace the filters (an empty one clears it); NULL keeps them */
	bool		sets_filters = !PG_ARGISNULL(8) || !PG_ARGISNULL(9);
	EventFilters filters;
	PhxExport  *exp;
	PhxExport	old;
	bool		server_owner_changed;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	exp = phx_export_lookup(name, false);
	if (alter_args_change_grid(fcinfo) ||
		(strcmp(exp->model, "hogql") == 0 &&
		 (!PG_ARGISNULL(ALTER_EXPORT_SHAPE_ARG + 3) || !PG_ARGISNULL(ALTER_EXPORT_SHAPE_ARG + 4))))
	{
		/* the schedule must hold still: wait for a run in flight, then read it again */
		phx_lock_export_for_change(exp, "changing");
		exp = phx_export_lookup(name, false);
	}
	old = *exp;
	alter_export_args(fcinfo, exp);
	event_filters_arg(fcinfo, 8, &filters);
	check_definition(exp, phx_model_by_name(exp->model), sets_filters,
					 !PG_ARGISNULL(11) || !PG_ARGISNULL(12));
	/* first: a probe below runs as the new owner, through the new server */
	server_owner_changed = server_owner_args(fcinfo, exp, 13, 14);
	if (server_owner_changed)
		/* fails now, not at the next run: the server, its USAGE and user mapping */
		(void) phx_get_server_config(exp->server_name, exp->owner);
	if (shape_args(fcinfo, ALTER_EXPORT_SHAPE_ARG, exp))
	{
		phx_check_shape(exp, phx_model_by_name(exp->model));
		/* a new query or key: probed now, used from the next interval on */
		if (strcmp(exp->model, "hogql") == 0)
		{
			if (hogql_query_or_key_changed(&old, exp))
				check_no_run_with_cursor(exp);
			hogql_definition(fcinfo, ALTER_EXPORT_SHAPE_ARG, exp);
			prepare_destination(exp, phx_model_for_export(exp));
		}
		else if (exp->columns != NIL || exp->filter != NULL)
			probe_as_owner(exp);
		/* the intervals exported under the old filter are not counted with the new one */
		if (filter_changed(&old, exp))
			phx_settle_end_checks(exp);
	}

	if (grid_changed(&old, exp))
		check_grid_change(exp);
	settle_settings_changed(&old, exp);
	phx_export_update(exp, sets_filters, filters.include, filters.include_null,
					  filters.exclude, filters.exclude_null);
	if (server_owner_changed)
	{
		if (exp->owner != old.owner)
			prepare_destination(exp, phx_model_for_export(exp));
		phx_export_set_server_owner(exp);
	}
	SPI_finish();
	phx_wake_scheduler();
	PG_RETURN_VOID();
}

/* pause() and unpause() of the export named by the first argument. */
static void
set_paused(FunctionCallInfo fcinfo, bool paused)
{
	char	   *name = text_arg(fcinfo, 0, "name", true);
	PhxExport  *exp;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	exp = phx_export_lookup(name, false);
	phx_export_set_paused(exp, paused, paused ? "paused by pause()" : NULL);
	SPI_finish();
	if (!paused)
		phx_wake_scheduler();
}

/* pause(name): no scheduled or backfill run starts until unpause(). */
Datum
posthog_export_pause(PG_FUNCTION_ARGS)
{
	set_paused(fcinfo, true);
	PG_RETURN_VOID();
}

/* unpause(name): resumes the schedule, catching up on what was missed. */
Datum
posthog_export_unpause(PG_FUNCTION_ARGS)
{
	set_paused(fcinfo, false);
	PG_RETURN_VOID();
}

/*
 * backfill(name, start_at, end_at): queues a past range.  A NULL start_at
 * means from the beginning of the project's data, a NULL end_at up to
 * where the schedule begins.  The range is checked as run_export() checks
 * it (phx_check_range(): same rules, same messages).  The part from
 * next_interval_start on is the schedule's: the range is clipped there
 * (NOTICE), or refused when it lies wholly there.  A part that has not
 * ended yet (plus the delay) stays queued until it has (NOTICE), so no
 * interval is exported before it holds all its rows; the scheduler runs
 * it then.  An interval already exported (by the schedule or by hand) is
 * skipped, never duplicated.
 */
Datum
posthog_export_backfill(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name", true);
	PhxExport  *exp;
	TimestampTz start;
	TimestampTz end;
	TimestampTz schedule;
	TimestampTz ready;
	int64		id;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	exp = phx_export_lookup(name, false);
	schedule = exp->next_interval_start;
	end = PG_ARGISNULL(2) ? schedule : PG_GETARG_TIMESTAMPTZ(2);
	if (PG_ARGISNULL(1))
	{
		PhxRoleSwitch sw;
		PhxServerConfig *cfg;

		if (TIMESTAMP_NOT_FINITE(end))
			phx_check_range(exp, 0, end, false);	/* its error for a bound not finite */
		phx_become(exp->owner, &sw);
		cfg = phx_get_server_config(exp->server_name, exp->owner);
		phx_restore(&sw);
		/* computed, not given: it starts at the interval holding the first row */
		start = phx_interval_floor(exp, phx_model_by_name(exp->model)->earliest(exp, cfg, Min(end, schedule)));
		if (start >= Min(end, schedule))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("nothing to backfill: export \"%s\" has no data before %s",
							exp->name, phx_ts_str(Min(end, schedule)))));
	}
	else
		start = PG_GETARG_TIMESTAMPTZ(1);
	phx_check_range(exp, start, end, !PG_ARGISNULL(2));

	/* from next_interval_start on, the schedule exports it */
	if (start >= schedule)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("nothing to backfill: [%s, %s) is the schedule's part of export \"%s\"",
						phx_ts_str(start), phx_ts_str(end), exp->name),
				 errdetail("The schedule exports every interval from %s on, each once it has ended plus the delay.",
						   phx_ts_str(schedule)),
				 errhint("Backfill a range that ends at %s or earlier.", phx_ts_str(schedule))));
	if (end > schedule)
	{
		ereport(NOTICE,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("the backfill of export \"%s\" ends at %s, where its schedule begins",
						exp->name, phx_ts_str(schedule)),
				 errdetail("The schedule exports the rest of [%s, %s), each interval once it has ended plus the delay.",
						   phx_ts_str(start), phx_ts_str(end))));
		end = schedule;
	}

	/* a part that has not ended yet waits for it (due_work.c) */
	ready = phx_interval_floor(exp, GetCurrentTimestamp() - phx_interval_usecs(&exp->delay));
	if (end > ready)
	{
		TimestampTz first = Max(start, ready);
		TimestampTz first_end = phx_interval_end(exp, first);

		ereport(NOTICE,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("the backfill of export \"%s\" from %s on has not ended yet; it waits",
						exp->name, phx_ts_str(first)),
				 errdetail("An interval runs once it has ended plus the export's delay; [%s, %s) runs from %s.",
						   phx_ts_str(first), phx_ts_str(first_end),
						   phx_ts_str(phx_interval_ready_at(exp, first_end)))));
	}
	phx_check_range_on_grid(exp, start, end);
	id = phx_backfill_insert(exp, start, end);
	SPI_finish();
	phx_wake_scheduler();
	PG_RETURN_INT64(id);
}

/*
 * check_server(server): one cheap query to the PostHog server with the
 * current role's user mapping: the URL, the project, the key and its
 * scope, and the network on the way.  Returns what answered, or raises
 * the error a run would get (404: url or project_id; 401: the key; 403:
 * the key's scope or access to the project; the network).
 */
Datum
posthog_export_check_server(PG_FUNCTION_ARGS)
{
	char	   *server = text_arg(fcinfo, 0, "server", true);
	PhxServerConfig *cfg = phx_get_server_config(server, GetUserId());

	PG_RETURN_TEXT_P(cstring_to_text(phx_check_server(cfg)));
}
