/*-------------------------------------------------------------------------
 *
 * sessions.c
 *		The sessions model: one row per session, kept up to date while the
 *		session grows.
 *
 * A session changes as long as its events arrive, so every run re-pulls
 * the sessions whose end_timestamp falls in [start - lookback, end) and
 * merges them on (team_id, session_id), updating a row only when the
 * incoming end_timestamp is later.  Pages follow a keyset cursor on
 * session_id (the pager, paging.c, runs the loop).  The whole interval is
 * staged and merged in one statement (see destination.c), so readers never
 * see half a merge.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "models/models.h"

/* Destination columns, and the HogQL that selects each (same order). */
static const PhxModelColumn sessions_columns[] = {
	{"team_id", INT4OID, "pg_catalog.int4 NOT NULL"},
	{"session_id", TEXTOID, "pg_catalog.text NOT NULL"},
	{"distinct_id", TEXTOID, "pg_catalog.text"},
	{"start_timestamp", TIMESTAMPTZOID, "pg_catalog.timestamptz"},
	{"end_timestamp", TIMESTAMPTZOID, "pg_catalog.timestamptz"},
	{"urls", TEXTARRAYOID, "pg_catalog.text[]"},
	{"num_uniq_urls", INT8OID, "pg_catalog.int8"},
	{"entry_current_url", TEXTOID, "pg_catalog.text"},
	{"entry_pathname", TEXTOID, "pg_catalog.text"},
	{"entry_hostname", TEXTOID, "pg_catalog.text"},
	{"end_current_url", TEXTOID, "pg_catalog.text"},
	{"end_pathname", TEXTOID, "pg_catalog.text"},
	{"end_hostname", TEXTOID, "pg_catalog.text"},
	{"entry_referring_domain", TEXTOID, "pg_catalog.text"},
	{"entry_utm_source", TEXTOID, "pg_catalog.text"},
	{"entry_utm_campaign", TEXTOID, "pg_catalog.text"},
	{"entry_utm_medium", TEXTOID, "pg_catalog.text"},
	{"entry_utm_term", TEXTOID, "pg_catalog.text"},
	{"entry_utm_content", TEXTOID, "pg_catalog.text"},
	{"entry_gclid", TEXTOID, "pg_catalog.text"},
	{"entry_gad_source", TEXTOID, "pg_catalog.text"},
	{"entry_fbclid", TEXTOID, "pg_catalog.text"},
	{"pageview_count", INT8OID, "pg_catalog.int8"},
	{"autocapture_count", INT8OID, "pg_catalog.int8"},
	{"screen_count", INT8OID, "pg_catalog.int8"},
	{"channel_type", TEXTOID, "pg_catalog.text"},
	{"session_duration", INT8OID, "pg_catalog.int8"},
	{"is_bounce", BOOLOID, "pg_catalog.bool"},
	{"last_external_click_url", TEXTOID, "pg_catalog.text"},
	{"vitals_lcp", FLOAT8OID, "pg_catalog.float8"},
};

#define S_NCOLUMNS lengthof(sessions_columns)
#define S_TEAM_ID 0
#define S_SESSION_ID 1

/* The keyset the pages follow, and the merge key every row must have. */
static const PhxKeyColumn keyset[] = {
	{S_SESSION_ID, "session_id", PHX_KEY_TEXT},
};
static const PhxKeyColumn row_keys[] = {
	{S_TEAM_ID, "team_id", PHX_KEY_INT},
	{S_SESSION_ID, "session_id", PHX_KEY_TEXT},
};

/*
 * What the query selects for each column: HogQL's session columns carry a
 * "$" that the destination drops; datetimes are converted to UTC.
 */
static const char *const select_exprs[S_NCOLUMNS] = {
	"team_id", "session_id", "distinct_id",
	"toTimeZone($start_timestamp, 'UTC')", "toTimeZone($end_timestamp, 'UTC')",
	"$urls", "$num_uniq_urls",
	"$entry_current_url", "$entry_pathname", "$entry_hostname",
	"$end_current_url", "$end_pathname", "$end_hostname",
	"$entry_referring_domain",
	"$entry_utm_source", "$entry_utm_campaign", "$entry_utm_medium", "$entry_utm_term",
	"$entry_utm_content",
	"$entry_gclid", "$entry_gad_source", "$entry_fbclid",
	"$pageview_count", "$autocapture_count", "$screen_count",
	"$channel_type", "$session_duration", "$is_bounce", "$last_external_click_url",
	"$vitals_lcp",
};

static const char *const sessions_key[] = {"team_id", "session_id", NULL};
static const char *const sessions_versions[] = {"end_timestamp", NULL};

/*
 * What the pager needs: the window of end_timestamp, and the paging
 * description, which holds the column names the response must have.
 */
typedef struct SessionsState
{
	TimestampTz min_end;
	TimestampTz end;
	PhxPaging	paging;
	const char *columns[S_NCOLUMNS];
} SessionsState;

/* The request for a page: the window's sessions after the cursor (session_id). */
static void
build_query(void *arg, const PhxKey *cursor, int page_size, PhxQuery *q)
{
	SessionsState *st = (SessionsState *) arg;

	phx_query_init(q);
	appendStringInfoString(&q->text, "SELECT ");
	for (int i = 0; i < S_NCOLUMNS; i++)
		appendStringInfo(&q->text, "%s%s AS %s", i ? ", " : "", select_exprs[i],
						 sessions_columns[i].name);
	appendStringInfoString(&q->text,
						   " FROM sessions"
						   " WHERE $end_timestamp >= toDateTime64({min_end}, 6, 'UTC')"
						   " AND $end_timestamp < toDateTime64({end}, 6, 'UTC')");
	phx_value_timestamp(q, "min_end", st->min_end);
	phx_value_timestamp(q, "end", st->end);
	if (cursor)
	{
		appendStringInfoString(&q->text, " AND session_id > {cursor_session_id}");
		phx_value_text(q, "cursor_session_id", cursor[0].str);
	}
	appendStringInfo(&q->text, " ORDER BY session_id LIMIT %d", page_size);
}

static const char *
sessions_row_key(void *arg, int r)
{
	PhxCell    *sid = PHX_CELL((PhxPage *) arg, r, S_SESSION_ID);

	return (sid->kind == PHX_CELL_STRING) ? sid->val : NULL;
}

static void
sessions_get_row(void *arg, int r, Datum *values, bool *nulls)
{
	PhxPage    *page = (PhxPage *) arg;

	/* the keys (team_id, session_id) were checked by the pager */
	for (int c = 0; c < S_NCOLUMNS; c++)
		values[c] = phx_cell_datum(PHX_CELL(page, r, c), sessions_columns[c].type,
								   sessions_columns[c].name, &nulls[c]);
}

/* A checked response is the page: each row converts column by column. */
static void
fill_page(void *arg, const PhxKeySource *src, PhxModelPage *mp)
{
	mp->nrows = src->page->nrows;
	mp->get_row = sessions_get_row;
	mp->row_key = sessions_row_key;
	mp->arg = src->page;
}

static const PhxPaging sessions_paging = {
	.query_name = "sessions",
	.columns = NULL,			/* set in sessions_begin() */
	.ncolumns = S_NCOLUMNS,
	.row_what = "a session",
	.page_what = "session",
	.keyset = keyset,
	.nkeys = lengthof(keyset),
	.row_keys = row_keys,
	.nrow_keys = lengthof(row_keys),
	/* full pages from the first, one request at a time (only events ramp and prefetch) */
	.ramp = false,
	.prefetch = false,
	.build_query = build_query,
	.fill_page = fill_page,
};

/* The sessions that ended in [start - lookback, end). */
static void *
sessions_begin(PhxExport *exp, PhxServerConfig *cfg, TimestampTz start,
			   TimestampTz end, List *cursor)
{
	SessionsState *st = palloc0(sizeof(SessionsState));

	st->end = end;
	st->min_end = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
														  TimestampTzGetDatum(start),
														  IntervalPGetDatum(&exp->lookback)));
	/* the response's columns are the destination's, by name */
	for (int i = 0; i < S_NCOLUMNS; i++)
		st->columns[i] = sessions_columns[i].name;
	st->paging = sessions_paging;
	st->paging.columns = st->columns;
	return phx_pager_begin(&st->paging, st, exp, cfg, cursor);
}

static TimestampTz
sessions_earliest(PhxExport *exp, PhxServerConfig *cfg, TimestampTz end)
{
	return phx_query_earliest(exp, cfg, "SELECT toTimeZone(min($end_timestamp), 'UTC') AS earliest FROM sessions", end);
}

const PhxModel phx_sessions_model = {
	.name = "sessions",
	.columns = sessions_columns,
	.ncolumns = S_NCOLUMNS,
	.merge_key = sessions_key,
	.merge_versions = sessions_versions,
	.staged = true,
	.default_lookback_hours = 24,
	.begin = sessions_begin,
	.next_page = phx_pager_next_page,
	.earliest = sessions_earliest,
};
