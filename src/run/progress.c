/*-------------------------------------------------------------------------
 *
 * progress.c
 *		Live progress of the runs in flight: one slot per backend in shared
 *		memory, read by posthog_export.progress like pg_stat_progress_copy.
 *
 * A run fills its backend's slot when an interval starts, adds every page
 * it writes, the bytes of the page in flight as they arrive (through the
 * HTTP layer's bytes callback), and what a request waits for in PostHog's
 * request budget, until when (through its wait callback).  The slots exist
 * only when the library is preloaded; otherwise every call here does
 * nothing but add up the time waited, which the run records anyway.
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

/* the wait in progress (0: none), and the time waited not yet taken */
static TimestampTz wait_started = 0;
static int64 waited_us = 0;

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

/*
 * A request of the run starts waiting for PostHog's request budget (what
 * for, until when: 0 unknown), or, with what NULL, stops waiting.  Called
 * from the budget's wait loop, between its checks for interrupts.
 */
static void
progress_wait(const char *what, TimestampTz until)
{
	TimestampTz now = GetCurrentTimestamp();

	if (wait_started != 0)
		waited_us += now - wait_started;
	wait_started = what ? now : 0;
	if (my_slot == NULL)
		return;
	SpinLockAcquire(&my_slot->mutex);
	if (what)
		strlcpy(my_slot->p.waiting_for, what, sizeof(my_slot->p.waiting_for));
	else
		my_slot->p.waiting_for[0] = '\0';
	my_slot->p.waiting_until = until;
	SpinLockRelease(&my_slot->mutex);
}

/* The time the run's requests waited for the budget since the last call. */
int64
phx_progress_take_waited(void)
{
	int64		result;

	if (wait_started != 0)
	{
		TimestampTz now = GetCurrentTimestamp();

		waited_us += now - wait_started;
		wait_started = now;
	}
	result = waited_us;
	waited_us = 0;
	return result;
}

void
phx_progress_begin(PhxExport *exp, TimestampTz start, TimestampTz end, PhxRun *run)
{
	PhxProgressSlot *s;

	phx_http_wait_callback = progress_wait;
	wait_started = 0;
	waited_us = 0;
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
	s->p.waiting_for[0] = '\0';
	s->p.waiting_until = 0;
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
	phx_http_wait_callback = NULL;
	wait_started = 0;
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
