/*-------------------------------------------------------------------------
 *
 * runs.c
 *		The runs table: one row per exported interval, with its counters
 *		and the keyset cursor it resumes from.
 *
 * A run's progress is recorded in the same transaction as the rows it
 * counts, which is what makes an interval exported exactly once.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "store/catalog_spi.h"

/* 1 when a run left "running" was started under the current postmaster */
#define RUN_DIED_UNDER_THIS_POSTMASTER \
	"(CASE WHEN status = 'running' AND started_at OPERATOR(pg_catalog.>=) " \
	"pg_catalog.pg_postmaster_start_time() THEN 1 ELSE 0 END)"

/*
 * At scheduler start: runs left "running" by a crash or a restart are
 * marked failed (and resume from their committed cursor when next run).
 * A run whose export is locked is still alive in some backend and is left
 * alone.
 */
void
phx_mark_interrupted_runs(void)
{
	phx_catalog_exec("UPDATE posthog_export.runs SET status = 'failed', "
					 "crashes = crashes OPERATOR(pg_catalog.+) " RUN_DIED_UNDER_THIS_POSTMASTER ", "
					 "error = 'interrupted: the run ended with its backend (server restart or crash); it resumes from its committed cursor', "
					 "finished_at = pg_catalog.clock_timestamp() "
					 "WHERE status = 'running' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l "
					 "WHERE l.locktype = 'advisory' AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database()) "
					 "AND l.classid = " CppAsString2(PHX_ADVISORY_LOCK_KEY) " AND l.objid::pg_catalog.int4 OPERATOR(pg_catalog.=) runs.export_id "
					 "AND l.objsubid = 2)",
					 NULL);
}

static PhxRun *
run_from_tuple(HeapTuple tup, TupleDesc desc)
{
	PhxRun	   *run = palloc0(sizeof(PhxRun));
	bool		isnull;

	run->run_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	run->status = phx_catalog_get_text(tup, desc, 2);
	run->rows = DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull));
	run->bytes = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
	run->pages = DatumGetInt32(SPI_getbinval(tup, desc, 5, &isnull));
	run->attempts = DatumGetInt32(SPI_getbinval(tup, desc, 6, &isnull));
	run->cursor = phx_catalog_get_text_array(tup, desc, 7);
	run->rows_written = DatumGetInt64(SPI_getbinval(tup, desc, 8, &isnull));
	run->crashes = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
	return run;
}

#define RUN_COLUMNS "run_id, status, rows, bytes, pages, attempts, cursor, rows_written, crashes"

/*
 * Finds or creates the runs row of [start, end) and marks it running.
 * A completed interval is returned untouched (status "completed") unless
 * "force" asks to export it again from the beginning; a running or failed
 * one resumes from its committed cursor.
 */
PhxRun *
phx_run_begin(PhxExport *exp, TimestampTz start, TimestampTz end,
			  const char *trigger, bool force)
{
	CatalogArgs args = {0};
	CatalogArgs uargs = {0};
	PhxRun	   *run;

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg_text(&args, exp->name);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(start), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(end), false);
	phx_catalog_arg_text(&args, trigger);
	phx_catalog_exec("INSERT INTO posthog_export.runs "
					 "(export_id, export_name, interval_start, interval_end, status, trigger) "
					 "VALUES ($1, $2, $3, $4, 'pending', $5) "
					 "ON CONFLICT (export_id, interval_start, interval_end) DO NOTHING",
					 &args);
	phx_catalog_exec("SELECT " RUN_COLUMNS " FROM posthog_export.runs "
					 "WHERE export_id OPERATOR(pg_catalog.=) $1 "
					 "AND interval_start OPERATOR(pg_catalog.=) $3 "
					 "AND interval_end OPERATOR(pg_catalog.=) $4 FOR UPDATE",
					 &args);
	if (SPI_processed != 1)
		elog(ERROR, "runs row of export \"%s\" vanished", exp->name);
	run = run_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
	SPI_freetuptable(SPI_tuptable);

	if (strcmp(run->status, "completed") == 0 && !force)
		return run;

	phx_catalog_arg(&uargs, INT8OID, Int64GetDatum(run->run_id), false);
	phx_catalog_arg(&uargs, BOOLOID, BoolGetDatum(force && strcmp(run->status, "completed") == 0), false);
	phx_catalog_arg_text(&uargs, trigger);

	/*
	 * A row still "running" while we hold the export's lock was left by a
	 * backend that died without recording the end of the run; under this
	 * same postmaster that was a crash or a kill, not a restart.
	 */
	phx_catalog_exec("UPDATE posthog_export.runs SET status = 'running', "
					 "crashes = crashes OPERATOR(pg_catalog.+) " RUN_DIED_UNDER_THIS_POSTMASTER ", "
					 "attempts = attempts OPERATOR(pg_catalog.+) 1, trigger = $3, "
					 "started_at = pg_catalog.clock_timestamp(), finished_at = NULL, error = NULL, "
					 "rows = CASE WHEN $2 THEN 0 ELSE rows END, "
					 "rows_written = CASE WHEN $2 THEN 0 ELSE rows_written END, "
					 "bytes = CASE WHEN $2 THEN 0 ELSE bytes END, "
					 "pages = CASE WHEN $2 THEN 0 ELSE pages END, "
					 "cursor = CASE WHEN $2 THEN NULL ELSE cursor END, "
					 /* a forced run reads the whole interval again: settling starts over */
					 "settled_at = CASE WHEN $2 THEN NULL ELSE settled_at END, "
					 "source_rows = CASE WHEN $2 THEN NULL ELSE source_rows END, "
					 "late_rows = CASE WHEN $2 THEN 0 ELSE late_rows END, "
					 "late_missed = CASE WHEN $2 THEN 0 ELSE late_missed END "
					 "WHERE run_id OPERATOR(pg_catalog.=) $1 RETURNING " RUN_COLUMNS,
					 &uargs);
	run = run_from_tuple(SPI_tuptable->vals[0], SPI_tuptable->tupdesc);
	SPI_freetuptable(SPI_tuptable);
	return run;
}

/*
 * The intervals of the runs of exp that overlap [start, end), in order: a
 * list of pairs of TimestampTz (start, end) in one flat list.
 */
List *
phx_runs_overlapping_range(PhxExport *exp, TimestampTz start, TimestampTz end)
{
	CatalogArgs args = {0};
	List	   *result = NIL;
	bool		isnull;

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(start), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(end), false);
	phx_catalog_exec("SELECT interval_start, interval_end FROM posthog_export.runs "
					 "WHERE export_id OPERATOR(pg_catalog.=) $1 "
					 "AND interval_end OPERATOR(pg_catalog.>) $2 "
					 "AND interval_start OPERATOR(pg_catalog.<) $3 "
					 "ORDER BY interval_start",
					 &args);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		TimestampTz *pair = palloc(2 * sizeof(TimestampTz));

		pair[0] = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
		pair[1] = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &isnull));
		result = lappend(result, pair);
	}
	SPI_freetuptable(SPI_tuptable);
	return result;
}

/*
 * Why exp's grid (interval, timezone, start_offset) cannot change now,
 * as an errdetail and an errhint, or NULL when it can.  The schedule goes
 * on from next_interval_start on the new grid, so the change is unsafe
 * when a run ends after it (run_export() ran ahead of the schedule: the
 * new grid's interval would export its rows again), or when a run is not
 * completed (it resumes from its cursor only as the same interval; on the
 * new grid its committed pages would be written again), or while a
 * backfill is unfinished (its rest would run on the new grid, over runs
 * of the old one).
 */
char *
phx_grid_change_problem(PhxExport *exp, char **hint)
{
	CatalogArgs args = {0};
	char	   *problem = NULL;
	bool		isnull;

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(exp->next_interval_start), false);
	phx_catalog_exec("SELECT interval_start, interval_end, status FROM posthog_export.runs "
					 "WHERE export_id OPERATOR(pg_catalog.=) $1 "
					 "AND (status <> 'completed' OR interval_end OPERATOR(pg_catalog.>) $2) "
					 "ORDER BY status = 'completed', interval_start LIMIT 1",
					 &args);
	if (SPI_processed > 0)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		TimestampTz start = DatumGetTimestampTz(SPI_getbinval(tup, desc, 1, &isnull));
		TimestampTz end = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull));
		char	   *status = phx_catalog_get_text(tup, desc, 3);
		char	   *range = psprintf("[%s, %s)", pstrdup(timestamptz_to_str(start)),
									 pstrdup(timestamptz_to_str(end)));

		if (strcmp(status, "completed") != 0)
		{
			problem = psprintf("Its interval %s is %s; it can only be finished on the grid it started on.",
							   range, status);
			*hint = psprintf("Finish it first (CALL posthog_export.run_export(%s, '%s', '%s'), or let the export retry it), then change the grid.",
							 quote_literal_cstr(exp->name), pstrdup(timestamptz_to_str(start)),
							 pstrdup(timestamptz_to_str(end)));
		}
		else
		{
			problem = psprintf("Its interval %s was exported ahead of the schedule, which is at %s; the new grid would export it again.",
							   range, pstrdup(timestamptz_to_str(exp->next_interval_start)));
			*hint = psprintf("Change the grid once the schedule has passed %s.",
							 pstrdup(timestamptz_to_str(end)));
		}
	}
	SPI_freetuptable(SPI_tuptable);
	if (problem == NULL)
	{
		PhxBackfill *b = phx_backfill_next(exp);

		if (b != NULL)
		{
			problem = psprintf("Its backfill %lld is not completed (it is at %s).",
							   (long long) b->backfill_id, pstrdup(timestamptz_to_str(b->next_start)));
			*hint = pstrdup("Change the grid once the backfill has completed (see posthog_export.backfills).");
		}
	}
	return problem;
}

/*
 * The first interval of exp whose run is not completed and has committed a
 * keyset cursor (the next run resumes from it, under the query and key of
 * the export then), as "[start, end)" and its bounds' texts, or NULL.  Its committed pages were
 * read under the current query and key: a run resuming under others would
 * write rows twice or skip them.
 */
char *
phx_run_with_cursor(PhxExport *exp, char **start_text, char **end_text)
{
	CatalogArgs args = {0};
	char	   *result = NULL;
	bool		isnull;

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_exec("SELECT interval_start, interval_end FROM posthog_export.runs "
					 "WHERE export_id OPERATOR(pg_catalog.=) $1 "
					 "AND status <> 'completed' AND cursor IS NOT NULL "
					 "ORDER BY interval_start LIMIT 1",
					 &args);
	if (SPI_processed > 0)
	{
		HeapTuple	tup = SPI_tuptable->vals[0];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		TimestampTz start = DatumGetTimestampTz(SPI_getbinval(tup, desc, 1, &isnull));
		TimestampTz end = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull));

		*start_text = pstrdup(timestamptz_to_str(start));
		*end_text = pstrdup(timestamptz_to_str(end));
		result = psprintf("[%s, %s)", *start_text, *end_text);
	}
	SPI_freetuptable(SPI_tuptable);
	return result;
}

/*
 * Settle checks (run/settle.c): an events interval completed at finished_at
 * is counted again at the source settle_every after its last check (or its
 * completion); the first check at or after finished_at + settle_window is
 * the last, "report" check, after which it is never checked again.  These
 * expressions, over a run r of export e, say which runs have a check
 * pending and when it is due.
 */
#define SETTLE_PENDING \
	"r.status = 'completed' AND r.finished_at IS NOT NULL AND e.model = 'events' " \
	"AND e.settle_window OPERATOR(pg_catalog.>) '0'::pg_catalog.interval " \
	"AND (r.settled_at IS NULL OR r.settled_at OPERATOR(pg_catalog.<) " \
	"(r.finished_at OPERATOR(pg_catalog.+) e.settle_window))"
#define SETTLE_NEXT_CHECK \
	"(COALESCE(r.settled_at, r.finished_at) OPERATOR(pg_catalog.+) e.settle_every)"

/*
 * A run just completed: its export's next settle pass is due no later than
 * the run's first check (in the same transaction as the completion).
 */
static void
schedule_first_check(PhxRun *run)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, INT8OID, Int64GetDatum(run->run_id), false);
	phx_catalog_exec("UPDATE posthog_export.exports e SET next_settle_at = "
					 "LEAST(e.next_settle_at, " SETTLE_NEXT_CHECK ") "
					 "FROM posthog_export.runs r WHERE r.run_id OPERATOR(pg_catalog.=) $1 "
					 "AND e.export_id OPERATOR(pg_catalog.=) r.export_id AND " SETTLE_PENDING,
					 &args);
}

/*
 * Records progress: counters and the keyset cursor, committed in the same
 * transaction as the rows they count.  With "completed", the run ends too.
 */
void
phx_run_progress(PhxRun *run, PhxRunDelta *delta, List *cursor, bool completed)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, INT8OID, Int64GetDatum(run->run_id), false);
	phx_catalog_arg(&args, INT8OID, Int64GetDatum(delta->rows), false);
	phx_catalog_arg(&args, INT8OID, Int64GetDatum(delta->bytes), false);
	phx_catalog_arg(&args, TEXTARRAYOID, cursor != NIL ? phx_text_list_to_array(cursor) : (Datum) 0,
		cursor == NIL);
	phx_catalog_arg(&args, BOOLOID, BoolGetDatum(completed), false);
	phx_catalog_arg(&args, INT4OID, Int32GetDatum(delta->pages), false);
	phx_catalog_arg(&args, INT8OID, Int64GetDatum(delta->rows_written), false);
	phx_catalog_arg(&args, FLOAT8OID, Float8GetDatum((double) delta->waited_us / USECS_PER_SEC), false);
	phx_catalog_exec("UPDATE posthog_export.runs SET "
					 "rows = rows OPERATOR(pg_catalog.+) $2, "
					 "waited = waited OPERATOR(pg_catalog.+) "
					 "($8 OPERATOR(pg_catalog.*) '1 second'::pg_catalog.interval), "
					 "bytes = bytes OPERATOR(pg_catalog.+) $3, "
					 "pages = pages OPERATOR(pg_catalog.+) $6, "
					 "rows_written = rows_written OPERATOR(pg_catalog.+) $7, "
					 "cursor = COALESCE($4, cursor), "
					 "status = CASE WHEN $5 THEN 'completed' ELSE status END, "
					 "crashes = CASE WHEN $5 THEN 0 ELSE crashes END, "
					 "finished_at = CASE WHEN $5 THEN pg_catalog.clock_timestamp() END "
					 "WHERE run_id OPERATOR(pg_catalog.=) $1",
					 &args);
	run->rows += delta->rows;
	run->bytes += delta->bytes;
	run->pages += delta->pages;
	run->rows_written += delta->rows_written;
	if (completed)
	{
		run->status = "completed";
		schedule_first_check(run);
	}
}

void
phx_run_failed(PhxRun *run, const char *message)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, INT8OID, Int64GetDatum(run->run_id), false);
	phx_catalog_arg_text(&args, message);
	phx_catalog_exec("UPDATE posthog_export.runs SET status = 'failed', error = $2, crashes = 0, "
					 "finished_at = pg_catalog.clock_timestamp() "
					 "WHERE run_id OPERATOR(pg_catalog.=) $1",
					 &args);
	run->status = "failed";
}

/*
 * The runs of exp to check at "now", at most "limit", the most overdue
 * first; a list of PhxSettleRun in interval order.  "report" marks the
 * last check (now at or past finished_at + settle_window).
 *
 * A pass takes along the checks due within settle_every from now: checked
 * a little early, they fall due together from then on, so an export's
 * intervals, each completed at its own time, share one count request per
 * settle_every instead of one each.
 */
List *
phx_settle_due_runs(PhxExport *exp, TimestampTz now, int limit)
{
	CatalogArgs args = {0};
	List	   *result = NIL;

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(now), false);
	phx_catalog_arg(&args, INT4OID, Int32GetDatum(limit), false);
	phx_catalog_exec("SELECT * FROM (SELECT r.run_id, r.interval_start, r.interval_end, r.finished_at, "
					 "COALESCE(r.source_rows, r.rows OPERATOR(pg_catalog.+) r.late_rows), "
					 "$2 OPERATOR(pg_catalog.>=) (r.finished_at OPERATOR(pg_catalog.+) e.settle_window) "
					 "FROM posthog_export.runs r JOIN posthog_export.exports e "
					 "ON e.export_id OPERATOR(pg_catalog.=) r.export_id "
					 "WHERE r.export_id OPERATOR(pg_catalog.=) $1 AND " SETTLE_PENDING " "
					 "AND " SETTLE_NEXT_CHECK " OPERATOR(pg_catalog.<=) ($2 OPERATOR(pg_catalog.+) e.settle_every) "
					 "ORDER BY " SETTLE_NEXT_CHECK ", r.interval_start LIMIT $3) due "
					 "ORDER BY 2",
					 &args);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		PhxSettleRun *sr = palloc0(sizeof(PhxSettleRun));
		bool		isnull;

		sr->run_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		sr->start = DatumGetTimestampTz(SPI_getbinval(tup, desc, 2, &isnull));
		sr->end = DatumGetTimestampTz(SPI_getbinval(tup, desc, 3, &isnull));
		sr->finished_at = DatumGetTimestampTz(SPI_getbinval(tup, desc, 4, &isnull));
		sr->baseline = DatumGetInt64(SPI_getbinval(tup, desc, 5, &isnull));
		sr->report = DatumGetBool(SPI_getbinval(tup, desc, 6, &isnull));
		result = lappend(result, sr);
	}
	SPI_freetuptable(SPI_tuptable);
	return result;
}

/*
 * Records a settle check of a run made at checked_at: the source's count,
 * and the late rows it wrote or, at the report check, missed.
 */
void
phx_settle_record(PhxSettleRun *sr, TimestampTz checked_at, int64 source_rows,
				  int64 written, int64 missed)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, INT8OID, Int64GetDatum(sr->run_id), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(checked_at), false);
	phx_catalog_arg(&args, INT8OID, Int64GetDatum(source_rows), false);
	phx_catalog_arg(&args, INT8OID, Int64GetDatum(written), false);
	phx_catalog_arg(&args, INT8OID, Int64GetDatum(missed), false);
	phx_catalog_exec("UPDATE posthog_export.runs SET settled_at = $2, source_rows = $3, "
					 "late_rows = late_rows OPERATOR(pg_catalog.+) $4, "
					 "late_missed = late_missed OPERATOR(pg_catalog.+) $5 "
					 "WHERE run_id OPERATOR(pg_catalog.=) $1",
					 &args);
}

/*
 * Sets exp's next_settle_at to its earliest pending check, but not before
 * not_before; NULL when no check is pending.  Returns whether one is.
 */
bool
phx_settle_reschedule(PhxExport *exp, TimestampTz not_before)
{
	CatalogArgs args = {0};
	bool		isnull;
	Datum		d;

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_arg(&args, TIMESTAMPTZOID, TimestampTzGetDatum(not_before), false);
	phx_catalog_exec("UPDATE posthog_export.exports e SET next_settle_at = "
					 "(SELECT CASE WHEN pg_catalog.min(" SETTLE_NEXT_CHECK ") IS NOT NULL "
					 "THEN GREATEST(pg_catalog.min(" SETTLE_NEXT_CHECK "), $2) END "
					 "FROM posthog_export.runs r "
					 "WHERE r.export_id OPERATOR(pg_catalog.=) e.export_id AND " SETTLE_PENDING ") "
					 "WHERE e.export_id OPERATOR(pg_catalog.=) $1 RETURNING next_settle_at",
					 &args);
	if (SPI_processed != 1)
		return false;
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	exp->has_next_settle_at = !isnull;
	if (!isnull)
		exp->next_settle_at = DatumGetTimestampTz(d);
	SPI_freetuptable(SPI_tuptable);
	return !isnull;
}

/*
 * The export's filter changed (alter_export): the intervals exported
 * before hold the rows of the old filter, which a count with the new one
 * would not agree with, so their checks end here: each counts as checked
 * for the last time, with the rows it holds.
 */
void
phx_settle_end_checks(PhxExport *exp)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_exec("UPDATE posthog_export.runs r SET "
					 "settled_at = GREATEST(r.finished_at OPERATOR(pg_catalog.+) e.settle_window, pg_catalog.now()), "
					 "source_rows = r.rows OPERATOR(pg_catalog.+) r.late_rows "
					 "FROM posthog_export.exports e "
					 "WHERE e.export_id OPERATOR(pg_catalog.=) r.export_id AND r.export_id OPERATOR(pg_catalog.=) $1 "
					 "AND " SETTLE_PENDING,
					 &args);
}

/*
 * Settling was turned on (settle_window from 0): the intervals completed
 * meanwhile count as checked now, with the rows they received, so the
 * history is not checked all at once; those exported less than
 * settle_window ago go on being checked.
 */
void
phx_settle_mark_checked(PhxExport *exp)
{
	CatalogArgs args = {0};

	phx_catalog_arg(&args, INT4OID, Int32GetDatum(exp->export_id), false);
	phx_catalog_exec("UPDATE posthog_export.runs SET settled_at = pg_catalog.now(), "
					 "source_rows = COALESCE(source_rows, rows OPERATOR(pg_catalog.+) late_rows) "
					 "WHERE export_id OPERATOR(pg_catalog.=) $1 AND status = 'completed' "
					 "AND settled_at IS NULL",
					 &args);
}
