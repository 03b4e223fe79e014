/*-------------------------------------------------------------------------
 *
 * hogql.c
 *		Building query API requests: HogQL text with {placeholders} and the
 *		typed "values" that fill them server-side.
 *
 * Identifiers are quoted here too (phx_hogql_identifier() when needed,
 * phx_hogql_quoted_identifier() always), for the fdw and the models alike.
 *
 * User-supplied data (event names, cursor positions, interval bounds) is
 * never pasted into the HogQL text: it travels in "values", which PostHog
 * substitutes as typed constants.  Times are always sent as UTC text and
 * wrapped in toDateTime64(..., 6, 'UTC') by the caller, so the project's
 * timezone can never shift them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/datetime.h"
#include "utils/json.h"

#include "posthog/posthog.h"

void
phx_query_init(PhxQuery *q)
{
	initStringInfo(&q->text);
	initStringInfo(&q->values);
	q->prefetched = 0;
	q->rows = 0;
	q->kind = NULL;
}

static void
value_name(PhxQuery *q, const char *name)
{
	if (q->values.len > 0)
		appendStringInfoChar(&q->values, ',');
	escape_json(&q->values, name);
	appendStringInfoChar(&q->values, ':');
}

void
phx_value_text(PhxQuery *q, const char *name, const char *value)
{
	value_name(q, name);
	escape_json(&q->values, value);
}

void
phx_value_text_array(PhxQuery *q, const char *name, List *values)
{
	ListCell   *lc;

	value_name(q, name);
	appendStringInfoChar(&q->values, '[');
	foreach(lc, values)
	{
		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(&q->values, ',');
		escape_json(&q->values, (const char *) lfirst(lc));
	}
	appendStringInfoChar(&q->values, ']');
}

/* An integer travels as a JSON number, formatted here, never as text from elsewhere. */
void
phx_value_int64(PhxQuery *q, const char *name, int64 value)
{
	value_name(q, name);
	appendStringInfo(&q->values, INT64_FORMAT, value);
}

/*
 * A value already in JSON form (a number, a list ...).  The caller built
 * the text itself from typed data, never from text it was handed.
 */
void
phx_value_json(PhxQuery *q, const char *name, const char *json)
{
	value_name(q, name);
	appendStringInfoString(&q->values, json);
}

/*
 * An identifier as HogQL reads it: plain when it is one, else in
 * backquotes with backquote and backslash escaped.  Words HogQL reads as
 * keywords are quoted too.
 */
void
phx_hogql_identifier(StringInfo buf, const char *name)
{
	static const char *const keywords[] = {
		"all", "and", "anti", "any", "array", "as", "asc", "asof", "between", "both", "by", "case",
		"cast", "cross", "cube", "current", "date", "day", "desc", "distinct", "else", "end",
		"except", "extract", "false", "final", "first", "following", "for", "from", "full", "global",
		"group", "having", "hour", "if", "ilike", "in", "inf", "inner", "interval", "intersect", "is",
		"join", "last", "leading", "left", "like", "limit", "minute", "month", "nan", "natural",
		"not", "null", "nulls", "offset", "on", "or", "order", "outer", "over", "partition",
		"preceding", "prewhere", "qualify", "range", "recursive", "right", "rollup", "row", "rows",
		"sample", "second", "select", "semi", "settings", "then", "ties", "to", "top", "totals",
		"trailing", "trim", "true", "unbounded", "union", "using", "week", "when", "where",
		"window", "with", "year", "team_id", NULL
	};
	bool		plain = name[0] != '\0' &&
		(isalpha((unsigned char) name[0]) || name[0] == '_' || name[0] == '$');

	for (const char *p = name; *p && plain; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '$') || IS_HIGHBIT_SET(*p))
			plain = false;
	for (int i = 0; plain && keywords[i]; i++)
		if (pg_strcasecmp(name, keywords[i]) == 0)
			plain = false;
	if (plain)
		appendStringInfoString(buf, name);
	else
		phx_hogql_quoted_identifier(buf, name);
}

/*
 * An identifier in backquotes, whatever it is (backquote and backslash
 * escaped): the models name the columns of the user's own query this way,
 * so no name of it can be read as a keyword or an operator.
 */
void
phx_hogql_quoted_identifier(StringInfo buf, const char *name)
{
	appendStringInfoChar(buf, '`');
	for (const char *p = name; *p; p++)
	{
		if (*p == '`' || *p == '\\')
			appendStringInfoChar(buf, '\\');
		appendStringInfoChar(buf, *p);
	}
	appendStringInfoChar(buf, '`');
}

/* An identifier as HogQL reads it (phx_hogql_identifier()), as a string. */
char *
phx_hogql_name(const char *name)
{
	StringInfoData buf;

	initStringInfo(&buf);
	phx_hogql_identifier(&buf, name);
	return buf.data;
}

/*
 * Formats a timestamptz as "YYYY-MM-DD HH:MM:SS.ffffff" in UTC, whatever
 * the session's TimeZone and DateStyle.
 */
char *
phx_format_utc(TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	if (TIMESTAMP_NOT_FINITE(ts) ||
		timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range for PostHog")));
	if (tm.tm_year < 1 || tm.tm_year > 9999)
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("timestamp out of range for PostHog")));
	return psprintf("%04d-%02d-%02d %02d:%02d:%02d.%06d",
					tm.tm_year, tm.tm_mon, tm.tm_mday,
					tm.tm_hour, tm.tm_min, tm.tm_sec, (int) fsec);
}

void
phx_value_timestamp(PhxQuery *q, const char *name, TimestampTz ts)
{
	phx_value_text(q, name, phx_format_utc(ts));
}

/*
 * The JSON body of a query request.  refresh=force_blocking, because an
 * identical query could otherwise be answered from PostHog's cache with
 * stale rows.
 */
char *
phx_request_body(PhxQuery *q, const char *label)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (q->kind)
	{
		/* a query of another kind: no text, no values, nothing cached */
		appendStringInfoString(&buf, "{\"query\":{\"kind\":");
		escape_json(&buf, q->kind);
		appendStringInfoString(&buf, "},\"name\":");
		escape_json(&buf, label);
		appendStringInfoChar(&buf, '}');
		return buf.data;
	}
	appendStringInfoString(&buf, "{\"query\":{\"kind\":\"HogQLQuery\",\"query\":");
	escape_json(&buf, q->text.data);
	appendStringInfo(&buf, ",\"values\":{%s}},\"refresh\":\"force_blocking\",\"name\":",
					 q->values.data);
	escape_json(&buf, label);
	appendStringInfoChar(&buf, '}');
	return buf.data;
}
