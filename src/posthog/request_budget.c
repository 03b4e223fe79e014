/*-------------------------------------------------------------------------
 *
 * request_budget.c
 *		PostHog's request budget, shared: every request to PostHog waits
 *		here for its turn, so the exports that share an API key never
 *		provoke a 429 themselves.
 *
 * PostHog allows a personal API key 120 HogQL requests in any hour (a
 * sliding window; server option requests_per_hour) and a project 3
 * queries at once (max_concurrent_requests).  One budget is kept per
 * PostHog URL, project and key (the key only as a SHA-256 digest): a
 * token bucket that holds at most `burst` requests and refills at
 * (requests_per_hour - burst) per hour, so no hour ever holds more than
 * requests_per_hour of them, and requests are spread over the hour rather
 * than spent at its start.  A 429 from PostHog (another client of the
 * key, say) stops every user of the budget until the time PostHog gave.
 *
 * Requests waiting for the same budget are served in order: scheduled
 * runs before backfills, then first come, first served.  A large backfill
 * therefore gets the turns nobody else wants, and a 5-minute schedule
 * waits for at most one request of it.
 *
 * With the library in shared_preload_libraries the budgets are in shared
 * memory, shared by every session and worker of the cluster.  Without it
 * each backend keeps its own, and paces only its own requests.
 *
 * Waits are interruptible, and reported through phx_http_wait_callback
 * (the run layer shows them in posthog_export.progress).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/cryptohash.h"
#include "common/sha2.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "posthog/posthog.h"

#define BUDGET_ENTRIES	64		/* distinct URL/project/key triples at once */
#define KEY_BYTES		16
#define MAX_HELD		4		/* concurrency slots one backend may hold */
#define POLL_MS			250		/* how often a waiter looks again at most */

#if PG_VERSION_NUM >= 170000
#define PHX_MY_WAITER	(MyProcNumber)
#else
#define PHX_MY_WAITER	(MyBackendId - 1)
#endif

typedef struct BudgetEntry
{
	uint8		key[KEY_BYTES]; /* digest of URL, project and key */
	bool		used;
	int			requests_per_hour;	/* of the last request's server */
	int			max_concurrent;
	double		tokens;			/* requests that may start now */
	TimestampTz refilled_at;
	TimestampTz blocked_until;	/* PostHog said: not before */
	int			in_flight;
	uint64		next_ticket;
	TimestampTz last_used;
} BudgetEntry;

typedef struct BudgetWaiter
{
	int			entry;			/* -1: not waiting */
	int			priority;
	uint64		ticket;
} BudgetWaiter;

typedef struct BudgetShared
{
	LWLock	   *lock;
	int			nwaiters;
	BudgetEntry entries[BUDGET_ENTRIES];
	BudgetWaiter waiters[FLEXIBLE_ARRAY_MEMBER];	/* one per backend */
} BudgetShared;

static BudgetShared *shared = NULL;

/* Without shared memory: this backend's own budgets, and its one waiter. */
static BudgetShared *local = NULL;

int			phx_request_priority = PHX_PRIORITY_SCHEDULED;
PhxWaitCallback phx_http_wait_callback = NULL;

/* Concurrency slots this backend holds: released on exit, whatever happens. */
static int	held[MAX_HELD];
static int	nheld = 0;
static bool exit_hook_set = false;

Size
phx_budget_shmem_size(void)
{
	return add_size(offsetof(BudgetShared, waiters),
					mul_size(MaxBackends, sizeof(BudgetWaiter)));
}

void
phx_budget_shmem_request(void)
{
	RequestNamedLWLockTranche("posthog_export budget", 1);
}

/* Called with AddinShmemInitLock held. */
void
phx_budget_shmem_init(void)
{
	bool		found;

	shared = ShmemInitStruct("posthog_export budget", phx_budget_shmem_size(), &found);
	if (!found)
	{
		memset(shared, 0, phx_budget_shmem_size());
		shared->lock = &(GetNamedLWLockTranche("posthog_export budget"))->lock;
		shared->nwaiters = MaxBackends;
		for (int i = 0; i < MaxBackends; i++)
			shared->waiters[i].entry = -1;
	}
}

static BudgetShared *
budgets(void)
{
	if (shared)
		return shared;
	if (local == NULL)
	{
		local = MemoryContextAllocZero(TopMemoryContext, offsetof(BudgetShared, waiters) + sizeof(BudgetWaiter));
		local->nwaiters = 1;
		local->waiters[0].entry = -1;
	}
	return local;
}

static BudgetWaiter *
my_waiter(BudgetShared *b)
{
	if (b == local)
		return &b->waiters[0];
	if (PHX_MY_WAITER < 0 || PHX_MY_WAITER >= b->nwaiters)
		elog(ERROR, "posthog_export: no request budget slot for this backend");
	return &b->waiters[PHX_MY_WAITER];
}

static void
lock_budgets(BudgetShared *b)
{
	if (b->lock)
		LWLockAcquire(b->lock, LW_EXCLUSIVE);
}

static void
unlock_budgets(BudgetShared *b)
{
	if (b->lock)
		LWLockRelease(b->lock);
}

/* The budget's identity: the key never leaves this function but as a digest. */
static void
budget_key(PhxServerConfig *cfg, uint8 *key)
{
	pg_cryptohash_ctx *ctx = pg_cryptohash_create(PG_SHA256);
	uint8		digest[PG_SHA256_DIGEST_LENGTH];
	char		project[32];

	snprintf(project, sizeof(project), INT64_FORMAT, cfg->project_id);
	if (ctx == NULL ||
		pg_cryptohash_init(ctx) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) cfg->url, strlen(cfg->url) + 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) project, strlen(project) + 1) < 0 ||
		pg_cryptohash_update(ctx, (const uint8 *) cfg->api_key, strlen(cfg->api_key) + 1) < 0 ||
		pg_cryptohash_final(ctx, digest, sizeof(digest)) < 0)
		elog(ERROR, "posthog_export: could not compute a SHA-256 digest");
	pg_cryptohash_free(ctx);
	memcpy(key, digest, KEY_BYTES);
}

/* How many requests may go at once after an idle spell, and the hourly refill. */
static int
burst_of(int requests_per_hour)
{
	return Max(1, Min(requests_per_hour / 20, 10));
}

/* Tokens the bucket gains per microsecond: what the hour allows beyond the burst. */
static double
refill_per_us(const BudgetEntry *e)
{
	return (double) Max(e->requests_per_hour - burst_of(e->requests_per_hour), 1) / (double) USECS_PER_HOUR;
}

static void
refill(BudgetEntry *e, TimestampTz now)
{
	if (now > e->refilled_at)
		e->tokens = Min((double) burst_of(e->requests_per_hour),
						e->tokens + (now - e->refilled_at) * refill_per_us(e));
	e->refilled_at = now;
}

/* When the bucket next holds a whole token. */
static TimestampTz
next_token_at(BudgetEntry *e, TimestampTz now)
{
	if (e->tokens >= 1.0)
		return now;
	return now + (TimestampTz) ((1.0 - e->tokens) / refill_per_us(e)) + 1;
}

/* Whether a backend waits for entry i.  Called with the lock held. */
static bool
has_waiters(BudgetShared *b, int i)
{
	for (int w = 0; w < b->nwaiters; w++)
		if (b->waiters[w].entry == i)
			return true;
	return false;
}

/*
 * The entry of cfg's budget, created (full) when new; a full table gives
 * up the entry unused for longest that nobody holds or waits for.  Called
 * with the lock held.
 */
static int
find_entry(BudgetShared *b, const uint8 *key, PhxServerConfig *cfg, TimestampTz now)
{
	int			victim = -1;
	BudgetEntry *e;

	for (int i = 0; i < BUDGET_ENTRIES; i++)
	{
		e = &b->entries[i];
		if (e->used && memcmp(e->key, key, KEY_BYTES) == 0)
		{
			e->requests_per_hour = cfg->requests_per_hour;
			e->max_concurrent = cfg->max_concurrent_requests;
			e->last_used = now;
			return i;
		}
	}
	for (int i = 0; i < BUDGET_ENTRIES; i++)
	{
		e = &b->entries[i];
		if (!e->used)
		{
			victim = i;
			break;
		}
		if (e->in_flight > 0 || has_waiters(b, i))
			continue;
		if (victim < 0 || e->last_used < b->entries[victim].last_used)
			victim = i;
	}
	if (victim < 0)
		return 0;				/* every budget busy: share the first, as it is */
	e = &b->entries[victim];
	memset(e, 0, sizeof(*e));
	memcpy(e->key, key, KEY_BYTES);
	e->used = true;
	e->requests_per_hour = cfg->requests_per_hour;
	e->max_concurrent = cfg->max_concurrent_requests;
	e->tokens = burst_of(cfg->requests_per_hour);
	e->refilled_at = e->last_used = now;
	return victim;
}

/* Whether w is the first in line for its entry: priority, then ticket. */
static bool
first_in_line(BudgetShared *b, BudgetWaiter *w)
{
	for (int i = 0; i < b->nwaiters; i++)
	{
		BudgetWaiter *o = &b->waiters[i];

		if (o == w || o->entry != w->entry)
			continue;
		if (o->priority < w->priority ||
			(o->priority == w->priority && o->ticket < w->ticket))
			return false;
	}
	return true;
}

static void
release_all_held(int code, Datum arg)
{
	BudgetShared *b = shared ? shared : local;

	if (b == NULL)
		return;
	if (b == shared && (PHX_MY_WAITER < 0 || PHX_MY_WAITER >= b->nwaiters))
		return;
	lock_budgets(b);
	while (nheld > 0)
	{
		BudgetEntry *e = &b->entries[held[--nheld]];

		if (e->in_flight > 0)
			e->in_flight--;
	}
	my_waiter(b)->entry = -1;
	unlock_budgets(b);
}

/* Takes a token and a concurrency slot of entry i; called with the lock held. */
static void
take(BudgetShared *b, int i)
{
	BudgetEntry *e = &b->entries[i];

	if (!exit_hook_set)
	{
		before_shmem_exit(release_all_held, (Datum) 0);
		exit_hook_set = true;
	}
	Assert(nheld < MAX_HELD);
	e->tokens -= 1.0;
	e->in_flight++;
	held[nheld++] = i;
}

static void
report_wait(const char *what, TimestampTz until)
{
	if (phx_http_wait_callback)
		phx_http_wait_callback(what, until);
}

/*
 * Waits for this backend's turn in cfg's budget: a token, a free
 * concurrency slot, no 429 in force, nobody before it in line.  Returns
 * the slot's number for phx_budget_release().  Cancellable; the time
 * waited is reported through phx_http_wait_callback.
 */
int
phx_budget_acquire(PhxServerConfig *cfg)
{
	BudgetShared *b = budgets();
	BudgetWaiter *w = my_waiter(b);
	uint8		key[KEY_BYTES];
	const char *volatile reported = NULL;
	volatile TimestampTz reported_until = 0;
	volatile int result = -1;

	if (nheld >= MAX_HELD)
		elog(ERROR, "posthog_export: too many PostHog requests in flight in one backend");
	budget_key(cfg, key);
	lock_budgets(b);
	w->entry = find_entry(b, key, cfg, GetCurrentTimestamp());
	w->priority = phx_request_priority;
	w->ticket = b->entries[w->entry].next_ticket++;
	unlock_budgets(b);

	PG_TRY();
	{
		for (;;)
		{
			TimestampTz now = GetCurrentTimestamp();
			BudgetEntry *e;
			const char *what;
			TimestampTz until;
			long		sleep_ms;

			CHECK_FOR_INTERRUPTS();
			lock_budgets(b);
			e = &b->entries[w->entry];
			refill(e, now);
			if (now < e->blocked_until)
			{
				what = "PostHog's rate limit (HTTP 429)";
				until = e->blocked_until;
			}
			else if (!first_in_line(b, w))
			{
				what = "other requests of the same budget";
				until = 0;
			}
			else if (e->in_flight >= e->max_concurrent)
			{
				what = "a free concurrent request slot";
				until = 0;
			}
			else if (e->tokens < 1.0)
			{
				what = "PostHog's request budget";
				until = next_token_at(e, now);
			}
			else
			{
				take(b, w->entry);
				result = w->entry;
				w->entry = -1;
				unlock_budgets(b);
				break;
			}
			unlock_budgets(b);

			if (what != reported || until != reported_until)
			{
				report_wait(what, until);
				reported = what;
				reported_until = until;
			}
			sleep_ms = until > now ? (long) ((until - now + 999) / 1000) : POLL_MS;
			sleep_ms = Max(1, Min(sleep_ms, POLL_MS));
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 sleep_ms, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
	}
	PG_CATCH();
	{
		lock_budgets(b);
		w->entry = -1;
		unlock_budgets(b);
		if (reported)
			report_wait(NULL, 0);
		PG_RE_THROW();
	}
	PG_END_TRY();
	if (reported)
		report_wait(NULL, 0);
	return result;
}

/*
 * For a request that may as well not be made (the prefetch of the next
 * page): a slot only if one is free now and nobody waits; else -1.
 */
int
phx_budget_try_acquire(PhxServerConfig *cfg)
{
	BudgetShared *b = budgets();
	uint8		key[KEY_BYTES];
	TimestampTz now = GetCurrentTimestamp();
	int			i;
	int			result = -1;

	if (nheld >= MAX_HELD)
		return -1;
	budget_key(cfg, key);
	lock_budgets(b);
	i = find_entry(b, key, cfg, now);
	refill(&b->entries[i], now);
	if (now >= b->entries[i].blocked_until &&
		b->entries[i].in_flight < b->entries[i].max_concurrent &&
		b->entries[i].tokens >= 1.0 && !has_waiters(b, i))
	{
		take(b, i);
		result = i;
	}
	unlock_budgets(b);
	return result;
}

/* The request of a slot has ended (answered, failed, or abandoned). */
void
phx_budget_release(int slot)
{
	BudgetShared *b = budgets();

	if (slot < 0)
		return;
	lock_budgets(b);
	for (int i = nheld - 1; i >= 0; i--)
		if (held[i] == slot)
		{
			held[i] = held[--nheld];
			if (b->entries[slot].in_flight > 0)
				b->entries[slot].in_flight--;
			break;
		}
	unlock_budgets(b);
}

/*
 * PostHog answered 429: nobody sharing cfg's budget sends anything before
 * wait_ms from now, and the bucket starts again from empty.
 */
void
phx_budget_throttled(PhxServerConfig *cfg, long wait_ms)
{
	BudgetShared *b = budgets();
	uint8		key[KEY_BYTES];
	TimestampTz now = GetCurrentTimestamp();
	BudgetEntry *e;

	budget_key(cfg, key);
	lock_budgets(b);
	e = &b->entries[find_entry(b, key, cfg, now)];
	refill(e, now);
	e->tokens = Min(e->tokens, 0.0);
	e->blocked_until = Max(e->blocked_until, now + wait_ms * (TimestampTz) 1000);
	unlock_budgets(b);
}
