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
 * backfill intervals.  What a failure does to the schedule is
 * failure_policy.c's.
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
 * (plus the delay), or now with a backfill queued, or when a settle check
 * is due (next_settle_at) if that is earlier, not before its retry
 * time, and, when that (or now, if later) falls in the exclude window, at
 * the window's end.  0 when paused.  The scheduler sleeps until then, and
 * the status view shows it as next_run (api/run_procedures.c), so both
 * say the same.
 */
TimestampTz
phx_export_next_due(const PhxExport *exp, TimestampTz now, bool has_backfill)
{
	TimestampTz due;
	TimestampTz from;

	if (exp->paused)
		return 0;
	due = phx_interval_next(exp, exp->next_interval_start) +
		phx_interval_usecs(&exp->delay);
	if (has_backfill)
		due = now;
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
