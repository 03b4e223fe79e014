/*-------------------------------------------------------------------------
 *
 * query_function.c
 *		posthog_export.query(server, hogql, values): ad-hoc HogQL as a set
 *		of records, typed by the caller's column definition list.
 *
 * One request, made as the calling role through its user mapping (USAGE
 * on the server checked), with the request budget, retries and errors of
 * every other request.  The values travel as PostHog's HogQL "values" and
 * fill the query's {placeholders}: strings, numbers, booleans, nulls and
 * arrays of them; never pasted into its text.
 *
 * PostHog answers at most one page: 100 rows without a LIMIT (then
 * "hasMore" says whether there were more), at most 50000 with one (a
 * larger LIMIT is lowered to 50000 without a word).  A result that may be
 * cut off is an error, never a short result.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "funcapi.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/numeric.h"

#include "fdw/fdw.h"

PG_FUNCTION_INFO_V1(posthog_export_query);

/* PostHog's MAX_SELECT_RETURNED_ROWS (posthog/hogql/constants.py) */
#define PHX_QUERY_MAX_ROWS	50000

#define PHX_MAX_PLACEHOLDER	64

/* A placeholder name HogQL accepts: an identifier. */
static bool
placeholder_ok(const char *s, int len)
{
	if (len == 0 || len > PHX_MAX_PLACEHOLDER || (s[0] >= '0' && s[0] <= '9'))
		return false;
	for (int i = 0; i < len; i++)
		if (!(s[i] == '_' || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
			  (s[i] >= '0' && s[i] <= '9')))
			return false;
	return true;
}

pg_attribute_noreturn() static void
bad_value(const char *key, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("value \"%s\" of query() is %s", key, what),
			 errdetail("A value is a string, a number, a boolean, null, or an array of those.")));
}

/* A scalar jsonb value as JSON text. */
static void
append_scalar(StringInfo buf, JsonbValue *v, const char *key)
{
	switch (v->type)
	{
		case jbvNull:
			appendStringInfoString(buf, "null");
			break;
		case jbvBool:
			appendStringInfoString(buf, v->val.boolean ? "true" : "false");
			break;
		case jbvNumeric:
			appendStringInfoString(buf,
								   DatumGetCString(DirectFunctionCall1(numeric_out,
																	   NumericGetDatum(v->val.numeric))));
			break;
		case jbvString:
			escape_json(buf, pnstrdup(v->val.string.val, v->val.string.len));
			break;
		default:
			bad_value(key, "an object or an array inside an array");
	}
}

/* The "values" object as members of the request's "values". */
static void
append_values(PhxQuery *q, Jsonb *values)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	char	   *key = NULL;

	if (!JB_ROOT_IS_OBJECT(values))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("values of query() must be a JSON object"),
				 errhint("Give an object whose keys are the query's placeholders, as jsonb_build_object('since', now() - interval '1 hour') for {since}.")));
	it = JsonbIteratorInit(&values->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			key = pnstrdup(v.val.string.val, v.val.string.len);
			if (!placeholder_ok(v.val.string.val, v.val.string.len))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("invalid placeholder name \"%s\" in values of query()", key),
						 errdetail("A placeholder name is a letter or underscore, then letters, digits or underscores, at most %d characters.",
								   PHX_MAX_PLACEHOLDER)));
			if (q->values.len > 0)
				appendStringInfoChar(&q->values, ',');
			escape_json(&q->values, key);
			appendStringInfoChar(&q->values, ':');
		}
		else if (tok == WJB_VALUE && v.type == jbvBinary)
		{
			JsonbIterator *eit;
			JsonbValue	e;
			JsonbIteratorToken etok;
			bool		first = true;

			if (!JsonContainerIsArray(v.val.binary.data))
				bad_value(key, "an object");
			appendStringInfoChar(&q->values, '[');
			eit = JsonbIteratorInit(v.val.binary.data);
			while ((etok = JsonbIteratorNext(&eit, &e, true)) != WJB_DONE)
			{
				if (etok != WJB_ELEM)
					continue;
				if (!first)
					appendStringInfoChar(&q->values, ',');
				first = false;
				append_scalar(&q->values, &e, key);
			}
			appendStringInfoChar(&q->values, ']');
		}
		else if (tok == WJB_VALUE)
			append_scalar(&q->values, &v, key);
	}
}

/* The caller's column list must have PostHog's columns, as many. */
static void
check_column_count(TupleDesc tupdesc, PhxPage *page)
{
	StringInfoData names;

	if (tupdesc->natts == page->ncolumns)
		return;
	initStringInfo(&names);
	for (int i = 0; i < page->ncolumns && names.len < 1000; i++)
		appendStringInfo(&names, "%s%s", i > 0 ? ", " : "", quote_identifier(page->columns[i]));
	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("the column definition list of query() has %d columns, PostHog returned %d",
					tupdesc->natts, page->ncolumns),
			 page->ncolumns > 0 ?
			 errdetail("PostHog's columns: %s.", names.data) :
			 errdetail("PostHog returned no columns.")));
}

/* A result PostHog may have cut off is an error. */
static void
check_complete(PhxPage *page)
{
	if (page->has_more)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("PostHog has more rows for this query than the %d it returned", page->nrows),
				 errdetail("query() makes one request and never returns a partial result; without a LIMIT PostHog returns 100 rows."),
				 errhint("Add a LIMIT (at most %d), a filter or an aggregate to the query, or use an export for more rows.",
						 PHX_QUERY_MAX_ROWS)));
	if (page->nrows >= PHX_QUERY_MAX_ROWS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("PostHog returned %d rows, the most one query returns: the result may be cut off",
						page->nrows),
				 errdetail("PostHog lowers a LIMIT above %d to %d without saying so; query() never returns a partial result.",
						   PHX_QUERY_MAX_ROWS, PHX_QUERY_MAX_ROWS),
				 errhint("Lower the LIMIT below %d, add a filter or an aggregate, or use an export for more rows.",
						 PHX_QUERY_MAX_ROWS)));
}

Datum
posthog_export_query(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhxServerConfig *cfg;
	PhxQuery	q;
	PhxPage    *page;
	PhxRowShape *shape;
	TupleDesc	tupdesc;
	int		   *attnums;
	Datum	   *values;
	bool	   *nulls;
	MemoryContext rowcxt;
	MemoryContext oldcxt;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("server must not be null")));
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("hogql must not be null")));
	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("posthog_export needs a database with UTF8 encoding"),
				 errdetail("This database uses %s.", GetDatabaseEncodingName())));

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	tupdesc = rsinfo->setDesc;

	/* as the calling role: its user mapping, and USAGE on the server */
	cfg = phx_get_server_config(text_to_cstring(PG_GETARG_TEXT_PP(0)), GetUserId());
	phx_query_init(&q);
	appendStringInfoString(&q.text, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	if (PG_NARGS() > 2 && !PG_ARGISNULL(2))
		append_values(&q, PG_GETARG_JSONB_P(2));

	page = phx_http_query(cfg, &q, "posthog_export query()", NULL, NULL, NULL);
	check_column_count(tupdesc, page);
	check_complete(page);

	attnums = palloc(sizeof(int) * Max(tupdesc->natts, 1));
	for (int i = 0; i < tupdesc->natts; i++)
		attnums[i] = i + 1;
	shape = phx_row_shape(tupdesc, attnums, tupdesc->natts, "query()");
	values = palloc(sizeof(Datum) * Max(tupdesc->natts, 1));
	nulls = palloc(sizeof(bool) * Max(tupdesc->natts, 1));
	rowcxt = AllocSetContextCreate(CurrentMemoryContext, "posthog_export query() row",
								   ALLOCSET_DEFAULT_SIZES);
	for (int r = 0; r < page->nrows; r++)
	{
		CHECK_FOR_INTERRUPTS();
		oldcxt = MemoryContextSwitchTo(rowcxt);
		phx_row_values(shape, page, r, values, nulls);
		/* the tuplestore copies the row */
		tuplestore_putvalues(rsinfo->setResult, tupdesc, values, nulls);
		MemoryContextSwitchTo(oldcxt);
		MemoryContextReset(rowcxt);
	}
	MemoryContextDelete(rowcxt);
	return (Datum) 0;
}
