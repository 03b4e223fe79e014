/*-------------------------------------------------------------------------
 *
 * settle.c
 *		The settle pass: completed events intervals counted again at the
 *		source, and the rows that became visible after their interval was
 *		exported written, each once.
 *
 * PostHog's events carry no insertion time: an interval holds the events
 * *created* in it, and created_at is stamped before a row reaches
 * ClickHouse, so a row can become visible after its interval was exported
 * (seconds usually, hours during an incident).  For settle_window after an
 * interval completed, every settle_every, the pass counts the interval's
 * rows at the source again, up to SETTLE_MAX_INTERVALS intervals with one
 * request (the model's count_intervals: the same rows as the export query).
 * Where the count grew beyond what was seen last (runs.source_rows, or the
 * rows the run received), the interval is read again with the model's
 * pager, and the destination takes only what it lacks: a merge skips the
 * rows it holds unchanged, an append writes only rows whose uuid is not in
 * the table.  The first check at or after finished_at + settle_window is
 * the last one: what it finds is not written but reported (a WARNING, and
 * runs.late_missed), and the interval is never checked again.  A pass
 * takes along the checks due within settle_every, so the intervals of an
 * export, each completed at its own time, share one count request per
 * settle_every (store/runs.c).
 *
 * Exactly once: each interval's writes and its runs row (settled_at,
 * source_rows, late_rows) commit together, one interval per transaction in
 * non-atomic mode.  A failure of the pass (network, PostHog, the table)
 * rolls back the interval in hand, is logged and reported as a WARNING,
 * and the pass is tried again settle_every later; it is not a failure of
 * the export (no retry backoff, never a pause), as the intervals
 * themselves were exported.  Inside a transaction block (run_due) an error
 * is raised to the caller, as a failed interval's is.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "run/run.h"

/* Intervals one pass checks (and one count request covers). */
#define SETTLE_MAX_INTERVALS 100

/* What the check of one interval found, for the messages after its commit. */
typedef struct IntervalResult
{
	int64		found;			/* rows beyond what was seen last */
	int64		written;		/* in the window: the rows the table lacked */
	int64		missed;			/* at the report check: not written */
} IntervalResult;

/* One settle pass of one export. */
typedef struct SettlePass
{
	PhxExport  *exp;			/* as the catalog says at the pass's start */
	const PhxModel *model;
	bool		nonatomic;		/* commits after each interval */
	MemoryContext cxt;			/* lives across those commits */
	MemoryContext errcxt;		/* the caller's: the error outlives cxt */
	TimestampTz now;			/* the time of the checks */
	PhxServerConfig *cfg;
	int			n;
	PhxSettleRun **runs;		/* the intervals checked, oldest first */
	int64	   *counts;			/* what the source counts for each */
	PhxDestination *dest;		/* open while an interval is read again */
	ErrorData  *error;			/* why the pass stopped */
	IntervalResult last;		/* of the interval checked last */
	/* for the LOG line */
	int64		found;
	int64		written;
	int64		missed;
	int			pages;
} SettlePass;

typedef void (*SettleStep) (SettlePass *sp, int i);

/*
 * Runs step(sp, i) and, in non-atomic mode, commits what it did; an error
 * rolls it back and is kept in sp->error: false.  In atomic mode an error
 * propagates.
 */
static bool
settle_step(SettlePass *sp, SettleStep step, int i)
{
	ResourceOwner oldowner = CurrentResourceOwner;
	volatile bool ok = true;

	if (!sp->nonatomic)
	{
		step(sp, i);
		return true;
	}
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(sp->cxt);
	PG_TRY();
	{
		step(sp, i);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(sp->cxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(sp->errcxt);
		sp->error = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(sp->cxt);
		CurrentResourceOwner = oldowner;
		if (sp->dest)
			phx_destination_close(sp->dest);
		sp->dest = NULL;
		ok = false;
	}
	PG_END_TRY();
	if (ok)
	{
		SPI_commit();
		MemoryContextSwitchTo(sp->cxt);
	}
	return ok;
}

/* Step 1: the server's settings, and the count of every interval, one request. */
static void
count_step(SettlePass *sp, int unused)
{
	PhxRoleSwitch sw;
	TimestampTz *starts = palloc(sizeof(TimestampTz) * sp->n);
	TimestampTz *ends = palloc(sizeof(TimestampTz) * sp->n);

	phx_become(sp->exp->owner, &sw);
	sp->cfg = phx_get_server_config(sp->exp->server_name, sp->exp->owner);
	phx_restore(&sw);
	for (int i = 0; i < sp->n; i++)
	{
		starts[i] = sp->runs[i]->start;
		ends[i] = sp->runs[i]->end;
	}
	sp->model->count_intervals(sp->exp, sp->cfg, sp->n, starts, ends, sp->counts);
}

/*
 * Reads interval sr again, every page, and writes what the destination
 * lacks, as the export's owner; returns the rows written.
 */
static int64
read_again(SettlePass *sp, PhxSettleRun *sr)
{
	PhxExport  *exp = sp->exp;
	MemoryContext cxt = AllocSetContextCreate(sp->cxt, "posthog_export settle", ALLOCSET_DEFAULT_SIZES);
	MemoryContext page_cxt = AllocSetContextCreate(cxt, "posthog_export settle page", ALLOCSET_DEFAULT_SIZES);
	MemoryContext oldcxt = MemoryContextSwitchTo(cxt);
	PhxRoleSwitch sw;
	void	   *state;
	int64		written = 0;
	bool		last = false;
	/* with the owner's custom columns, as the table has them now */
	const PhxModel *model = phx_shaped_model(sp->model, exp);

	phx_become(exp->owner, &sw);
	sp->dest = phx_destination_open_missing(exp, model);
	phx_restore(&sw);
	state = model->begin(exp, sp->cfg, sr->start, sr->end, NIL);
	while (!last)
	{
		PhxModelPage *page;

		MemoryContextReset(page_cxt);
		MemoryContextSwitchTo(page_cxt);
		page = sp->model->next_page(state);
		last = !page->has_more;
		phx_become(exp->owner, &sw);
		written += phx_destination_insert(sp->dest, page);
		if (last)
			written += phx_destination_finish(sp->dest);
		phx_restore(&sw);
		sp->pages++;
		MemoryContextSwitchTo(cxt);
	}
	phx_destination_close(sp->dest);
	sp->dest = NULL;
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
	return written;
}

/*
 * Step 2, per interval: compares the source's count with what was seen
 * last; in the window, a count that grew has the interval read again and
 * what the table lacks written; at the report check it is only counted.
 * The runs row records the check with the rows written.
 */
static void
interval_step(SettlePass *sp, int i)
{
	PhxSettleRun *sr = sp->runs[i];
	int64		remote = sp->counts[i];
	IntervalResult res = {0};

	if (remote > sr->baseline)
		res.found = remote - sr->baseline;
	if (res.found > 0 && !sr->report)
		res.written = read_again(sp, sr);
	else
		res.missed = res.found;
	phx_settle_record(sr, sp->now, remote, res.written, res.missed);
	sp->last = res;
}

/* The WARNING of rows found after settle_window, which were not written. */
static void
report_missed(SettlePass *sp, PhxSettleRun *sr, int64 missed)
{
	PhxExport  *exp = sp->exp;

	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg_plural("export \"%s\": %lld event of interval [%s, %s) became visible later than settle_window (%s); it was not exported",
						   "export \"%s\": %lld events of interval [%s, %s) became visible later than settle_window (%s); they were not exported",
						   missed, exp->name, (long long) missed, phx_ts_str(sr->start), phx_ts_str(sr->end),
						   DatumGetCString(DirectFunctionCall1(interval_out,
															   IntervalPGetDatum(&exp->settle_window)))),
			 errdetail("The interval was exported at %s; PostHog counts %lld rows in it now, %lld more than when it was last seen.",
					   phx_ts_str(sr->finished_at), (long long) (sr->baseline + missed), (long long) missed),
			 errhint("Raise settle_window with posthog_export.alter_export() to catch such rows, or, in merge mode, export the interval again: CALL posthog_export.run_export(%s, %s, %s, force => true);",
					 quote_literal_cstr(exp->name), quote_literal_cstr(phx_ts_str(sr->start)),
					 quote_literal_cstr(phx_ts_str(sr->end)))));
}

/*
 * A failed pass: said, and tried again settle_every later.  A cancel (a
 * waiting caller cancelled, pg_cancel_backend) is raised again once that
 * is recorded, so that it ends the export's turn as it would a run's.
 */
static void
pass_failed(SettlePass *sp, int checked)
{
	PhxExport  *exp = sp->exp;
	TimestampTz retry = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
																TimestampTzGetDatum(GetCurrentTimestamp()),
																IntervalPGetDatum(&exp->settle_every)));

	ereport(LOG,
			(errcode(sp->error->sqlerrcode),
			 errmsg("posthog_export: export \"%s\" settle pass failed after %d of %d intervals",
					exp->name, checked, sp->n),
			 errdetail_internal("%s", phx_error_summary(sp->error))));
	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("export \"%s\": the check for late rows failed; it is tried again at %s",
					exp->name, phx_ts_str(retry)),
			 errdetail_internal("%s", phx_error_summary(sp->error)),
			 errhint("The intervals already checked keep their result; nothing was written twice.")));
	(void) phx_settle_reschedule(exp, retry);
	if (sp->nonatomic)
	{
		SPI_commit();
		MemoryContextSwitchTo(sp->cxt);
	}
	if (sp->error->sqlerrcode == ERRCODE_QUERY_CANCELED)
	{
		MemoryContextSwitchTo(sp->errcxt);
		MemoryContextDelete(sp->cxt);
		ReThrowError(sp->error);
	}
}

/*
 * The settle pass of exp, when one is due (next_settle_at): under the
 * export's lock, in run_cxt (which lives across commits).  Never throws
 * in non-atomic mode; see the top of the file.
 */
void
phx_settle_export(PhxExport *exp, bool nonatomic, MemoryContext run_cxt)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	MemoryContext cxt = AllocSetContextCreate(run_cxt, "posthog_export settle pass", ALLOCSET_DEFAULT_SIZES);
	SettlePass	sp = {0};
	List	   *due;
	int			checked = 0;

	MemoryContextSwitchTo(cxt);
	sp.cxt = cxt;
	sp.errcxt = oldcxt;
	sp.nonatomic = nonatomic;
	sp.now = GetCurrentTimestamp();
	sp.exp = phx_export_by_id(exp->export_id);
	if (sp.exp == NULL || sp.exp->paused || !sp.exp->has_next_settle_at ||
		sp.exp->next_settle_at > sp.now || phx_in_exclude_window(sp.exp, sp.now))
	{
		MemoryContextSwitchTo(oldcxt);
		MemoryContextDelete(cxt);
		return;
	}
	/* a check keeps exported data right: its requests go before backfills' */
	phx_request_priority = PHX_PRIORITY_SCHEDULED;
	sp.model = phx_model_by_name(sp.exp->model);
	due = sp.model->count_intervals ? phx_settle_due_runs(sp.exp, sp.now, SETTLE_MAX_INTERVALS) : NIL;
	sp.n = list_length(due);
	if (sp.n > 0)
	{
		sp.runs = palloc(sizeof(PhxSettleRun *) * sp.n);
		sp.counts = palloc0(sizeof(int64) * sp.n);
		for (int i = 0; i < sp.n; i++)
			sp.runs[i] = list_nth(due, i);

		if (!settle_step(&sp, count_step, 0))
		{
			pass_failed(&sp, 0);
			MemoryContextSwitchTo(oldcxt);
			MemoryContextDelete(cxt);
			return;
		}
		for (checked = 0; checked < sp.n; checked++)
		{
			PhxSettleRun *sr = sp.runs[checked];

			CHECK_FOR_INTERRUPTS();
			if (!settle_step(&sp, interval_step, checked))
			{
				pass_failed(&sp, checked);
				MemoryContextSwitchTo(oldcxt);
				MemoryContextDelete(cxt);
				return;
			}
			sp.found += sp.last.found;
			sp.written += sp.last.written;
			sp.missed += sp.last.missed;
			if (sp.last.missed > 0)
				report_missed(&sp, sr, sp.last.missed);
			else if (sp.last.found > 0)
				ereport(LOG,
						(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
						 errmsg("posthog_export: export \"%s\" interval [%s, %s): %lld late rows found, %lld written",
								sp.exp->name, phx_ts_str(sr->start), phx_ts_str(sr->end),
								(long long) sp.last.found, (long long) sp.last.written)));
		}
	}

	/* the next pass: the earliest check still pending (now, if more are due) */
	(void) phx_settle_reschedule(sp.exp, sp.now);
	if (nonatomic)
	{
		SPI_commit();
		MemoryContextSwitchTo(cxt);
	}
	if (sp.n > 0)
		ereport(LOG,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("posthog_export: export \"%s\" settle pass: %d intervals checked (1 count request, %d pages read again), %lld late rows found, %lld written, %lld missed",
						sp.exp->name, sp.n, sp.pages, (long long) sp.found,
						(long long) sp.written, (long long) sp.missed)));
	MemoryContextSwitchTo(oldcxt);
	MemoryContextDelete(cxt);
}
