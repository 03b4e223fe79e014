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

#include "access/tupdesc.h"
#include "nodes/pathnodes.h"

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
 * attnums[i] is the attribute response column i fills; n columns.  "what"
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
