/*-------------------------------------------------------------------------
 *
 * http_client.c
 *		Calls of PostHog's query API with libcurl: timeouts, TLS
 *		verification, cancellation, and the retry policy.
 *
 * One easy handle is kept per backend so that consecutive pages reuse the
 * TLS connection.  libcurl runs with CURLOPT_NOSIGNAL (a backend owns its
 * signals); a transfer is aborted from the progress callback as soon as a
 * query cancel or termination is pending, and the interrupt is then
 * serviced with CHECK_FOR_INTERRUPTS().  No ereport() is ever raised from
 * inside a libcurl callback: longjmp'ing through libcurl would corrupt it.
 *
 * Retry policy, per page:
 *   429                 wait as long as PostHog's detail says, then retry
 *   500, 502, 503,
 *   network errors,
 *   malformed bodies    exponential backoff with jitter, then retry
 *   504, 512            ask the caller to shrink the page, retry at once
 *   other statuses      fail at once (bad query, bad key, no access ...)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "posthog_export.h"

static CURL *phx_curl = NULL;

typedef struct ResponseBuffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		limit;
	bool		too_large;
	bool		oom;
	MemoryContext cxt;
	CURL	   *curl;
	bool		allow_loopback;
	char		refused_address[64];	/* set when the SSRF policy refused one */
} ResponseBuffer;

/*
 * Appends received bytes.  Runs inside libcurl, so it must not throw:
 * allocation failure or an oversized body just stops the transfer and is
 * reported after curl_easy_perform() returns.
 */
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	ResponseBuffer *rb = (ResponseBuffer *) userdata;
	size_t		n = size * nmemb;

	if (rb->len + n > rb->limit)
	{
		rb->too_large = true;
		return 0;
	}
	if (rb->len + n + 1 > rb->cap)
	{
		size_t		newcap = Max(rb->cap * 2, rb->len + n + 1);
		char	   *newdata;
		curl_off_t	expected = -1;

		/* an uncompressed body announces its size: allocate it once */
		if (rb->len == 0 && rb->curl &&
			curl_easy_getinfo(rb->curl, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &expected) == CURLE_OK &&
			expected > 0 && (size_t) expected < rb->limit)
			newcap = Max(newcap, (size_t) expected + 1);
		newcap = Max(newcap, 64 * 1024);
		newdata = MemoryContextAllocExtended(rb->cxt, newcap,
											 MCXT_ALLOC_HUGE | MCXT_ALLOC_NO_OOM);
		if (newdata == NULL)
		{
			rb->oom = true;
			return 0;
		}
		if (rb->data)
		{
			memcpy(newdata, rb->data, rb->len);
			pfree(rb->data);
		}
		rb->data = newdata;
		rb->cap = newcap;
	}
	memcpy(rb->data + rb->len, ptr, n);
	rb->len += n;
	phx_progress_bytes((int64) rb->len);
	return n;
}

/*
 * The SSRF policy: unless the server allows it, never connect to this
 * machine's loopback, to an unspecified address, or to link-local ones (a
 * cloud's metadata service lives there).  Checked on the address actually
 * connected to, so a host name resolving there is caught as well.
 */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	ResponseBuffer *rb = (ResponseBuffer *) clientp;
	bool		local = false;

	if (address->family == AF_INET)
	{
		uint32		a = ntohl(((struct sockaddr_in *) &address->addr)->sin_addr.s_addr);

		local = (a >> 24) == 127 || a == 0 || (a >> 16) == 0xA9FE;
		if (local)
			inet_ntop(AF_INET, &((struct sockaddr_in *) &address->addr)->sin_addr,
					  rb->refused_address, sizeof(rb->refused_address));
	}
	else if (address->family == AF_INET6)
	{
		struct in6_addr *a6 = &((struct sockaddr_in6 *) &address->addr)->sin6_addr;

		local = IN6_IS_ADDR_LOOPBACK(a6) || IN6_IS_ADDR_UNSPECIFIED(a6) ||
			IN6_IS_ADDR_LINKLOCAL(a6) ||
			(IN6_IS_ADDR_V4MAPPED(a6) && (a6->s6_addr[12] == 127 ||
										  (a6->s6_addr[12] == 169 && a6->s6_addr[13] == 254)));
		if (local)
			inet_ntop(AF_INET6, a6, rb->refused_address, sizeof(rb->refused_address));
	}
	if (local && !rb->allow_loopback)
		return CURL_SOCKET_BAD;
	rb->refused_address[0] = '\0';
	return socket(address->family, address->socktype, address->protocol);
}

/* Aborts the transfer when the backend has a cancel or termination pending. */
static int
xferinfo_cb(void *clientp, curl_off_t dltotal, curl_off_t dlnow,
			curl_off_t ultotal, curl_off_t ulnow)
{
	return (QueryCancelPending || ProcDiePending) ? 1 : 0;
}

static CURL *
get_curl(void)
{
	static bool global_done = false;

	if (!global_done)
	{
		if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not initialize libcurl")));
		global_done = true;
	}
	if (phx_curl == NULL)
	{
		phx_curl = curl_easy_init();
		if (phx_curl == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("could not create a libcurl handle")));
	}
	return phx_curl;
}

/* Interruptible sleep: a cancel or terminate ends it at once. */
static void
phx_sleep_ms(long ms)
{
	TimestampTz deadline = GetCurrentTimestamp() + ms * 1000;

	for (;;)
	{
		long		left;

		CHECK_FOR_INTERRUPTS();
		left = (long) ((deadline - GetCurrentTimestamp()) / 1000);
		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}

static long
backoff_ms(PhxServerConfig *cfg, int retry)
{
	double		delay = (double) cfg->retry_base_delay_ms * (double) (1 << Min(retry, 16));

	delay = Min(delay, 60000.0);
	/* "equal jitter": half fixed, half random, so retries of many exports spread out */
	return (long) (delay / 2 + pg_prng_double(&pg_global_prng_state) * delay / 2);
}

/*
 * PostHog's 429 detail says "Request was throttled. Expected available in
 * 37 seconds."; there is no Retry-After header to rely on.
 */
static long
throttle_wait_ms(const char *detail)
{
	const char *p;

	if (detail && (p = strstr(detail, "available in ")) != NULL)
	{
		long		secs = strtol(p + strlen("available in "), NULL, 10);

		if (secs > 0)
			return Min(secs, 3600) * 1000L;
	}
	return -1;
}

/*
 * Pulls "code" and "detail" from PostHog's error body, or a printable
 * prefix of a body that is not JSON (a proxy's HTML page, say).
 */
static void
describe_error_body(char *body, size_t len, char **code, char **detail)
{
	*code = NULL;
	*detail = NULL;
	if (body == NULL || len == 0)
		return;
	body[len] = '\0';
	if (phx_parse_error_body(body, len, code, detail))
		return;
	{
		int			n = Min(len, 200);
		char	   *s = pnstrdup(body, n);

		for (char *p = s; *p; p++)
			if ((unsigned char) *p < 0x20 || (unsigned char) *p >= 0x7f)
				*p = ' ';
		*detail = s;
	}
}

/*
 * Parses a 200 body; a body that is not the JSON we expect (cut off by a
 * proxy, say) returns NULL with the reason, so that it can be retried.
 */
static PhxPage *
try_parse_page(char *body, size_t len, char **problem)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	PhxPage    *volatile page = NULL;

	PG_TRY();
	{
		page = phx_parse_page(body, len);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_FDW_INVALID_DATA_TYPE)
			PG_RE_THROW();
		FlushErrorState();
		*problem = edata->message;
	}
	PG_END_TRY();
	return page;
}

typedef enum
{
	PHX_OK,
	PHX_RETRY,					/* back off, then retry */
	PHX_THROTTLED,				/* wait as told, then retry */
	PHX_SHRINK,					/* retry with a smaller page */
	PHX_FATAL					/* fail now */
} PhxOutcome;

/* Sets every option of one request on an easy handle. */
static void
setup_handle(CURL *curl, PhxServerConfig *cfg, const char *url, struct curl_slist *headers,
			 const char *body, ResponseBuffer *rb, char *errbuf)
{
	rb->curl = curl;
	curl_easy_reset(curl);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, cfg->allow_http ? "http,https" : "https");
#else
	curl_easy_setopt(curl, CURLOPT_PROTOCOLS,
					 cfg->allow_http ? (CURLPROTO_HTTP | CURLPROTO_HTTPS) : CURLPROTO_HTTPS);
#endif
	curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(body));
	if (cfg->compression)
		curl_easy_setopt(curl, CURLOPT_ACCEPT_ENCODING, "");
	curl_easy_setopt(curl, CURLOPT_USERAGENT, "posthog_export/" PHX_VERSION);
	curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, (long) cfg->connect_timeout_ms);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, (long) cfg->timeout_ms);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, cfg->verify == PHX_VERIFY_NONE ? 0L : 1L);
	curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, cfg->verify == PHX_VERIFY_FULL ? 2L : 0L);
	if (cfg->ca_file)
		curl_easy_setopt(curl, CURLOPT_CAINFO, cfg->ca_file);
	if (cfg->client_cert)
		curl_easy_setopt(curl, CURLOPT_SSLCERT, cfg->client_cert);
	if (cfg->client_key)
		curl_easy_setopt(curl, CURLOPT_SSLKEY, cfg->client_key);
	/* only the configured proxy, never one from the server's environment */
	curl_easy_setopt(curl, CURLOPT_PROXY, cfg->proxy ? cfg->proxy : "");
	if (cfg->proxy && cfg->verify != PHX_VERIFY_FULL)
	{
		curl_easy_setopt(curl, CURLOPT_PROXY_SSL_VERIFYPEER, cfg->verify == PHX_VERIFY_NONE ? 0L : 1L);
		curl_easy_setopt(curl, CURLOPT_PROXY_SSL_VERIFYHOST, 0L);
	}
	if (cfg->proxy && cfg->ca_file)
		curl_easy_setopt(curl, CURLOPT_PROXY_CAINFO, cfg->ca_file);
	rb->refused_address[0] = '\0';
	rb->allow_loopback = cfg->allow_loopback;
	curl_easy_setopt(curl, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	curl_easy_setopt(curl, CURLOPT_OPENSOCKETDATA, rb);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, rb);
	curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
	curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
	curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
}

/*
 * Prefetch: the request for the next page is sent (through a multi
 * handle, without waiting) as soon as the current page is parsed, so
 * PostHog works on it while this backend writes the current page.  The
 * next phx_http_query() with the same body takes the response over;
 * anything else discards it.  Only one is ever in flight.
 */
static struct
{
	CURLM	   *multi;
	CURL	   *easy;
	bool		active;
	MemoryContext cxt;
	char	   *body;
	struct curl_slist *headers;
	ResponseBuffer rb;
	char		errbuf[CURL_ERROR_SIZE];
} pf;

/* Ends the prefetched transfer (finished or not) and frees what it holds. */
static void
prefetch_release(void)
{
	curl_multi_remove_handle(pf.multi, pf.easy);
	curl_easy_setopt(pf.easy, CURLOPT_HTTPHEADER, NULL);
	curl_easy_setopt(pf.easy, CURLOPT_POSTFIELDS, NULL);
	curl_slist_free_all(pf.headers);
	pf.headers = NULL;
	MemoryContextDelete(pf.cxt);
	pf.cxt = NULL;
	pf.active = false;
}

static void
prefetch_discard(void)
{
	if (pf.active)
		prefetch_release();
}

static bool
prefetch_matches(const char *body)
{
	if (!pf.active)
		return false;
	if (strcmp(pf.body, body) == 0)
		return true;
	prefetch_discard();
	return false;
}

/* Drives the prefetched transfer to its end; hands the body over in rb. */
static CURLcode
prefetch_finish(ResponseBuffer *rb, char *errbuf)
{
	CURLcode	rc = CURLE_OK;
	int			running = 1;
	CURLMsg    *msg;
	int			left;

	pgstat_report_wait_start(PG_WAIT_EXTENSION);
	while (running)
	{
		if (curl_multi_perform(pf.multi, &running) != CURLM_OK)
			break;
		if (running)
			(void) curl_multi_poll(pf.multi, NULL, 0, 1000, NULL);
		/* a cancel aborts the transfer through xferinfo_cb; service it here */
		if (QueryCancelPending || ProcDiePending)
		{
			pgstat_report_wait_end();
			prefetch_discard();
			CHECK_FOR_INTERRUPTS();
			pgstat_report_wait_start(PG_WAIT_EXTENSION);
		}
	}
	pgstat_report_wait_end();
	while ((msg = curl_multi_info_read(pf.multi, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE)
			rc = msg->data.result;
	strlcpy(errbuf, pf.errbuf, CURL_ERROR_SIZE);
	memcpy(rb->refused_address, pf.rb.refused_address, sizeof(rb->refused_address));
	rb->too_large = pf.rb.too_large;
	rb->oom = pf.rb.oom;
	rb->len = pf.rb.len;
	if (pf.rb.data)
	{
		/* the body's own context moves to the caller: no copy */
		MemoryContextSetParent(pf.rb.cxt, rb->cxt);
		rb->data = pf.rb.data;
		rb->cap = pf.rb.cap;
	}
	/* the status is read from pf.easy by the caller before the next prefetch */
	prefetch_release();
	return rc;
}

static struct curl_slist *
request_headers(PhxServerConfig *cfg)
{
	struct curl_slist *headers = NULL;
	char	   *auth = psprintf("Authorization: Bearer %s", cfg->api_key);

	headers = curl_slist_append(headers, "Content-Type: application/json");
	headers = curl_slist_append(headers, "Accept: application/json");
	headers = curl_slist_append(headers, auth);
	/* the header copy lives in libcurl now; wipe ours */
	explicit_bzero(auth, strlen(auth));
	pfree(auth);
	if (headers == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	return headers;
}

static char *
query_url(PhxServerConfig *cfg)
{
	return psprintf("%s/api/projects/" INT64_FORMAT "/query/", cfg->url, cfg->project_id);
}

/*
 * Sends the query now and returns at once (after at most a short wait for
 * the request to leave); phx_http_query() with the same query collects the
 * answer, with the usual retries if it is not a good one.
 */
void
phx_http_prefetch(PhxServerConfig *cfg, PhxQuery *q, const char *label)
{
	MemoryContext oldcxt;
	int			running;
	TimestampTz until = GetCurrentTimestamp() + 200 * 1000;

	(void) get_curl();
	prefetch_discard();
	if (pf.multi == NULL && (pf.multi = curl_multi_init()) == NULL)
		return;
	if (pf.easy == NULL && (pf.easy = curl_easy_init()) == NULL)
		return;
	pf.cxt = AllocSetContextCreate(TopMemoryContext, "posthog_export prefetch", ALLOCSET_DEFAULT_SIZES);
	oldcxt = MemoryContextSwitchTo(pf.cxt);
	pf.body = phx_request_body(q, label);
	pf.headers = request_headers(cfg);
	memset(&pf.rb, 0, sizeof(pf.rb));
	pf.rb.cxt = AllocSetContextCreate(pf.cxt, "posthog_export prefetch response",
									  ALLOCSET_DEFAULT_SIZES);
	pf.rb.limit = (size_t) cfg->max_response_size;
	pf.errbuf[0] = '\0';
	setup_handle(pf.easy, cfg, query_url(cfg), pf.headers, pf.body, &pf.rb, pf.errbuf);
	MemoryContextSwitchTo(oldcxt);
	if (curl_multi_add_handle(pf.multi, pf.easy) != CURLM_OK)
	{
		curl_slist_free_all(pf.headers);
		MemoryContextDelete(pf.cxt);
		return;
	}
	pf.active = true;
	/* push the request out (connect, TLS, send), then leave it to PostHog */
	for (;;)
	{
		curl_off_t	sent = 0;

		if (curl_multi_perform(pf.multi, &running) != CURLM_OK || !running)
			break;
		curl_easy_getinfo(pf.easy, CURLINFO_SIZE_UPLOAD_T, &sent);
		if (sent >= (curl_off_t) strlen(pf.body) || GetCurrentTimestamp() > until)
			break;
		(void) curl_multi_poll(pf.multi, NULL, 0, 10, NULL);
	}
}

/*
 * Performs one query: POSTs the request, retries per the policy above,
 * and returns the parsed page of a 200 response.
 */
PhxPage *
phx_http_query(PhxServerConfig *cfg, PhxQuery *q, const char *label,
			   PhxShrinkCallback shrink, void *shrink_arg, int64 *bytes_out)
{
	CURL	   *curl = get_curl();
	char	   *url = query_url(cfg);
	struct curl_slist *headers = request_headers(cfg);
	int			retries = 0;
	int			attempt = 0;
	char	   *last_problem = NULL;
	PhxPage    *result = NULL;

	PG_TRY();
	{
		for (;;)
		{
			ResponseBuffer rb = {0};
			char		errbuf[CURL_ERROR_SIZE] = "";
			char	   *body = phx_request_body(q, label);
			CURLcode	rc;
			long		status = 0;
			PhxOutcome	outcome;
			char	   *code = NULL;
			char	   *detail = NULL;
			long		wait_ms = -1;
			CURL	   *used;

			CHECK_FOR_INTERRUPTS();

			rb.cxt = CurrentMemoryContext;
			rb.limit = (size_t) cfg->max_response_size;

			if (attempt == 0 && prefetch_matches(body))
			{
				/* the request went out while the previous page was written */
				used = pf.easy;
				rc = prefetch_finish(&rb, errbuf);
			}
			else
			{
				used = curl;
				setup_handle(curl, cfg, url, headers, body, &rb, errbuf);
				pgstat_report_wait_start(PG_WAIT_EXTENSION);
				rc = curl_easy_perform(curl);
				pgstat_report_wait_end();
			}

			if (rc == CURLE_ABORTED_BY_CALLBACK)
			{
				CHECK_FOR_INTERRUPTS();
				/* a pending interrupt that did not throw: just try again */
				outcome = PHX_RETRY;
				last_problem = pstrdup("the request was interrupted");
			}
			else if (rb.too_large)
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("PostHog response exceeds max_response_size (" INT64_FORMAT " bytes)",
								cfg->max_response_size),
						 errhint("Lower the server option page_size or raise max_response_size.")));
			else if (rb.oom)
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory while receiving a PostHog response")));
			else if (rc != CURLE_OK && rb.refused_address[0] != '\0')
				ereport(ERROR,
						(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
						 errmsg("refusing to connect PostHog server \"%s\" to local address %s",
								cfg->server_name, rb.refused_address),
						 errdetail("Loopback, unspecified and link-local addresses are refused, so an export cannot be pointed at services of the database host."),
						 errhint("Set the server option allow_loopback 'true' for a PostHog (or proxy) running on this host.")));
			else if (rc != CURLE_OK)
			{
				/* no ereport from here: the network problem is retried */
				outcome = PHX_RETRY;
				last_problem = psprintf("%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
				/* a certificate or setup problem fails the same way every time */
				if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE ||
					rc == CURLE_SSL_CERTPROBLEM || rc == CURLE_UNSUPPORTED_PROTOCOL ||
					rc == CURLE_URL_MALFORMAT || rc == CURLE_SSL_CRL_BADFILE)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
							 errmsg("could not connect to PostHog server \"%s\": %s",
									cfg->server_name, last_problem)));
			}
			else
			{
				curl_easy_getinfo(used, CURLINFO_RESPONSE_CODE, &status);
				if (status == 200)
				{
					if (rb.data == NULL)
						rb.data = palloc(1);
					rb.data[rb.len] = '\0';
					/* a malformed body is retried like a network error */
					result = try_parse_page(rb.data, rb.len, &last_problem);
					outcome = result ? PHX_OK : PHX_RETRY;
					if (result && bytes_out)
						*bytes_out += rb.len;
				}
				else
				{
					describe_error_body(rb.data, rb.len, &code, &detail);
					last_problem = psprintf("HTTP %ld%s%s", status,
											detail ? ": " : "", detail ? detail : "");
					if (status == 429)
					{
						outcome = PHX_THROTTLED;
						wait_ms = throttle_wait_ms(detail);
					}
					else if (status == 500 || status == 502 || status == 503)
						outcome = PHX_RETRY;
					else if (status == 504 || status == 512)
						outcome = PHX_SHRINK;
					else
						outcome = PHX_FATAL;
				}
			}
			if (rb.data && outcome != PHX_OK)
				pfree(rb.data);
			pfree(body);
			attempt++;

			if (outcome == PHX_OK)
				break;
			if (outcome == PHX_FATAL)
			{
				if (status == 401 || status == 403)
					ereport(ERROR,
							(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
							 errmsg("PostHog server \"%s\" rejected the API key (HTTP %ld)",
									cfg->server_name, status),
							 detail ? errdetail("%s", detail) : 0,
							 errhint("Check the api_key of the user mapping: a personal API key with the query:read scope for project " INT64_FORMAT ".",
									 cfg->project_id)));
				else if (status >= 300 && status < 400)
					ereport(ERROR,
							(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
							 errmsg("PostHog server \"%s\" answered with a redirect (HTTP %ld)",
									cfg->server_name, status),
							 errdetail("Redirects are not followed, so the API key never reaches another host."),
							 errhint("Set the server option url to the final address.")));
				else
					ereport(ERROR,
							(errcode(status == 400 ? ERRCODE_FDW_ERROR : ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
							 errmsg("PostHog server \"%s\" rejected the query (HTTP %ld%s%s)",
									cfg->server_name, status,
									code ? ", " : "", code ? code : ""),
							 detail ? errdetail("%s", detail) : 0));
			}
			if (outcome == PHX_SHRINK && shrink && shrink(shrink_arg, q))
			{
				ereport(LOG,
						(errmsg("posthog_export: %s answered %s; retrying with a smaller page",
								cfg->server_name, last_problem)));
				continue;
			}
			if (retries >= cfg->max_retries)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
						 errmsg("PostHog request to server \"%s\" failed after %d attempts: %s",
								cfg->server_name, retries + 1, last_problem),
						 errhint("The error is transient; the run resumes from its last committed page when retried.")));
			if (wait_ms < 0)
				wait_ms = backoff_ms(cfg, retries);
			retries++;
			ereport(LOG,
					(errmsg("posthog_export: request to %s failed (%s); retry %d of %d in %ld ms",
							cfg->server_name, last_problem, retries, cfg->max_retries, wait_ms)));
			phx_sleep_ms(wait_ms);
		}
	}
	PG_FINALLY();
	{
		curl_slist_free_all(headers);
		/* the handle keeps the connection, but must not keep our header list */
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, NULL);
	}
	PG_END_TRY();

	return result;
}
