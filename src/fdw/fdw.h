/*-------------------------------------------------------------------------
 *
 * fdw.h
 *		The foreign-table layer: live SQL over PostHog through the
 *		posthog_export foreign data wrapper.
 *
 *   fdw_handler.c     the FdwRoutine; planning of base relations: sizes,
 *                     costs, paths, the plan
 *   fdw_upper.c       planning of what is pushed above a scan: aggregates
 *                     with GROUP BY, ORDER BY, LIMIT
 *   deparse.c         planner expressions -> HogQL text and its values;
 *                     what may be pushed down
 *   fdw_scan.c        the executor: one query, its pages (keyset), rows
 *                     into tuples; EXPLAIN
 *   remote_rows.c     a response's cells -> datums of a tuple descriptor
 *   import_schema.c   IMPORT FOREIGN SCHEMA from PostHog's schema query
 *   query_function.c  posthog_export.query(): ad-hoc HogQL as a record set
 *
 * Calls go one way: fdw_handler -> fdw_upper, deparse, fdw_scan,
 * import_schema; fdw_upper -> deparse; fdw_scan and query_function ->
 * remote_rows.  Below: the models layer (cells to datums) and the source
 * layer (posthog/).
 *
 *-------------------------------------------------------------------------
 */
#ifndef PHX_FDW_H
#define PHX_FDW_H

#include "posthog/posthog.h"

#include "access/stratnum.h"
#include "access/tupdesc.h"
#include "commands/explain.h"
#include "nodes/execnodes.h"
#include "nodes/parsenodes.h"
#include "nodes/pathnodes.h"

/* ------------------------------------------------------------------------
 * The planner's view of a foreign relation (fdw_handler.c, fdw_upper.c,
 * deparse.c)
 * ------------------------------------------------------------------------
 */

/* how a keyset column's cursor value is read and sent (models/keys.c) */
typedef struct PhxFdwKey
{
	char	   *expr;			/* HogQL expression */
	int			type;			/* PhxKeyType */
} PhxFdwKey;

/*
 * RelOptInfo.fdw_private of a base relation, and of an upper relation
 * (grouping, ordering, limit) pushed to PostHog on top of it.
 */
typedef struct PhxFdwRelInfo
{
	/* the foreign table (base relation) */
	Index		relid;			/* range table index */
	Oid			relation;
	char	   *server_name;
	char	   *table;			/* HogQL table name */
	int			natts;
	char	  **col_expr;		/* [attnum - 1]: HogQL expression, NULL: dropped */
	bool	   *col_simple;		/* [attnum - 1]: col_expr is a plain field path */
	List	   *keyset;			/* PhxFdwKey *, NIL: the table cannot be paged */

	List	   *remote_conds;	/* RestrictInfos sent in WHERE */
	List	   *local_conds;	/* RestrictInfos evaluated here */
	Bitmapset  *attrs_used;		/* attributes the query needs */
	double		rows;
	Cost		startup_cost;
	Cost		total_cost;

	/* an upper relation */
	struct PhxFdwRelInfo *base; /* the base relation's; NULL for itself */
	bool		pushdown_safe;	/* the upper relation can be pushed */
	List	   *grouped_tlist;	/* TargetEntries: what a grouping scan returns */
	List	   *having_conds;	/* HAVING, all sent */
	bool		grouped;		/* an aggregation is pushed (here or below) */
	bool		sorted;			/* the query's ORDER BY is pushed (here or below) */
} PhxFdwRelInfo;

/* a sort key's direction: PG 18 names it by comparison type */
#if PG_VERSION_NUM >= 180000
#define PHX_PK_ASC(pk)		((pk)->pk_cmptype == COMPARE_LT)
#define PHX_PK_DESC(pk)		((pk)->pk_cmptype == COMPARE_GT)
#else
#define PHX_PK_ASC(pk)		((pk)->pk_strategy == BTLessStrategyNumber)
#define PHX_PK_DESC(pk)		((pk)->pk_strategy == BTGreaterStrategyNumber)
#endif

/* default cost of one request to PostHog, and of one row it returns */
#define PHX_FDW_REQUEST_COST	1000.0
#define PHX_FDW_ROW_COST		0.05
/* PostHog's maximum rows per request */
#define PHX_FDW_MAX_ROWS		50000

/* ------------------------------------------------------------------------
 * deparse.c
 * ------------------------------------------------------------------------
 */

/*
 * Where deparsed HogQL goes: the text, and the expressions whose values
 * fill its placeholders {p1}, {p2} ... in order (Consts, and expressions
 * evaluated once when the scan starts: Params, now() - interval ...).
 */
typedef struct PhxDeparse
{
	PlannerInfo *root;
	PhxFdwRelInfo *rel;			/* the base relation: columns, relid */
	StringInfo	buf;
	List	   *values;			/* Exprs */
	bool		aggregates;		/* Aggrefs may appear (a grouping relation) */
	bool		output;			/* columns only selected, not compared */
	int			last_value;		/* the placeholder a value just printed */
} PhxDeparse;

extern void phx_deparse_init(PhxDeparse *dp, PlannerInfo *root, PhxFdwRelInfo *rel,
							 StringInfo buf, bool aggregates);
extern bool phx_shippable_cond(PlannerInfo *root, PhxFdwRelInfo *rel, Expr *cond,
							   bool aggregates);
extern bool phx_shippable_expr(PlannerInfo *root, PhxFdwRelInfo *rel, Expr *expr,
							   bool aggregates);
extern bool phx_groupable_expr(PlannerInfo *root, PhxFdwRelInfo *rel, Expr *expr);
extern bool phx_shippable_sort(PlannerInfo *root, PhxFdwRelInfo *rel, PathKey *pk,
							   Expr **expr_out, bool aggregates);
extern void phx_deparse_cond(PhxDeparse *dp, Expr *cond);
extern void phx_deparse_expr(PhxDeparse *dp, Expr *expr);
extern void phx_deparse_sort(PhxDeparse *dp, Expr *expr, PathKey *pk);
extern void phx_add_value(PhxQuery *q, int n, Datum value, bool isnull, Oid type);

/* ------------------------------------------------------------------------
 * fdw_upper.c
 * ------------------------------------------------------------------------
 */
extern void phx_get_upper_paths(PlannerInfo *root, UpperRelationKind stage,
								RelOptInfo *input_rel, RelOptInfo *output_rel,
								void *extra);

/* ------------------------------------------------------------------------
 * fdw_scan.c
 * ------------------------------------------------------------------------
 */

/* ForeignScan.fdw_private, as a list in this order */
enum PhxScanPrivate
{
	PHX_SCAN_SELECT,			/* "SELECT ... FROM ..." (with the keyset last) */
	PHX_SCAN_WHERE,				/* conditions, or "" */
	PHX_SCAN_GROUP,				/* " GROUP BY ... HAVING ...", or "" */
	PHX_SCAN_ORDER,				/* a pushed ORDER BY list, or "" */
	PHX_SCAN_LIMIT,				/* rows wanted (LIMIT + OFFSET), -1: all */
	PHX_SCAN_OFFSET,			/* rows to skip (a pushed OFFSET) */
	PHX_SCAN_ATTNUMS,			/* the attribute each selected column fills */
	PHX_SCAN_KEYSET,			/* keyset expressions, String; NIL: no paging */
	PHX_SCAN_KEYTYPES,			/* their PhxKeyType, Integer */
	PHX_SCAN_TABLE,				/* the HogQL table, in messages */
	PHX_SCAN_SERVER,			/* server name */
	PHX_SCAN_NPRIVATE
};

extern void phx_begin_foreign_scan(ForeignScanState *node, int eflags);
extern TupleTableSlot *phx_iterate_foreign_scan(ForeignScanState *node);
extern void phx_rescan_foreign_scan(ForeignScanState *node);
extern void phx_end_foreign_scan(ForeignScanState *node);
extern void phx_explain_foreign_scan(ForeignScanState *node, ExplainState *es);

/* ------------------------------------------------------------------------
 * remote_rows.c
 * ------------------------------------------------------------------------
 */

/*
 * How a response's columns become the attributes of a tuple: for each
 * response column, the attribute (1-based) it fills, its type's input
 * function and, for arrays, the element type's.  Built once per scan.
 */
typedef struct PhxRowShape PhxRowShape;

/*
 * attnums[i] is the attribute response column i fills (0: none, a column
 * the caller reads itself, such as a keyset); n columns.  "what"
 * names the rows in error messages (a foreign table, "query()").
 */
extern PhxRowShape *phx_row_shape(TupleDesc tupdesc, const int *attnums, int n,
								  const char *what);

/*
 * Converts row "row" of "page" (its ncolumns must be the shape's n) into
 * values/nulls indexed by attribute (natts long; attributes no column fills
 * are NULL), allocated in the current memory context.  A cell that does
 * not fit its attribute's type is an error naming the column and the row.
 */
extern void phx_row_values(PhxRowShape *shape, PhxPage *page, int row,
						   Datum *values, bool *nulls);

/* ------------------------------------------------------------------------
 * import_schema.c
 * ------------------------------------------------------------------------
 */
extern List *phx_import_foreign_schema(ImportForeignSchemaStmt *stmt, Oid serverOid);

#endif							/* PHX_FDW_H */
