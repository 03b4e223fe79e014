/*-------------------------------------------------------------------------
 *
 * fuzz_shim.c
 *		Just enough of the backend for src/json_rows.c to run outside a
 *		server under libFuzzer: memory from malloc (freed after each input),
 *		ereport() that longjmps like elog.c does, StringInfo.  The jsonb
 *		fuzzer adds fuzz_shim_pg.c for the server code it builds in.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdarg.h>

#include "lib/stringinfo.h"
#include "utils/memutils.h"

sigjmp_buf *PG_exception_stack = NULL;
ErrorContextCallback *error_context_stack = NULL;
MemoryContext CurrentMemoryContext = NULL;

static int	current_elevel;
static int	current_sqlerrcode;
static ErrorData current_error;

/* every allocation of one input, freed by fuzz_free_all() */
static void **allocs;
static size_t nallocs;
static size_t capallocs;

static void *
track(void *p)
{
	if (p == NULL)
		abort();
	if (nallocs == capallocs)
	{
		capallocs = capallocs ? capallocs * 2 : 1024;
		allocs = realloc(allocs, capallocs * sizeof(void *));
	}
	/* header before each block: the index in allocs, so pfree/repalloc can find it */
	((size_t *) p)[0] = nallocs;
	allocs[nallocs++] = p;
	return (char *) p + MAXALIGN(sizeof(size_t));
}

static size_t
index_of(void *ptr)
{
	return ((size_t *) ((char *) ptr - MAXALIGN(sizeof(size_t))))[0];
}

void
fuzz_free_all(void)
{
	for (size_t i = 0; i < nallocs; i++)
		free(allocs[i]);
	nallocs = 0;
}

void *
palloc(Size size)
{
	return track(malloc(size + MAXALIGN(sizeof(size_t))));
}

void *
palloc0(Size size)
{
	return track(calloc(1, size + MAXALIGN(sizeof(size_t))));
}

void *
palloc_extended(Size size, int flags)
{
	return (flags & MCXT_ALLOC_ZERO) ? palloc0(size) : palloc(size);
}

void *
MemoryContextAllocExtended(MemoryContext context, Size size, int flags)
{
	return palloc_extended(size, flags);
}

void
pfree(void *pointer)
{
	size_t		i = index_of(pointer);

	free(allocs[i]);
	allocs[i] = NULL;
}

void *
repalloc(void *pointer, Size size)
{
	size_t		i = index_of(pointer);
	void	   *p = realloc(allocs[i], size + MAXALIGN(sizeof(size_t)));

	if (p == NULL)
		abort();
	allocs[i] = p;
	return (char *) p + MAXALIGN(sizeof(size_t));
}

void *
repalloc_huge(void *pointer, Size size)
{
	return repalloc(pointer, size);
}

char *
pstrdup(const char *in)
{
	return pnstrdup(in, strlen(in));
}

/* as in the server: stops at a NUL within the first len bytes */
char *
pnstrdup(const char *in, Size len)
{
	char	   *out;

	len = strnlen(in, len);
	out = palloc(len + 1);

	memcpy(out, in, len);
	out[len] = '\0';
	return out;
}

void
initStringInfo(StringInfo str)
{
	str->maxlen = 1024;
	str->data = palloc(str->maxlen);
	str->len = 0;
	str->data[0] = '\0';
	str->cursor = 0;
}

void
enlargeStringInfo(StringInfo str, int needed)
{
	int			newlen;

	if (needed < 0 || ((Size) needed) >= (MaxAllocSize - (Size) str->len))
		abort();
	needed += str->len + 1;
	if (needed <= str->maxlen)
		return;
	newlen = 2 * str->maxlen;
	while (needed > newlen)
		newlen = 2 * newlen;
	str->data = repalloc(str->data, newlen);
	str->maxlen = newlen;
}

void
appendBinaryStringInfo(StringInfo str, const char *data, int datalen)
{
	enlargeStringInfo(str, datalen);
	memcpy(str->data + str->len, data, datalen);
	str->len += datalen;
	str->data[str->len] = '\0';
}

void
appendStringInfoChar(StringInfo str, char ch)
{
	appendBinaryStringInfo(str, &ch, 1);
}

/* the rest of StringInfo, so that libpgcommon's (frontend) stringinfo.o is never linked */
StringInfo
makeStringInfo(void)
{
	StringInfo	res = palloc(sizeof(StringInfoData));

	initStringInfo(res);
	return res;
}

void
resetStringInfo(StringInfo str)
{
	str->data[0] = '\0';
	str->len = 0;
	str->cursor = 0;
}

void
appendStringInfoString(StringInfo str, const char *s)
{
	appendBinaryStringInfo(str, s, strlen(s));
}

void
appendStringInfoSpaces(StringInfo str, int count)
{
	if (count > 0)
	{
		enlargeStringInfo(str, count);
		memset(str->data + str->len, ' ', count);
		str->len += count;
		str->data[str->len] = '\0';
	}
}

int
appendStringInfoVA(StringInfo str, const char *fmt, va_list args)
{
	int			avail = str->maxlen - str->len;
	int			n = vsnprintf(str->data + str->len, avail, fmt, args);

	if (n < 0)
		abort();
	if (n >= avail)
		return n + 1;			/* the space it needs: the caller enlarges and retries */
	str->len += n;
	return 0;
}

void
appendStringInfo(StringInfo str, const char *fmt,...)
{
	for (;;)
	{
		va_list		args;
		int			needed;

		va_start(args, fmt);
		needed = appendStringInfoVA(str, fmt, args);
		va_end(args);
		if (needed == 0)
			break;
		enlargeStringInfo(str, needed);
	}
}

bool
errstart(int elevel, const char *domain)
{
	current_elevel = elevel;
	/* as elog.c: an error without errcode() is an internal error */
	current_sqlerrcode = elevel >= ERROR ? ERRCODE_INTERNAL_ERROR : 0;
	return elevel >= ERROR;
}

bool
errstart_cold(int elevel, const char *domain)
{
	return errstart(elevel, domain);
}

void
errfinish(const char *filename, int lineno, const char *funcname)
{
	if (current_elevel >= ERROR)
	{
		if (PG_exception_stack == NULL)
			abort();			/* an error nobody catches: a real bug */
		siglongjmp(*PG_exception_stack, 1);
	}
}

int
errcode(int sqlerrcode)
{
	current_sqlerrcode = sqlerrcode;
	return 0;
}

int
errmsg(const char *fmt,...)
{
	return 0;
}

int
errmsg_internal(const char *fmt,...)
{
	return 0;
}

int
errdetail(const char *fmt,...)
{
	return 0;
}

int
errhint(const char *fmt,...)
{
	return 0;
}

ErrorData *
CopyErrorData(void)
{
	current_error.sqlerrcode = current_sqlerrcode;
	current_error.message = "fuzz";
	return &current_error;
}

void
FlushErrorState(void)
{
}

void
pg_re_throw(void)
{
	siglongjmp(*PG_exception_stack, 1);
}

void
ExceptionalCondition(const char *conditionName, const char *errorType, const char *fileName, int lineNumber)
{
	abort();
}
