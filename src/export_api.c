/*-------------------------------------------------------------------------
 *
 * export_api.c
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

#include "posthog_export.h"

PG_FUNCTION_INFO_V1(posthog_export_create_export);
PG_FUNCTION_INFO_V1(posthog_export_drop_export);

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

	if (!phx_interval_is_supported(interval))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unsupported interval \"%s\"",
						DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(interval)))),
				 errhint("Supported intervals are 5 minutes, 15 minutes, 1 hour, 1 day and 1 week.")));
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

	/* create (or check) the destination now, as the owner with a pinned search_path */
	{
		PhxRoleSwitch sw;
		PhxDestination *dest;

		phx_become(owner, &sw);
		dest = phx_destination_open(&exp, m);
		phx_restore(&sw);
		SPI_freeplan(dest->insert_plan);
	}

	export_id = phx_export_insert(&exp, include, include_null, exclude, exclude_null);
	SPI_finish();
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
