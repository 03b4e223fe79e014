/*-------------------------------------------------------------------------
 *
 * hogql_model.c
 *		The hogql model: the user's own HogQL SELECT, exported per interval.
 *
 * The query may use the placeholders {start} and {end}, bound to each
 * interval's bounds as UTC texts "YYYY-MM-DD HH:MM:SS.ffffff" (HogQL makes
 * every value a constant of its JSON type, a string here:
 * posthog/hogql/placeholders.py and the query runner's to_query()).  A
 * query compares them as toDateTime64({start}, 6, 'UTC'): HogQL prints a
 * DateTime field converted to the project's time zone, so a bare string
 * compared with it would be read in that zone, not in UTC.
 *
 * Its columns and their types come from a LIMIT 0 probe of the query
 * (SELECT * FROM (<query>\n) LIMIT 0: PostHog's resolver expands * over a
 * subquery to its columns) when the export is created or its query or key
 * changes, and are stored with the export (exports.columns, as
 * {"name": "ClickHouse type", ...}): a run spends no request on them, the
 * table an export created matches what its runs write, and a query whose
 * output changed since is an error at its first page rather than rows
 * written into the wrong columns.
 *
 * The user's text is always followed by a line break where it is
 * wrapped, so a trailing "-- comment" ends there; every column and key
 * name the model adds is in backquotes.
 *
 * With a key (output columns naming a row, never NULL: Nullable key types
 * are refused), pages follow a keyset over it: SELECT <columns> FROM
 * (<query>\n) WHERE (k1, k2) >= (cursor) ORDER BY k1, k2 LIMIT n, through
 * the pager (paging.c); the columns are named, in the stored order, so the
 * response's order is known.  The key is the user's claim, so the pager
 * checks it (PhxPaging.unique_keyset): keys rise strictly within a page,
 * and each page starts with the cursor's row read again (dropped), so a
 * key duplicated across a page boundary shows too; a duplicate is an
 * error naming the key, never a skipped row.  Merge mode stages the
 * interval and upserts on the key in one statement, as persons and
 * sessions do.
 * Without a key the interval's result must fit one page: more rows are
 * an error, never a silent truncation.
 *
 * The model is per export: phx_hogql_model() builds a palloc'd PhxModel
 * from the export's stored columns, key and mode.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "models/models.h"

/* PostHog's cap on the rows of one response (MAX_SELECT_RETURNED_ROWS) */
#define HOGQL_MAX_ROWS 50000

/* The longest query text accepted: ClickHouse's max_query_size is 256 KiB. */
#define HOGQL_MAX_QUERY_BYTES 200000

/* One output column of the query, as the probe found it. */
typedef struct HogqlColumn
{
	char	   *name;
	char	   *type;			/* ClickHouse's type name */
} HogqlColumn;

/* What begin() and the callbacks need: the export's query and its shape. */
typedef struct HogqlState
{
	PhxExport  *exp;
	PhxServerConfig *cfg;
	const char *query;
	TimestampTz start;
	TimestampTz end;
	int			ncolumns;
	const PhxModelColumn *columns;
	const char **names;
	char	   *select_list;	/* "`a`, `b`": the stored columns, in order */
	PhxKeyColumn *keys;			/* the keyset, and every row's keys */
	int			nkeys;
	PhxPaging	paging;
	PhxPager   *pager;			/* with a key; NULL: one page */
	bool		done;			/* without a key: the one page was read */
} HogqlState;

/* A name HogQL reads as a plain identifier, so the wrapper can name it. */
static bool
is_identifier(const char *s)
{
	if (!(isalpha((unsigned char) s[0]) || s[0] == '_' || s[0] == '$'))
		return false;
	for (const char *p = s + 1; *p; p++)
		if (!(isalnum((unsigned char) *p) || *p == '_' || *p == '$'))
			return false;
	return strlen(s) < NAMEDATALEN;
}

/* The type inside Nullable(...) and LowCardinality(...) wrappers. */
static char *
bare_type(const char *type)
{
	char	   *t = pstrdup(type);
	size_t		len = strlen(t);

	for (;;)
	{
		if (len > 10 && strncmp(t, "Nullable(", 9) == 0 && t[len - 1] == ')')
			t += 9, len -= 10;
		else if (len > 16 && strncmp(t, "LowCardinality(", 15) == 0 && t[len - 1] == ')')
			t += 15, len -= 16;
		else
			break;
		t[len] = '\0';
	}
	return t;
}

/* Whether a ClickHouse type admits NULL: Nullable(...), maybe inside LowCardinality(...). */
static bool
nullable_type(const char *type)
{
	const char *t = type;

	while (strncmp(t, "LowCardinality(", 15) == 0)
		t += 15;
	return strncmp(t, "Nullable(", 9) == 0;
}

/*
 * How a key column of this ClickHouse type is paged by; false for types
 * no keyset handles (floats, UInt64 and wider, arrays ...).
 */
static bool
key_type(const char *type, PhxKeyType *out)
{
	char	   *t = bare_type(type);

	if (strcmp(t, "String") == 0 || strncmp(t, "FixedString(", 12) == 0)
		*out = PHX_KEY_TEXT;
	else if (strcmp(t, "UUID") == 0)
		*out = PHX_KEY_UUID;
	else if (strcmp(t, "Int8") == 0 || strcmp(t, "Int16") == 0 || strcmp(t, "Int32") == 0 ||
			 strcmp(t, "Int64") == 0 || strcmp(t, "UInt8") == 0 || strcmp(t, "UInt16") == 0 ||
			 strcmp(t, "UInt32") == 0)
		*out = PHX_KEY_INT;
	else if (strncmp(t, "DateTime", 8) == 0)
		*out = PHX_KEY_TIMESTAMP;
	else
		return false;
	return true;
}

/*
 * The model column of a query column: the table is created with the SQL
 * type phx_hogql_type_sql() maps its ClickHouse type to; the datum is of a
 * type cell_convert.c produces, which the writer casts to the column's
 * (arrays travel as text[], cast element by element).
 */
static void
model_column(const HogqlColumn *hc, PhxModelColumn *col)
{
	const char *sql = phx_hogql_type_sql(hc->type);
	size_t		len = strlen(sql);

	col->name = hc->name;
	col->create_type = sql;
	if (len > 2 && strcmp(sql + len - 2, "[]") == 0)
		col->type = TEXTARRAYOID;
	else if (strcmp(sql, "bigint") == 0)
		col->type = INT8OID;
	else if (strcmp(sql, "double precision") == 0)
		col->type = FLOAT8OID;
	else if (strcmp(sql, "numeric") == 0)
		col->type = NUMERICOID;
	else if (strcmp(sql, "boolean") == 0)
		col->type = BOOLOID;
	else if (strcmp(sql, "timestamp with time zone") == 0)
		col->type = TIMESTAMPTZOID;
	else if (strcmp(sql, "date") == 0)
		col->type = DATEOID;
	else if (strcmp(sql, "uuid") == 0)
		col->type = UUIDOID;
	else if (strcmp(sql, "jsonb") == 0)
		col->type = JSONBOID;
	else
	{
		col->type = TEXTOID;
		col->create_type = "text";
	}
}

/*
 * The stored columns: exports.columns of a hogql export maps each column
 * of its query to the ClickHouse type the probe found (the list in jsonb's
 * key order once read back; the queries name the columns, so that order
 * is the response's).
 */
static List *
parse_columns(const PhxExport *exp)
{
	List	   *result = NIL;
	ListCell   *lc;

	if (exp->columns == NIL)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("export \"%s\" has no stored columns of its query", exp->name),
				 errhint("Set its query again with alter_export(query => ...), which probes it.")));
	foreach(lc, exp->columns)
	{
		PhxNamedText *nt = lfirst(lc);
		HogqlColumn *hc = palloc(sizeof(HogqlColumn));

		if (!is_identifier(nt->name))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("stored column \"%s\" of export \"%s\" is not an identifier", nt->name, exp->name),
					 errhint("Set its query again with alter_export(query => ...), which probes it.")));
		hc->name = nt->name;
		hc->type = nt->text;
		result = lappend(result, hc);
	}
	return result;
}

static int
column_index(List *columns, const char *name)
{
	ListCell   *lc;

	foreach(lc, columns)
		if (strcmp(((HogqlColumn *) lfirst(lc))->name, name) == 0)
			return foreach_current_index(lc);
	return -1;
}

/* The query's placeholders {start} and {end}: the interval's bounds in UTC. */
static void
bind_interval(PhxQuery *q, TimestampTz start, TimestampTz end)
{
	phx_value_timestamp(q, "start", start);
	phx_value_timestamp(q, "end", end);
}

/*
 * Probes the query (LIMIT 0) and checks what the export needs of it: its
 * columns named as identifiers, once each; the key columns among them, of
 * types a keyset can page by.  Returns the columns (PhxNamedText: name
 * and ClickHouse type) in the query's order, to be stored with the export.  Invalid HogQL fails here with PostHog's error.
 */
List *
phx_hogql_probe(PhxServerConfig *cfg, const char *export_name, const char *query, List *key)
{
	PhxQuery	q;
	PhxPage    *page;
	char	  **types;
	StringInfoData json;
	List	   *result = NIL;
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();

	if (query == NULL || query[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the hogql model needs a query"),
				 errhint("Give query => 'SELECT ... WHERE created_at >= toDateTime64({start}, 6, ''UTC'') AND created_at < toDateTime64({end}, 6, ''UTC'')'.")));
	if (strlen(query) > HOGQL_MAX_QUERY_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the query of export \"%s\" is too long for PostHog", export_name),
				 errdetail("It has %zu bytes; at most %d fit under ClickHouse's 256 KiB max_query_size beside the paging.",
						   strlen(query), HOGQL_MAX_QUERY_BYTES)));

	phx_query_init(&q);
	/* the line break ends a trailing "-- comment" of the query */
	appendStringInfo(&q.text, "SELECT * FROM (%s\n) LIMIT 0", query);
	bind_interval(&q, now, now);
	/* one request: PostHog's verdict on the query, not a retry loop */
	cfg->max_retries = 0;
	page = phx_http_query(cfg, &q, psprintf("posthog_export %s probe", export_name), NULL, NULL, NULL);
	if (page->ncolumns == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("PostHog answered the probe of the query of export \"%s\" without columns",
						export_name)));
	/* one type per column, or an error */
	types = phx_page_types(page);

	initStringInfo(&json);
	for (int c = 0; c < page->ncolumns; c++)
	{
		const char *name = page->columns[c];
		PhxNamedText *nt;

		if (!is_identifier(name))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("column \"%s\" of the query of export \"%s\" has no name of its own", name, export_name),
					 errdetail("A column of a hogql export is named by an identifier (letters, digits, _ and $) of at most %d bytes.",
							   NAMEDATALEN - 1),
					 errhint("Give the expression an alias: ... AS my_column.")));
		for (int d = 0; d < c; d++)
			if (strcmp(page->columns[d], name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("the query of export \"%s\" returns column \"%s\" twice", export_name, name),
						 errhint("Give one of them another alias.")));
		appendStringInfo(&json, "%s%s %s", c ? ", " : "", name, types[c]);
		nt = palloc(sizeof(PhxNamedText));
		nt->name = pstrdup(name);
		nt->text = pstrdup(types[c]);
		result = lappend(result, nt);
	}

	foreach(lc, key)
	{
		const char *k = lfirst(lc);
		PhxKeyType kt;
		int			c;

		for (c = 0; c < page->ncolumns; c++)
			if (strcmp(page->columns[c], k) == 0)
				break;
		if (c == page->ncolumns)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_COLUMN),
					 errmsg("key column \"%s\" is not a column of the query of export \"%s\"", k, export_name),
					 errdetail("The query returns the columns: %s.", json.data)));
		if (!key_type(types[c], &kt))
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("key column \"%s\" of export \"%s\" is of type %s, which the export cannot page by",
							k, export_name, types[c]),
					 errdetail("Key columns are strings, UUIDs, integers of at most 64 bits (UInt64 excluded) or datetimes."),
					 errhint("Convert it in the query, as in toString(%s) AS %s.", k, k)));
		if (nullable_type(types[c]))
			ereport(ERROR,
					(errcode(ERRCODE_DATATYPE_MISMATCH),
					 errmsg("key column \"%s\" of export \"%s\" is of type %s, which may be NULL",
							k, export_name, types[c]),
					 errdetail("A key names a row: it is never NULL."),
					 errhint("Give it a value in the query where it is NULL, as in coalesce(%s, '') AS %s, or assumeNotNull(%s) AS %s.",
							 k, k, k, k)));
		for (ListCell *lc2 = list_head(key); lc2 != lc; lc2 = lnext(key, lc2))
			if (strcmp(lfirst(lc2), k) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("key column \"%s\" of export \"%s\" is given twice", k, export_name)));
	}
	return result;
}

/*
 * The request for a page: the interval's rows from the cursor on (its own
 * row included, see unique_keyset), in key order.  Key names are quoted;
 * values travel as placeholders.
 */
static void
build_keyset_query(void *arg, const PhxKey *cursor, int page_size, PhxQuery *q)
{
	HogqlState *st = (HogqlState *) arg;
	StringInfoData order;

	phx_query_init(q);
	initStringInfo(&order);
	for (int k = 0; k < st->nkeys; k++)
	{
		if (k)
			appendStringInfoString(&order, ", ");
		phx_hogql_quoted_identifier(&order, st->keys[k].name);
	}
	/* the line break ends a trailing "-- comment" of the query */
	appendStringInfo(&q->text, "SELECT %s FROM (%s\n)", st->select_list, st->query);
	bind_interval(q, st->start, st->end);
	if (cursor)
	{
		/* from the cursor on: the pager drops its row, and sees a duplicate of it */
		appendStringInfo(&q->text, st->nkeys > 1 ? " WHERE (%s) >= (" : " WHERE %s >= ", order.data);
		for (int k = 0; k < st->nkeys; k++)
		{
			char	   *ph = psprintf("phx_cursor_%d", k);

			if (k)
				appendStringInfoString(&q->text, ", ");
			switch (st->keys[k].type)
			{
				case PHX_KEY_INT:
					appendStringInfo(&q->text, "{%s}", ph);
					phx_value_int64(q, ph, cursor[k].i);
					break;
				case PHX_KEY_TIMESTAMP:
					appendStringInfo(&q->text, "toDateTime64({%s}, 6, 'UTC')", ph);
					phx_value_text(q, ph, cursor[k].str);
					break;
				default:
					appendStringInfo(&q->text, "{%s}", ph);
					phx_value_text(q, ph, cursor[k].str);
					break;
			}
		}
		if (st->nkeys > 1)
			appendStringInfoChar(&q->text, ')');
	}
	appendStringInfo(&q->text, " ORDER BY %s LIMIT %d", order.data, page_size);
}

/* A page's rows, converted column by column; the state holds the columns. */
typedef struct HogqlPageArg
{
	HogqlState *st;
	PhxPage    *page;
} HogqlPageArg;

static void
page_get_row(void *arg, int r, Datum *values, bool *nulls)
{
	HogqlPageArg *pa = (HogqlPageArg *) arg;

	for (int c = 0; c < pa->st->ncolumns; c++)
		values[c] = phx_cell_datum(PHX_CELL(pa->page, r, c), pa->st->columns[c].type,
								   pa->st->columns[c].name, &nulls[c]);
}

static const char *
page_row_key(void *arg, int r)
{
	HogqlPageArg *pa = (HogqlPageArg *) arg;

	if (pa->st->nkeys == 0)
		return NULL;
	return phx_cell_string(PHX_CELL(pa->page, r, pa->st->keys[0].col));
}

static void
fill_page(void *arg, const PhxKeySource *src, PhxModelPage *mp)
{
	HogqlPageArg *pa = palloc(sizeof(HogqlPageArg));

	pa->st = (HogqlState *) arg;
	pa->page = src->page;
	mp->nrows = src->page->nrows;
	mp->get_row = page_get_row;
	mp->row_key = page_row_key;
	mp->arg = pa;
}

/*
 * Without a key: the interval's rows in one request, which must hold them
 * all (one more than page_size is asked for, to tell).
 */
static PhxModelPage *
single_page(void *state)
{
	HogqlState *st = (HogqlState *) state;
	PhxModelPage *mp = palloc0(sizeof(PhxModelPage));
	int			fit = Min(st->cfg->page_size, HOGQL_MAX_ROWS - 1);
	PhxQuery	q;
	PhxPage    *page;
	PhxKeySource src;

	if (st->done)
		elog(ERROR, "posthog_export: the single page of a hogql export was read twice");
	st->done = true;
	phx_query_init(&q);
	appendStringInfo(&q.text, "SELECT %s FROM (%s\n) LIMIT %d", st->select_list, st->query, fit + 1);
	bind_interval(&q, st->start, st->end);
	q.rows = fit + 1;
	page = phx_http_query(st->cfg, &q, psprintf("posthog_export %s page 1", st->exp->name),
						  NULL, NULL, &mp->bytes);
	phx_check_columns(page, st->names, st->ncolumns, "hogql");
	if (page->nrows > fit)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("the query of export \"%s\" returned more than %d rows for interval [%s, %s)",
						st->exp->name, fit, phx_format_utc(st->start), phx_format_utc(st->end)),
				 errdetail("Without a key, an interval's rows are read in one request of at most %d rows (the server's page_size), and nothing of it is written.",
						   fit),
				 errhint("Give the export a key (alter_export(key => ARRAY[...]), columns that name a row) to page it, or a shorter interval.")));
	src.page = page;
	src.what = "a row";
	src.export_name = st->exp->name;
	src.page_no = 1;
	mp->what = "row";
	mp->page_no = 1;
	mp->has_more = false;
	fill_page(st, &src, mp);
	return mp;
}

/* The export's stored columns, as model columns and names. */
static void
state_columns(HogqlState *st, PhxExport *exp)
{
	List	   *cols = parse_columns(exp);
	PhxModelColumn *mc = palloc0(sizeof(PhxModelColumn) * list_length(cols));
	ListCell   *lc;
	StringInfoData sel;

	initStringInfo(&sel);
	st->ncolumns = list_length(cols);
	st->names = palloc(sizeof(char *) * st->ncolumns);
	foreach(lc, cols)
	{
		int			i = foreach_current_index(lc);

		model_column(lfirst(lc), &mc[i]);
		st->names[i] = mc[i].name;
		if (i)
			appendStringInfoString(&sel, ", ");
		phx_hogql_quoted_identifier(&sel, mc[i].name);
	}
	st->columns = mc;
	st->select_list = sel.data;

	st->nkeys = list_length(exp->key);
	st->keys = palloc0(sizeof(PhxKeyColumn) * Max(st->nkeys, 1));
	foreach(lc, exp->key)
	{
		int			k = foreach_current_index(lc);
		int			c = column_index(cols, lfirst(lc));

		if (c < 0 || !key_type(((HogqlColumn *) list_nth(cols, c))->type, &st->keys[k].type))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("key column \"%s\" of export \"%s\" is not a column of its query that it can page by",
							(char *) lfirst(lc), exp->name),
					 errhint("Set the query or the key again with alter_export(), which probes the query.")));
		st->keys[k].col = c;
		st->keys[k].name = st->names[c];
	}
}

static void *
hogql_begin(PhxExport *exp, PhxServerConfig *cfg, TimestampTz start, TimestampTz end, List *cursor)
{
	HogqlState *st = palloc0(sizeof(HogqlState));

	st->exp = exp;
	st->cfg = cfg;
	st->query = exp->query;
	st->start = start;
	st->end = end;
	state_columns(st, exp);
	if (st->nkeys == 0)
		return st;

	st->paging.query_name = "hogql";
	st->paging.columns = st->names;
	st->paging.ncolumns = st->ncolumns;
	st->paging.row_what = "a row";
	st->paging.page_what = "row";
	st->paging.keyset = st->keys;
	st->paging.nkeys = st->nkeys;
	st->paging.row_keys = st->keys;
	st->paging.nrow_keys = st->nkeys;
	st->paging.prefetch = false;
	st->paging.unique_keyset = true;
	st->paging.build_query = build_keyset_query;
	st->paging.fill_page = fill_page;
	st->pager = phx_pager_begin(&st->paging, st, exp, cfg, cursor);
	return st;
}

/* next_page(): the pager's with a key, else the one page. */
static PhxModelPage *
hogql_next_page(void *state)
{
	HogqlState *st = (HogqlState *) state;

	return st->pager ? phx_pager_next_page(st->pager) : single_page(st);
}

/* A backfill from "the beginning" needs a start the query cannot tell. */
static TimestampTz
hogql_earliest(PhxExport *exp, PhxServerConfig *cfg, TimestampTz end)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("backfill of export \"%s\" needs start_at", exp->name),
			 errdetail("The start of a hogql export's data is not known: its query is the user's own."),
			 errhint("Give start_at, as in backfill(%s, start_at => '2024-01-01').",
					 quote_literal_cstr(exp->name))));
	return 0;					/* keep compiler quiet */
}

/* The model by name, for settings checks: its columns are per export. */
const PhxModel phx_hogql_model_proto = {
	.name = "hogql",
	.columns = NULL,
	.ncolumns = 0,
	.merge_key = NULL,
	.staged = false,
	.default_lookback_hours = 0,
	.begin = hogql_begin,
	.next_page = hogql_next_page,
	.earliest = hogql_earliest,
};

/*
 * The model of one hogql export: its stored columns; in merge mode its key
 * is the merge key and the interval is staged (written atomically, and
 * merged in one statement).
 */
const PhxModel *
phx_hogql_model(PhxExport *exp)
{
	PhxModel   *m = palloc(sizeof(PhxModel));
	HogqlState	st = {0};
	const char **key;

	*m = phx_hogql_model_proto;
	state_columns(&st, exp);
	m->columns = st.columns;
	m->ncolumns = st.ncolumns;
	if (st.nkeys > 0)
	{
		key = palloc0(sizeof(char *) * (st.nkeys + 1));
		for (int k = 0; k < st.nkeys; k++)
			key[k] = st.keys[k].name;
		m->merge_key = key;
	}
	m->staged = strcmp(exp->mode, "merge") == 0;
	return m;
}
