/*-------------------------------------------------------------------------
 *
 * due_work.c
 *		Running an export: a range of intervals (run_export), or its due
 *		work (the scheduler, run_due), page by page.
 *
 * Exactly-once comes from one rule: a page's rows and the runs row that
 * records them (counters and keyset cursor) commit in the same
 * transaction.  Called as a top-level CALL, the procedure is non-atomic
 * and commits after every page, so a backend that dies loses at most the
 * uncommitted page, and the next run of the interval resumes from the
 * committed cursor: no gap, no duplicate.  Inside an explicit transaction
 * block it cannot commit, and the whole call is one transaction instead.
 *
 * An export never runs twice at once: a session-level advisory lock on
 * the export is held for the whole call, whoever triggers it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/trigger.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "storage/lock.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "run/run.h"

typedef struct RunLock
{
	LOCKTAG		tag;
	bool		held;
} RunLock;

/* The lock an export's runs hold (pg_locks: advisory, classid PHX_ADVISORY_LOCK_KEY, objsubid 2). */
static void
export_locktag(PhxExport *exp, LOCKTAG *tag)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, PHX_ADVISORY_LOCK_KEY,
						 (uint32) exp->export_id, 2);
}

/*
 * The pid of another backend holding the export's lock: the one running
 * it (what pg_locks shows), or 0 when none does any more.
 */
int
phx_export_lock_holder(PhxExport *exp)
{
	LOCKTAG		tag;
	LockData   *data;
	int			pid = 0;

	export_locktag(exp, &tag);
	data = GetLockStatusData();
	for (int i = 0; i < data->nelements && pid == 0; i++)
	{
		LockInstanceData *l = &data->locks[i];

		if (l->holdMask != 0 && l->pid != MyProcPid &&
			l->locktag.locktag_type == tag.locktag_type &&
			l->locktag.locktag_field1 == tag.locktag_field1 &&
			l->locktag.locktag_field2 == tag.locktag_field2 &&
			l->locktag.locktag_field3 == tag.locktag_field3 &&
			l->locktag.locktag_field4 == tag.locktag_field4)
			pid = l->pid;
	}
	return pid;
}

/*
 * Takes the export's lock for the whole call.  When another session holds
 * it, an explicit run is an error naming the backend that runs it, and due
 * work ("skip_if_busy") is skipped: false.
 */
static bool
lock_export(PhxExport *exp, RunLock *lock, bool skip_if_busy)
{
	export_locktag(exp, &lock->tag);
	if (LockAcquire(&lock->tag, ExclusiveLock, true, true) == LOCKACQUIRE_NOT_AVAIL)
	{
		int			pid;

		if (skip_if_busy)
			return false;
		pid = phx_export_lock_holder(exp);
		if (pid != 0)
			ereport(ERROR,
					(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
					 errmsg("export \"%s\" is already running", exp->name),
					 errdetail("Backend %d is running it (or changing or dropping it); an export never runs twice at once.", pid),
					 errhint("Wait for it to finish: posthog_export.progress and pg_stat_activity (pid %d) show it; pg_cancel_backend(%d) stops it.",
							 pid, pid)));
		ereport(ERROR,
				(errcode(ERRCODE_LOCK_NOT_AVAILABLE),
				 errmsg("export \"%s\" is already running", exp->name),
				 errdetail("Another backend held it a moment ago; an export never runs twice at once."),
				 errhint("Try again.")));
	}
	lock->held = true;
	return true;
}

/* Names the run being waited for in the error a lock_timeout or cancel raises. */
static void
lock_wait_context(void *arg)
{
	errcontext("%s", (char *) arg);
}

/*
 * drop_export() and alter_export() of the grid wait, like DROP TABLE, for
 * a run in flight to finish: they take the export's lock until the end of
 * the transaction (lock_timeout limits the wait; a cancel ends it), so no
 * run starts meanwhile either.  "what" is "dropping" or "changing".
 */
void
phx_lock_export_for_change(PhxExport *exp, const char *what)
{
	LOCKTAG		tag;
	int			pid;
	ErrorContextCallback errcb;

	export_locktag(exp, &tag);
	if (LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL)
		return;
	pid = phx_export_lock_holder(exp);
	ereport(NOTICE,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("waiting for backend %d, which is running export \"%s\", before %s it",
					pid, exp->name, what),
			 errhint("lock_timeout limits the wait; pg_cancel_backend(%d) stops that run.", pid)));
	errcb.callback = lock_wait_context;
	errcb.arg = psprintf("waiting for backend %d running export \"%s\"", pid, exp->name);
	errcb.previous = error_context_stack;
	error_context_stack = &errcb;
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
	error_context_stack = errcb.previous;
}

static void
unlock_export(RunLock *lock)
{
	if (lock->held)
		LockRelease(&lock->tag, ExclusiveLock, true);
	lock->held = false;
}

typedef enum RunResult
{
	RUN_DONE,
	RUN_SKIPPED,				/* exported before */
	RUN_FAILED					/* recorded; *error says why */
} RunResult;

/*
 * One interval being exported.  It lives in run_cxt and is reached through
 * a pointer set before any PG_TRY, so what the pages change in it is still
 * there when an error is caught.
 */
typedef struct IntervalRun
{
	PhxExport  *exp;
	const PhxModel *model;
	TimestampTz start;
	TimestampTz end;
	bool		nonatomic;		/* commits after every page (or merge) */
	MemoryContext run_cxt;		/* lives across those commits */
	MemoryContext oldcxt;		/* the caller's */
	MemoryContext page_cxt;		/* one page's data, reset for the next */
	PhxRun	   *run;
	PhxDestination *dest;		/* set up before the first page */
	void	   *state;			/* the model's paging state, idem */
	PhxRunDelta delta;			/* pages not recorded yet (staged models) */
	bool		in_subxact;
	ResourceOwner oldowner;		/* of the transaction the subxact is in */
	TimestampTz t0;
} IntervalRun;

/*
 * Finds or creates the interval's runs row and marks it running (that
 * much is committed at once in non-atomic mode); false when the interval
 * was exported before.
 */
static bool
begin_interval(IntervalRun *ir, const char *trigger, bool force)
{
	PhxExport  *exp = ir->exp;

	ir->run = phx_run_begin(exp, ir->start, ir->end, trigger, force);
	if (strcmp(ir->run->status, "completed") == 0)
		return false;
	if (ir->run->crashes >= PHX_MAX_CRASHES)
		phx_pause_crashing_export(exp, ir->run, ir->start, ir->end);
	if (ir->nonatomic)
	{
		SPI_commit();
		MemoryContextSwitchTo(ir->run_cxt);
	}

	phx_progress_begin(exp, ir->start, ir->end, ir->run);
	if (ir->run->cursor)
		ereport(LOG,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("posthog_export: export \"%s\" starting interval [%s, %s) from its committed cursor",
						exp->name, phx_ts_str(ir->start), phx_ts_str(ir->end))));
	else
		ereport(LOG,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("posthog_export: export \"%s\" starting interval [%s, %s)",
						exp->name, phx_ts_str(ir->start), phx_ts_str(ir->end))));

	ir->page_cxt = AllocSetContextCreate(ir->run_cxt, "posthog_export page", ALLOCSET_DEFAULT_SIZES);
	return true;
}

/*
 * Before the first page: the source (server config, the model's paging
 * state) and the destination table.  Its errors (no privilege, no key ...)
 * are recorded like a page's.
 */
static void
open_source_and_destination(IntervalRun *ir)
{
	PhxExport  *exp = ir->exp;
	PhxRoleSwitch sw;
	PhxServerConfig *cfg;

	if (ir->run->crashes >= PHX_MAX_CRASHES)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the backend running export \"%s\" died %d times in a row in interval [%s, %s)",
						exp->name, ir->run->crashes, phx_ts_str(ir->start), phx_ts_str(ir->end)),
				 errdetail("It ended without recording the end of the run: a crash, a kill, or pg_terminate_backend()."),
				 errhint("The export is paused; find the cause in the server log (\"terminated by signal\"), then unpause it.")));

	phx_become(exp->owner, &sw);
	cfg = phx_get_server_config(exp->server_name, exp->owner);
	/* with the owner's custom columns, as the table has them now */
	ir->model = phx_shaped_model(ir->model, exp);
	ir->dest = phx_destination_open(exp, ir->model);
	phx_restore(&sw);
	ir->state = ir->model->begin(exp, cfg, ir->start, ir->end,
								 ir->model->staged ? NIL : ir->run->cursor);
}

/* In non-atomic mode each page (or a staged model's pages) runs in a subtransaction. */
static void
begin_page_subxact(IntervalRun *ir)
{
	ir->oldowner = CurrentResourceOwner;
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(ir->run_cxt);
	ir->in_subxact = true;
}

static void
release_page_subxact(IntervalRun *ir)
{
	ReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(ir->run_cxt);
	CurrentResourceOwner = ir->oldowner;
	ir->in_subxact = false;
}

/*
 * Fetches, converts and writes one page, and records the progress with
 * the rows (for a staged model: at the last page, after the merge);
 * returns whether it was the last page.
 */
static bool
export_page(IntervalRun *ir)
{
	PhxRoleSwitch sw;
	PhxModelPage *page;
	bool		last;

	if (ir->state == NULL)
		open_source_and_destination(ir);

	MemoryContextReset(ir->page_cxt);
	MemoryContextSwitchTo(ir->page_cxt);
	page = ir->model->next_page(ir->state);
	last = !page->has_more;

	phx_become(ir->exp->owner, &sw);
	ir->delta.rows_written += phx_destination_insert(ir->dest, page);
	if (last)
		ir->delta.rows_written += phx_destination_finish(ir->dest);
	phx_restore(&sw);

	MemoryContextSwitchTo(ir->run_cxt);
	phx_progress_page(page->nrows, page->bytes);
	ir->delta.waited_us += phx_progress_take_waited();
	ir->delta.rows += page->nrows;
	ir->delta.bytes += page->bytes;
	ir->delta.pages++;
	if (!ir->model->staged || last)
	{
		phx_run_progress(ir->run, &ir->delta, page->cursor, last);
		memset(&ir->delta, 0, sizeof(ir->delta));
		if (ir->nonatomic)
			release_page_subxact(ir);
	}
	return last;
}

/*
 * In a PG_CATCH of a non-atomic run: rolls the page's subtransaction back,
 * records the failure and commits it; then re-throws the error, or, when
 * "error" is given, returns it there.
 */
static void
record_failure(IntervalRun *ir, ErrorData **error)
{
	ErrorData  *edata;

	/*
	 * The copy must outlive run_cxt, which the caller deletes before the
	 * re-thrown error is reported (its file and function names are copies
	 * too, in recent minor releases).
	 */
	MemoryContextSwitchTo(ir->oldcxt);
	edata = CopyErrorData();
	MemoryContextSwitchTo(ir->run_cxt);
	FlushErrorState();
	RollbackAndReleaseCurrentSubTransaction();
	MemoryContextSwitchTo(ir->run_cxt);
	CurrentResourceOwner = ir->oldowner;
	if (ir->dest)
		phx_destination_close(ir->dest);
	phx_progress_end();

	phx_run_failed(ir->run, phx_error_summary(edata));
	SPI_commit();
	MemoryContextSwitchTo(ir->run_cxt);
	ereport(LOG,
			(errcode(edata->sqlerrcode),
			 errmsg("posthog_export: export \"%s\" failed in interval [%s, %s) after %lld rows",
					ir->exp->name, phx_ts_str(ir->start), phx_ts_str(ir->end),
					(long long) ir->run->rows),
			 errdetail_internal("%s", phx_error_summary(edata))));
	if (error == NULL)
		ReThrowError(edata);
	*error = edata;
	MemoryContextDelete(ir->page_cxt);
	MemoryContextSwitchTo(ir->oldcxt);
}

static void
finish_interval(IntervalRun *ir)
{
	phx_destination_close(ir->dest);
	phx_progress_end();
	MemoryContextDelete(ir->page_cxt);
	ereport(LOG,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("posthog_export: export \"%s\" finished interval [%s, %s): %lld rows received, %lld written, %lld bytes, %d pages in %.3f s",
					ir->exp->name, phx_ts_str(ir->start), phx_ts_str(ir->end),
					(long long) ir->run->rows, (long long) ir->run->rows_written,
					(long long) ir->run->bytes, ir->run->pages,
					(double) (GetCurrentTimestamp() - ir->t0) / USECS_PER_SEC)));
}

/*
 * Exports one interval.
 *
 * In non-atomic mode the pages run in a subtransaction that is committed
 * after every page, or, for staged models, once after the final merge.  On
 * error the subtransaction is rolled back and the failure is recorded and
 * committed; then the error is re-thrown, or, when "error" is given,
 * returned there (the scheduler goes on with other work).
 */
static RunResult
run_interval(PhxExport *exp, const PhxModel *model, TimestampTz start,
			 TimestampTz end, const char *trigger, bool force, bool nonatomic,
			 MemoryContext run_cxt, ErrorData **error)
{
	TimestampTz t0 = GetCurrentTimestamp();
	MemoryContext oldcxt = MemoryContextSwitchTo(run_cxt);
	IntervalRun *ir = palloc0(sizeof(IntervalRun));

	ir->exp = exp;
	ir->model = model;
	ir->start = start;
	ir->end = end;
	ir->nonatomic = nonatomic;
	ir->run_cxt = run_cxt;
	ir->oldcxt = oldcxt;
	ir->t0 = t0;
	/* a backfill's requests take the turns of the request budget nobody else wants */
	phx_request_priority = strcmp(trigger, "backfill") == 0 ?
		PHX_PRIORITY_BACKFILL : PHX_PRIORITY_SCHEDULED;
	if (!begin_interval(ir, trigger, force))
	{
		MemoryContextSwitchTo(oldcxt);
		return RUN_SKIPPED;
	}

	for (;;)
	{
		bool		last = false;

		if (nonatomic && !ir->in_subxact)
			begin_page_subxact(ir);
		PG_TRY();
		{
			last = export_page(ir);
		}
		PG_CATCH();
		{
			if (!nonatomic)
				PG_RE_THROW();
			record_failure(ir, error);
			return RUN_FAILED;
		}
		PG_END_TRY();

		if (nonatomic && !ir->in_subxact)
		{
			SPI_commit();
			MemoryContextSwitchTo(run_cxt);
		}
		if (last)
			break;
	}

	finish_interval(ir);
	MemoryContextSwitchTo(oldcxt);
	return RUN_DONE;
}

/*
 * run_export() and backfill() of [start, end) run the intervals of the
 * current grid: a run in that range on an earlier grid (before
 * alter_export() changed it) would be overlapped, and its rows written
 * again.  Refused, naming it.
 */
void
phx_check_range_on_grid(PhxExport *exp, TimestampTz start, TimestampTz end)
{
	ListCell   *lc;

	foreach(lc, phx_runs_overlapping_range(exp, start, end))
	{
		TimestampTz *r = lfirst(lc);

		if (phx_interval_floor(exp, r[0]) == r[0] && phx_interval_next(exp, r[0]) == r[1])
			continue;
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the range [%s, %s) of export \"%s\" overlaps its interval [%s, %s), exported on an earlier grid",
						phx_ts_str(start), phx_ts_str(end), exp->name, phx_ts_str(r[0]), phx_ts_str(r[1])),
				 errdetail("The intervals of the current grid would write the rows of the overlap a second time."),
				 strcmp(exp->mode, "merge") == 0 ?
				 errhint("Give a range that the earlier grid did not cover, or, with run_export, force => true: merge mode writes each row once.") :
				 errhint("Give a range that the earlier grid did not cover.")));
	}
}

/*
 * The model the export runs with, allocated in run_cxt (a hogql export's
 * is built from its stored columns, as the export is now).
 */
static const PhxModel *
run_model(PhxExport *exp, MemoryContext run_cxt)
{
	MemoryContext old = MemoryContextSwitchTo(run_cxt);
	const PhxModel *model = phx_model_for_export(exp);

	MemoryContextSwitchTo(old);
	return model;
}

/*
 * Exports every interval of [start, end) in order.  Used by the CALL
 * below and, later, by the scheduler.
 */
void
phx_run_range(PhxExport *exp, TimestampTz start, TimestampTz end,
			  const char *trigger, bool force, bool nonatomic)
{
	const PhxModel *model;
	RunLock		lock = {0};
	MemoryContext run_cxt;
	volatile int skipped = 0;
	volatile TimestampTz first_skipped = 0;

	if (force && strcmp(exp->mode, "append") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("export \"%s\" appends, so force would duplicate rows", exp->name),
				 errhint("Only exports in merge mode can export an interval again.")));

	/* the caller checked it too; a worker starts a moment later */
	phx_check_range_ended(exp, start, end, GetCurrentTimestamp());
	(void) lock_export(exp, &lock, false);
	/* lives across the commits of a non-atomic call */
	run_cxt = AllocSetContextCreate(TopMemoryContext, "posthog_export run", ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		/* in run_cxt: a hogql export's model is built, and lives across commits */
		model = run_model(exp, run_cxt);
		if (phx_export_by_id(exp->export_id) == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("export \"%s\" was dropped", exp->name)));
		if (!force)
			phx_check_range_on_grid(exp, start, end);
		for (TimestampTz s = start; s < end; s = phx_interval_next(exp, s))
			if (run_interval(exp, model, s, phx_interval_next(exp, s), trigger, force,
							 nonatomic, run_cxt, NULL) == RUN_SKIPPED)
			{
				if (skipped++ == 0)
					first_skipped = s;
			}
	}
	PG_FINALLY();
	{
		/* an error re-thrown in a transaction block left its progress behind */
		phx_progress_end();
		unlock_export(&lock);
		MemoryContextDelete(run_cxt);
	}
	PG_END_TRY();

	if (skipped > 0)
		ereport(NOTICE,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg_plural("%d interval of export \"%s\" was already exported, skipped it",
							   "%d intervals of export \"%s\" were already exported, skipped them",
							   skipped, skipped, exp->name),
				 errdetail("The first skipped interval starts at %s.", phx_ts_str(first_skipped)),
				 errhint("Use force => true to export them again (merge mode only).")));
}

/* pause() (or drop_export()) takes effect between intervals of a catch-up. */
static bool
export_paused(PhxExport *exp)
{
	PhxExport  *now = phx_export_by_id(exp->export_id);

	return now == NULL || now->paused;
}

/*
 * Runs the export's scheduled intervals that are over (plus the delay for
 * late ingestion), oldest first.  Sets *failed when one failed (the error
 * in *error), *stop when the export was paused or dropped meanwhile.
 */
static void
run_due_schedule(PhxExport *exp, const PhxModel *model, bool nonatomic, MemoryContext run_cxt,
				 ErrorData **error, bool *failed, bool *stop)
{
	for (;;)
	{
		TimestampTz s = exp->next_interval_start;
		TimestampTz e = phx_interval_end(exp, s);

		if (GetCurrentTimestamp() < phx_interval_ready_at(exp, e) ||
			phx_in_exclude_window(exp, GetCurrentTimestamp()))
			return;
		if (run_interval(exp, model, s, e, "schedule", false, nonatomic, run_cxt, error) == RUN_FAILED)
		{
			*failed = true;
			return;
		}
		phx_export_advance(exp, e);
		if (nonatomic)
			SPI_commit();
		if (export_paused(exp))
		{
			*stop = true;
			return;
		}
	}
}

/*
 * The interval a backfill runs next: from its next_start to the next
 * boundary, but not past its end (a backfill queued on an earlier grid
 * ends on that grid's boundary).
 */
static TimestampTz
backfill_interval_end(PhxExport *exp, PhxBackfill *b)
{
	return Min(phx_interval_end(exp, b->next_start), b->end_at);
}

/*
 * When the export's next backfill interval may run (once it has ended
 * plus the delay: the part of a backfill that had not ended when it was
 * queued waits), 0 when no backfill is queued.
 */
TimestampTz
phx_backfill_ready_at(PhxExport *exp)
{
	PhxBackfill *b = phx_backfill_next(exp);

	if (b == NULL)
		return 0;
	if (b->next_start >= b->end_at)
		return b->next_start;	/* only its completion is left to record */
	return phx_interval_ready_at(exp, backfill_interval_end(exp, b));
}

/*
 * Runs the due work of one export, oldest first: the scheduled intervals
 * that ended at least `delay` ago (catching up after downtime or a pause),
 * the settle checks that are due, then queued backfill intervals that have
 * ended too.  A failure is recorded (retry with backoff, or pause) and
 * ends the export's turn; nothing is re-thrown, so a caller can go on with
 * other exports: false then.  An export another session is running is
 * skipped, one dropped meanwhile too.  The export is read again once its
 * lock is held, so a change made meanwhile (alter_export) is seen.
 */
bool
phx_run_due_export(PhxExport *exp, bool nonatomic)
{
	const PhxModel *model;
	RunLock		lock = {0};
	MemoryContext run_cxt;
	ErrorData  *error = NULL;
	PhxExport  *now;

	if (exp->paused || (exp->has_retry_at && exp->retry_at > GetCurrentTimestamp()) ||
		phx_in_exclude_window(exp, GetCurrentTimestamp()))
		return true;
	if (!lock_export(exp, &lock, true))
		return true;			/* another session is running it */
	now = phx_export_by_id(exp->export_id);
	if (now == NULL || now->paused)
	{
		unlock_export(&lock);
		return true;			/* dropped or paused meanwhile */
	}
	*exp = *now;
	run_cxt = AllocSetContextCreate(TopMemoryContext, "posthog_export run", ALLOCSET_DEFAULT_SIZES);
	PG_TRY();
	{
		bool		failed = false;
		bool		stop = false;

		model = run_model(exp, run_cxt);
		run_due_schedule(exp, model, nonatomic, run_cxt, &error, &failed, &stop);

		/* then the late rows of completed intervals, when a check is due (settle.c) */
		if (!failed && !stop)
			phx_settle_export(exp, nonatomic, run_cxt);

		/*
		 * Then backfills, one interval at a time; a scheduled interval that
		 * falls due meanwhile goes first, so a long backfill never holds up
		 * the schedule.
		 */
		while (!failed && !stop && !phx_in_exclude_window(exp, GetCurrentTimestamp()))
		{
			PhxBackfill *b;
			TimestampTz e;

			run_due_schedule(exp, model, nonatomic, run_cxt, &error, &failed, &stop);
			if (failed || stop || (b = phx_backfill_next(exp)) == NULL)
				break;
			e = backfill_interval_end(exp, b);
			/* its part that had not ended when it was queued waits until it has */
			if (b->next_start < b->end_at &&
				GetCurrentTimestamp() < phx_interval_ready_at(exp, e))
				break;
			if (b->next_start < b->end_at &&
				run_interval(exp, model, b->next_start, e, "backfill", false, nonatomic,
							 run_cxt, &error) == RUN_FAILED)
			{
				failed = true;
				break;
			}
			phx_backfill_advance(b, e);
			if (nonatomic)
				SPI_commit();
			if (export_paused(exp))
				break;
		}
		phx_export_record_result(exp, error);
		if (nonatomic)
			SPI_commit();
	}
	PG_FINALLY();
	{
		/* an error re-thrown in a transaction block left its progress behind */
		phx_progress_end();
		unlock_export(&lock);
		MemoryContextDelete(run_cxt);
	}
	PG_END_TRY();
	return error == NULL;
}

/*
 * Another role's export runs in a worker that commits its own work, which
 * cannot be part of the caller's transaction: refuse inside a block.
 */
void
phx_require_nonatomic(PhxExport *exp, bool nonatomic, const char *what)
{
	if (!nonatomic)
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("%s cannot run export \"%s\" of role \"%s\" inside a transaction block",
						what, exp->name, phx_role_name(exp->owner)),
				 errdetail("Another role's export runs in a session of its owner, which commits its own work."),
				 errhint("Call %s as a top-level statement, outside BEGIN ... COMMIT.", what)));
}

/* Whether exp has work to do now; saves starting a worker for nothing. */
bool
phx_export_is_due(PhxExport *exp)
{
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz due = phx_export_next_due(exp, now, phx_backfill_ready_at(exp));

	return due != 0 && due <= now;
}
