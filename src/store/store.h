/*-------------------------------------------------------------------------
 *
 * store.h
 *		The store layer: everything that reads or writes this database.
 *
 *   security.c      role switches, the owner's own session, snapshots
 *   catalog_spi.c   statements on the extension's tables, as their owner
 *                   (its header, catalog_spi.h, is for the files below only)
 *   catalog.c       the exports and backfills tables
 *   ownership.c     the type whose owner is an export's owner, which
 *                   REASSIGN OWNED, DROP OWNED and DROP ROLE act on
 *   runs.c          the runs table: an interval's counters and cursor, and
 *                   its settle checks
 *   destination.c   the table an export's rows land in: create, stage,
 *                   merge or append
 *   merge_sql.c     the text of the statement that writes a stage into it
 *   bulk_insert.c   rows into a table through the multi-insert path
 *   row_context.c   the error context naming the row being written
 *
 * It takes rows from a model (models/) and knows nothing about HTTP.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PHX_STORE_H
#define PHX_STORE_H

#include "models/models.h"

#include "access/tupdesc.h"
#include "executor/spi.h"
#include "utils/relcache.h"

/* ------------------------------------------------------------------------
 * security.c
 * ------------------------------------------------------------------------
 */
/* Saved state of a switch to another role for catalog or destination work. */
typedef struct PhxRoleSwitch
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} PhxRoleSwitch;

extern void phx_become(Oid role, PhxRoleSwitch *sw);
extern void phx_restore(PhxRoleSwitch *sw);
extern Oid	phx_catalog_owner(void);
extern bool phx_snapshot_ensure(void);
extern void phx_snapshot_release(bool pushed);
extern bool phx_session_is_owner(Oid owner);
extern char *phx_role_name(Oid role);
extern char *phx_owner_session_problem(Oid owner);

/* ------------------------------------------------------------------------
 * catalog.c, runs.c (and catalog_spi.c)
 * ------------------------------------------------------------------------
 */
/* A queued backfill's next interval. */
typedef struct PhxBackfill
{
	int64		backfill_id;
	TimestampTz next_start;
	TimestampTz end_at;
} PhxBackfill;

typedef struct PhxRun
{
	int64		run_id;
	char	   *status;
	int64		rows;
	int64		bytes;
	int32		pages;
	int32		attempts;
	List	   *cursor;			/* of char *, NIL before the first page */
	int64		rows_written;
	int32		crashes;		/* backends that died running it, in a row */
} PhxRun;

/* A completed run with a settle check due (runs.c, run/settle.c). */
typedef struct PhxSettleRun
{
	int64		run_id;
	TimestampTz start;
	TimestampTz end;
	TimestampTz finished_at;
	int64		baseline;		/* the source's rows as last seen */
	bool		report;			/* the last check: past settle_window */
} PhxSettleRun;

/* What some pages added to a run, recorded with phx_run_progress(). */
typedef struct PhxRunDelta
{
	int64		rows;
	int64		bytes;
	int32		pages;
	int64		rows_written;
	int64		waited_us;		/* requests waiting for PostHog's budget */
} PhxRunDelta;

extern Datum phx_text_list_to_array(List *list);

extern PhxExport *phx_export_lookup(const char *name, bool missing_ok);
extern PhxExport *phx_export_by_id(int32 export_id);
extern List *phx_export_list(void);
extern PhxBackfill *phx_backfill_next(PhxExport *exp);
extern void phx_backfill_advance(PhxBackfill *b, TimestampTz next_start);
extern void phx_export_advance(PhxExport *exp, TimestampTz next_start);
extern void phx_export_set_failures(PhxExport *exp, int32 failures, bool has_retry_at,
									TimestampTz retry_at, bool pause, const char *reason);
extern void phx_mark_interrupted_runs(void);
extern void phx_export_update(PhxExport *exp, bool set_events, Datum include,
							  bool include_null, Datum exclude, bool exclude_null);
extern void phx_export_set_paused(PhxExport *exp, bool paused, const char *reason);
extern int64 phx_backfill_insert(PhxExport *exp, TimestampTz start, TimestampTz end);
extern bool phx_export_exists(const char *name);
extern int32 phx_export_insert(PhxExport *exp, Datum include, bool include_null,
							   Datum exclude, bool exclude_null);
extern void phx_export_delete(PhxExport *exp);
extern bool phx_catalog_is_current(void);
extern List *phx_exports_using_server(const char *server_name);
extern List *phx_exports_owned_by(Oid role);
extern PhxExport *phx_export_by_owner_type(Oid type);
extern List *phx_exports_owner_types(void);
extern void phx_exports_rename_server(const char *old_name, const char *new_name);
extern void phx_export_set_server_owner(PhxExport *exp);
extern PhxRun *phx_run_begin(PhxExport *exp, TimestampTz start, TimestampTz end,
							 const char *trigger, bool force);
extern void phx_run_progress(PhxRun *run, PhxRunDelta *delta, List *cursor,
							 bool completed);
extern void phx_run_failed(PhxRun *run, const char *message);
extern char *phx_grid_change_problem(PhxExport *exp, char **hint);
extern char *phx_run_with_cursor(PhxExport *exp, char **start_text, char **end_text);
extern List *phx_runs_overlapping_range(PhxExport *exp, TimestampTz start, TimestampTz end);
extern List *phx_settle_due_runs(PhxExport *exp, TimestampTz now, int limit);
extern void phx_settle_record(PhxSettleRun *sr, TimestampTz checked_at, int64 source_rows,
							  int64 written, int64 missed);
extern bool phx_settle_reschedule(PhxExport *exp, TimestampTz not_before);
extern void phx_settle_mark_checked(PhxExport *exp);
extern void phx_settle_end_checks(PhxExport *exp);

/* ------------------------------------------------------------------------
 * ownership.c
 * ------------------------------------------------------------------------
 */
extern char *phx_owner_type_name(int32 export_id, const char *name);
extern Oid	phx_owner_type_create(int32 export_id, const char *name, Oid owner);
extern void phx_owner_type_set_owner(Oid type, Oid owner);
extern void phx_owner_type_drop(Oid type);
extern char *phx_owner_type_misplaced(Oid type, int32 export_id, const char *name);

/* ------------------------------------------------------------------------
 * row_context.c
 * ------------------------------------------------------------------------
 */
typedef struct PhxRowContext
{
	ErrorContextCallback errcb;
	const char *what;			/* "event", "session" ... */
	const char *export_name;
	int			page_no;
	int			row;			/* current row, 0-based */
	const char *key;			/* its key (uuid ...), if known */
} PhxRowContext;

extern void phx_row_context_push(PhxRowContext *rc, const char *what,
								 const char *export_name, int page_no);
extern void phx_row_context_pop(PhxRowContext *rc);

/* ------------------------------------------------------------------------
 * destination.c
 * ------------------------------------------------------------------------
 */
/* An export's destination table, opened for a run (destination.c). */
typedef struct PhxDestination PhxDestination;

extern void phx_check_database_encoding(void);
extern PhxDestination *phx_destination_open(PhxExport *exp, const PhxModel *model);
extern PhxDestination *phx_destination_open_missing(PhxExport *exp, const PhxModel *model);
extern uint64 phx_destination_insert(PhxDestination *dest, PhxModelPage *page);
extern uint64 phx_destination_finish(PhxDestination *dest);
extern void phx_destination_close(PhxDestination *dest);

/* ------------------------------------------------------------------------
 * merge_sql.c
 * ------------------------------------------------------------------------
 */
extern char *phx_column_list(const char *const *names);
extern char *phx_stage_source_expr(const PhxModel *model, int i);
extern void phx_append_aux_join(StringInfo sql, const PhxModel *model, const char *aux_table);
extern void phx_append_on_conflict(StringInfo sql, const PhxModel *model, const int *used, int nused);
extern void phx_append_absent_filter(StringInfo sql, const PhxModel *model, const char *qualified);

/* ------------------------------------------------------------------------
 * bulk_insert.c
 * ------------------------------------------------------------------------
 */
typedef struct PhxBulkInsert PhxBulkInsert;

extern Form_pg_attribute phx_written_column(TupleDesc desc, const char *name);
extern bool phx_bulk_insert_supported(Relation rel);
extern PhxBulkInsert *phx_bulk_insert_begin(Oid relid, const PhxModel *model,
											PhxRowContext *rc);
extern void phx_bulk_insert_row(PhxBulkInsert *bi, Datum *values, bool *nulls,
								int row, const char *key);
extern uint64 phx_bulk_insert_end(PhxBulkInsert *bi);

#endif							/* PHX_STORE_H */
