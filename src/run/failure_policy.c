/*-------------------------------------------------------------------------
 *
 * failure_policy.c
 *		What a failed run does to its export's schedule.
 *
 * A failure sets a retry time with exponential backoff and jitter.  An
 * error that retrying cannot fix, max_failures failures in a row, or a
 * backend that keeps dying in the same interval pauses the export, and
 * the pause says why.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "run/run.h"

int			phx_max_failures = 5;
int			phx_retry_interval = 60;	/* seconds, the first retry's backoff */

/*
 * Errors that will fail the same way on every retry: a bad key, a query
 * PostHog rejects, missing privileges or objects, a table that cannot take
 * the rows (PostHog never retries these either).  Everything else (network,
 * 5xx, timeouts, cancels, serialization failures) is retried.
 */
static bool
error_is_retryable(int sqlerrcode)
{
	switch (ERRCODE_TO_CATEGORY(sqlerrcode))
	{
		case ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION:	/* 28: bad API key */
		case ERRCODE_SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION: /* 42: privileges, missing objects */
		case ERRCODE_DATA_EXCEPTION:	/* 22: truncation, bad values */
		case ERRCODE_INTEGRITY_CONSTRAINT_VIOLATION:	/* 23 */
		case ERRCODE_FEATURE_NOT_SUPPORTED: /* 0A */
		case ERRCODE_PROGRAM_LIMIT_EXCEEDED:	/* 54 */
			return false;
		default:
			break;
	}
	switch (sqlerrcode)
	{
		case ERRCODE_FDW_ERROR: /* HTTP 400: PostHog rejected the query */
		case ERRCODE_DISK_FULL:
		case ERRCODE_READ_ONLY_SQL_TRANSACTION:
		case ERRCODE_UNDEFINED_OBJECT:
		case ERRCODE_WRONG_OBJECT_TYPE:
		case ERRCODE_INVALID_TABLE_DEFINITION:
		case ERRCODE_FDW_OPTION_NAME_NOT_FOUND:
			return false;
		default:
			return true;
	}
}

/* Backoff before retry n (1-based): retry_interval * 2^(n-1), capped at 1 hour, with jitter. */
static TimestampTz
retry_time(TimestampTz now, int failures)
{
	double		secs = (double) phx_retry_interval * (double) (1 << Min(Max(failures - 1, 0), 20));

	secs = Min(secs, 3600.0);
	secs = secs / 2 + pg_prng_double(&pg_global_prng_state) * secs / 2;
	return now + (int64) (secs * USECS_PER_SEC);
}

/*
 * What runs.error and paused_reason keep of an error: its message and, in
 * parentheses, its detail (for an error from PostHog, what PostHog said),
 * since a reader of the table has no server log at hand.
 */
char *
phx_error_summary(ErrorData *edata)
{
	if (edata->detail == NULL || edata->detail[0] == '\0')
		return edata->message;
	return psprintf("%s (%s)", edata->message, edata->detail);
}

/*
 * After a run: success clears the failure count; a failure schedules a
 * retry with backoff, or pauses the export when the error is not
 * retryable or it failed max_failures times in a row.
 */
void
phx_export_record_result(PhxExport *exp, ErrorData *edata)
{
	int			failures = edata ? exp->consecutive_failures + 1 : 0;
	char	   *unpause;

	if (edata == NULL && exp->consecutive_failures == 0 && !exp->has_retry_at)
		return;
	unpause = psprintf("SELECT posthog_export.unpause(%s);", quote_literal_cstr(exp->name));
	if (edata && !error_is_retryable(edata->sqlerrcode))
	{
		/* the paused_reason is what the status view shows */
		phx_export_set_failures(exp, failures, false, 0, true,
								psprintf("paused after an error that retrying cannot fix: %s",
										 phx_error_summary(edata)));
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("export \"%s\" paused after an error that retrying cannot fix: %s",
						exp->name, edata->message),
				 edata->detail ? errdetail_internal("%s", edata->detail) : 0,
				 errhint("Fix the cause, then: %s", unpause)));
	}
	else if (edata && failures >= phx_max_failures)
	{
		phx_export_set_failures(exp, failures, false, 0, true,
								psprintf("paused after %d failures in a row (posthog_export.max_failures); last error: %s",
										 failures, phx_error_summary(edata)));
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("export \"%s\" paused after %d failures in a row (posthog_export.max_failures)",
						exp->name, failures),
				 errdetail_internal("The last error was: %s", phx_error_summary(edata)),
				 errhint("Fix the cause, then: %s", unpause)));
	}
	else if (edata)
	{
		TimestampTz retry_at = retry_time(GetCurrentTimestamp(), failures);

		phx_export_set_failures(exp, failures, true, retry_at, false, NULL);
		/* what run_due's caller and the server log see of it */
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("export \"%s\" failed (%d in a row); it is retried from %s",
						exp->name, failures, phx_ts_str(retry_at)),
				 errdetail_internal("%s", phx_error_summary(edata)),
				 errhint("posthog_export.runs has the error of each interval; the export pauses after posthog_export.max_failures failures in a row.")));
	}
	else
		phx_export_set_failures(exp, 0, false, 0, false, NULL);
}

/*
 * A run whose backend keeps dying (a crash takes the whole cluster with
 * it) must not be started again and again: the export pauses, in the same
 * transaction that begins the run, and the run then fails with the reason.
 */
void
phx_pause_crashing_export(PhxExport *exp, PhxRun *run, TimestampTz start, TimestampTz end)
{
	phx_export_set_paused(exp, true,
						  psprintf("paused: the backend running interval [%s, %s) died %d times in a row (see the server log for \"terminated by signal\")",
								   phx_ts_str(start), phx_ts_str(end), run->crashes));
	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("export \"%s\" paused: the backend running interval [%s, %s) died %d times in a row",
					exp->name, phx_ts_str(start), phx_ts_str(end), run->crashes),
			 errhint("Find the cause in the server log, then: SELECT posthog_export.unpause(%s);",
					 quote_literal_cstr(exp->name))));
}
