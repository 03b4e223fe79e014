/*-------------------------------------------------------------------------
 *
 * module.c
 *		Entry point of the posthog_export library: its settings, its
 *		shared memory and, when preloaded, the scheduler's launcher.
 *
 * Loaded by CREATE EXTENSION or a first call, the library only defines
 * its settings (it installs no hook: what keeps exports consistent with
 * DDL works in every session, see api/dependencies.c).  In
 * shared_preload_libraries it also asks for shared memory (database slots
 * of the workers, live progress of runs, PostHog's request budgets) and
 * registers the launcher, which keeps a scheduler in every database.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/guc.h"

#include "posthog/posthog.h"
#include "worker/worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

static void
phx_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(add_size(add_size(phx_worker_shmem_size(), phx_progress_shmem_size()),
									phx_budget_shmem_size()));
	phx_budget_shmem_request();
}

static void
phx_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	phx_worker_shmem_init();
	phx_progress_shmem_init();
	phx_budget_shmem_init();
	LWLockRelease(AddinShmemInitLock);
}

static void
define_settings(void)
{
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
}

void
_PG_init(void)
{
	define_settings();
	phx_wake_register();

	if (!process_shared_preload_libraries_in_progress)
		return;

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = phx_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = phx_shmem_startup;
	phx_launcher_register();
}
