/*-------------------------------------------------------------------------
 *
 * run.h
 *		The run layer: exporting intervals, exactly once.
 *
 *   intervals.c        when an export's intervals start and end, and when
 *                      its work is due
 *   failure_policy.c   what a failure does: retry with backoff, or pause
 *   due_work.c         a range of intervals, or an export's due work,
 *                      under the export's lock; fetch -> convert -> write
 *                      -> progress -> commit, page by page
 *   progress.c         live progress of the runs in flight (shared memory)
 *   settle.c           completed events intervals checked again for rows
 *                      that became visible late, and those written once
 *
 *-------------------------------------------------------------------------
 */
#ifndef PHX_RUN_H
#define PHX_RUN_H

#include "store/store.h"

/* ------------------------------------------------------------------------
 * intervals.c
 * ------------------------------------------------------------------------
 */
extern TimestampTz phx_interval_floor(const PhxExport *exp, TimestampTz ts);
extern TimestampTz phx_interval_next(const PhxExport *exp, TimestampTz start);
extern TimestampTz phx_interval_end(const PhxExport *exp, TimestampTz start);
extern TimestampTz phx_interval_ready_at(const PhxExport *exp, TimestampTz end);
extern void phx_check_range(const PhxExport *exp, TimestampTz start, TimestampTz end,
							bool end_on_grid);
extern void phx_check_range_ended(const PhxExport *exp, TimestampTz start, TimestampTz end,
								  TimestampTz now);
extern bool phx_interval_is_supported(const Interval *iv);
extern int64 phx_interval_usecs(const Interval *iv);
extern bool phx_in_exclude_window(const PhxExport *exp, TimestampTz now);
extern TimestampTz phx_export_next_due(const PhxExport *exp, TimestampTz now,
									   TimestampTz backfill_ready);
extern char *phx_ts_str(TimestampTz ts);

/* ------------------------------------------------------------------------
 * failure_policy.c
 * ------------------------------------------------------------------------
 */
extern int	phx_max_failures;
extern int	phx_retry_interval;

/* Backends that may die running one interval before its export pauses. */
#define PHX_MAX_CRASHES		2

extern char *phx_error_summary(ErrorData *edata);
extern void phx_export_record_result(PhxExport *exp, ErrorData *edata);
extern void phx_pause_crashing_export(PhxExport *exp, PhxRun *run, TimestampTz start,
									  TimestampTz end);

/* ------------------------------------------------------------------------
 * due_work.c
 * ------------------------------------------------------------------------
 */
extern bool phx_export_is_due(PhxExport *exp);
extern void phx_require_nonatomic(PhxExport *exp, bool nonatomic, const char *what);
extern void phx_run_range(PhxExport *exp, TimestampTz start, TimestampTz end,
						  const char *trigger, bool force, bool nonatomic);
extern bool phx_run_due_export(PhxExport *exp, bool nonatomic);
extern TimestampTz phx_backfill_ready_at(PhxExport *exp);
extern int	phx_export_lock_holder(PhxExport *exp);
extern void phx_lock_export_for_change(PhxExport *exp, const char *what);
extern void phx_check_range_on_grid(PhxExport *exp, TimestampTz start, TimestampTz end);

/* ------------------------------------------------------------------------
 * settle.c
 * ------------------------------------------------------------------------
 */
extern void phx_settle_export(PhxExport *exp, bool nonatomic, MemoryContext run_cxt);

/* ------------------------------------------------------------------------
 * progress.c
 * ------------------------------------------------------------------------
 */
/* A copy of one run's live progress. */
typedef struct PhxProgress
{
	pid_t		pid;
	int32		export_id;
	Oid			owner;
	TimestampTz interval_start;
	TimestampTz interval_end;
	TimestampTz started_at;
	TimestampTz updated_at;
	int64		rows;			/* committed before this call + pages since */
	int64		bytes;
	int32		pages;
	int64		page_bytes;		/* received so far for the page in flight */
	char		waiting_for[48];	/* what a request waits for in the
									 * request budget; "" when not waiting */
	TimestampTz waiting_until;	/* ... until when, 0 when unknown */
} PhxProgress;

extern Size phx_progress_shmem_size(void);
extern void phx_progress_shmem_init(void);
extern void phx_progress_begin(PhxExport *exp, TimestampTz start, TimestampTz end, PhxRun *run);
extern void phx_progress_page(int64 rows, int64 bytes);
extern void phx_progress_end(void);
extern int64 phx_progress_take_waited(void);
extern bool phx_progress_next(int *pos, PhxProgress *out);

#endif							/* PHX_RUN_H */
