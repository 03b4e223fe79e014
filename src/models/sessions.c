/*-------------------------------------------------------------------------
 *
 * sessions.c
 *		The sessions model: one row per session, kept up to date while the
 *		session grows.
 *
 * A session changes as long as its events arrive.  As PostHog's own
 * sessions export does, a run takes the sessions whose data arrived in the
 * interval: greatest(max_inserted_at, $end_timestamp) in [start, end),
 * with end_timestamp >= start - lookback as a bound on the scan.  A
 * session that grows, or arrives late, is taken again by the interval in
 * which its new data arrived, and merged on (team_id, session_id),
 * updating a row only when the incoming end_timestamp is later.  Pages
 * follow a keyset cursor on session_id (the pager, paging.c, runs the
 * loop).  The whole interval is staged and merged in one statement (see
 * destination.c), so readers never see half a merge.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "models/models.h"

/*
 * Destination columns: the fields PostHog's own sessions batch export
 * writes (products/batch_exports/backend/temporal/sql/sessions.py), named
 * as it names them (HogQL's field without the "$") and typed as the
 * Postgres table it creates declares them (BIGINT for ClickHouse's Int64
 * and UInt64, DOUBLE PRECISION, TIMESTAMPTZ, TEXT[]), plus max_inserted_at
 * and entry_referrer, which v2 has and PostHog's export leaves out.  The
 * first thirty are the columns of earlier versions, in their order.
 */
static const PhxModelColumn sessions_columns[] = {
	{"team_id", INT8OID, "pg_catalog.int8 NOT NULL"},
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
	/* v2 fields added in 0.2.0 */
	{"session_id_v7", TEXTOID, "pg_catalog.text"},
	{"max_inserted_at", TIMESTAMPTZOID, "pg_catalog.timestamptz"},
	{"entry_referrer", TEXTOID, "pg_catalog.text"},
	{"entry_gclsrc", TEXTOID, "pg_catalog.text"},
	{"entry_dclid", TEXTOID, "pg_catalog.text"},
	{"entry_gbraid", TEXTOID, "pg_catalog.text"},
	{"entry_wbraid", TEXTOID, "pg_catalog.text"},
	{"entry_msclkid", TEXTOID, "pg_catalog.text"},
	{"entry_twclid", TEXTOID, "pg_catalog.text"},
	{"entry_li_fat_id", TEXTOID, "pg_catalog.text"},
	{"entry_mc_cid", TEXTOID, "pg_catalog.text"},
	{"entry_igshid", TEXTOID, "pg_catalog.text"},
	{"entry_ttclid", TEXTOID, "pg_catalog.text"},
	{"entry__kx", TEXTOID, "pg_catalog.text"},
	{"entry_irclid", TEXTOID, "pg_catalog.text"},
	{"duration", INT8OID, "pg_catalog.int8"},
	{"page_screen_autocapture_count_up_to", INT8OID, "pg_catalog.int8"},
	{"exit_current_url", TEXTOID, "pg_catalog.text"},
	{"exit_pathname", TEXTOID, "pg_catalog.text"},
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
 * What the query selects for each column (same order), all fields of
 * PostHog's v2 sessions table (posthog/hogql/database/schema/sessions_v2.py).
 * Datetimes are converted to UTC; session_id_v7 is a UInt128, which the
 * query API cannot serialize, so it travels as its decimal text, as in
 * PostHog's own export.  An expression is aliased only when it is not the
 * column's name already: "team_id" is a reserved alias in HogQL
 * (RESERVED_KEYWORDS in posthog/hogql/constants.py), so "team_id AS
 * team_id" is a syntax error on the real PostHog.
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
	"toString(session_id_v7)", "toTimeZone(max_inserted_at, 'UTC')", "$entry_referrer",
	"$entry_gclsrc", "$entry_dclid", "$entry_gbraid", "$entry_wbraid", "$entry_msclkid",
	"$entry_twclid", "$entry_li_fat_id", "$entry_mc_cid", "$entry_igshid", "$entry_ttclid",
	"$entry__kx", "$entry_irclid",
	"duration", "$page_screen_autocapture_count_up_to",
	"$exit_current_url", "$exit_pathname",
};

static const char *const sessions_key[] = {"team_id", "session_id", NULL};
static const char *const sessions_versions[] = {"end_timestamp", NULL};

/*
 * What the pager needs: the interval, the bound on end_timestamp, and the
 * paging description, which holds the column names the response must have.
 */
typedef struct SessionsState
{
	TimestampTz start;
	TimestampTz end;
	TimestampTz min_end;
	PhxPaging	paging;
	const char *columns[S_NCOLUMNS];
} SessionsState;

/*
 * The request for a page: the interval's sessions after the cursor
 * (session_id).  A session belongs to [start, end) when
 * greatest(max_inserted_at, $end_timestamp) is in it, PostHog's own rule
 * (SESSIONS_INSERTED_AT_SQL in its sessions export): a session that grows
 * or arrives late is exported again in the interval in which its data
 * arrived.  The test is written out as comparisons (greatest(a, b) >= s is
 * a >= s OR b >= s; greatest(a, b) < e is a < e AND b < e), which is the
 * same selection; max_inserted_at is never NULL in PostHog (the epoch for
 * sessions from before it existed, so $end_timestamp decides).  The bounds
 * on $end_timestamp are what PostHog's HogQL pushes into the scan of
 * raw_sessions: without them ClickHouse reads the whole table.
 */
static void
build_query(void *arg, const PhxKey *cursor, int page_size, PhxQuery *q)
{
	SessionsState *st = (SessionsState *) arg;

	phx_query_init(q);
	appendStringInfoString(&q->text, "SELECT ");
	for (int i = 0; i < S_NCOLUMNS; i++)
	{
		appendStringInfo(&q->text, "%s%s", i ? ", " : "", select_exprs[i]);
		if (strcmp(select_exprs[i], sessions_columns[i].name) != 0)
			appendStringInfo(&q->text, " AS %s", sessions_columns[i].name);
	}
	appendStringInfoString(&q->text,
						   " FROM sessions"
						   " WHERE $end_timestamp >= toDateTime64({min_end}, 6, 'UTC')"
						   " AND $end_timestamp < toDateTime64({end}, 6, 'UTC')"
						   " AND (max_inserted_at >= toDateTime64({start}, 6, 'UTC')"
						   " OR $end_timestamp >= toDateTime64({start}, 6, 'UTC'))"
						   " AND max_inserted_at < toDateTime64({end}, 6, 'UTC')");
	phx_value_timestamp(q, "min_end", st->min_end);
	phx_value_timestamp(q, "start", st->start);
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
	return phx_cell_string(PHX_CELL((PhxPage *) arg, r, S_SESSION_ID));
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
	/* one request at a time (only events prefetch) */
	.prefetch = false,
	.build_query = build_query,
	.fill_page = fill_page,
};

/*
 * The sessions whose data arrived in [start, end) (see build_query), among
 * those that ended at or after start - lookback: the export's lookback is
 * only a bound on the scan, as PostHog's SESSIONS_LOOKBACK_DAYS (3 days)
 * is for its regular runs.  A session whose data arrives more than
 * lookback after it ended is not exported again.
 */
static void *
sessions_begin(PhxExport *exp, PhxServerConfig *cfg, TimestampTz start,
			   TimestampTz end, List *cursor)
{
	SessionsState *st = palloc0(sizeof(SessionsState));

	st->start = start;
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
	.default_lookback_hours = 72,
	.begin = sessions_begin,
	.next_page = phx_pager_next_page,
	.earliest = sessions_earliest,
};
