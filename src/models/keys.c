/*-------------------------------------------------------------------------
 *
 * keys.c
 *		Keys read from a response, checked before use, and the keyset
 *		cursor a model pages by.
 *
 * Keys are held to a stricter standard than other cells: a page's keyset
 * cursor goes into the next request, and merge keys decide which row a
 * value lands in, so a key must be present, of its one type, of a sane
 * size and well formed, and each page must move the cursor forward.
 * Whatever the source sends, a bad key is an error naming the column, the
 * row and the page.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "models/models.h"

/*
 * The longest text key accepted.  PostHog's ids are far shorter (UUIDs,
 * distinct ids of up to 200 characters); this bounds what a cursor adds to
 * the next request and stays below what a btree index entry can hold.
 */
#define PHX_MAX_KEY_BYTES		2048
/* The longest datetime text: RFC 3339 with microseconds and offset is 32. */
#define PHX_MAX_DATETIME_BYTES	64
/* How much of a bad value an error message shows. */
#define PHX_SHOW_BYTES			64

/* At most PHX_SHOW_BYTES of a value, cut on a character boundary, for a message. */
static char *
show_value(const char *val, int len)
{
	int			n = pg_mbcliplen(val, len, PHX_SHOW_BYTES);

	return psprintf("%.*s%s", n, val, n < len ? "..." : "");
}

static bool
is_uuid(const char *s, int len)
{
	if (len != 36)
		return false;
	for (int i = 0; i < 36; i++)
	{
		if (i == 8 || i == 13 || i == 18 || i == 23)
		{
			if (s[i] != '-')
				return false;
		}
		else if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
					 (s[i] >= 'A' && s[i] <= 'F')))
			return false;
	}
	return true;
}

/*
 * An integer as JSON writes one: an optional minus, then digits without
 * leading zeros, no fraction, no exponent (the parser takes any run of
 * number characters as a number cell).  false if malformed; *overflow when
 * well formed but beyond 64 bits.
 */
static bool
parse_integer(const char *s, int len, int64 *out, bool *overflow)
{
	bool		neg = (len > 0 && s[0] == '-');
	int			i = neg ? 1 : 0;
	uint64		acc = 0;
	uint64		limit = neg ? (uint64) PG_INT64_MAX + 1 : (uint64) PG_INT64_MAX;

	*overflow = false;
	if (i >= len || (s[i] == '0' && len - i > 1))
		return false;
	for (; i < len; i++)
	{
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (acc > (limit - (s[i] - '0')) / 10)
			*overflow = true;
		else
			acc = acc * 10 + (s[i] - '0');
	}
	if (*overflow)
		return true;
	*out = neg ? (int64) (0 - acc) : (int64) acc;
	return true;
}

/* The datetimes phx_format_utc() can send back in the next query. */
static bool
timestamp_in_range(TimestampTz ts)
{
	struct pg_tm tm;
	fsec_t		fsec;

	return !TIMESTAMP_NOT_FINITE(ts) &&
		timestamp2tm(ts, NULL, &tm, &fsec, NULL, NULL) == 0 &&
		tm.tm_year >= 1 && tm.tm_year <= 9999;
}

/*
 * Parses a datetime cell.  The input function's own error (invalid
 * syntax, field out of range) is re-raised with the column, row and page
 * it came from; nothing but the input function ran inside the PG_TRY, so
 * there is no state to clean up before raising again.  Its special words
 * ("now", "epoch", "infinity" ...) are no datetimes PostHog sends: a
 * datetime starts with the year's digits.
 */
static TimestampTz
key_timestamp(const PhxKeySource *src, int row, const char *column, PhxCell *cell)
{
	MemoryContext cxt = CurrentMemoryContext;
	volatile TimestampTz ts = 0;

	if (!(cell->val[0] >= '0' && cell->val[0] <= '9'))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_DATETIME_FORMAT),
				 errmsg("PostHog returned an invalid datetime for column \"%s\" in row %d of page %d of export \"%s\": invalid input syntax for type timestamp with time zone: \"%s\"",
						column, row + 1, src->page_no, src->export_name, cell->val)));

	PG_TRY();
	{
		ts = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in, CStringGetDatum(cell->val),
													 ObjectIdGetDatum(InvalidOid),
													 Int32GetDatum(-1)));
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (ERRCODE_TO_CATEGORY(edata->sqlerrcode) != ERRCODE_DATA_EXCEPTION)
			PG_RE_THROW();
		FlushErrorState();
		ereport(ERROR,
				(errcode(edata->sqlerrcode),
				 errmsg("PostHog returned an invalid datetime for column \"%s\" in row %d of page %d of export \"%s\": %s",
						column, row + 1, src->page_no, src->export_name, edata->message)));
	}
	PG_END_TRY();

	if (!timestamp_in_range(ts))
		ereport(ERROR,
				(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
				 errmsg("PostHog returned a datetime out of range for column \"%s\" in row %d of page %d of export \"%s\": \"%s\"",
						column, row + 1, src->page_no, src->export_name, cell->val),
				 errdetail("Datetimes are exported from the year 1 to the year 9999.")));
	return ts;
}

/*
 * Reads the key in column kc->col of a row, checking that it is present,
 * of its type, not oversized and well formed; any fault is an error that
 * names the column, the row and the page.  The one place a model reads a
 * key from a response, so every model checks keys the same way.
 */
void
phx_key_get(const PhxKeySource *src, int row, const PhxKeyColumn *kc, PhxKey *out)
{
	PhxCell    *cell = PHX_CELL(src->page, row, kc->col);
	bool		want_string = (kc->type != PHX_KEY_INT);
	int			max_len = (kc->type == PHX_KEY_TIMESTAMP) ? PHX_MAX_DATETIME_BYTES : PHX_MAX_KEY_BYTES;

	out->str = NULL;
	out->i = 0;
	out->ts = 0;

	if (cell->kind == PHX_CELL_NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("PostHog returned %s without %s (NULL) in row %d of page %d of export \"%s\"",
						src->what, kc->name, row + 1, src->page_no, src->export_name),
				 errdetail("Column \"%s\" is a key: the export pages, merges or finds rows by it.",
						   kc->name)));
	if (cell->kind != (want_string ? PHX_CELL_STRING : PHX_CELL_NUMBER))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("PostHog returned %s for column \"%s\" in row %d of page %d of export \"%s\", where %s was expected",
						phx_cell_kind_name(cell), kc->name, row + 1, src->page_no, src->export_name,
						kc->type == PHX_KEY_TEXT ? "a string" :
						kc->type == PHX_KEY_UUID ? "a UUID" :
						kc->type == PHX_KEY_INT ? "an integer" : "a datetime")));
	if (cell->len > max_len)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_STRING_LENGTH_OR_BUFFER_LENGTH),
				 errmsg("PostHog returned a value of %d bytes for column \"%s\" in row %d of page %d of export \"%s\"",
						cell->len, kc->name, row + 1, src->page_no, src->export_name),
				 errdetail("A key of this column is at most %d bytes.", max_len)));

	switch (kc->type)
	{
		case PHX_KEY_TEXT:
			out->str = cell->val;
			break;
		case PHX_KEY_UUID:
			if (!is_uuid(cell->val, cell->len))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
						 errmsg("PostHog returned an invalid UUID for column \"%s\" in row %d of page %d of export \"%s\": \"%s\"",
								kc->name, row + 1, src->page_no, src->export_name,
								show_value(cell->val, cell->len))));
			out->str = cell->val;
			break;
		case PHX_KEY_INT:
			{
				bool		overflow;

				if (!parse_integer(cell->val, cell->len, &out->i, &overflow))
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
							 errmsg("PostHog returned an invalid integer for column \"%s\" in row %d of page %d of export \"%s\": \"%s\"",
									kc->name, row + 1, src->page_no, src->export_name,
									show_value(cell->val, cell->len))));
				if (overflow)
					ereport(ERROR,
							(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
							 errmsg("PostHog returned an integer out of range for column \"%s\" in row %d of page %d of export \"%s\": \"%s\"",
									kc->name, row + 1, src->page_no, src->export_name,
									show_value(cell->val, cell->len))));
				break;
			}
		case PHX_KEY_TIMESTAMP:
			out->ts = key_timestamp(src, row, kc->name, cell);
			break;
	}
}

/* Checks the keys of every row (cheap: no datetime is parsed). */
void
phx_key_check_rows(const PhxKeySource *src, const PhxKeyColumn *cols, int ncols)
{
	PhxKey		key;

	for (int r = 0; r < src->page->nrows; r++)
		for (int k = 0; k < ncols; k++)
			phx_key_get(src, r, &cols[k], &key);
}

/*
 * UUIDs in ClickHouse's order, which PostHog's ORDER BY follows: the
 * second half (the low 64 bits) first, then the first half, each as a
 * number, so hex digits compare case-insensitively.
 */
static int
clickhouse_uuid_cmp(const char *a, const char *b)
{
	static const int halves[2][2] = {{19, 17}, {0, 18}};

	for (int h = 0; h < 2; h++)
		for (int i = halves[h][0]; i < halves[h][0] + halves[h][1]; i++)
		{
			int			ca = pg_tolower((unsigned char) a[i]);
			int			cb = pg_tolower((unsigned char) b[i]);

			if (ca != cb)
				return ca < cb ? -1 : 1;
		}
	return 0;
}

/* Compares two keysets the way the source orders them: column by column. */
static int
keyset_cmp(const PhxKeyColumn *keyset, int nkeys, const PhxKey *a, const PhxKey *b)
{
	for (int k = 0; k < nkeys; k++)
	{
		int			c = 0;

		switch (keyset[k].type)
		{
			case PHX_KEY_TEXT:
				/* ClickHouse compares strings byte by byte, as strcmp does */
				c = strcmp(a[k].str, b[k].str);
				break;
			case PHX_KEY_UUID:
				c = clickhouse_uuid_cmp(a[k].str, b[k].str);
				break;
			case PHX_KEY_INT:
				c = (a[k].i > b[k].i) - (a[k].i < b[k].i);
				break;
			case PHX_KEY_TIMESTAMP:
				c = (a[k].ts > b[k].ts) - (a[k].ts < b[k].ts);
				break;
		}
		if (c != 0)
			return c;
	}
	return 0;
}

/* The text each key is sent as in a query and kept as in the runs catalog. */
static void
key_fill_text(PhxKeyType type, PhxKey *key)
{
	if (type == PHX_KEY_INT)
		key->str = psprintf(INT64_FORMAT, key->i);
	else if (type == PHX_KEY_TIMESTAMP)
		key->str = phx_format_utc(key->ts);
}

/* "(a, b)" for a message, each text key shortened. */
static char *
keyset_show(const PhxKeyColumn *keyset, int nkeys, const PhxKey *keys)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	for (int k = 0; k < nkeys; k++)
		appendStringInfo(&buf, "%s%s", k ? ", " : "",
						 show_value(keys[k].str, strlen(keys[k].str)));
	appendStringInfoChar(&buf, ')');
	return buf.data;
}


/* The checked keyset of one row of the page, each with its text. */
static void
row_keys(const PhxKeySource *src, int row, const PhxKeyColumn *keyset, int nkeys, PhxKey *out)
{
	for (int k = 0; k < nkeys; k++)
	{
		phx_key_get(src, row, &keyset[k], &out[k]);
		key_fill_text(keyset[k].type, &out[k]);
	}
}

/*
 * The keyset position after a page (of at least one row): its last row's
 * keys, checked, with their text copied into cxt.  After a previous
 * position (prev, NULL for the first page), the page must lie wholly past
 * it: a page that ends at or before it does not advance (a source that
 * ignores the cursor would otherwise be read, and its rows written,
 * forever); one that starts at or before it repeats rows.  Either is an
 * error before anything of the page is used.  prev and next may be the
 * same array.
 */
void
phx_keyset_next(const PhxKeySource *src, const PhxKeyColumn *keyset, int nkeys,
				const PhxKey *prev, PhxKey *next, MemoryContext cxt)
{
	PhxKey	   *last = palloc(sizeof(PhxKey) * nkeys);

	Assert(src->page->nrows > 0);
	row_keys(src, src->page->nrows - 1, keyset, nkeys, last);
	if (prev)
	{
		PhxKey	   *first = palloc(sizeof(PhxKey) * nkeys);

		if (keyset_cmp(keyset, nkeys, last, prev) <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("PostHog returned a page that does not advance the keyset cursor (page %d of export \"%s\")",
							src->page_no, src->export_name),
					 errdetail("The page ends at %s; the previous page ended at %s.",
							   keyset_show(keyset, nkeys, last), keyset_show(keyset, nkeys, prev)),
					 errhint("A source that ignores the cursor returns the same rows again and again; nothing of the page was written.")));
		row_keys(src, 0, keyset, nkeys, first);
		if (keyset_cmp(keyset, nkeys, first, prev) <= 0)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("PostHog returned a page that starts at or before the keyset cursor (page %d of export \"%s\")",
							src->page_no, src->export_name),
					 errdetail("The page starts at %s; the previous page ended at %s.",
							   keyset_show(keyset, nkeys, first), keyset_show(keyset, nkeys, prev)),
					 errhint("Rows the export already has would be written again; nothing of the page was written.")));
	}
	for (int k = 0; k < nkeys; k++)
	{
		next[k] = last[k];
		next[k].str = MemoryContextStrdup(cxt, last[k].str);
	}
}

/* "(a, b)": the names of a keyset, for a message. */
static char *
keyset_names(const PhxKeyColumn *keyset, int nkeys)
{
	StringInfoData buf;

	initStringInfo(&buf);
	appendStringInfoChar(&buf, '(');
	for (int k = 0; k < nkeys; k++)
		appendStringInfo(&buf, "%s%s", k ? ", " : "", keyset[k].name);
	appendStringInfoChar(&buf, ')');
	return buf.data;
}

/*
 * For a keyset that must name one row (PhxPaging.unique_keyset): the keys
 * of the page must rise strictly, so a key the source returns twice is an
 * error naming it, never a row the cursor skips or a merge meets twice.
 * With a cursor the page was asked for from the cursor on (>=): its first
 * row must not lie before it, and a first row equal to it (the previous
 * page's last row, read again) is counted in the result, for the caller
 * to drop; a second row equal to it is a duplicate like any other.  (No
 * row equal to it: the row is gone from the source since; nothing is
 * skipped or repeated, so that is no error.)  Returns 1 or 0.
 */
int
phx_keyset_check_unique(const PhxKeySource *src, const PhxKeyColumn *keyset, int nkeys,
						const PhxKey *cursor)
{
	PhxKey	   *prev = palloc(sizeof(PhxKey) * nkeys);
	PhxKey	   *cur = palloc(sizeof(PhxKey) * nkeys);
	int			skip = 0;

	for (int r = 0; r < src->page->nrows; r++)
	{
		PhxKey	   *swap;

		row_keys(src, r, keyset, nkeys, cur);
		if (r == 0 && cursor)
		{
			int			c = keyset_cmp(keyset, nkeys, cur, cursor);

			if (c < 0)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
						 errmsg("PostHog returned a page that starts before the keyset cursor (page %d of export \"%s\")",
								src->page_no, src->export_name),
						 errdetail("The page starts at %s; the previous page ended at %s.",
								   keyset_show(keyset, nkeys, cur), keyset_show(keyset, nkeys, cursor)),
						 errhint("Rows the export already has would be written again; nothing of the page was written.")));
			skip = (c == 0);
		}
		else if (r > 0)
		{
			int			c = keyset_cmp(keyset, nkeys, prev, cur);

			if (c == 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNIQUE_VIOLATION),
						 errmsg("PostHog returned two rows with the key %s = %s in page %d of export \"%s\"",
								keyset_names(keyset, nkeys), keyset_show(keyset, nkeys, cur),
								src->page_no, src->export_name),
						 errdetail("The key of an export must name one row: the export pages, resumes and merges by it.  Nothing of the page was written."),
						 errhint("Extend the key with columns that tell these rows apart (alter_export(key => ARRAY[...])), or make the query return one row per key.")));
			if (c > 0)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
						 errmsg("PostHog returned rows out of key order in page %d of export \"%s\": %s after %s",
								src->page_no, src->export_name,
								keyset_show(keyset, nkeys, cur), keyset_show(keyset, nkeys, prev)),
						 errdetail("The page was asked for in the order of the key %s.", keyset_names(keyset, nkeys))));
		}
		swap = prev;
		prev = cur;
		cur = swap;
	}
	return skip;
}

/*
 * A key of a cursor committed in the runs catalog (a run resuming): the
 * text phx_keyset_next() made, checked again before it goes into a query.
 */
void
phx_key_from_cursor(PhxKeyType type, const char *text, const char *export_name, PhxKey *out)
{
	bool		ok = true;
	bool		overflow = false;

	out->str = pstrdup(text);
	out->i = 0;
	out->ts = 0;
	switch (type)
	{
		case PHX_KEY_TEXT:
			break;
		case PHX_KEY_UUID:
			ok = is_uuid(text, strlen(text));
			break;
		case PHX_KEY_INT:
			ok = parse_integer(text, strlen(text), &out->i, &overflow) && !overflow;
			break;
		case PHX_KEY_TIMESTAMP:
			/* phx_format_utc() text, UTC without an offset: timestamp_in reads it as is */
			out->ts = DatumGetTimestamp(DirectFunctionCall3(timestamp_in, CStringGetDatum(text),
															ObjectIdGetDatum(InvalidOid),
															Int32GetDatum(-1)));
			ok = timestamp_in_range(out->ts);
			break;
	}
	if (!ok)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the committed keyset cursor of export \"%s\" is invalid: \"%s\"",
						export_name, show_value(text, strlen(text)))));
}
