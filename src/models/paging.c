/*-------------------------------------------------------------------------
 *
 * paging.c
 *		The one keyset paging loop every model reads its pages with, and
 *		the earliest-data query.
 *
 * A model describes its paged query (PhxPaging in models.h): the columns
 * of the response, its keyset and row keys, how to build the query for a
 * page size and a cursor, and how to turn a checked response into a
 * PhxModelPage.  The pager does the rest, the same way for every model:
 *
 *	- numbers the pages and labels their requests
 *	  ("posthog_export <export> page <n>");
 *	- asks for page_size rows (by default PostHog's cap, 50,000: the request
 *	  budget, not the bytes, is what limits an export); when PostHog says
 *	  the query was too big for one page (out of memory, too slow, too
 *	  large: posthog/query_client.c decides) halves the page and rebuilds
 *	  the query, and after a few good pages doubles it again, up to
 *	  page_size; a size that failed again right after growing waits twice
 *	  as long before the next try, and the next interval of the export in
 *	  this backend starts at the size the last one ended with;
 *	- checks the response's columns and every row's keys, then moves the
 *	  keyset cursor to the page's last row (a page that does not move it
 *	  forward is an error before anything of it is used);
 *	- decides whether to ask again: hasMore, or a full page (an empty page
 *	  ends, and costs one call);
 *	- for a model that asks for it, requests the next page while this one
 *	  is written.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/timestamp.h"

#include "models/models.h"

/* PostHog caps a query's LIMIT at this many rows (posthog/hogql/constants.py). */
#define MAX_REQUEST_ROWS 50000

/* The smallest page a too-big query halves it to. */
#define MIN_PAGE_ROWS 10

/* Good pages in a row after which a shrunk page doubles; at most. */
#define GROW_AFTER		2
#define GROW_AFTER_MAX	64

/*
 * The page size the last interval of an export ended with in this
 * backend: a backfill's next interval starts there, not at a size PostHog
 * just refused.
 */
static int32 last_export_id = 0;
static int	last_page_size = 0;

struct PhxPager
{
	const PhxPaging *paging;
	void	   *arg;			/* the model's, for its callbacks */
	PhxExport  *exp;
	PhxServerConfig *cfg;
	bool		has_cursor;
	PhxKey	   *cursor;			/* the last row's keyset, paging->nkeys */
	int			page_size;		/* of the next request */
	int			max_page_size;	/* what it grows back to */
	int			good_pages;		/* in a row at this size */
	int			grow_after;		/* good pages that make it grow */
	bool		grown;			/* the last change was growing */
	int			page_no;
	uint64		prefetched;		/* ticket of the next page's request, sent */
	MemoryContext cxt;			/* where the pager (and its cursor) lives */
};

/*
 * Starts paging after "cursor" (the text keys a previous run committed;
 * NIL: from the beginning).  A cursor of another length than the keyset
 * is an error: it was committed under another key, and starting over
 * would write the committed pages again (the built-in models' keysets
 * never change; a hogql export's key cannot change while a run has a
 * cursor, see phx_run_with_cursor()).  The pager is the state a model's
 * begin() returns and next_page() gets.
 */
PhxPager *
phx_pager_begin(const PhxPaging *paging, void *arg, PhxExport *exp,
				PhxServerConfig *cfg, List *cursor)
{
	PhxPager   *pg = palloc0(sizeof(PhxPager));

	pg->paging = paging;
	pg->arg = arg;
	pg->exp = exp;
	pg->cfg = cfg;
	pg->cxt = CurrentMemoryContext;
	pg->cursor = palloc0(sizeof(PhxKey) * paging->nkeys);
	pg->max_page_size = cfg->page_size;
	pg->page_size = cfg->page_size;
	pg->grow_after = GROW_AFTER;
	if (exp->export_id == last_export_id && last_page_size > 0)
		pg->page_size = Min(last_page_size, cfg->page_size);
	if (cursor != NIL && list_length(cursor) != paging->nkeys)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("the committed keyset cursor of export \"%s\" has %d keys, its key has %d",
						exp->name, list_length(cursor), paging->nkeys),
				 errdetail("The interval's run was interrupted under another key; resuming or starting over would skip or repeat rows."),
				 errhint("Set the key back to the one the run was interrupted under, finish the interval, then change the key.")));
	if (cursor != NIL)
	{
		for (int k = 0; k < paging->nkeys; k++)
			phx_key_from_cursor(paging->keyset[k].type, list_nth(cursor, k), exp->name,
								&pg->cursor[k]);
		pg->has_cursor = true;
	}
	return pg;
}

/*
 * The rows a request asks for: the page size, and with a unique keyset
 * after a cursor one more, the cursor's row read again (at most PostHog's
 * cap: a page of 50,000 then has 49,999 new rows).
 */
static int
request_rows(PhxPager *pg)
{
	if (pg->paging->unique_keyset && pg->has_cursor)
		return Min(pg->page_size + 1, MAX_REQUEST_ROWS);
	return pg->page_size;
}

/*
 * The request of the current page size after the current cursor; it
 * carries its page size for the error that lists what was tried.
 */
static void
build_query(PhxPager *pg, PhxQuery *q)
{
	pg->paging->build_query(pg->arg, pg->has_cursor ? pg->cursor : NULL, request_rows(pg), q);
	q->rows = request_rows(pg);
}

static char *
page_label(PhxPager *pg, int page_no)
{
	return psprintf("posthog_export %s page %d", pg->exp->name, page_no);
}

static void
remember_page_size(PhxPager *pg)
{
	last_export_id = pg->exp->export_id;
	last_page_size = pg->page_size;
}

/*
 * PostHog answered that the query was too big for one page: halve the
 * page, down to MIN_PAGE_ROWS, and rebuild the query; false once it
 * cannot shrink any more.  Failing right after growing makes the next
 * growth wait twice as long: each failed request costs a turn of the
 * request budget.
 */
static bool
shrink_page(void *arg, PhxQuery *q)
{
	PhxPager   *pg = (PhxPager *) arg;

	if (pg->page_size <= MIN_PAGE_ROWS)
		return false;
	if (pg->grown)
		pg->grow_after = Min(pg->grow_after * 2, GROW_AFTER_MAX);
	pg->grown = false;
	pg->good_pages = 0;
	pg->page_size = Max(pg->page_size / 2, MIN_PAGE_ROWS);
	remember_page_size(pg);
	build_query(pg, q);
	return true;
}

/* A page came back whole: after enough of them, a shrunk page doubles. */
static void
page_succeeded(PhxPager *pg)
{
	pg->grown = false;
	if (pg->page_size >= pg->max_page_size || ++pg->good_pages < pg->grow_after)
		return;
	pg->page_size = Min(pg->page_size * 2, pg->max_page_size);
	pg->good_pages = 0;
	pg->grown = true;
	remember_page_size(pg);
}

/*
 * The keyset position after a page, from its last row, as the list of
 * texts a run commits; a page that does not move it forward fails here,
 * before anything of it is written.
 */
static List *
advance_cursor(PhxPager *pg, const PhxKeySource *src)
{
	const PhxPaging *paging = pg->paging;
	List	   *cursor = NIL;

	/* a unique keyset's page was checked against the cursor already */
	phx_keyset_next(src, paging->keyset, paging->nkeys,
					pg->has_cursor && !paging->unique_keyset ? pg->cursor : NULL,
					pg->cursor, pg->cxt);
	pg->has_cursor = true;
	for (int k = 0; k < paging->nkeys; k++)
		cursor = lappend(cursor, (char *) pg->cursor[k].str);
	return cursor;
}

/* A page without its first rows (the cursor's row, read again), for the writer. */
typedef struct SkipArg
{
	PhxModelPage inner;
	int			skip;
} SkipArg;

static void
skip_get_row(void *arg, int r, Datum *values, bool *nulls)
{
	SkipArg    *sa = (SkipArg *) arg;

	sa->inner.get_row(sa->inner.arg, r + sa->skip, values, nulls);
}

static const char *
skip_row_key(void *arg, int r)
{
	SkipArg    *sa = (SkipArg *) arg;

	return sa->inner.row_key(sa->inner.arg, r + sa->skip);
}

static void
skip_rows(PhxModelPage *mp, int skip)
{
	SkipArg    *sa = palloc(sizeof(SkipArg));

	sa->inner = *mp;
	sa->skip = skip;
	mp->nrows -= skip;
	mp->get_row = skip_get_row;
	mp->row_key = mp->row_key ? skip_row_key : NULL;
	mp->arg = sa;
}

/*
 * Reads the next page: the model's next_page().  With prefetch, the
 * request of the page after it is sent before this one is converted and
 * written, so PostHog works on it meanwhile (the cursor comes from the
 * page's last row, known before any row is converted).
 */
PhxModelPage *
phx_pager_next_page(void *state)
{
	PhxPager   *pg = (PhxPager *) state;
	const PhxPaging *paging = pg->paging;
	PhxModelPage *mp = palloc0(sizeof(PhxModelPage));
	PhxKeySource src;
	PhxQuery	q;
	PhxPage    *page;
	int			limit;
	int			skip = 0;

	pg->page_no++;
	build_query(pg, &q);
	q.prefetched = pg->prefetched;
	pg->prefetched = 0;
	page = phx_http_query(pg->cfg, &q, page_label(pg, pg->page_no), shrink_page, pg, &mp->bytes);
	/* the LIMIT may have shrunk during the call */
	limit = request_rows(pg);
	page_succeeded(pg);

	phx_check_columns(page, paging->columns, paging->ncolumns, paging->query_name);
	src.page = page;
	src.what = paging->row_what;
	src.export_name = pg->exp->name;
	src.page_no = pg->page_no;
	/* before anything uses a key: deduplication, the cursor, messages */
	phx_key_check_rows(&src, paging->row_keys, paging->nrow_keys);
	if (paging->unique_keyset)
		skip = phx_keyset_check_unique(&src, paging->keyset, paging->nkeys,
									   pg->has_cursor ? pg->cursor : NULL);

	if (page->nrows > skip)
		mp->cursor = advance_cursor(pg, &src);
	/* hasMore, or a full page: ask again (an empty last page costs one call) */
	mp->has_more = page->nrows > skip && (page->has_more || page->nrows >= limit);
	if (mp->has_more)
	{
		if (paging->prefetch)
		{
			PhxQuery	next;

			build_query(pg, &next);
			pg->prefetched = phx_http_prefetch(pg->cfg, &next, page_label(pg, pg->page_no + 1));
		}
	}

	mp->what = paging->page_what;
	mp->page_no = pg->page_no;
	paging->fill_page(pg->arg, &src, mp);
	if (skip > 0)
		skip_rows(mp, skip);
	return mp;
}

/*
 * Runs a one-value query returning a datetime (the start of the project's
 * data, for a backfill "from the beginning"); an empty project gives the
 * interval before "fallback".
 */
TimestampTz
phx_query_earliest(PhxExport *exp, PhxServerConfig *cfg, const char *hogql, TimestampTz fallback)
{
	PhxQuery	q;
	PhxPage    *page;
	bool		isnull = true;
	TimestampTz result = 0;

	phx_query_init(&q);
	appendStringInfoString(&q.text, hogql);
	page = phx_http_query(cfg, &q, psprintf("posthog_export %s earliest", exp->name), NULL, NULL, NULL);
	if (page->nrows == 1 && page->ncolumns == 1 && PHX_CELL(page, 0, 0)->kind != PHX_CELL_NULL)
	{
		/* checked like a key: a backfill starts from it */
		PhxKeySource src = {page, "a result", exp->name, 1};
		PhxKeyColumn kc = {0, "earliest", PHX_KEY_TIMESTAMP};
		PhxKey		key;

		phx_key_get(&src, 0, &kc, &key);
		result = key.ts;
		isnull = false;
	}
	/* ClickHouse answers the epoch for min() over nothing */
	if (isnull || result <= 0 - ((TimestampTz) 10957 * USECS_PER_DAY))
		return fallback - 1;
	return result;
}

/*
 * For a model that reads two scans one after the other (persons): numbers
 * this pager's pages after those "before" has read, so a page number (in
 * request labels and error messages) names one page of the run.
 */
void
phx_pager_number_after(PhxPager *pager, const PhxPager *before)
{
	pager->page_no = before->page_no;
}
