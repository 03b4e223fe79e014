/*-------------------------------------------------------------------------
 *
 * intervals.c
 *		When an export's intervals start and end, and when its work is due.
 *
 * Sub-daily intervals (5 minutes, 15 minutes, an hour) sit on a UTC grid.
 * Daily and weekly intervals start at local midnight (Monday for weeks)
 * plus the export's start_offset, in the export's timezone, so a daily
 * export at 02:00 Europe/Paris stays at 02:00 across DST changes (and its
 * interval is 23 or 25 hours long on those days).
 *
 * Due work of an export, oldest first: every scheduled interval that ended
 * at least `delay` ago (catching up after downtime or a pause, none
 * skipped), the settle checks due (next_settle_at), then the queued
 * backfill intervals, each once it too has ended plus the delay.  No
 * interval ever runs before that, whoever asks (phx_check_range_ended()).
 * After alter_export() changed the grid, the next interval starts where
 * the old grid stopped and ends at the first boundary of the new one
 * (phx_interval_end()), so every instant is exported exactly once.  What a
 * failure does to the schedule is failure_policy.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/fmgrprotos.h"
#include "utils/timestamp.h"

#include "run/run.h"

#define USECS_PER_WEEK	(7 * USECS_PER_DAY)

int64
phx_interval_usecs(const Interval *iv)
{
	return iv->time + (int64) iv->day * USECS_PER_DAY;
}

/* 5 minutes, 15 minutes, an hour, a day or a week: PostHog's intervals. */
bool
phx_interval_is_supported(const Interval *iv)
{
	int64		us = phx_interval_usecs(iv);

	if (iv->month != 0)
		return false;
	return us == 5 * USECS_PER_MINUTE || us == 15 * USECS_PER_MINUTE ||
		us == USECS_PER_HOUR || us == USECS_PER_DAY || us == USECS_PER_WEEK;
}

static bool
is_calendar_interval(const PhxExport *exp)
{
	return phx_interval_usecs(&exp->interval) >= USECS_PER_DAY;
}

/* Start of the interval that contains ts. */
TimestampTz
phx_interval_floor(const PhxExport *exp, TimestampTz ts)
{
	int64		len = phx_interval_usecs(&exp->interval);

	if (!is_calendar_interval(exp))
	{
		int64		q = ts / len;

		if (ts % len < 0)
			q--;
		return q * len;
	}
	else
	{
		Datum		tz = CStringGetTextDatum(exp->timezone);
		Datum		local;

		local = DirectFunctionCall2(timestamptz_zone, tz, TimestampTzGetDatum(ts));
		local = DirectFunctionCall2(timestamp_mi_interval, local, IntervalPGetDatum(&exp->start_offset));
		local = DirectFunctionCall2(timestamp_trunc,
									CStringGetTextDatum(len == USECS_PER_WEEK ? "week" : "day"), local);
		local = DirectFunctionCall2(timestamp_pl_interval, local, IntervalPGetDatum(&exp->start_offset));
		return DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, tz, local));
	}
}

/* Start of the interval after the one that starts at start. */
TimestampTz
phx_interval_next(const PhxExport *exp, TimestampTz start)
{
	if (!is_calendar_interval(exp))
		return start + phx_interval_usecs(&exp->interval);
	else
	{
		Datum		tz = CStringGetTextDatum(exp->timezone);
		Datum		local = DirectFunctionCall2(timestamptz_zone, tz, TimestampTzGetDatum(start));

		/* local calendar arithmetic: a day is a day, whatever DST does */
		local = DirectFunctionCall2(timestamp_pl_interval, local, IntervalPGetDatum(&exp->interval));
		return DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone, tz, local));
	}
}

/*
 * End of the interval that starts at start: the next boundary after it.
 * For a start on the grid that is phx_interval_next(); a start off the
 * grid (where an earlier grid stopped, after alter_export() changed it)
 * gives a shorter interval up to the first boundary of the current grid.
 */
TimestampTz
phx_interval_end(const PhxExport *exp, TimestampTz start)
{
	return phx_interval_next(exp, phx_interval_floor(exp, start));
}

/* When an interval ending at end may run: once it has ended plus the export's delay. */
TimestampTz
phx_interval_ready_at(const PhxExport *exp, TimestampTz end)
{
	return end + phx_interval_usecs(&exp->delay);
}

static char *
interval_str(const Interval *iv)
{
	return DatumGetCString(DirectFunctionCall1(interval_out, IntervalPGetDatum(iv)));
}

static void
check_boundary(const PhxExport *exp, TimestampTz ts, const char *argname)
{
	TimestampTz floor = phx_interval_floor(exp, ts);

	if (floor != ts)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s %s is not on an interval boundary of export \"%s\"",
						argname, phx_ts_str(ts), exp->name),
				 errdetail("The export runs in intervals of %s; the nearest boundaries are %s and %s.",
						   interval_str(&exp->interval),
						   phx_ts_str(floor), phx_ts_str(phx_interval_next(exp, floor)))));
}

/*
 * The checks of a range that run_export() and backfill() share, with the
 * same messages: both bounds finite and on the export's grid, start before
 * end.  "end_on_grid" false: end is next_interval_start (backfill()'s
 * default), which after a change of the grid may lie off it.
 */
void
phx_check_range(const PhxExport *exp, TimestampTz start, TimestampTz end, bool end_on_grid)
{
	if (TIMESTAMP_NOT_FINITE(start) || TIMESTAMP_NOT_FINITE(end))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("start_at and end_at must be finite")));
	if (start >= end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("start_at must be before end_at"),
				 errdetail("The range [%s, %s) is empty.", phx_ts_str(start), phx_ts_str(end))));
	check_boundary(exp, start, "start_at");
	if (end_on_grid)
		check_boundary(exp, end, "end_at");
}

/*
 * An interval runs only once it has ended plus the export's delay: run
 * earlier, it would miss the rows still to come and be marked completed,
 * and nothing would ever export them.  Refuses [start, end) when its last
 * interval is not ready at now, naming the first interval that is not
 * and when it can run.
 */
void
phx_check_range_ended(const PhxExport *exp, TimestampTz start, TimestampTz end, TimestampTz now)
{
	TimestampTz first;
	TimestampTz first_end;

	if (phx_interval_ready_at(exp, end) <= now)
		return;
	/* the first interval not ready: the one containing now - delay, or start */
	first = Max(start, phx_interval_floor(exp, now - phx_interval_usecs(&exp->delay)));
	first_end = phx_interval_end(exp, first);
	ereport(ERROR,
			(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
			 first_end > now ?
			 errmsg("interval [%s, %s) of export \"%s\" has not ended yet",
					phx_ts_str(first), phx_ts_str(first_end), exp->name) :
			 errmsg("interval [%s, %s) of export \"%s\" ended less than the export's delay ago",
					phx_ts_str(first), phx_ts_str(first_end), exp->name),
			 errdetail("An interval runs once it has ended plus the export's delay (%s), so that it holds all its rows.",
					   interval_str(&exp->delay)),
			 first > start ?
			 errhint("It can run from %s. Give end_at %s to export what is ready now.",
					 phx_ts_str(phx_interval_ready_at(exp, first_end)), phx_ts_str(first)) :
			 errhint("It can run from %s.",
					 phx_ts_str(phx_interval_ready_at(exp, first_end)))));
}

/* The local time of ts in the export's timezone, and its time of day. */
static Timestamp
local_time(const PhxExport *exp, TimestampTz ts, TimeADT *time_of_day)
{
	Timestamp	local = DatumGetTimestamp(DirectFunctionCall2(timestamptz_zone,
															  CStringGetTextDatum(exp->timezone),
															  TimestampTzGetDatum(ts)));
	TimeADT		t = local - (local / USECS_PER_DAY) * USECS_PER_DAY;

	if (t < 0)
		t += USECS_PER_DAY;
	*time_of_day = t;
	return local;
}

/* Whether ts falls in the export's exclude window (local time, may wrap midnight). */
bool
phx_in_exclude_window(const PhxExport *exp, TimestampTz ts)
{
	TimeADT		t;

	if (!exp->has_exclude_window)
		return false;
	(void) local_time(exp, ts, &t);
	if (exp->exclude_start <= exp->exclude_end)
		return t >= exp->exclude_start && t < exp->exclude_end;
	return t >= exp->exclude_start || t < exp->exclude_end;
}

/*
 * The end of the exclude window that contains ts: the window's end time
 * on ts's local date, or on the next day when ts is already past it (a
 * window that wraps midnight).
 */
static TimestampTz
exclude_window_end(const PhxExport *exp, TimestampTz ts)
{
	TimeADT		t;
	Timestamp	local = local_time(exp, ts, &t);
	Timestamp	end = local - t + exp->exclude_end;

	if (t >= exp->exclude_end)
		end += USECS_PER_DAY;
	return DatumGetTimestampTz(DirectFunctionCall2(timestamp_zone,
												   CStringGetTextDatum(exp->timezone),
												   TimestampGetDatum(end)));
}

/*
 * When the export next runs: when its next scheduled interval is over
 * (plus the delay), or when its next backfill interval is (backfill_ready,
 * 0 for none), or when a settle check
 * is due (next_settle_at) if that is earlier, not before its retry
 * time, and, when that (or now, if later) falls in the exclude window, at
 * the window's end.  0 when paused.  The scheduler sleeps until then, and
 * the status view shows it as next_run (api/run_procedures.c), so both
 * say the same.
 */
TimestampTz
phx_export_next_due(const PhxExport *exp, TimestampTz now, TimestampTz backfill_ready)
{
	TimestampTz due;
	TimestampTz from;

	if (exp->paused)
		return 0;
	due = phx_interval_ready_at(exp, phx_interval_end(exp, exp->next_interval_start));
	if (backfill_ready != 0 && backfill_ready < due)
		due = backfill_ready;
	if (exp->has_next_settle_at && exp->next_settle_at < due)
		due = exp->next_settle_at;
	if (exp->has_retry_at && exp->retry_at > due)
		due = exp->retry_at;
	from = Max(due, now);
	if (!TIMESTAMP_NOT_FINITE(from) && phx_in_exclude_window(exp, from))
		due = exclude_window_end(exp, from);
	return due;
}

/* timestamptz_to_str() returns a static buffer; two in one message need copies */
char *
phx_ts_str(TimestampTz ts)
{
	return pstrdup(timestamptz_to_str(ts));
}
