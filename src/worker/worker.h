/*-------------------------------------------------------------------------
 *
 * worker.h
 *		The worker layer: background workers of the extension.
 *
 *   shmem.c        their shared memory (database slots), waking a
 *                  database's scheduler after a commit, what every worker
 *                  of the library sets up the same way
 *   launcher.c     one per cluster: keeps a scheduler in each database
 *   scheduler.c    one per database: starts a run worker per due export
 *   run_worker.c   a run in a background worker connected as the export's
 *                  owner, waited for or not
 *
 *-------------------------------------------------------------------------
 */
#ifndef PHX_WORKER_H
#define PHX_WORKER_H

#include "run/run.h"

#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/spin.h"

/* settings (module.c defines them) */
extern bool phx_scheduler_enabled;
extern int	phx_max_workers;
extern char *phx_databases;
extern int	phx_launcher_naptime;

/* ------------------------------------------------------------------------
 * shmem.c
 * ------------------------------------------------------------------------
 */
#define PHX_MAX_DATABASES	64

typedef struct PhxDatabaseSlot
{
	Oid			dboid;
	pid_t		scheduler_pid;
	TimestampTz recheck_after;
	int			nrunning;		/* run workers its scheduler has started */
} PhxDatabaseSlot;

typedef struct PhxWorkerShared
{
	slock_t		mutex;
	pid_t		launcher_pid;
	PhxDatabaseSlot dbs[PHX_MAX_DATABASES];
} PhxWorkerShared;

/* NULL unless the library was preloaded */
extern PhxWorkerShared *phx_worker_shared;

extern Size phx_worker_shmem_size(void);
extern void phx_worker_shmem_init(void);
extern PhxDatabaseSlot *phx_database_slot(Oid dboid, bool create);
extern void phx_wake_scheduler(void);
extern void phx_wake_register(void);
extern void phx_reload_config_if_asked(void);
extern void phx_init_worker(BackgroundWorker *worker, const char *function,
							const char *type, int restart);

/* ------------------------------------------------------------------------
 * launcher.c
 * ------------------------------------------------------------------------
 */
extern void phx_launcher_register(void);
extern bool phx_database_wanted(const char *name);

/* ------------------------------------------------------------------------
 * run_worker.c
 * ------------------------------------------------------------------------
 */
typedef enum PhxRunKind
{
	PHX_RUN_DUE,				/* the export's due intervals and backfills */
	PHX_RUN_RANGE				/* the intervals of [start, end), run_export */
} PhxRunKind;

extern void phx_run_worker_init(BackgroundWorker *worker, PhxExport *exp, PhxRunKind kind,
								TimestampTz start, TimestampTz end, bool force,
								dsm_handle seg);
extern bool phx_run_in_worker(PhxExport *exp, PhxRunKind kind, TimestampTz start,
							  TimestampTz end, bool force, bool errors_as_warnings);

#endif							/* PHX_WORKER_H */
