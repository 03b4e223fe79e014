/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *		The background workers that run exports by themselves, their shared
 *		memory, and the live progress of runs in flight.
 *
 * Three kinds of worker, in the spirit of pg_cron's launcher and
 * worker_spi:
 *
 *   launcher   one per cluster (shared_preload_libraries).  Lists the
 *              databases (or those in posthog_export.databases) and keeps a
 *              scheduler running in each; does nothing on a standby.
 *   scheduler  one per database.  Exits quietly where the extension is not
 *              installed (the launcher looks again a minute later, or at
 *              once when create_export() asks).  Otherwise it marks runs
 *              left "running" by a crash, then sleeps on its latch until the
 *              next export is due (or it is woken by create_export(),
 *              alter_export(), unpause(), backfill(), a SIGHUP or a finished
 *              run), and starts a run worker per due export, at most
 *              posthog_export.max_workers at once in the whole cluster.
 *   run        one per due export, connected as the export's owner
 *              (owner_session.c): runs its due intervals and backfills
 *              (phx_run_due_export), then exits.  The export's advisory
 *              lock makes a collision with a manual CALL or pg_cron
 *              impossible.
 *
 * Shared memory holds no pointers: database slots (oid, scheduler pid,
 * recheck time, running count) and one progress slot per backend, read by
 * posthog_export.progress like pg_stat_progress_copy.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_database.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "posthog_export.h"

PGDLLEXPORT void phx_launcher_main(Datum main_arg);
PGDLLEXPORT void phx_scheduler_main(Datum main_arg);

PG_FUNCTION_INFO_V1(posthog_export_progress_info);

#define PHX_MAX_DATABASES	64
#define PHX_RECHECK_SECS	60		/* a database without the extension */
#define PHX_MAX_SLEEP_MS	60000

#if PG_VERSION_NUM >= 170000
#define PHX_MY_SLOT		(MyProcNumber)
#else
#define PHX_MY_SLOT		(MyBackendId - 1)
#endif

typedef struct PhxDatabaseSlot
{
	Oid			dboid;
	pid_t		scheduler_pid;
	TimestampTz recheck_after;
	int			nrunning;		/* run workers its scheduler has started */
} PhxDatabaseSlot;

typedef struct PhxProgressSlot
{
	slock_t		mutex;
	pid_t		pid;			/* 0: free */
	Oid			dboid;
	int32		export_id;
	Oid			owner;			/* who may see the slot */
	TimestampTz interval_start;
	TimestampTz interval_end;
	TimestampTz started_at;
	TimestampTz updated_at;
	int64		rows;			/* committed before this call + pages since */
	int64		bytes;
	int32		pages;
	int64		page_bytes;		/* received so far for the page in flight */
} PhxProgressSlot;

typedef struct PhxShared
{
	slock_t		mutex;
	pid_t		launcher_pid;
	PhxDatabaseSlot dbs[PHX_MAX_DATABASES];
	int			nprogress;
	PhxProgressSlot progress[FLEXIBLE_ARRAY_MEMBER];
} PhxShared;

static PhxShared *phx_shared = NULL;
static PhxProgressSlot *my_progress = NULL;

static bool phx_scheduler_enabled = true;
static int	phx_max_workers = 2;
static char *phx_databases = NULL;
static int	phx_launcher_naptime = 10;

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool wake_at_commit = false;

static Size
shared_size(void)
{
	return add_size(offsetof(PhxShared, progress),
					mul_size(MaxBackends, sizeof(PhxProgressSlot)));
}

static void
phx_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(shared_size());
}

static void
phx_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	phx_shared = ShmemInitStruct("posthog_export", shared_size(), &found);
	if (!found)
	{
		memset(phx_shared, 0, shared_size());
		SpinLockInit(&phx_shared->mutex);
		phx_shared->nprogress = MaxBackends;
		for (int i = 0; i < MaxBackends; i++)
			SpinLockInit(&phx_shared->progress[i].mutex);
	}
	LWLockRelease(AddinShmemInitLock);
}

/*
 * create_export() and friends wake the scheduler of their database once
 * their transaction commits, so it sees the change; before commit it would
 * not.
 */
static void
wake_xact_callback(XactEvent event, void *arg)
{
	if (!wake_at_commit)
		return;
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT)
	{
		bool		commit = (event == XACT_EVENT_COMMIT);
		pid_t		target = 0;

		wake_at_commit = false;
		if (!commit || phx_shared == NULL)
			return;
		SpinLockAcquire(&phx_shared->mutex);
		for (int i = 0; i < PHX_MAX_DATABASES; i++)
			if (phx_shared->dbs[i].dboid == MyDatabaseId)
			{
				target = phx_shared->dbs[i].scheduler_pid;
				/* no scheduler yet: ask the launcher to start one now */
				if (target == 0)
					phx_shared->dbs[i].recheck_after = 0;
			}
		if (target == 0)
			target = phx_shared->launcher_pid;
		SpinLockRelease(&phx_shared->mutex);
		if (target != 0)
		{
			PGPROC	   *proc = BackendPidGetProc(target);

			if (proc)
				SetLatch(&proc->procLatch);
		}
	}
}

void
phx_wake_scheduler(void)
{
	wake_at_commit = true;
}

/*
 * A worker of this library, connected to a database, started once
 * recovery is over; "function" is its entry point.  The launcher is the
 * only one restarted by the postmaster: it starts the others again.
 */
static void
init_worker(BackgroundWorker *worker, const char *function, const char *type, int restart)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = restart;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "posthog_export");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", type);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", type);
}

void
phx_scheduler_init(void)
{
	BackgroundWorker worker;

	DefineCustomBoolVariable("posthog_export.scheduler",
							 "Runs exports on their schedule in background workers.",
							 "Needs posthog_export in shared_preload_libraries.",
							 &phx_scheduler_enabled, true, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("posthog_export.max_workers",
							"Most export runs at once in the whole cluster.",
							NULL, &phx_max_workers, 2, 1, 64, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomStringVariable("posthog_export.databases",
							   "Databases the scheduler looks at (comma-separated); empty: all.",
							   NULL, &phx_databases, "", PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("posthog_export.max_failures",
							"Failures in a row after which an export pauses itself.",
							NULL, &phx_max_failures, 5, 1, 1000, PGC_SIGHUP, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("posthog_export.retry_interval",
							"Backoff before the first retry of a failed scheduled run; it doubles per failure.",
							NULL, &phx_retry_interval, 60, 0, 86400, PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	DefineCustomIntVariable("posthog_export.launcher_naptime",
							"How often the launcher looks for new databases.",
							NULL, &phx_launcher_naptime, 10, 1, 3600, PGC_SIGHUP, GUC_UNIT_S,
							NULL, NULL, NULL);
	MarkGUCPrefixReserved("posthog_export");
	RegisterXactCallback(wake_xact_callback, NULL);

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = phx_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = phx_shmem_startup;

	init_worker(&worker, "phx_launcher_main", "posthog_export launcher", 10);
	RegisterBackgroundWorker(&worker);
}

static void
handle_config_reload(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

static PhxDatabaseSlot *
database_slot(Oid dboid, bool create)
{
	PhxDatabaseSlot *free_slot = NULL;

	for (int i = 0; i < PHX_MAX_DATABASES; i++)
	{
		if (phx_shared->dbs[i].dboid == dboid)
			return &phx_shared->dbs[i];
		if (phx_shared->dbs[i].dboid == InvalidOid && free_slot == NULL)
			free_slot = &phx_shared->dbs[i];
	}
	if (create && free_slot)
	{
		memset(free_slot, 0, sizeof(*free_slot));
		free_slot->dboid = dboid;
		return free_slot;
	}
	return NULL;
}

static bool
database_wanted(const char *name)
{
	char	   *raw;
	List	   *names;
	ListCell   *lc;

	if (phx_databases == NULL || phx_databases[0] == '\0')
		return true;
	raw = pstrdup(phx_databases);
	if (!SplitIdentifierString(raw, ',', &names))
		return false;
	foreach(lc, names)
		if (strcmp((char *) lfirst(lc), name) == 0)
			return true;
	return false;
}

typedef struct LauncherDb
{
	Oid			dboid;
	BackgroundWorkerHandle *handle;
} LauncherDb;

static void
start_schedulers(LauncherDb *known, int *nknown)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	List	   *dbs = NIL;
	ListCell   *lc;
	TimestampTz now = GetCurrentTimestamp();

	MemoryContext outer = CurrentMemoryContext;

	StartTransactionCommand();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tup = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		if (db->datallowconn && !db->datistemplate && database_wanted(NameStr(db->datname)))
		{
			/* outlives the transaction */
			MemoryContext old = MemoryContextSwitchTo(outer);

			dbs = lappend_oid(dbs, db->oid);
			MemoryContextSwitchTo(old);
		}
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	foreach(lc, dbs)
	{
		Oid			dboid = lfirst_oid(lc);
		LauncherDb *entry = NULL;
		PhxDatabaseSlot *slot;
		bool		start;
		pid_t		pid;

		for (int i = 0; i < *nknown; i++)
			if (known[i].dboid == dboid)
				entry = &known[i];
		if (entry && entry->handle &&
			GetBackgroundWorkerPid(entry->handle, &pid) != BGWH_STOPPED)
			continue;			/* its scheduler is running */

		SpinLockAcquire(&phx_shared->mutex);
		slot = database_slot(dboid, true);
		start = slot != NULL && now >= slot->recheck_after;
		if (start)
			slot->recheck_after = now + (int64) PHX_RECHECK_SECS * USECS_PER_SEC;
		SpinLockRelease(&phx_shared->mutex);
		if (!start)
			continue;

		if (entry == NULL)
		{
			if (*nknown >= PHX_MAX_DATABASES)
				continue;
			entry = &known[(*nknown)++];
			entry->dboid = dboid;
		}
		{
			BackgroundWorker worker;

			init_worker(&worker, "phx_scheduler_main", "posthog_export scheduler", BGW_NEVER_RESTART);
			snprintf(worker.bgw_name, BGW_MAXLEN, "posthog_export scheduler %u", dboid);
			worker.bgw_main_arg = ObjectIdGetDatum(dboid);
			worker.bgw_notify_pid = MyProcPid;
			if (!RegisterDynamicBackgroundWorker(&worker, &entry->handle))
			{
				entry->handle = NULL;
				ereport(LOG,
						(errmsg("posthog_export: could not start a scheduler for database %u", dboid),
						 errhint("Raise max_worker_processes.")));
			}
		}
	}
	list_free(dbs);
}

void
phx_launcher_main(Datum main_arg)
{
	LauncherDb *known = palloc0(sizeof(LauncherDb) * PHX_MAX_DATABASES);
	int			nknown = 0;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("posthog_export launcher");

	SpinLockAcquire(&phx_shared->mutex);
	phx_shared->launcher_pid = MyProcPid;
	SpinLockRelease(&phx_shared->mutex);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		handle_config_reload();
		if (phx_scheduler_enabled && !RecoveryInProgress())
			start_schedulers(known, &nknown);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) phx_launcher_naptime * 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

static void
scheduler_exit(int code, Datum arg)
{
	SpinLockAcquire(&phx_shared->mutex);
	for (int i = 0; i < PHX_MAX_DATABASES; i++)
		if (phx_shared->dbs[i].dboid == MyDatabaseId &&
			phx_shared->dbs[i].scheduler_pid == MyProcPid)
		{
			phx_shared->dbs[i].scheduler_pid = 0;
			phx_shared->dbs[i].nrunning = 0;
		}
	SpinLockRelease(&phx_shared->mutex);
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
			TimestampTz when = phx_export_next_due(exp, now, phx_export_has_backfill(exp->export_id));
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
	SpinLockAcquire(&phx_shared->mutex);
	for (int i = 0; i < PHX_MAX_DATABASES; i++)
		total += phx_shared->dbs[i].nrunning;
	slot = database_slot(MyDatabaseId, false);
	if (slot && total < phx_max_workers)
	{
		slot->nrunning++;
		ok = true;
	}
	SpinLockRelease(&phx_shared->mutex);
	if (!ok)
		return false;

	exp.export_id = d->export_id;
	exp.owner = d->owner;
	phx_run_worker_init(&worker, &exp, PHX_RUN_DUE, 0, 0, false, DSM_HANDLE_INVALID);
	if (!RegisterDynamicBackgroundWorker(&worker, handle))
	{
		SpinLockAcquire(&phx_shared->mutex);
		slot->nrunning--;
		SpinLockRelease(&phx_shared->mutex);
		return false;
	}
	return true;
}

void
phx_scheduler_main(Datum main_arg)
{
	Oid			dboid = DatumGetObjectId(main_arg);
	RunningExport *running = palloc0(sizeof(RunningExport) * 64);
	int			nrunning = 0;
	PhxDatabaseSlot *slot;
	MemoryContext loop_cxt = AllocSetContextCreate(TopMemoryContext, "posthog_export scheduler",
												   ALLOCSET_DEFAULT_SIZES);

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	pgstat_report_appname("posthog_export scheduler");

	SpinLockAcquire(&phx_shared->mutex);
	slot = database_slot(dboid, true);
	if (slot)
	{
		slot->scheduler_pid = MyProcPid;
		slot->nrunning = 0;
	}
	SpinLockRelease(&phx_shared->mutex);
	if (slot == NULL)
		proc_exit(0);
	before_shmem_exit(scheduler_exit, (Datum) 0);

	/* runs a crash or restart left "running" resume from their cursor */
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (!OidIsValid(get_extension_oid(PHX_EXTENSION_NAME, true)))
	{
		CommitTransactionCommand();
		proc_exit(0);			/* the launcher looks again later */
	}
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	PushActiveSnapshot(GetTransactionSnapshot());
	phx_mark_interrupted_runs();
	PopActiveSnapshot();
	SPI_finish();
	ereport(LOG, (errmsg("posthog_export: scheduler started in database \"%s\"",
						 get_database_name(dboid))));
	CommitTransactionCommand();

	for (;;)
	{
		List	   *due = NIL;
		ListCell   *lc;
		TimestampTz now;
		long		sleep_ms = PHX_MAX_SLEEP_MS;

		CHECK_FOR_INTERRUPTS();
		handle_config_reload();

		/* forget run workers that finished */
		for (int i = 0; i < nrunning; i++)
		{
			pid_t		pid;

			if (GetBackgroundWorkerPid(running[i].handle, &pid) == BGWH_STOPPED)
			{
				pfree(running[i].handle);
				running[i] = running[--nrunning];
				i--;
				SpinLockAcquire(&phx_shared->mutex);
				slot->nrunning--;
				SpinLockRelease(&phx_shared->mutex);
			}
		}

		MemoryContextReset(loop_cxt);
		if (phx_scheduler_enabled)
		{
			if (!load_due(&due, loop_cxt))
				proc_exit(0);	/* the extension was dropped */
			now = GetCurrentTimestamp();
			foreach(lc, due)
			{
				DueExport  *d = lfirst(lc);
				bool		busy = false;

				for (int i = 0; i < nrunning; i++)
					if (running[i].export_id == d->export_id)
						busy = true;
				if (busy)
					continue;	/* its run worker wakes us when done */
				if (d->due <= now)
				{
					if (nrunning < 64 && start_run_worker(d, &running[nrunning].handle))
						running[nrunning++].export_id = d->export_id;
					else
						sleep_ms = Min(sleep_ms, 1000);	/* no place yet */
				}
				else
					sleep_ms = Min(sleep_ms, (long) ((d->due - now) / 1000) + 1);
			}
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Max(sleep_ms, 10), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

/* ------------------------------------------------------------------------
 * Live progress
 * ------------------------------------------------------------------------
 */
void
phx_progress_begin(PhxExport *exp, TimestampTz start, TimestampTz end, PhxRun *run)
{
	PhxProgressSlot *s;

	if (phx_shared == NULL || PHX_MY_SLOT < 0 || PHX_MY_SLOT >= phx_shared->nprogress)
		return;
	s = &phx_shared->progress[PHX_MY_SLOT];
	SpinLockAcquire(&s->mutex);
	s->pid = MyProcPid;
	s->dboid = MyDatabaseId;
	s->export_id = exp->export_id;
	s->owner = exp->owner;
	s->interval_start = start;
	s->interval_end = end;
	s->started_at = s->updated_at = GetCurrentTimestamp();
	s->rows = run->rows;
	s->bytes = run->bytes;
	s->pages = run->pages;
	s->page_bytes = 0;
	SpinLockRelease(&s->mutex);
	my_progress = s;
}

/* A page was written (not necessarily committed yet). */
void
phx_progress_page(int64 rows, int64 bytes)
{
	if (my_progress == NULL)
		return;
	SpinLockAcquire(&my_progress->mutex);
	my_progress->rows += rows;
	my_progress->bytes += bytes;
	my_progress->pages++;
	my_progress->page_bytes = 0;
	my_progress->updated_at = GetCurrentTimestamp();
	SpinLockRelease(&my_progress->mutex);
}

/* Bytes of the page in flight; called from libcurl, so it must not throw. */
void
phx_progress_bytes(int64 bytes)
{
	if (my_progress == NULL)
		return;
	SpinLockAcquire(&my_progress->mutex);
	my_progress->page_bytes = bytes;
	SpinLockRelease(&my_progress->mutex);
}

void
phx_progress_end(void)
{
	if (my_progress == NULL)
		return;
	SpinLockAcquire(&my_progress->mutex);
	my_progress->pid = 0;
	SpinLockRelease(&my_progress->mutex);
	my_progress = NULL;
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

	InitMaterializedSRF(fcinfo, 0);
	if (phx_shared == NULL)
		return (Datum) 0;
	for (int i = 0; i < phx_shared->nprogress; i++)
	{
		PhxProgressSlot *s = &phx_shared->progress[i];
		PhxProgressSlot copy;
		Datum		values[10];
		bool		nulls[10] = {0};

		SpinLockAcquire(&s->mutex);
		copy = *s;
		SpinLockRelease(&s->mutex);
		if (copy.pid == 0 || copy.dboid != MyDatabaseId)
			continue;
		/* as pg_stat_activity: the owner's members and pg_read_all_stats */
		if (!has_privs_of_role(GetUserId(), copy.owner) &&
			!has_privs_of_role(GetUserId(), ROLE_PG_READ_ALL_STATS))
			continue;
		values[0] = Int32GetDatum(copy.pid);
		values[1] = Int32GetDatum(copy.export_id);
		values[2] = TimestampTzGetDatum(copy.interval_start);
		values[3] = TimestampTzGetDatum(copy.interval_end);
		values[4] = TimestampTzGetDatum(copy.started_at);
		values[5] = TimestampTzGetDatum(copy.updated_at);
		values[6] = Int64GetDatum(copy.rows);
		values[7] = Int64GetDatum(copy.bytes + copy.page_bytes);
		values[8] = Int32GetDatum(copy.pages);
		values[9] = Int64GetDatum(copy.page_bytes);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
