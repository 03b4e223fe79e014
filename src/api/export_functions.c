/*-------------------------------------------------------------------------
 *
 * export_functions.c
 *		SQL functions that define exports: create_export() and
 *		drop_export().
 *
 * Settings are validated here, once, so a run never meets a malformed
 * export.  The export belongs to the role that creates it; the catalog
 * row is written as the extension's owner (see catalog.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
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
	*isnull = false;
	return PointerGetDatum(arr);
}

static void
check_interval(Interval *interval)
{
	if (!phx_interval_is_supported(interval))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported interval \"%s\"",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(interval)))),
				 errhint("Supported intervals are 5 minutes, 15 minutes, 1 hour, 1 day and 1 week.")));
}

/* Validates the schedule settings of exp (timezone, offset, delay, window). */
static void
check_schedule(PhxExport *exp)
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

/* The first full period after now: where a new schedule starts. */
static TimestampTz
first_full_period(PhxExport *exp)
{
	return phx_interval_next(exp, phx_interval_floor(exp, GetCurrentTimestamp()));
}

Datum
posthog_export_create_export(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name", true);
	char	   *server = text_arg(fcinfo, 1, "server", true);
	char	   *model = text_arg(fcinfo, 2, "model", true);
	char	   *schema_name = text_arg(fcinfo, 3, "schema_name", true);
	char	   *table_name = text_arg(fcinfo, 4, "table_name", false);
	Interval   *interval;
	char	   *mode = text_arg(fcinfo, 6, "mode", false);
	Interval   *lookback;
	Datum		include;
	Datum		exclude;
	bool		include_null;
	bool		exclude_null;
	Oid			owner = GetUserId();
	PhxExport	exp;
	const PhxModel *m;
	int32		export_id;

	if (PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("interval must not be null")));
	interval = PG_GETARG_INTERVAL_P(5);
	lookback = PG_ARGISNULL(9) ? NULL : PG_GETARG_INTERVAL_P(9);
	include = event_list_arg(fcinfo, 7, "include_events", &include_null);
	exclude = event_list_arg(fcinfo, 8, "exclude_events", &exclude_null);

	phx_check_database_encoding();
	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("export name must not be empty")));
	if (schema_name[0] == '\0' || (table_name && table_name[0] == '\0'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("schema_name and table_name must not be empty")));

	m = phx_model_by_name(model);
	if (mode == NULL)
		mode = m->staged ? "merge" : "append";
	if (strcmp(mode, "append") != 0 && strcmp(mode, "merge") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("invalid mode \"%s\"", mode),
				 errhint("Valid modes are append and merge.")));
	if (strcmp(mode, "append") == 0 && m->staged)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the %s model can only be exported in merge mode", m->name)));
	if ((!include_null || !exclude_null) && strcmp(m->name, "events") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("include_events and exclude_events apply to the events model only")));

	check_interval(interval);
	if (lookback == NULL)
	{
		/* the model's default: 7 days for events, 1 day for sessions */
		lookback = palloc0(sizeof(Interval));
		lookback->day = m->default_lookback_hours / 24;
		lookback->time = (int64) (m->default_lookback_hours % 24) * USECS_PER_HOUR;
	}
	if (lookback->month < 0 || lookback->day < 0 || lookback->time < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lookback must not be negative")));

	if (table_name == NULL)
		table_name = pstrdup(m->name);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	if (phx_export_exists(name))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("export \"%s\" already exists", name)));

	/* fails now, not at the first run, on a missing server, USAGE or user mapping */
	(void) phx_get_server_config(server, owner);

	memset(&exp, 0, sizeof(exp));
	exp.name = name;
	exp.owner = owner;
	exp.server_name = server;
	exp.model = (char *) m->name;
	exp.mode = mode;
	exp.schema_name = schema_name;
	exp.table_name = table_name;
	exp.interval = *interval;
	exp.lookback = *lookback;
	exp.timezone = PG_ARGISNULL(10) ? "UTC" : text_to_cstring(PG_GETARG_TEXT_PP(10));
	if (!PG_ARGISNULL(11))
		exp.start_offset = *PG_GETARG_INTERVAL_P(11);
	if (PG_ARGISNULL(12))
		exp.delay.time = USECS_PER_MINUTE;
	else
		exp.delay = *PG_GETARG_INTERVAL_P(12);
	if (PG_ARGISNULL(13) != PG_ARGISNULL(14))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("exclude_window_start and exclude_window_end go together")));
	exp.has_exclude_window = !PG_ARGISNULL(13);
	if (exp.has_exclude_window)
	{
		exp.exclude_start = PG_GETARG_TIMEADT(13);
		exp.exclude_end = PG_GETARG_TIMEADT(14);
	}
	check_schedule(&exp);
	exp.next_interval_start = first_full_period(&exp);

	/* create (or check) the destination now, as the owner with a pinned search_path */
	{
		PhxRoleSwitch sw;
		PhxDestination *dest;

		phx_become(owner, &sw);
		dest = phx_destination_open(&exp, m);
		phx_restore(&sw);
		phx_destination_close(dest);
	}

	export_id = phx_export_insert(&exp, include, include_null, exclude, exclude_null);
	SPI_finish();
	phx_wake_scheduler();
	PG_RETURN_INT32(export_id);
}

Datum
posthog_export_drop_export(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name", true);
	bool		if_exists = PG_ARGISNULL(1) ? false : PG_GETARG_BOOL(1);
	PhxExport  *exp;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	exp = phx_export_lookup(name, if_exists);
	if (exp == NULL)
	{
		ereport(NOTICE,
				(errmsg("export \"%s\" does not exist, skipping", name)));
		SPI_finish();
		PG_RETURN_BOOL(false);
	}
	phx_export_delete(exp);
	SPI_finish();
	PG_RETURN_BOOL(true);
}

/*
 * alter_export(name, ...): changes the given settings (NULL: unchanged).
 * A new interval, timezone or offset moves the schedule to the first
 * boundary of the new grid at or after the next scheduled interval, so no
 * interval is run twice and none is skipped.
 */
Datum
posthog_export_alter_export(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name", true);
	PhxExport  *exp;
	PhxExport	old;
	TimestampTz next;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	exp = phx_export_lookup(name, false);
	old = *exp;
	if (!PG_ARGISNULL(1))
	{
		exp->interval = *PG_GETARG_INTERVAL_P(1);
		check_interval(&exp->interval);
	}
	if (!PG_ARGISNULL(2))
		exp->timezone = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (!PG_ARGISNULL(3))
		exp->start_offset = *PG_GETARG_INTERVAL_P(3);
	if (!PG_ARGISNULL(4))
		exp->delay = *PG_GETARG_INTERVAL_P(4);
	if (!PG_ARGISNULL(5) || !PG_ARGISNULL(6))
	{
		if (PG_ARGISNULL(5) || PG_ARGISNULL(6))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("exclude_window_start and exclude_window_end go together")));
		exp->has_exclude_window = true;
		exp->exclude_start = PG_GETARG_TIMEADT(5);
		exp->exclude_end = PG_GETARG_TIMEADT(6);
	}
	if (!PG_ARGISNULL(7) && PG_GETARG_BOOL(7))
		exp->has_exclude_window = false;
	if (!PG_ARGISNULL(10) && (phx_interval_usecs(PG_GETARG_INTERVAL_P(10)) < 0 ||
							  PG_GETARG_INTERVAL_P(10)->month < 0))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("lookback must not be negative")));
	if ((!PG_ARGISNULL(8) || !PG_ARGISNULL(9)) && strcmp(exp->model, "events") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("include_events and exclude_events apply to the events model only")));
	check_schedule(exp);

	next = exp->next_interval_start;
	if (!DatumGetBool(DirectFunctionCall2(interval_eq, IntervalPGetDatum(&old.interval),
										  IntervalPGetDatum(&exp->interval))) ||
		strcmp(old.timezone, exp->timezone) != 0 ||
		!DatumGetBool(DirectFunctionCall2(interval_eq, IntervalPGetDatum(&old.start_offset),
										  IntervalPGetDatum(&exp->start_offset))))
	{
		next = phx_interval_floor(exp, exp->next_interval_start);
		if (next < exp->next_interval_start)
			next = phx_interval_next(exp, next);
	}

	{
		bool		include_null;
		bool		exclude_null;
		Datum		include = event_list_arg(fcinfo, 8, "include_events", &include_null);
		Datum		exclude = event_list_arg(fcinfo, 9, "exclude_events", &exclude_null);

		if (!PG_ARGISNULL(10))
			exp->lookback = *PG_GETARG_INTERVAL_P(10);
		exp->next_interval_start = next;
		/* given lists replace the filters (an empty one clears it); NULL keeps them */
		phx_export_update(exp, !PG_ARGISNULL(8) || !PG_ARGISNULL(9),
						  include, include_null, exclude, exclude_null);
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
 * means from the beginning of the project's data.  The range ends where
 * the schedule begins, so the two never overlap; an interval already
 * exported (by the schedule or by hand) is skipped, never duplicated.
 */
Datum
posthog_export_backfill(PG_FUNCTION_ARGS)
{
	char	   *name = text_arg(fcinfo, 0, "name", true);
	PhxExport  *exp;
	TimestampTz start;
	TimestampTz end;
	int64		id;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	exp = phx_export_lookup(name, false);
	end = PG_ARGISNULL(2) ? exp->next_interval_start : PG_GETARG_TIMESTAMPTZ(2);
	if (TIMESTAMP_NOT_FINITE(end))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("end_at must be finite")));
	end = Min(end, exp->next_interval_start);
	if (phx_interval_floor(exp, end) != end)
		end = phx_interval_next(exp, phx_interval_floor(exp, end));
	end = Min(end, exp->next_interval_start);
	if (PG_ARGISNULL(1))
	{
		PhxRoleSwitch sw;
		PhxServerConfig *cfg;

		phx_become(exp->owner, &sw);
		cfg = phx_get_server_config(exp->server_name, exp->owner);
		phx_restore(&sw);
		start = phx_model_by_name(exp->model)->earliest(exp, cfg, end);
	}
	else
		start = PG_GETARG_TIMESTAMPTZ(1);
	if (TIMESTAMP_NOT_FINITE(start))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("start_at must be finite")));
	start = phx_interval_floor(exp, start);
	if (start >= end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("nothing to backfill: the range ends before it starts"),
				 errdetail("Backfills end where the schedule begins (%s).",
						   phx_ts_str(exp->next_interval_start))));
	id = phx_backfill_insert(exp, start, end);
	SPI_finish();
	phx_wake_scheduler();
	PG_RETURN_INT64(id);
}
