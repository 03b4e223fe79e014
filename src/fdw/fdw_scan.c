/*-------------------------------------------------------------------------
 *
 * fdw_scan.c
 *		The executor of a posthog_export foreign scan: the values of its
 *		placeholders, its requests (one, or pages with a keyset cursor),
 *		rows into tuples, and what EXPLAIN shows.
 *
 * A scan sends the HogQL fdw_handler.c and fdw_upper.c planned.  A paged
 * scan adds "(keyset) > (cursor) ORDER BY keyset LIMIT page" to each
 * request, so it reads every row once however many there are.  Any other
 * (a grouping, a sort, a table without a keyset) is one request of at
 * most 50,000 rows: a full answer means rows may be missing, and that is
 * an error saying what to add, never a short result.
 *
 * Requests go through the same client as exports: the server's TLS,
 * proxy and timeouts, the retry policy, the request budget (a scan waits
 * its turn like a scheduled run, and can be cancelled while it waits).
 * Rows are converted one at a time in a context reset per row; a page
 * lives in a context reset per page.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#if PG_VERSION_NUM >= 180000
#include "commands/explain_format.h"
#endif
#include "executor/executor.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "parser/parsetree.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/ruleutils.h"

#include "fdw/fdw.h"
#include "models/models.h"

typedef struct PhxScanState
{
	/* the plan */
	char	   *select;
	char	   *where;
	char	   *group;
	char	   *order;
	int			limit;			/* rows wanted, -1: all */
	int			offset;			/* rows to skip first */
	int			ncols;			/* selected columns, before the keyset */
	int			nkeys;
	char	  **key_exprs;
	PhxKeyColumn *keys;			/* response columns ncols .. ncols+nkeys-1 */
	char	   *table;
	char	   *server;
	List	   *value_exprs;	/* Expr */
	List	   *value_states;	/* ExprState */

	/* the run */
	PhxServerConfig *cfg;
	PhxRowShape *shape;
	char	   *label;
	MemoryContext scan_cxt;		/* what lives for the scan (and its rescans) */
	MemoryContext page_cxt;		/* the current page */
	MemoryContext row_cxt;		/* the current tuple */
	MemoryContext key_cxt[2];	/* the cursor's text, and the one before it */
	int			key_flip;
	StringInfo	values;			/* the placeholders' JSON, evaluated at start */
	bool		started;
	bool		done;			/* no more pages */
	PhxPage    *page;
	int			row;			/* next row of page */
	int			page_rows;		/* rows the current request asked for */
	int			page_size;		/* rows per page now (shrinks on heavy pages) */
	PhxKey	   *cursor;			/* nkeys keys: after the last page */
	bool		have_cursor;	/* false before the first page */
	int64		returned;		/* rows handed on, skipped ones included */
	int			scan_pages;		/* pages of this (re)scan */
	int			pages;			/* requests of every (re)scan, for EXPLAIN */
	int64		requests_rows;	/* rows received */
} PhxScanState;

/* the role whose user mapping a scan uses: the checkAsUser of its table */
static Oid
scan_userid(ForeignScanState *node)
{
	ForeignScan *fs = (ForeignScan *) node->ss.ps.plan;

#if PG_VERSION_NUM >= 160000
	return OidIsValid(fs->checkAsUser) ? fs->checkAsUser : GetUserId();
#else
	int			rtindex = fs->scan.scanrelid > 0 ? (int) fs->scan.scanrelid :
		bms_next_member(fs->fs_relids, -1);
	RangeTblEntry *rte = exec_rt_fetch(rtindex, node->ss.ps.state);

	return OidIsValid(rte->checkAsUser) ? rte->checkAsUser : GetUserId();
#endif
}

static PhxScanState *
read_plan(ForeignScanState *node)
{
	ForeignScan *fs = (ForeignScan *) node->ss.ps.plan;
	List	   *private = fs->fdw_private;
	PhxScanState *st = palloc0(sizeof(PhxScanState));
	List	   *attnums = list_nth(private, PHX_SCAN_ATTNUMS);
	List	   *keyset = list_nth(private, PHX_SCAN_KEYSET);
	List	   *keytypes = list_nth(private, PHX_SCAN_KEYTYPES);

	st->select = strVal(list_nth(private, PHX_SCAN_SELECT));
	st->where = strVal(list_nth(private, PHX_SCAN_WHERE));
	st->group = strVal(list_nth(private, PHX_SCAN_GROUP));
	st->order = strVal(list_nth(private, PHX_SCAN_ORDER));
	st->limit = intVal(list_nth(private, PHX_SCAN_LIMIT));
	st->offset = intVal(list_nth(private, PHX_SCAN_OFFSET));
	st->table = strVal(list_nth(private, PHX_SCAN_TABLE));
	st->server = strVal(list_nth(private, PHX_SCAN_SERVER));
	st->ncols = list_length(attnums);
	st->nkeys = list_length(keyset);
	st->key_exprs = palloc(sizeof(char *) * Max(st->nkeys, 1));
	st->keys = palloc0(sizeof(PhxKeyColumn) * Max(st->nkeys, 1));
	for (int k = 0; k < st->nkeys; k++)
	{
		st->key_exprs[k] = strVal(list_nth(keyset, k));
		st->keys[k].col = st->ncols + k;
		st->keys[k].name = st->key_exprs[k];
		st->keys[k].type = (PhxKeyType) list_nth_int(keytypes, k);
	}
	st->value_exprs = fs->fdw_exprs;
	return st;
}

void
phx_begin_foreign_scan(ForeignScanState *node, int eflags)
{
	ForeignScan *fs = (ForeignScan *) node->ss.ps.plan;
	EState	   *estate = node->ss.ps.state;
	PhxScanState *st = read_plan(node);
	List	   *attnums = list_nth(fs->fdw_private, PHX_SCAN_ATTNUMS);
	int		   *cols;
	int			n = st->ncols + st->nkeys;

	node->fdw_state = st;
	if (eflags & EXEC_FLAG_EXPLAIN_ONLY)
		return;

	st->cfg = phx_get_server_config(st->server, scan_userid(node));
	st->page_size = Min(st->cfg->page_size, PHX_FDW_MAX_ROWS);
	st->scan_cxt = AllocSetContextCreate(estate->es_query_cxt, "posthog_export scan",
										 ALLOCSET_DEFAULT_SIZES);
	st->page_cxt = AllocSetContextCreate(st->scan_cxt, "posthog_export scan page",
										 ALLOCSET_DEFAULT_SIZES);
	st->row_cxt = AllocSetContextCreate(st->scan_cxt, "posthog_export scan row",
										ALLOCSET_DEFAULT_SIZES);
	for (int i = 0; i < 2; i++)
		st->key_cxt[i] = AllocSetContextCreate(st->scan_cxt, "posthog_export scan cursor",
											   ALLOCSET_SMALL_SIZES);
	st->value_states = ExecInitExprList(st->value_exprs, (PlanState *) node);
	st->values = makeStringInfo();
	st->cursor = palloc0(sizeof(PhxKey) * Max(st->nkeys, 1));

	/* the keyset columns come after the selected ones and fill no attribute */
	cols = palloc0(sizeof(int) * Max(n, 1));
	for (int i = 0; i < st->ncols; i++)
		cols[i] = list_nth_int(attnums, i);
	if (fs->scan.scanrelid > 0)
		st->label = psprintf("foreign table %s",
							 quote_qualified_identifier(get_namespace_name(RelationGetNamespace(node->ss.ss_currentRelation)),
														RelationGetRelationName(node->ss.ss_currentRelation)));
	else
		st->label = psprintf("foreign scan of %s", st->table);
	st->shape = phx_row_shape(node->ss.ss_ScanTupleSlot->tts_tupleDescriptor, cols, n, st->label);
}

/*
 * The placeholders' values, evaluated once per (re)scan: a parameter of a
 * nested loop changes between rescans, now() does not within one.
 */
static void
evaluate_values(ForeignScanState *node, PhxScanState *st)
{
	ExprContext *econtext = node->ss.ps.ps_ExprContext;
	MemoryContext old;
	PhxQuery	q;
	ListCell   *ls,
			   *le;
	int			i = 0;

	old = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
	phx_query_init(&q);
	forboth(ls, st->value_states, le, st->value_exprs)
	{
		bool		isnull;
		Datum		d = ExecEvalExpr((ExprState *) lfirst(ls), econtext, &isnull);

		phx_add_value(&q, ++i, d, isnull, exprType((Node *) lfirst(le)));
	}
	MemoryContextSwitchTo(old);
	resetStringInfo(st->values);
	appendBinaryStringInfo(st->values, q.values.data, q.values.len);
	ResetExprContext(econtext);
}

/* the request for the next page (paged) or the one request, of "rows" rows */
static void
build_query(PhxScanState *st, int rows, PhxQuery *q)
{
	bool		paged = st->nkeys > 0;
	bool		cond = st->where[0] != '\0';

	phx_query_init(q);
	appendStringInfoString(&q->text, st->select);
	if (cond || (paged && st->have_cursor))
		appendStringInfoString(&q->text, " WHERE ");
	appendStringInfoString(&q->text, st->where);
	appendBinaryStringInfo(&q->values, st->values->data, st->values->len);
	if (paged && st->have_cursor)
	{
		appendStringInfoString(&q->text, cond ? " AND (" : "(");
		for (int k = 0; k < st->nkeys; k++)
			appendStringInfo(&q->text, "%s%s", k > 0 ? ", " : "", st->key_exprs[k]);
		appendStringInfoString(&q->text, ") > (");
		for (int k = 0; k < st->nkeys; k++)
		{
			char	   *name = psprintf("c%d", k + 1);

			if (st->keys[k].type == PHX_KEY_TIMESTAMP)
				appendStringInfo(&q->text, "%stoDateTime64({%s}, 6, 'UTC')", k > 0 ? ", " : "", name);
			else
				appendStringInfo(&q->text, "%s{%s}", k > 0 ? ", " : "", name);
			if (st->keys[k].type == PHX_KEY_INT)
				phx_value_int64(q, name, st->cursor[k].i);
			else
				phx_value_text(q, name, st->cursor[k].str);
		}
		appendStringInfoChar(&q->text, ')');
	}
	appendStringInfoString(&q->text, st->group);
	if (paged)
	{
		appendStringInfoString(&q->text, " ORDER BY ");
		for (int k = 0; k < st->nkeys; k++)
			appendStringInfo(&q->text, "%s%s", k > 0 ? ", " : "", st->key_exprs[k]);
	}
	else if (st->order[0] != '\0')
		appendStringInfo(&q->text, " ORDER BY %s", st->order);
	/* rows is ours, never user text */
	appendStringInfo(&q->text, " LIMIT %d", rows);
	q->rows = rows;
}

/* PostHog found a page too heavy: ask for half as many rows */
static bool
shrink_page(void *arg, PhxQuery *q)
{
	PhxScanState *st = arg;

	if (st->page_rows <= 1)
		return false;
	st->page_rows = Max(st->page_rows / 2, 1);
	st->page_size = st->page_rows;
	build_query(st, st->page_rows, q);
	return true;
}

/* while a request runs: which HogQL it was, as postgres_fdw names its SQL */
static void
request_error_context(void *arg)
{
	errcontext("HogQL query: %s", (const char *) arg);
}

static void
fetch_page(PhxScanState *st)
{
	bool		paged = st->nkeys > 0;
	int64		left = st->limit >= 0 ? st->limit - st->returned : -1;
	PhxQuery	q;
	MemoryContext old;
	ErrorContextCallback errcb;
	int64		bytes;

	MemoryContextReset(st->page_cxt);
	old = MemoryContextSwitchTo(st->page_cxt);
	if (paged)
		st->page_rows = left >= 0 ? (int) Min(left, (int64) st->page_size) : st->page_size;
	else
		st->page_rows = left >= 0 ? (int) Min(left, (int64) PHX_FDW_MAX_ROWS) : PHX_FDW_MAX_ROWS;
	build_query(st, st->page_rows, &q);

	phx_request_priority = PHX_PRIORITY_SCHEDULED;
	errcb.callback = request_error_context;
	errcb.arg = q.text.data;
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	st->page = phx_http_query(st->cfg, &q, st->label, paged ? shrink_page : NULL, st, &bytes);
	error_context_stack = errcb.previous;

	st->pages++;
	st->scan_pages++;
	st->row = 0;
	st->requests_rows += st->page->nrows;
	if (st->page->ncolumns != st->ncols + st->nkeys)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_COLUMN_NUMBER),
				 errmsg("PostHog returned %d columns for %s, which selects %d",
						st->page->ncolumns, st->label, st->ncols + st->nkeys)));

	if (!paged)
	{
		st->done = true;
		if (st->page->nrows >= st->page_rows && (left < 0 || left > st->page_rows))
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("the result of %s has more rows than PostHog returns in one request (%d)",
							st->label, st->page_rows),
					 errdetail(st->group[0] != '\0' ?
							   "A grouped query is sent as one request, and PostHog returns at most %d rows per request." :
							   st->order[0] != '\0' ?
							   "A sorted query is sent as one request, and PostHog returns at most %d rows per request." :
							   "This table has no keyset to page by, so its query is one request, and PostHog returns at most %d rows per request.",
							   PHX_FDW_MAX_ROWS),
					 errhint(st->group[0] != '\0' || st->order[0] != '\0' ?
							 "Add a filter or a LIMIT, or use an export to copy the table." :
							 "Add a filter or a LIMIT, give the foreign table the option \"keyset\" (columns that order and identify its rows), or use an export.")));
	}
	else if (st->page->nrows > 0)
	{
		PhxKeySource src = {st->page, "a row", st->label, st->scan_pages};

		/*
		 * The new cursor's text outlives this page; the previous cursor's
		 * (compared with here) is in the other context.
		 */
		st->key_flip = 1 - st->key_flip;
		MemoryContextReset(st->key_cxt[st->key_flip]);
		phx_keyset_next(&src, st->keys, st->nkeys, st->have_cursor ? st->cursor : NULL,
						st->cursor, st->key_cxt[st->key_flip]);
		st->have_cursor = true;
		if (st->page->nrows < st->page_rows)
			st->done = true;
	}
	else
		st->done = true;
	if (st->page->nrows > st->page_rows)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("PostHog returned %d rows for %s, which asked for at most %d",
						st->page->nrows, st->label, st->page_rows)));
	MemoryContextSwitchTo(old);
}

TupleTableSlot *
phx_iterate_foreign_scan(ForeignScanState *node)
{
	PhxScanState *st = node->fdw_state;
	TupleTableSlot *slot = node->ss.ss_ScanTupleSlot;

	if (!st->started)
	{
		evaluate_values(node, st);
		st->started = true;
	}
	for (;;)
	{
		if (st->limit >= 0 && st->returned >= st->limit)
			return ExecClearTuple(slot);
		if (st->page != NULL && st->row < st->page->nrows)
		{
			MemoryContext old;

			st->returned++;
			if (st->returned <= st->offset)
			{
				st->row++;
				continue;
			}
			ExecClearTuple(slot);
			MemoryContextReset(st->row_cxt);
			old = MemoryContextSwitchTo(st->row_cxt);
			phx_row_values(st->shape, st->page, st->row++, slot->tts_values, slot->tts_isnull);
			MemoryContextSwitchTo(old);
			return ExecStoreVirtualTuple(slot);
		}
		if (st->done)
			return ExecClearTuple(slot);
		CHECK_FOR_INTERRUPTS();
		fetch_page(st);
	}
}

void
phx_rescan_foreign_scan(ForeignScanState *node)
{
	PhxScanState *st = node->fdw_state;

	st->started = false;
	st->done = false;
	st->page = NULL;
	st->row = 0;
	st->have_cursor = false;
	st->returned = 0;
	st->scan_pages = 0;
	MemoryContextReset(st->page_cxt);
}

void
phx_end_foreign_scan(ForeignScanState *node)
{
	/* everything lives in the executor's memory; no connection is kept */
}

/* The first request's HogQL, as the scan sends it (without a cursor yet). */
static char *
explain_query(PhxScanState *st)
{
	PhxQuery	q;
	bool		paged = st->nkeys > 0;
	int			rows;
	StringInfoData empty;
	StringInfo	values = st->values;
	bool		have_cursor = st->have_cursor;

	initStringInfo(&empty);
	st->values = &empty;
	st->have_cursor = false;
	rows = st->limit >= 0 ? Min(st->limit, PHX_FDW_MAX_ROWS) : PHX_FDW_MAX_ROWS;
	if (paged)
		rows = Min(rows, st->cfg != NULL ? st->cfg->page_size : phx_server_page_size(st->server));
	build_query(st, rows, &q);
	st->values = values;
	st->have_cursor = have_cursor;
	return q.text.data;
}

/*
 * EXPLAIN VERBOSE shows the HogQL sent (as postgres_fdw shows its remote
 * SQL) and each placeholder: a constant as the JSON value sent, anything
 * evaluated at run time as its expression (with ANALYZE, its value too);
 * EXPLAIN ANALYZE the requests made and rows received.
 */
void
phx_explain_foreign_scan(ForeignScanState *node, ExplainState *es)
{
	PhxScanState *st = node->fdw_state;

	if (es->verbose)
	{
		List	   *shown = NIL;
		ListCell   *lc;
		int			i = 0;

		ExplainPropertyText("PostHog HogQL", explain_query(st), es);
		if (st->nkeys > 0)
		{
			StringInfoData keys;

			initStringInfo(&keys);
			for (int k = 0; k < st->nkeys; k++)
				appendStringInfo(&keys, "%s%s", k > 0 ? ", " : "", st->key_exprs[k]);
			ExplainPropertyText("PostHog Keyset", keys.data, es);
		}
		set_deparse_context_plan(es->deparse_cxt, node->ss.ps.plan, NIL);
		foreach(lc, st->value_exprs)
		{
			Expr	   *e = lfirst(lc);
			PhxQuery	q;
			char	   *name = psprintf("p%d", ++i);

			phx_query_init(&q);
			if (IsA(e, Const))
			{
				phx_add_value(&q, i, ((Const *) e)->constvalue, ((Const *) e)->constisnull,
							  ((Const *) e)->consttype);
				/* "pN":value -> pN = value */
				shown = lappend(shown, psprintf("%s = %s", name, q.values.data + strlen(name) + 3));
			}
			else
				shown = lappend(shown, psprintf("%s = %s", name,
												deparse_expression((Node *) e, es->deparse_cxt,
																   false, false)));
		}
		if (shown != NIL)
			ExplainPropertyList("PostHog Values", shown, es);
		if (es->analyze && st->values != NULL && st->values->len > 0)
			ExplainPropertyText("PostHog Values Sent", psprintf("{%s}", st->values->data), es);
	}
	if (es->analyze)
	{
		ExplainPropertyInteger("PostHog Requests", NULL, st->pages, es);
		ExplainPropertyInteger("PostHog Rows Received", NULL, st->requests_rows, es);
	}
}
