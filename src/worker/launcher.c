/*-------------------------------------------------------------------------
 *
 * launcher.c
 *		The launcher: one background worker per cluster, started by the
 *		postmaster when the library is preloaded.
 *
 * It lists the databases (or those in posthog_export.databases) and keeps
 * a scheduler running in each, in the spirit of pg_cron's launcher.  A
 * scheduler exits where the extension is not installed; the launcher
 * looks again a minute later, or at once when create_export() asks.  On a
 * standby it does nothing.
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
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/timestamp.h"
#include "utils/varlena.h"

#include "worker/worker.h"

PGDLLEXPORT void phx_launcher_main(Datum main_arg);

#define PHX_RECHECK_SECS	60		/* a database without the extension */

bool		phx_scheduler_enabled = true;
int			phx_max_workers = 2;
char	   *phx_databases = NULL;
int			phx_launcher_naptime = 10;

/* Registers the launcher; only from shared_preload_libraries. */
void
phx_launcher_register(void)
{
	BackgroundWorker worker;

	phx_init_worker(&worker, "phx_launcher_main", "posthog_export launcher", 10);
	RegisterBackgroundWorker(&worker);
}

/* Is the database among those posthog_export.databases names (all when empty)? */
bool
phx_database_wanted(const char *name)
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

		if (db->datallowconn && !db->datistemplate && phx_database_wanted(NameStr(db->datname)))
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

		SpinLockAcquire(&phx_worker_shared->mutex);
		slot = phx_database_slot(dboid, true);
		start = slot != NULL && now >= slot->recheck_after;
		if (start)
			slot->recheck_after = now + (int64) PHX_RECHECK_SECS * USECS_PER_SEC;
		SpinLockRelease(&phx_worker_shared->mutex);
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

			phx_init_worker(&worker, "phx_scheduler_main", "posthog_export scheduler", BGW_NEVER_RESTART);
			snprintf(worker.bgw_name, BGW_MAXLEN, "posthog_export scheduler %u", dboid);
			worker.bgw_main_arg = ObjectIdGetDatum(dboid);
			worker.bgw_notify_pid = MyProcPid;
			if (!RegisterDynamicBackgroundWorker(&worker, &entry->handle))
			{
				entry->handle = NULL;
				ereport(LOG,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("posthog_export: could not start a scheduler for database %u", dboid),
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

	SpinLockAcquire(&phx_worker_shared->mutex);
	phx_worker_shared->launcher_pid = MyProcPid;
	SpinLockRelease(&phx_worker_shared->mutex);

	for (;;)
	{
		CHECK_FOR_INTERRUPTS();
		phx_reload_config_if_asked();
		if (phx_scheduler_enabled && !RecoveryInProgress())
			start_schedulers(known, &nknown);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 (long) phx_launcher_naptime * 1000L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

