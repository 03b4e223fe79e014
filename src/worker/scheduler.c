/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *		The scheduler: one background worker per database, started by the
 *		launcher.
 *
 * It marks runs left "running" by a crash, then sleeps on its latch until
 * the next export is due (or it is woken by create_export(),
 * alter_export(), unpause(), backfill(), a SIGHUP or a finished run), and
 * starts a run worker per due export (run_worker.c), at most
 * posthog_export.max_workers at once in the whole cluster.  The run worker
 * connects as the export's owner and runs its due intervals and backfills;
 * the export's advisory lock makes a collision with a manual CALL or
 * pg_cron impossible.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "worker/worker.h"

PGDLLEXPORT void phx_scheduler_main(Datum main_arg);

#define PHX_MAX_SLEEP_MS	60000

static void
scheduler_exit(int code, Datum arg)
{
	SpinLockAcquire(&phx_worker_shared->mutex);
	for (int i = 0; i < PHX_MAX_DATABASES; i++)
		if (phx_worker_shared->dbs[i].dboid == MyDatabaseId &&
			phx_worker_shared->dbs[i].scheduler_pid == MyProcPid)
		{
			phx_worker_shared->dbs[i].scheduler_pid = 0;
			phx_worker_shared->dbs[i].nrunning = 0;
		}
	SpinLockRelease(&phx_worker_shared->mutex);
}

typedef struct RunningExport
{
	int32		export_id;
	BackgroundWorkerHandle *handle;
} RunningExport;

typedef struct DueExport
{
	int32		export_id;
	Oid			owner;			/* the run worker connects as this role */
	TimestampTz due;
} DueExport;

/*
 * A run worker connects as the export's owner; where it could not (a role
 * without LOGIN before PostgreSQL 17, a dropped role), starting one would
 * fail again and again, so the export pauses and says why.  False then.
 */
static bool
pause_if_owner_cannot_run(PhxExport *exp)
{
	char	   *problem = phx_owner_session_problem(exp->owner);

	if (problem == NULL)
		return true;
	phx_export_set_paused(exp, true, psprintf("paused: %s", problem));
	ereport(WARNING,
			(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
			 errmsg("export \"%s\" paused: %s", exp->name, problem),
			 errhint("Give the owner LOGIN (ALTER ROLE ... LOGIN), then unpause the export.")));
	return false;
}

/*
 * Reads every unpaused export and when it is next due, into "cxt" (the
 * transaction's memory is gone after commit); false if the extension is gone.
 */
static bool
load_due(List **due_out, MemoryContext cxt)
{
	List	   *due = NIL;
	bool		installed;
	TimestampTz now = GetCurrentTimestamp();

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	installed = OidIsValid(get_extension_oid(PHX_EXTENSION_NAME, true));
	if (installed)
	{
		List	   *exports;
		ListCell   *lc;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		PushActiveSnapshot(GetTransactionSnapshot());
		exports = phx_export_list();
		foreach(lc, exports)
		{
			PhxExport  *exp = lfirst(lc);
			TimestampTz when = phx_export_next_due(exp, now, phx_backfill_ready_at(exp));
			DueExport  *d;

			if (when == 0)
				continue;
			if (when <= now && !pause_if_owner_cannot_run(exp))
				continue;
			{
				MemoryContext old = MemoryContextSwitchTo(cxt);

				d = palloc(sizeof(DueExport));
				d->export_id = exp->export_id;
				d->owner = exp->owner;
				d->due = when;
				due = lappend(due, d);
				MemoryContextSwitchTo(old);
			}
		}
		PopActiveSnapshot();
		SPI_finish();
	}
	CommitTransactionCommand();
	*due_out = due;
	return installed;
}

static bool
start_run_worker(DueExport *d, BackgroundWorkerHandle **handle)
{
	BackgroundWorker worker;
	PhxDatabaseSlot *slot;
	PhxExport	exp = {0};
	int			total = 0;
	bool		ok = false;

	/* claim a place among max_workers in the whole cluster */
	SpinLockAcquire(&phx_worker_shared->mutex);
	for (int i = 0; i < PHX_MAX_DATABASES; i++)
		total += phx_worker_shared->dbs[i].nrunning;
	slot = phx_database_slot(MyDatabaseId, false);
	if (slot && total < phx_max_workers)
	{
		slot->nrunning++;
		ok = true;
	}
	SpinLockRelease(&phx_worker_shared->mutex);
	if (!ok)
		return false;

	exp.export_id = d->export_id;
	exp.owner = d->owner;
	phx_run_worker_init(&worker, &exp, PHX_RUN_DUE, 0, 0, false, DSM_HANDLE_INVALID);
	if (!RegisterDynamicBackgroundWorker(&worker, handle))
	{
		SpinLockAcquire(&phx_worker_shared->mutex);
		slot->nrunning--;
		SpinLockRelease(&phx_worker_shared->mutex);
		return false;
	}
	return true;
}

/* The run workers this scheduler started that may still be running. */
#define PHX_MAX_RUNNING		64

typedef struct RunningSet
{
	RunningExport items[PHX_MAX_RUNNING];
	int			n;
	PhxDatabaseSlot *slot;		/* counts them for max_workers */
} RunningSet;

/*
 * At start, in a transaction of its own: runs a crash or restart left
 * "running" resume from their cursor.  False when the extension is not
 * installed in this database.
 */
static bool
mark_interrupted_runs(Oid dboid)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!OidIsValid(get_extension_oid(PHX_EXTENSION_NAME, true)))
	{
		CommitTransactionCommand();
		return false;
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	phx_mark_interrupted_runs();
	PopActiveSnapshot();
	SPI_finish();
	ereport(LOG, (errcode(ERRCODE_SUCCESSFUL_COMPLETION),
				  errmsg("posthog_export: scheduler started in database \"%s\"",
						 get_database_name(dboid))));
	CommitTransactionCommand();
	return true;
}

/* Forgets the run workers that finished, and gives their places back. */
static void
forget_finished_runs(RunningSet *set)
{
	for (int i = 0; i < set->n; i++)
	{
		pid_t		pid;

		if (GetBackgroundWorkerPid(set->items[i].handle, &pid) == BGWH_STOPPED)
		{
			pfree(set->items[i].handle);
			set->items[i] = set->items[--set->n];
			i--;
			SpinLockAcquire(&phx_worker_shared->mutex);
			set->slot->nrunning--;
			SpinLockRelease(&phx_worker_shared->mutex);
		}
	}
}

/*
 * Starts a run worker for each due export not running yet; returns how
 * long to sleep until the next one is due (at most sleep_ms).
 */
static long
start_due_runs(List *due, RunningSet *set, long sleep_ms)
{
	TimestampTz now = GetCurrentTimestamp();
	ListCell   *lc;

	foreach(lc, due)
	{
		DueExport  *d = lfirst(lc);
		bool		busy = false;

		for (int i = 0; i < set->n; i++)
			if (set->items[i].export_id == d->export_id)
				busy = true;
		if (busy)
			continue;			/* its run worker wakes us when done */
		if (d->due <= now)
		{
			if (set->n < PHX_MAX_RUNNING && start_run_worker(d, &set->items[set->n].handle))
				set->items[set->n++].export_id = d->export_id;
			else
				sleep_ms = Min(sleep_ms, 1000); /* no place yet */
		}
		else
			sleep_ms = Min(sleep_ms, (long) ((d->due - now) / 1000) + 1);
	}
	return sleep_ms;
}

void
phx_scheduler_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	RunningSet *running = palloc0(sizeof(RunningSet));
	PhxDatabaseSlot *slot;
	MemoryContext loop_cxt = AllocSetContextCreate(TopMemoryContext, "posthog_export scheduler",
												   ALLOCSET_DEFAULT_SIZES);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("posthog_export scheduler");

	SpinLockAcquire(&phx_worker_shared->mutex);
	slot = phx_database_slot(dboid, true);
	if (slot)
	{
		slot->scheduler_pid = MyProcPid;
		slot->nrunning = 0;
	}
	SpinLockRelease(&phx_worker_shared->mutex);
	if (slot == NULL)
		proc_exit(0);
	running->slot = slot;
	before_shmem_exit(scheduler_exit, (Datum) 0);

	if (!mark_interrupted_runs(dboid))
		proc_exit(0);			/* the launcher looks again later */

	for (;;)
	{
		List	   *due = NIL;
		long		sleep_ms = PHX_MAX_SLEEP_MS;

		CHECK_FOR_INTERRUPTS();
		phx_reload_config_if_asked();
		forget_finished_runs(running);

		MemoryContextReset(loop_cxt);
		if (phx_scheduler_enabled)
		{
			if (!load_due(&due, loop_cxt))
				proc_exit(0);	/* the extension was dropped */
			sleep_ms = start_due_runs(due, running, sleep_ms);
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(sleep_ms, 10), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

