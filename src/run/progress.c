/*-------------------------------------------------------------------------
 *
 * progress.c
 *		Live progress of the runs in flight: one slot per backend in shared
 *		memory, read by posthog_export.progress like pg_stat_progress_copy.
 *
 * A run fills its backend's slot when an interval starts, adds every page
 * it writes, and the bytes of the page in flight as they arrive (through
 * the HTTP layer's bytes callback).  The slots exist only when the library
 * is preloaded; otherwise every call here does nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/timestamp.h"

#include "run/run.h"

#if PG_VERSION_NUM >= 170000
#define PHX_MY_SLOT		(MyProcNumber)
#else
#define PHX_MY_SLOT		(MyBackendId - 1)
#endif

typedef struct PhxProgressSlot
{
	slock_t		mutex;
	Oid			dboid;
	PhxProgress p;				/* p.pid 0: free */
} PhxProgressSlot;

typedef struct PhxProgressShared
{
	int			nslots;
	PhxProgressSlot slots[FLEXIBLE_ARRAY_MEMBER];
} PhxProgressShared;

static PhxProgressShared *progress_shared = NULL;
static PhxProgressSlot *my_slot = NULL;

Size
phx_progress_shmem_size(void)
{
	return add_size(offsetof(PhxProgressShared, slots),
					mul_size(MaxBackends, sizeof(PhxProgressSlot)));
}

/* Called with AddinShmemInitLock held. */
void
phx_progress_shmem_init(void)
{
	bool		found;

	progress_shared = ShmemInitStruct("posthog_export progress", phx_progress_shmem_size(), &found);
	if (!found)
	{
		memset(progress_shared, 0, phx_progress_shmem_size());
		progress_shared->nslots = MaxBackends;
		for (int i = 0; i < MaxBackends; i++)
			SpinLockInit(&progress_shared->slots[i].mutex);
	}
}

/* Bytes of the page in flight; called from libcurl, so it must not throw. */
static void
progress_bytes(int64 bytes)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->p.page_bytes = bytes;
	SpinLockRelease(&my_slot->mutex);
}

void
phx_progress_begin(PhxExport *exp, TimestampTz start, TimestampTz end, PhxRun *run)
{
	PhxProgressSlot *s;

	if (progress_shared == NULL || PHX_MY_SLOT < 0 || PHX_MY_SLOT >= progress_shared->nslots)
		return;
	s = &progress_shared->slots[PHX_MY_SLOT];
	SpinLockAcquire(&s->mutex);
	s->dboid = MyDatabaseId;
	s->p.pid = MyProcPid;
	s->p.export_id = exp->export_id;
	s->p.owner = exp->owner;
	s->p.interval_start = start;
	s->p.interval_end = end;
	s->p.started_at = s->p.updated_at = GetCurrentTimestamp();
	s->p.rows = run->rows;
	s->p.bytes = run->bytes;
	s->p.pages = run->pages;
	s->p.page_bytes = 0;
	SpinLockRelease(&s->mutex);
	my_slot = s;
	phx_http_bytes_callback = progress_bytes;
}

/* A page was written (not necessarily committed yet). */
void
phx_progress_page(int64 rows, int64 bytes)
{
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->p.rows += rows;
	my_slot->p.bytes += bytes;
	my_slot->p.pages++;
	my_slot->p.page_bytes = 0;
	my_slot->p.updated_at = GetCurrentTimestamp();
	SpinLockRelease(&my_slot->mutex);
}

void
phx_progress_end(void)
{
	phx_http_bytes_callback = NULL;
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	my_slot->p.pid = 0;
	SpinLockRelease(&my_slot->mutex);
	my_slot = NULL;
}

/*
 * Copies the next run in flight in this database, from slot *pos on, into
 * *out and advances *pos past it; false when there is none.  Start with
 * *pos = 0.  Whether the caller may see it is the caller's decision.
 */
bool
phx_progress_next(int *pos, PhxProgress *out)
{
	if (progress_shared == NULL)
		return false;
	while (*pos < progress_shared->nslots)
	{
		PhxProgressSlot *s = &progress_shared->slots[(*pos)++];
		bool		mine;

		SpinLockAcquire(&s->mutex);
		mine = s->p.pid != 0 && s->dboid == MyDatabaseId;
		if (mine)
			*out = s->p;
		SpinLockRelease(&s->mutex);
		if (mine)
			return true;
	}
	return false;
}
