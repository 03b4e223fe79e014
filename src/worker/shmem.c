/*-------------------------------------------------------------------------
 *
 * shmem.c
 *		What the extension's background workers share: their shared memory
 *		(the launcher's pid, one slot per database), the wake-up of a
 *		database's scheduler at commit, and the set-up every worker of the
 *		library has in common.
 *
 * Shared memory holds no pointers, only pids, OIDs, times and counters.
 * It exists only when the library is preloaded; without it, nothing is
 * woken and runs are started by hand or by pg_cron.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "miscadmin.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "worker/worker.h"

PhxWorkerShared *phx_worker_shared = NULL;

static bool wake_at_commit = false;

Size
phx_worker_shmem_size(void)
{
	return sizeof(PhxWorkerShared);
}

/* Called with AddinShmemInitLock held. */
void
phx_worker_shmem_init(void)
{
	bool		found;

	phx_worker_shared = ShmemInitStruct("posthog_export workers", sizeof(PhxWorkerShared), &found);
	if (!found)
	{
		memset(phx_worker_shared, 0, sizeof(PhxWorkerShared));
		SpinLockInit(&phx_worker_shared->mutex);
	}
}

/*
 * The slot of a database, or a free one when "create"; NULL when there is
 * none.  The caller holds the mutex.
 */
PhxDatabaseSlot *
phx_database_slot(Oid dboid, bool create)
{
	PhxDatabaseSlot *free_slot = NULL;

	for (int i = 0; i < PHX_MAX_DATABASES; i++)
	{
		if (phx_worker_shared->dbs[i].dboid == dboid)
			return &phx_worker_shared->dbs[i];
		if (phx_worker_shared->dbs[i].dboid == InvalidOid && free_slot == NULL)
			free_slot = &phx_worker_shared->dbs[i];
	}
	if (create && free_slot)
	{
		memset(free_slot, 0, sizeof(*free_slot));
		free_slot->dboid = dboid;
		return free_slot;
	}
	return NULL;
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
		if (!commit || phx_worker_shared == NULL)
			return;
		SpinLockAcquire(&phx_worker_shared->mutex);
		for (int i = 0; i < PHX_MAX_DATABASES; i++)
			if (phx_worker_shared->dbs[i].dboid == MyDatabaseId)
			{
				target = phx_worker_shared->dbs[i].scheduler_pid;
				/* no scheduler yet: ask the launcher to start one now */
				if (target == 0)
					phx_worker_shared->dbs[i].recheck_after = 0;
			}
		if (target == 0)
			target = phx_worker_shared->launcher_pid;
		SpinLockRelease(&phx_worker_shared->mutex);
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

void
phx_wake_register(void)
{
	RegisterXactCallback(wake_xact_callback, NULL);
}

/* A SIGHUP asked for the configuration to be read again. */
void
phx_reload_config_if_asked(void)
{
	if (ConfigReloadPending)
	{
		ConfigReloadPending = false;
		ProcessConfigFile(PGC_SIGHUP);
	}
}

/*
 * A worker of this library, connected to a database, started once
 * recovery is over; "function" is its entry point.  The launcher is the
 * only one restarted by the postmaster: it starts the others again.
 */
void
phx_init_worker(BackgroundWorker *worker, const char *function, const char *type, int restart)
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

