/*-------------------------------------------------------------------------
 *
 * run_procedures.c
 *		The SQL entry points that run exports, and what the progress and
 *		status views show: CALL run_export(), CALL run_due(),
 *		progress_info(), next_run().
 *
 * Where a run happens is decided here.  In the export owner's own session
 * it runs in-process; from any other session (a superuser, pg_cron) it
 * runs in a background worker connected as the owner (worker/), so that
 * none of the owner's code runs with the caller's privileges.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "executor/executor.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

PG_FUNCTION_INFO_V1(posthog_export_run_export);
PG_FUNCTION_INFO_V1(posthog_export_run_due);
PG_FUNCTION_INFO_V1(posthog_export_progress_info);
PG_FUNCTION_INFO_V1(posthog_export_next_run);

/*
 * CALL posthog_export.run_export(name, start_at, end_at [, force]): the
 * range is checked as backfill() checks it (phx_check_range()), and only
 * intervals that have ended plus the export's delay may run.  A paused
 * export runs when asked, and says it is paused.
 */
Datum
posthog_export_run_export(PG_FUNCTION_ARGS)
{
	bool		nonatomic;
	char	   *name;
	TimestampTz start;
	TimestampTz end;
	bool		force;
	PhxExport  *exp;

	nonatomic = fcinfo->context && IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name, start_at and end_at must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	start = PG_GETARG_TIMESTAMPTZ(1);
	end = PG_GETARG_TIMESTAMPTZ(2);
	force = PG_ARGISNULL(3) ? false : PG_GETARG_BOOL(3);

	phx_check_database_encoding();
	if (SPI_connect_ext(nonatomic ? SPI_OPT_NONATOMIC : 0) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");

	exp = phx_export_lookup(name, false);
	phx_check_range(exp, start, end, true);
	phx_check_range_ended(exp, start, end, GetCurrentTimestamp());
	if (exp->paused)
		ereport(NOTICE,
				(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				 errmsg("export \"%s\" is paused; running [%s, %s) as asked",
						exp->name, phx_ts_str(start), phx_ts_str(end)),
				 errdetail("A pause stops the schedule and the backfills, not a run asked for by hand."),
				 errhint("posthog_export.unpause(%s) resumes its schedule.", quote_literal_cstr(exp->name))));
	if (phx_session_is_owner(exp->owner))
	{
		phx_run_range(exp, start, end, "manual", force, nonatomic);
		/* the intervals it completed have settle checks ahead: the scheduler plans them */
		phx_wake_scheduler();
	}
	else
	{
		phx_require_nonatomic(exp, nonatomic, "run_export");
		phx_run_in_worker(exp, PHX_RUN_RANGE, start, end, force, false);
	}

	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * CALL run_due([raise_on_failure]): runs the due work of every export the
 * caller may run: what pg_cron calls, or a DBA by hand when the library is
 * not preloaded.  Each export runs, one after the other, in a background
 * worker connected as its owner, so no export's code can reach the
 * caller's session or privileges, nor stop the others.  Each export's
 * failure is recorded and reported as a WARNING; the others still run.
 * With raise_on_failure, an error at the end names the exports that
 * failed, so that pg_cron records the job as failed (what the exports
 * committed stays).  Inside a transaction block (no commits possible) only
 * the caller's own exports run, in this session.
 */
Datum
posthog_export_run_due(PG_FUNCTION_ARGS)
{
	bool		nonatomic = fcinfo->context && IsA(fcinfo->context, CallContext) &&
		!castNode(CallContext, fcinfo->context)->atomic;
	bool		raise_on_failure = PG_NARGS() > 0 && !PG_ARGISNULL(0) && PG_GETARG_BOOL(0);
	List	   *exports;
	ListCell   *lc;
	StringInfoData failed;
	int			nfailed = 0;

	initStringInfo(&failed);
	phx_check_database_encoding();
	if (SPI_connect_ext(nonatomic ? SPI_OPT_NONATOMIC : 0) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	exports = phx_export_list();
	foreach(lc, exports)
	{
		PhxExport  *exp = lfirst(lc);
		bool		ok = true;

		CHECK_FOR_INTERRUPTS();
		if (nonatomic)
		{
			/* each in a session of its owner: isolated from us and each other */
			if (phx_export_is_due(exp))
				ok = phx_run_in_worker(exp, PHX_RUN_DUE, 0, 0, false, true);
		}
		else if (phx_session_is_owner(exp->owner))
			ok = phx_run_due_export(exp, false);
		else
			ereport(WARNING,
					(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
					 errmsg("skipped export \"%s\" of role \"%s\": inside a transaction block, run_due runs only the caller's own exports",
							exp->name, phx_role_name(exp->owner)),
					 errhint("Call run_due outside a transaction block.")));
		if (!ok)
			appendStringInfo(&failed, "%s%s", nfailed++ > 0 ? ", " : "",
							 quote_identifier(exp->name));
	}
	SPI_finish();
	if (raise_on_failure && nfailed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg_plural("%d export failed in run_due: %s",
							   "%d exports failed in run_due: %s",
							   nfailed, nfailed, failed.data),
				 errdetail("The other exports ran; what every export wrote before its failure is committed."),
				 errhint("The WARNINGs above say why; posthog_export.status and posthog_export.runs keep each failure.")));
	PG_RETURN_VOID();
}

/*
 * progress_info(): one row per run in flight in this database that the
 * caller may see (runs of exports whose owner it has the privileges of, or
 * all of them for pg_read_all_stats).  The view posthog_export.progress
 * joins it to the exports.
 */
Datum
posthog_export_progress_info(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	PhxProgress p;
	int			pos = 0;

	InitMaterializedSRF(fcinfo, 0);
	while (phx_progress_next(&pos, &p))
	{
		Datum		values[12];
		bool		nulls[12] = {0};

		/* as pg_stat_activity: the owner's members and pg_read_all_stats */
		if (!has_privs_of_role(GetUserId(), p.owner) &&
			!has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS))
			continue;
		values[0] = Int32GetDatum(p.pid);
		values[1] = Int32GetDatum(p.export_id);
		values[2] = TimestampTzGetDatum(p.interval_start);
		values[3] = TimestampTzGetDatum(p.interval_end);
		values[4] = TimestampTzGetDatum(p.started_at);
		values[5] = TimestampTzGetDatum(p.updated_at);
		values[6] = Int64GetDatum(p.rows);
		values[7] = Int64GetDatum(p.bytes + p.page_bytes);
		values[8] = Int32GetDatum(p.pages);
		values[9] = Int64GetDatum(p.page_bytes);
		values[10] = CStringGetTextDatum(p.waiting_for);
		nulls[10] = p.waiting_for[0] == '\0';
		values[11] = TimestampTzGetDatum(p.waiting_until);
		nulls[11] = nulls[10] || p.waiting_until == 0;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* A column of an exports row; *missing is set when it is null. */
static Datum
row_column(HeapTupleHeader row, const char *name, bool *missing)
{
	bool		isnull;
	Datum		d = GetAttributeByName(row, name, &isnull);

	*missing |= isnull;
	return d;
}

/*
 * next_run(exports row): when the export runs next, NULL when paused, as
 * the scheduler computes it (phx_export_next_due() in run/intervals.c:
 * the end of the next interval plus the delay, a settle check due, the
 * retry time, the exclude window), so that the status view and the
 * scheduler agree.  It reads nothing but its argument and the
 * transaction's start time (now()), whatever row a caller passes.
 */
Datum
posthog_export_next_run(PG_FUNCTION_ARGS)
{
	HeapTupleHeader row = PG_GETARG_HEAPTUPLEHEADER(0);
	PhxExport	exp = {0};
	bool		missing = false;
	bool		no_window = false;
	bool		no_retry = false;
	bool		no_settle = false;
	Datum		paused = row_column(row, "paused", &missing);
	Datum		interval = row_column(row, "interval", &missing);
	Datum		timezone = row_column(row, "timezone", &missing);
	Datum		start_offset = row_column(row, "start_offset", &missing);
	Datum		delay = row_column(row, "delay", &missing);
	Datum		next_start = row_column(row, "next_interval_start", &missing);
	Datum		retry_at = row_column(row, "retry_at", &no_retry);
	Datum		window_start = row_column(row, "exclude_window_start", &no_window);
	Datum		window_end = row_column(row, "exclude_window_end", &no_window);
	Datum		next_settle = row_column(row, "next_settle_at", &no_settle);

	if (missing || DatumGetBool(paused))
		PG_RETURN_NULL();
	exp.interval = *DatumGetIntervalP(interval);
	/* a row of the catalog always has one of these; a row made up by a caller may not */
	if (!phx_interval_is_supported(&exp.interval))
		PG_RETURN_NULL();
	exp.timezone = TextDatumGetCString(timezone);
	/* the grid: the next interval may end at its first boundary (after a change of grid) */
	exp.start_offset = *DatumGetIntervalP(start_offset);
	exp.delay = *DatumGetIntervalP(delay);
	exp.next_interval_start = DatumGetTimestampTz(next_start);
	/* a row of the catalog is always finite; a row made up by a caller may not be */
	if (TIMESTAMP_NOT_FINITE(exp.next_interval_start))
		PG_RETURN_TIMESTAMPTZ(exp.next_interval_start);
	exp.has_retry_at = !no_retry;
	if (exp.has_retry_at)
		exp.retry_at = DatumGetTimestampTz(retry_at);
	exp.has_next_settle_at = !no_settle;
	if (exp.has_next_settle_at)
		exp.next_settle_at = DatumGetTimestampTz(next_settle);
	exp.has_exclude_window = !no_window;
	if (exp.has_exclude_window)
	{
		exp.exclude_start = DatumGetTimeADT(window_start);
		exp.exclude_end = DatumGetTimeADT(window_end);
	}
	PG_RETURN_TIMESTAMPTZ(phx_export_next_due(&exp, GetCurrentTransactionStartTimestamp(), 0));
}
