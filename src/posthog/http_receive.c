/*-------------------------------------------------------------------------
 *
 * http_receive.c
 *		The bytes of a response as libcurl hands them over: the body's
 *		buffer and its limit (max_response_size), the Content-Length check,
 *		and the count of bytes received for progress reports.
 *
 * Both functions here are libcurl callbacks (set by http_transport.c):
 * they never throw, and only stop the transfer, saying why in the
 * buffer; the error is raised after libcurl returns.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <curl/curl.h>

#include "utils/memutils.h"

#include "posthog/posthog.h"

PhxBytesCallback phx_http_bytes_callback = NULL;

/* the first allocation of a body, and how far a Content-Length may raise it */
#define PHX_BODY_MIN_ALLOC		((size_t) 64 * 1024)
#define PHX_BODY_HINT_MAX		((size_t) 1024 * 1024)

/*
 * repalloc_huge() that returns NULL instead of throwing: phx_receive_body runs
 * inside libcurl, which an ereport() must never longjmp through.  PG 15 has
 * no repalloc_extended(), so the out-of-memory error is caught in this
 * frame; a failed repalloc changes nothing, so dropping it is safe.
 */
static char *
repalloc_noerror(char *ptr, size_t size)
{
#if PG_VERSION_NUM >= 160000
	return repalloc_extended(ptr, size, MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
#else
	MemoryContext oldcxt = CurrentMemoryContext;
	char	   *volatile result = NULL;

	PG_TRY();
	{
		result = repalloc_huge(ptr, size);
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		FlushErrorState();
	}
	PG_END_TRY();
	return result;
#endif
}

/*
 * Appends received bytes: the decoded ones, as libcurl decompresses a gzip
 * body before it calls this (in pieces of at most CURL_MAX_WRITE_SIZE), so
 * the count is the size after decompression.  Runs inside libcurl, so it
 * must not throw: a body past max_response_size, or allocation failure,
 * just stops the transfer (and with it the decompression) and is reported
 * after curl_easy_perform() returns.
 *
 * The buffer grows with what arrives, doubling, and never past the limit.
 * A Content-Length only sizes the first allocation, and only up to 1 MB: a
 * server may announce anything, and a compressed body's is not its size.
 * Growth is a realloc, which for large blocks remaps the pages rather than
 * copying them into a second buffer, so a body that reaches the limit costs
 * about the limit in memory, not the old buffer plus the new one.
 */
size_t
phx_receive_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	PhxResponseBuffer *rb = (PhxResponseBuffer *) userdata;
	size_t		n = size * nmemb;

	/* rb->len never exceeds rb->limit, so this cannot wrap */
	if (n > rb->limit - rb->len)
	{
		rb->too_large = true;
		return 0;
	}
	if (rb->len + n + 1 > rb->cap)
	{
		size_t		newcap = Max(rb->cap * 2, rb->len + n + 1);
		char	   *newdata;

		if (rb->data == NULL)
		{
			curl_off_t	announced = -1;

			if (rb->curl &&
				curl_easy_getinfo(rb->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &announced) == CURLE_OK &&
				announced > 0)
				newcap = Max(newcap, Min((size_t) announced, PHX_BODY_HINT_MAX - 1) + 1);
			newcap = Max(newcap, PHX_BODY_MIN_ALLOC);
		}
		/* the body never holds more than limit bytes (and a terminating NUL) */
		newcap = Min(newcap, rb->limit + 1);
		if (rb->data == NULL)
			newdata = MemoryContextAllocExtended(rb->cxt, newcap,
												 MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
		else
			newdata = repalloc_noerror(rb->data, newcap);
		if (newdata == NULL)
		{
			rb->oom = true;
			return 0;
		}
		rb->data = newdata;
		rb->cap = newcap;
	}
	memcpy(rb->data + rb->len, ptr, n);
	rb->len += n;
	if (phx_http_bytes_callback)
		phx_http_bytes_callback((int64) rb->len);
	return n;
}

/*
 * Refuses a response whose Content-Length is above max_response_size as
 * soon as that header arrives: waiting for the body would only let the
 * server hold the connection for nothing.  Runs inside libcurl: it just
 * stops the transfer.  (Proxy CONNECT responses are not passed here, see
 * CURLOPT_SUPPRESS_CONNECT_HEADERS.)
 */
size_t
phx_receive_header(char *buffer, size_t size, size_t nitems, void *userdata)
{
	PhxResponseBuffer *rb = (PhxResponseBuffer *) userdata;
	size_t		n = size * nitems;
	static const char name[] = "content-length:";
	const size_t namelen = sizeof(name) - 1;

	if (n > namelen && pg_strncasecmp(buffer, name, namelen) == 0)
	{
		const char *p = buffer + namelen;
		const char *end = buffer + n;
		uint64		v = 0;

		while (p < end && (*p == ' ' || *p == '\t'))
			p++;
		for (; p < end && *p >= '0' && *p <= '9'; p++)
		{
			if (v > (PG_UINT64_MAX - 9) / 10)
			{
				v = PG_UINT64_MAX;
				break;
			}
			v = v * 10 + (*p - '0');
		}
		if (v > (uint64) rb->limit)
		{
			rb->too_large = true;
			rb->announced = v;
			return 0;
		}
	}
	return n;
}
