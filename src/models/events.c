/*-------------------------------------------------------------------------
 *
 * events.c
 *		The events model: the HogQL that selects an interval's events, and
 *		the conversion of each returned row into the columns PostHog's
 *		Postgres export writes.
 *
 * An interval [start, end) holds the events *ingested* in it (created_at),
 * so an event that arrives late lands in the interval in which it arrived
 * and is never skipped; an event-time lower bound (start - lookback) keeps
 * ClickHouse's scan on the partition key cheap, as PostHog's own export
 * does.  Pages follow a keyset cursor on (timestamp, uuid); the API
 * rejects OFFSET for API keys, and a keyset never skips or repeats a row.
 * The pager (paging.c) runs the loop; events alone prefetch the next page,
 * as an interval of events can be long.
 *
 * An event can become visible after its interval was exported (created_at
 * is stamped before it reaches ClickHouse): the settle pass (run/settle.c)
 * counts exported intervals again with events_count_intervals(), the same
 * rows as the export query, and reads again those whose count grew.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"

#include "models/models.h"

enum
{
	EV_UUID,
	EV_EVENT,
	EV_PROPERTIES,
	EV_ELEMENTS,
	EV_SET,
	EV_SET_ONCE,
	EV_DISTINCT_ID,
	EV_TEAM_ID,
	EV_IP,
	EV_SITE_URL,
	EV_TIMESTAMP,
	EV_NCOLUMNS
};

static const PhxModelColumn events_columns[EV_NCOLUMNS] = {
	{"uuid", TEXTOID, "pg_catalog.varchar(200)"},
	{"event", TEXTOID, "pg_catalog.varchar(200)"},
	{"properties", JSONBOID, "pg_catalog.jsonb"},
	{"elements", JSONBOID, "pg_catalog.jsonb"},
	{"set", JSONBOID, "pg_catalog.jsonb"},
	{"set_once", JSONBOID, "pg_catalog.jsonb"},
	{"distinct_id", TEXTOID, "pg_catalog.varchar(200)"},
	{"team_id", INT4OID, "pg_catalog.int4"},
	{"ip", TEXTOID, "pg_catalog.varchar(200)"},
	{"site_url", TEXTOID, "pg_catalog.varchar(200)"},
	{"timestamp", TIMESTAMPTZOID, "pg_catalog.timestamptz"},
};

static const char *const events_merge_key[] = {"uuid", NULL};

/* What the query selects, in order; the response's columns must match. */
enum
{
	Q_UUID,
	Q_EVENT,
	Q_PROPERTIES,
	Q_ELEMENTS_CHAIN,
	Q_DISTINCT_ID,
	Q_TEAM_ID,
	Q_TIMESTAMP,
	Q_NCOLUMNS
};

static const char *const query_columns[Q_NCOLUMNS] = {
	"uuid", "event", "properties", "elements_chain", "distinct_id", "team_id", "timestamp_utc"
};

/* The keyset the pages follow, and the key every row must have. */
static const PhxKeyColumn keyset[] = {
	{Q_TIMESTAMP, "timestamp", PHX_KEY_TIMESTAMP},
	{Q_UUID, "uuid", PHX_KEY_UUID},
};
static const PhxKeyColumn row_keys[] = {
	{Q_UUID, "uuid", PHX_KEY_UUID},
};

/* What the pager needs besides the paging description: the interval. */
typedef struct EventsState
{
	PhxExport  *exp;
	TimestampTz start;
	TimestampTz end;
	bool		merge;
	/* the owner's custom columns, selected after the model's (custom.c) */
	int			ncustom;
	PhxCustomReader *custom;	/* how each one's values are read */
	PhxPaging	paging;			/* events_paging, with their columns */
} EventsState;

/* The event-time bound of an interval starting at start: start - lookback. */
static TimestampTz
min_timestamp(PhxExport *exp, TimestampTz start)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
												   TimestampTzGetDatum(start),
												   IntervalPGetDatum(&exp->lookback)));
}

/* " AND event IN {include_events}" and " AND event NOT IN {exclude_events}", as exp filters. */
static void
append_event_filters(PhxQuery *q, PhxExport *exp)
{
	if (exp->include_events != NIL)
	{
		appendStringInfoString(&q->text, " AND event IN {include_events}");
		phx_value_text_array(q, "include_events", exp->include_events);
	}
	if (exp->exclude_events != NIL)
	{
		appendStringInfoString(&q->text, " AND event NOT IN {exclude_events}");
		phx_value_text_array(q, "exclude_events", exp->exclude_events);
	}
}

/*
 * The request for a page: the interval's events after the cursor (the last
 * row's (timestamp, uuid)), in keyset order.
 */
static void
build_query(void *arg, const PhxKey *cursor, int page_size, PhxQuery *q)
{
	EventsState *st = (EventsState *) arg;
	TimestampTz min_ts = min_timestamp(st->exp, st->start);

	phx_query_init(q);
	appendStringInfoString(&q->text,
						   "SELECT uuid, event, properties, elements_chain, distinct_id, team_id, "
						   "toTimeZone(timestamp, 'UTC') AS timestamp_utc");
	if (st->ncustom > 0)
		phx_append_custom_select(&q->text, st->exp);
	appendStringInfoString(&q->text,
						   " FROM events "
						   "WHERE created_at >= toDateTime64({start}, 6, 'UTC') "
						   "AND created_at < toDateTime64({end}, 6, 'UTC') "
						   "AND timestamp >= toDateTime64({min_timestamp}, 6, 'UTC')");
	phx_value_timestamp(q, "start", st->start);
	phx_value_timestamp(q, "end", st->end);
	phx_value_timestamp(q, "min_timestamp", min_ts);
	append_event_filters(q, st->exp);
	phx_append_filter(q, st->exp);
	if (cursor)
	{
		appendStringInfoString(&q->text,
							   " AND (timestamp, uuid) > (toDateTime64({cursor_timestamp}, 6, 'UTC'), {cursor_uuid})");
		phx_value_text(q, "cursor_timestamp", cursor[0].str);
		phx_value_text(q, "cursor_uuid", cursor[1].str);
	}
	/* page_size is ours, never user text: safe to print into the query */
	appendStringInfo(&q->text, " ORDER BY timestamp, uuid LIMIT %d", page_size);
}

static const char *
cell_text(PhxCell *cell, const char *what, bool required)
{
	if (cell->kind == PHX_CELL_NULL)
	{
		if (required)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("PostHog returned an event without %s", what)));
		return NULL;
	}
	if (cell->kind == PHX_CELL_JSON)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("PostHog returned a JSON value for %s, where a scalar was expected", what)));
	return cell->val;
}

/* The value under a top-level key of an object; NULL when absent or JSON null. */
static JsonbValue *
top_member(Jsonb *jb, const char *key)
{
	JsonbValue *v;

	if (jb == NULL || !JB_ROOT_IS_OBJECT(jb))
		return NULL;
	v = getKeyJsonValueFromContainer(&jb->root, key, strlen(key), NULL);
	return (v == NULL || v->type == jbvNull) ? NULL : v;
}

/* The value under a top-level key as its own jsonb; absent or JSON null: SQL NULL. */
static Datum
jsonb_member(Jsonb *jb, const char *key, bool *isnull)
{
	JsonbValue *v = top_member(jb, key);

	*isnull = (v == NULL);
	if (v == NULL)
		return (Datum) 0;
	return JsonbPGetDatum(JsonbValueToJsonb(v));
}

/*
 * properties.$ip as text: a string as is, other scalars as their JSON
 * text.  Missing, JSON null or an empty string: SQL NULL, as PostHog's
 * own export writes it.
 */
static Datum
jsonb_member_text(Jsonb *jb, const char *key, bool *isnull)
{
	JsonbValue *v = top_member(jb, key);

	*isnull = true;
	if (v == NULL || (v->type == jbvString && v->val.string.len == 0))
		return (Datum) 0;
	*isnull = false;
	switch (v->type)
	{
		case jbvString:
			return PointerGetDatum(cstring_to_text_with_len(v->val.string.val, v->val.string.len));
		case jbvNumeric:
			return DirectFunctionCall1(textin, DirectFunctionCall1(numeric_out,
																   NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return PointerGetDatum(cstring_to_text(v->val.boolean ? "true" : "false"));
		default:
			return PointerGetDatum(cstring_to_text(JsonbToCString(NULL, v->val.binary.data,
																  v->val.binary.len)));
	}
}

/* A fetched page, and which of its rows are written. */
typedef struct EventsPage
{
	PhxKeySource src;			/* the page, named for error messages */
	int		   *rows;			/* page row of each row written */
	EventsState *st;
} EventsPage;

static void
convert_row(EventsPage *ep, int r, Datum *values, bool *nulls)
{
	PhxCell    *cells = PHX_CELL(ep->src.page, r, 0);
	const char *s;
	Jsonb	   *props = NULL;
	JsonbValue	jv;
	PhxKey		ts;

	memset(nulls, true, sizeof(bool) * EV_NCOLUMNS);

	s = cell_text(&cells[Q_UUID], "uuid", true);
	values[EV_UUID] = PointerGetDatum(cstring_to_text_with_len(s, cells[Q_UUID].len));
	nulls[EV_UUID] = false;

	if ((s = cell_text(&cells[Q_EVENT], "event", false)) != NULL)
	{
		values[EV_EVENT] = PointerGetDatum(cstring_to_text_with_len(s, cells[Q_EVENT].len));
		nulls[EV_EVENT] = false;
	}

	props = phx_cell_jsonb(&cells[Q_PROPERTIES], "properties");
	if (props)
	{
		values[EV_PROPERTIES] = JsonbPGetDatum(props);
		nulls[EV_PROPERTIES] = false;
	}

	if ((s = cell_text(&cells[Q_ELEMENTS_CHAIN], "elements_chain", false)) != NULL)
	{
		/* PostHog writes the chain as a JSON string */
		jv.type = jbvString;
		jv.val.string.val = (char *) s;
		jv.val.string.len = cells[Q_ELEMENTS_CHAIN].len;
		values[EV_ELEMENTS] = JsonbPGetDatum(JsonbValueToJsonb(&jv));
		nulls[EV_ELEMENTS] = false;
	}

	values[EV_SET] = jsonb_member(props, "$set", &nulls[EV_SET]);
	values[EV_SET_ONCE] = jsonb_member(props, "$set_once", &nulls[EV_SET_ONCE]);
	values[EV_IP] = jsonb_member_text(props, "$ip", &nulls[EV_IP]);
	/* site_url: always NULL, as in PostHog's export (nulls[] starts all true) */

	if ((s = cell_text(&cells[Q_DISTINCT_ID], "distinct_id", false)) != NULL)
	{
		values[EV_DISTINCT_ID] = PointerGetDatum(cstring_to_text_with_len(s, cells[Q_DISTINCT_ID].len));
		nulls[EV_DISTINCT_ID] = false;
	}

	values[EV_TEAM_ID] = phx_cell_datum(&cells[Q_TEAM_ID], INT4OID, "team_id", &nulls[EV_TEAM_ID]);

	/* the timestamp is half of the keyset key: checked as a key */
	phx_key_get(&ep->src, r, &keyset[0], &ts);
	values[EV_TIMESTAMP] = TimestampTzGetDatum(ts.ts);
	nulls[EV_TIMESTAMP] = false;

	/* the owner's columns, in the destination's types */
	for (int i = 0; i < ep->st->ncustom; i++)
		values[EV_NCOLUMNS + i] = phx_cell_to_type(&cells[Q_NCOLUMNS + i], &ep->st->custom[i],
												   ep->src.page->columns[Q_NCOLUMNS + i],
												   &nulls[EV_NCOLUMNS + i]);
}

static void
events_get_row(void *arg, int r, Datum *values, bool *nulls)
{
	EventsPage *ep = (EventsPage *) arg;

	convert_row(ep, ep->rows[r], values, nulls);
}

static const char *
events_row_key(void *arg, int r)
{
	EventsPage *ep = (EventsPage *) arg;

	return phx_cell_string(PHX_CELL(ep->src.page, ep->rows[r], Q_UUID));
}

/*
 * The rows written, in page order.  In merge mode a page must not hold one
 * uuid twice (ClickHouse may return an event twice until its merges catch
 * up, and ON CONFLICT DO UPDATE refuses to touch a row twice): the last
 * copy wins, in the place of the first.
 */
static int
rows_to_write(PhxPage *page, bool merge, int *rows)
{
	HASHCTL		ctl;
	HTAB	   *seen;
	int			out = 0;
	typedef struct
	{
		char		key[NAMEDATALEN * 4];
		int			index;
	} Entry;

	if (!merge)
	{
		for (int r = 0; r < page->nrows; r++)
			rows[r] = r;
		return page->nrows;
	}

	memset(&ctl, 0, sizeof(ctl));
	ctl.keysize = NAMEDATALEN * 4;
	ctl.entrysize = sizeof(Entry);
	ctl.hcxt = CurrentMemoryContext;
	seen = hash_create("posthog_export uuids", page->nrows, &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (int r = 0; r < page->nrows; r++)
	{
		PhxCell    *cell = PHX_CELL(page, r, Q_UUID);
		char		key[NAMEDATALEN * 4];
		bool		found;
		Entry	   *e;

		/* every uuid was checked: a string of 36 characters */
		strlcpy(key, cell->val, sizeof(key));
		e = hash_search(seen, key, HASH_ENTER, &found);
		if (found)
			rows[e->index] = r;
		else
		{
			e->index = out;
			rows[out++] = r;
		}
	}
	hash_destroy(seen);
	return out;
}

/* A checked response into the rows written (see rows_to_write()). */
static void
fill_page(void *arg, const PhxKeySource *src, PhxModelPage *mp)
{
	EventsState *st = (EventsState *) arg;
	EventsPage *ep = palloc(sizeof(EventsPage));

	ep->src = *src;
	ep->st = st;
	ep->rows = palloc(sizeof(int) * Max(src->page->nrows, 1));
	mp->nrows = rows_to_write(src->page, st->merge, ep->rows);
	mp->get_row = events_get_row;
	mp->row_key = events_row_key;
	mp->arg = ep;
}

static const PhxPaging events_paging = {
	.query_name = "events",
	.columns = query_columns,
	.ncolumns = Q_NCOLUMNS,
	.row_what = "an event",
	.page_what = "event",
	.keyset = keyset,
	.nkeys = lengthof(keyset),
	.row_keys = row_keys,
	.nrow_keys = lengthof(row_keys),
	/*
	 * The first page is small, so rows start flowing before PostHog has
	 * produced a full page; each next page doubles, up to page_size, and
	 * is requested while the previous one is written.
	 */
	.prefetch = true,
	.build_query = build_query,
	.fill_page = fill_page,
};

static void *
events_begin(PhxExport *exp, PhxServerConfig *cfg, TimestampTz start,
			 TimestampTz end, List *cursor)
{
	EventsState *st = palloc0(sizeof(EventsState));

	st->exp = exp;
	st->start = start;
	st->end = end;
	st->merge = (strcmp(exp->mode, "merge") == 0);
	st->paging = events_paging;
	/* custom columns only when the model written has them (phx_shaped_model()) */
	if (exp->column_typeids != NULL)
	{
		const char **columns;

		st->ncustom = list_length(exp->columns);
		st->custom = palloc(sizeof(PhxCustomReader) * st->ncustom);
		for (int i = 0; i < st->ncustom; i++)
			phx_custom_reader_init(&st->custom[i], exp->column_typeids[i]);
		columns = palloc(sizeof(char *) * (Q_NCOLUMNS + st->ncustom));
		memcpy(columns, query_columns, sizeof(char *) * Q_NCOLUMNS);
		for (int i = 0; i < st->ncustom; i++)
			columns[Q_NCOLUMNS + i] = phx_custom_alias(i);
		st->paging.columns = columns;
		st->paging.ncolumns = Q_NCOLUMNS + st->ncustom;
	}
	return phx_pager_begin(&st->paging, st, exp, cfg, cursor);
}

/*
 * The query of the last hour's events with the owner's columns and filter,
 * for no rows; returns how many columns it selects.
 */
static int
events_probe_query(PhxExport *exp, PhxQuery *q)
{
	EventsState st = {0};

	st.exp = exp;
	st.end = GetCurrentTimestamp();
	st.start = st.end - USECS_PER_HOUR;
	st.ncustom = list_length(exp->columns);
	build_query(&st, NULL, 0, q);
	return Q_NCOLUMNS + st.ncustom;
}

static TimestampTz
events_earliest(PhxExport *exp, PhxServerConfig *cfg, TimestampTz end)
{
	return phx_query_earliest(exp, cfg, "SELECT toTimeZone(min(created_at), 'UTC') AS earliest FROM events", end);
}

/*
 * The settle check's count: the rows each interval [starts[i], ends[i])
 * holds now, with one request.  Every interval's count is a countIf() of
 * exactly the conditions its export query has (created_at in the
 * interval, timestamp after its start minus lookback, and, in WHERE, the
 * event filters and the owner's filter); WHERE also restricts the scan to the union of the
 * intervals (adjacent ones merged) and to the earliest event-time bound.
 * Every time travels as a value; the column aliases (c0, c1 ...) are ours.
 * The intervals come sorted by start, and do not overlap.
 */
static void
events_count_intervals(PhxExport *exp, PhxServerConfig *cfg, int n,
					   const TimestampTz *starts, const TimestampTz *ends, int64 *counts)
{
	PhxQuery	q;
	PhxPage    *page;
	const char **columns = palloc(sizeof(char *) * n);
	int			nranges = 0;

	phx_query_init(&q);
	appendStringInfoString(&q.text, "SELECT ");
	for (int i = 0; i < n; i++)
	{
		columns[i] = psprintf("c%d", i);
		appendStringInfo(&q.text,
						 "%scountIf(created_at >= toDateTime64({s%d}, 6, 'UTC') "
						 "AND created_at < toDateTime64({e%d}, 6, 'UTC') "
						 "AND timestamp >= toDateTime64({m%d}, 6, 'UTC')) AS %s",
						 i ? ", " : "", i, i, i, columns[i]);
		phx_value_timestamp(&q, psprintf("s%d", i), starts[i]);
		phx_value_timestamp(&q, psprintf("e%d", i), ends[i]);
		phx_value_timestamp(&q, psprintf("m%d", i), min_timestamp(exp, starts[i]));
	}
	appendStringInfoString(&q.text,
						   " FROM events WHERE timestamp >= toDateTime64({min_timestamp}, 6, 'UTC') AND (");
	phx_value_timestamp(&q, "min_timestamp", min_timestamp(exp, starts[0]));
	for (int i = 0; i < n;)
	{
		int			j = i;

		/* adjacent intervals make one range */
		while (j + 1 < n && starts[j + 1] <= ends[j])
			j++;
		appendStringInfo(&q.text,
						 "%s(created_at >= toDateTime64({r%d_start}, 6, 'UTC') "
						 "AND created_at < toDateTime64({r%d_end}, 6, 'UTC'))",
						 nranges ? " OR " : "", nranges, nranges);
		phx_value_timestamp(&q, psprintf("r%d_start", nranges), starts[i]);
		phx_value_timestamp(&q, psprintf("r%d_end", nranges), ends[j]);
		nranges++;
		i = j + 1;
	}
	appendStringInfoChar(&q.text, ')');
	append_event_filters(&q, exp);
	phx_append_filter(&q, exp);

	page = phx_http_query(cfg, &q, psprintf("posthog_export %s settle", exp->name), NULL, NULL, NULL);
	phx_check_columns(page, columns, n, "settle count");
	if (page->nrows != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("PostHog returned %d rows for the settle count of export \"%s\", where the query makes one",
						page->nrows, exp->name)));
	for (int i = 0; i < n; i++)
	{
		bool		isnull;

		counts[i] = DatumGetInt64(phx_cell_datum(PHX_CELL(page, 0, i), INT8OID, columns[i], &isnull));
		if (isnull || counts[i] < 0)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("PostHog returned %s for column \"%s\" of the settle count of export \"%s\", where a count was expected",
							isnull ? "NULL" : "a negative number", columns[i], exp->name)));
	}
}

const PhxModel phx_events_model = {
	.name = "events",
	.columns = events_columns,
	.ncolumns = EV_NCOLUMNS,
	.merge_key = events_merge_key,
	.merge_versions = NULL,
	.staged = false,
	.default_lookback_hours = 7 * 24,
	.shapeable = true,
	.begin = events_begin,
	.next_page = phx_pager_next_page,
	.earliest = events_earliest,
	.count_intervals = events_count_intervals,
	.probe_query = events_probe_query,
};
