/*-------------------------------------------------------------------------
 *
 * http_transport.c
 *		One request to PostHog's query API with libcurl: handles, options,
 *		headers, TLS, timeouts, cancellation, and the prefetch of the next
 *		page.
 *
 * One easy handle is kept per backend so that consecutive pages reuse the
 * TLS connection.  libcurl runs with CURLOPT_NOSIGNAL (a backend owns its
 * signals); a transfer is aborted from the progress callback as soon as a
 * query cancel or termination is pending, and the interrupt is then
 * serviced with CHECK_FOR_INTERRUPTS().  No ereport() is ever raised from
 * inside a libcurl callback: longjmp'ing through libcurl would corrupt it.
 *
 * Every request first waits for its turn in PostHog's request budget
 * (request_budget.c) and holds one of the project's concurrent request
 * slots until its transfer ends; a prefetch is made only when a turn is
 * free at once.
 *
 * The bytes of the response are taken in by http_receive.c.  What a
 * transfer came to is handed to query_client.c as a PhxTransfer,
 * without libcurl's types; whether to retry is decided there.  Which
 * addresses may be connected to is network_policy.c's.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <sys/socket.h>

#include <curl/curl.h>

#include "access/xact.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "posthog/posthog.h"

static CURL *phx_curl = NULL;

/*
 * Every new connection (to PostHog, or to the proxy) is opened here, so
 * that the network policy sees the address actually connected to.
 */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	PhxNetPolicy *policy = (PhxNetPolicy *) clientp;

	if (!phx_policy_allows_sockaddr(policy, address->family, &address->addr))
		return CURL_SOCKET_BAD;
	return socket(address->family, address->socktype, address->protocol);
}

#if LIBCURL_VERSION_NUM >= 0x075000
/*
 * The same policy for a connection that libcurl reuses, which
 * opensocket_cb never sees.  Runs before every request, with the address
 * the connection goes to (the proxy's, with a proxy).
 */
static int
prereq_cb(void *clientp, char *conn_primary_ip, char *conn_local_ip,
		  int conn_primary_port, int conn_local_port)
{
	PhxNetPolicy *policy = (PhxNetPolicy *) clientp;

	return phx_policy_allows_ip(policy, conn_primary_ip) ?
		CURL_PREREQFUNC_OK : CURL_PREREQFUNC_ABORT;
}
#endif

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

/*
 * curl_easy_setopt() can fail (an option this libcurl was built without, a
 * value it refuses, out of memory).  A request with an option silently
 * missing could go out without TLS verification, the SSRF check or the size
 * limit, so every failure is an error, as in pg_net.
 */
#define PHX_SETOPT(curl, opt, val) \
	do { \
		CURLcode	setopt_rc_ = curl_easy_setopt((curl), (opt), (val)); \
		if (setopt_rc_ != CURLE_OK) \
			setopt_failed(#opt, setopt_rc_); \
	} while (0)

static void
setopt_failed(const char *opt, CURLcode rc)
{
	ereport(ERROR,
			(errcode(rc == CURLE_OUT_OF_MEMORY ? ERRCODE_OUT_OF_MEMORY : ERRCODE_FEATURE_NOT_SUPPORTED),
			 errmsg("could not set libcurl option %s: %s", opt, curl_easy_strerror(rc)),
			 rc == CURLE_OUT_OF_MEMORY ? 0 :
			 errdetail("The libcurl this server runs (%s) does not support what the server options ask for.",
					   curl_version())));
}

/* Sets every option of one request on an easy handle. */
static void
setup_handle(CURL *curl, PhxServerConfig *cfg, const char *url, struct curl_slist *headers,
			 const char *body, PhxResponseBuffer *rb, char *errbuf)
{
	phx_policy_check_proxied_url(cfg, url);
	rb->curl = curl;
	curl_easy_reset(curl);
	PHX_SETOPT(curl, CURLOPT_URL, url);
	PHX_SETOPT(curl, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	PHX_SETOPT(curl, CURLOPT_PROTOCOLS_STR, cfg->allow_http ? "http,https" : "https");
#else
	PHX_SETOPT(curl, CURLOPT_PROTOCOLS,
			   cfg->allow_http ? (long) (CURLPROTO_HTTP | CURLPROTO_HTTPS) : (long) CURLPROTO_HTTPS);
#endif
	PHX_SETOPT(curl, CURLOPT_FOLLOWLOCATION, 0L);
	PHX_SETOPT(curl, CURLOPT_HTTPHEADER, headers);
	PHX_SETOPT(curl, CURLOPT_POSTFIELDS, body);
	PHX_SETOPT(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) strlen(body));
	if (cfg->compression)
		PHX_SETOPT(curl, CURLOPT_ACCEPT_ENCODING, "");
	PHX_SETOPT(curl, CURLOPT_USERAGENT, "posthog_export/" PHX_VERSION);
	PHX_SETOPT(curl, CURLOPT_CONNECTTIMEOUT_MS, (long) cfg->connect_timeout_ms);
	PHX_SETOPT(curl, CURLOPT_TIMEOUT_MS, (long) cfg->timeout_ms);
	PHX_SETOPT(curl, CURLOPT_SSL_VERIFYPEER, cfg->verify == PHX_VERIFY_NONE ? 0L : 1L);
	PHX_SETOPT(curl, CURLOPT_SSL_VERIFYHOST, cfg->verify == PHX_VERIFY_FULL ? 2L : 0L);
	if (cfg->ca_file)
		PHX_SETOPT(curl, CURLOPT_CAINFO, cfg->ca_file);
	if (cfg->client_cert)
		PHX_SETOPT(curl, CURLOPT_SSLCERT, cfg->client_cert);
	if (cfg->client_key)
		PHX_SETOPT(curl, CURLOPT_SSLKEY, cfg->client_key);
	/* only the configured proxy, never one from the server's environment */
	PHX_SETOPT(curl, CURLOPT_PROXY, cfg->proxy ? cfg->proxy : "");
	if (cfg->proxy && cfg->verify != PHX_VERIFY_FULL)
	{
		PHX_SETOPT(curl, CURLOPT_PROXY_SSL_VERIFYPEER, cfg->verify == PHX_VERIFY_NONE ? 0L : 1L);
		PHX_SETOPT(curl, CURLOPT_PROXY_SSL_VERIFYHOST, 0L);
	}
	if (cfg->proxy && cfg->ca_file)
		PHX_SETOPT(curl, CURLOPT_PROXY_CAINFO, cfg->ca_file);
	phx_policy_reset(&rb->policy, cfg->allow_loopback);
	PHX_SETOPT(curl, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	PHX_SETOPT(curl, CURLOPT_OPENSOCKETDATA, &rb->policy);
#if LIBCURL_VERSION_NUM >= 0x075000
	PHX_SETOPT(curl, CURLOPT_PREREQFUNCTION, prereq_cb);
	PHX_SETOPT(curl, CURLOPT_PREREQDATA, &rb->policy);
#else
	/* no check of a reused connection: make every one new, for opensocket_cb */
	if (!cfg->allow_loopback)
	{
		PHX_SETOPT(curl, CURLOPT_FRESH_CONNECT, 1L);
		PHX_SETOPT(curl, CURLOPT_FORBID_REUSE, 1L);
	}
#endif
	PHX_SETOPT(curl, CURLOPT_WRITEFUNCTION, phx_receive_body);
	PHX_SETOPT(curl, CURLOPT_WRITEDATA, rb);
	PHX_SETOPT(curl, CURLOPT_HEADERFUNCTION, phx_receive_header);
	PHX_SETOPT(curl, CURLOPT_HEADERDATA, rb);
	/* a proxy's CONNECT response is not the response: keep it from phx_receive_header */
	PHX_SETOPT(curl, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
	PHX_SETOPT(curl, CURLOPT_NOPROGRESS, 0L);
	PHX_SETOPT(curl, CURLOPT_XFERINFOFUNCTION, xferinfo_cb);
	PHX_SETOPT(curl, CURLOPT_ERRORBUFFER, errbuf);
}

/*
 * Prefetch: the request for the next page is sent (through a multi
 * handle, without waiting) as soon as the current page is parsed, so
 * PostHog works on it while this backend writes the current page.  The
 * prefetch returns a ticket; the next phx_http_query() of a query that
 * carries that ticket (the caller rebuilt the same query) takes the
 * response over; any other query discards it.  Only one is ever in flight.
 */
static struct
{
	CURLM	   *multi;
	CURL	   *easy;
	bool		active;			/* holds cxt and headers */
	bool		started;		/* the transfer is in the multi handle */
	MemoryContext cxt;
	uint64		ticket;			/* of the transfer in flight */
	int			slot;			/* its request budget slot, or -1 */
	char	   *body;
	struct curl_slist *headers;
	PhxResponseBuffer rb;
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
	if (pf.cxt)
		MemoryContextDelete(pf.cxt);
	pf.cxt = NULL;
	pf.body = NULL;
	pf.active = false;
	pf.started = false;
	phx_budget_release(pf.slot);
	pf.slot = -1;
}

static void
prefetch_discard(void)
{
	if (pf.active)
		prefetch_release();
}

/*
 * A prefetch left by a run that failed would hold a concurrent request
 * slot of the project while this session sits idle: it goes with the
 * transaction that failed.
 */
static void
prefetch_at_abort(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT)
		prefetch_discard();
}

static bool
prefetch_matches(uint64 ticket)
{
	if (!pf.active)
		return false;
	if (pf.started && ticket != 0 && ticket == pf.ticket)
		return true;
	prefetch_discard();
	return false;
}

/* Drives the prefetched transfer to its end; hands the body over in rb. */
static CURLcode
prefetch_finish(PhxResponseBuffer *rb, char *errbuf)
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
	rb->policy = pf.rb.policy;
	rb->too_large = pf.rb.too_large;
	rb->announced = pf.rb.announced;
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

/*
 * The request's headers.  The key goes into its header line as it is, and
 * libcurl sends a header line as it is given: a CR/LF in the key would end
 * the line and start headers of someone's choosing.  The option validator
 * refuses such a key; this refuses it again, whatever let it into the
 * catalog, and never prints it.  (The URL and the proxy go through
 * libcurl's URL parser, which refuses control characters itself.)
 */
static struct curl_slist *
request_headers(PhxServerConfig *cfg)
{
	static const char *const fixed[] = {
		"Content-Type: application/json",
		"Accept: application/json",
	};
	struct curl_slist *headers = NULL;
	struct curl_slist *more;
	char	   *auth;

	if (phx_has_control_char(cfg->api_key))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("the api_key of the user mapping for PostHog server \"%s\" contains a control character",
						cfg->server_name),
				 errdetail("The key was not sent: a carriage return or line feed in it would add lines to the request's headers."),
				 errhint("Set the key again with ALTER USER MAPPING ... SERVER %s OPTIONS (SET api_key '...').",
						 quote_identifier(cfg->server_name))));

	for (int i = 0; i < lengthof(fixed); i++)
	{
		if ((more = curl_slist_append(headers, fixed[i])) == NULL)
		{
			curl_slist_free_all(headers);
			ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
		}
		headers = more;
	}
	auth = psprintf("Authorization: Bearer %s", cfg->api_key);
	more = curl_slist_append(headers, auth);
	/* the header copy lives in libcurl now; wipe ours */
	explicit_bzero(auth, strlen(auth));
	pfree(auth);
	if (more == NULL)
	{
		curl_slist_free_all(headers);
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	}
	return more;
}

/* The URL of the query API; it never holds the key (that goes in a header), so errors may name it. */
char *
phx_query_url(PhxServerConfig *cfg)
{
	return psprintf("%s/api/projects/" INT64_FORMAT "/query/", cfg->url, cfg->project_id);
}

/*
 * Sends the query now and returns at once (after at most a short wait for
 * the request to leave) with a ticket, 0 if it could not be sent.
 * phx_http_query() of the same query, with the ticket in q->prefetched,
 * collects the answer, with the usual retries if it is not a good one.
 */
uint64
phx_http_prefetch(PhxServerConfig *cfg, PhxQuery *q, const char *label)
{
	static uint64 last_ticket = 0;
	static bool callback_set = false;
	MemoryContext oldcxt;
	int			running;
	TimestampTz until = GetCurrentTimestamp() + 200 * 1000;
	int			slot;

	(void) get_curl();
	prefetch_discard();
	if (!callback_set)
	{
		RegisterXactCallback(prefetch_at_abort, NULL);
		callback_set = true;
	}
	if (pf.multi == NULL && (pf.multi = curl_multi_init()) == NULL)
		return 0;
	if (pf.easy == NULL && (pf.easy = curl_easy_init()) == NULL)
		return 0;
	/* only with a turn of the budget free now: the page can wait for its own */
	if ((slot = phx_budget_try_acquire(cfg)) < 0)
		return 0;
	pf.slot = slot;
	pf.cxt = AllocSetContextCreate(TopMemoryContext, "posthog_export prefetch", ALLOCSET_DEFAULT_SIZES);
	pf.headers = NULL;
	pf.body = NULL;
	/* from here on, an error leaves what is set up to the next prefetch_discard() */
	pf.active = true;
	oldcxt = MemoryContextSwitchTo(pf.cxt);
	pf.body = phx_request_body(q, label);
	pf.headers = request_headers(cfg);
	memset(&pf.rb, 0, sizeof(pf.rb));
	pf.rb.cxt = AllocSetContextCreate(pf.cxt, "posthog_export prefetch response",
									  ALLOCSET_DEFAULT_SIZES);
	pf.rb.limit = (size_t) cfg->max_response_size;
	pf.errbuf[0] = '\0';
	setup_handle(pf.easy, cfg, phx_query_url(cfg), pf.headers, pf.body, &pf.rb, pf.errbuf);
	MemoryContextSwitchTo(oldcxt);
	if (curl_multi_add_handle(pf.multi, pf.easy) != CURLM_OK)
	{
		prefetch_release();
		return 0;
	}
	pf.started = true;
	pf.ticket = ++last_ticket;
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
	return pf.ticket;
}


/* Sends one request on the backend's own handle and waits for its end. */
static CURLcode
perform_now(CURL *curl, PhxServerConfig *cfg, const char *body, PhxResponseBuffer *rb,
			char *errbuf)
{
	char	   *url = phx_query_url(cfg);
	struct curl_slist *headers = request_headers(cfg);
	volatile CURLcode rc = CURLE_OK;
	volatile int slot = -1;

	PG_TRY();
	{
		slot = phx_budget_acquire(cfg);
		setup_handle(curl, cfg, url, headers, body, rb, errbuf);
		pgstat_report_wait_start(PG_WAIT_EXTENSION);
		rc = curl_easy_perform(curl);
		pgstat_report_wait_end();
	}
	PG_FINALLY();
	{
		curl_slist_free_all(headers);
		/* the handle keeps the connection, but must not keep our header list */
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, NULL);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, NULL);
		phx_budget_release(slot);
	}
	PG_END_TRY();
	pfree(url);
	return rc;
}

/* A failure of libcurl, in the terms query_client.c decides on. */
static PhxTransferEnd
curl_failure(CURLcode rc)
{
	switch (rc)
	{
		case CURLE_OPERATION_TIMEDOUT:
			return PHX_XFER_TIMED_OUT;
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
		case CURLE_COULDNT_RESOLVE_PROXY:
			return PHX_XFER_NO_CONNECTION;
		case CURLE_PEER_FAILED_VERIFICATION:
			return PHX_XFER_TLS_UNVERIFIED;
		case CURLE_SSL_CACERT_BADFILE:
			return PHX_XFER_BAD_CA_FILE;
		case CURLE_SSL_CERTPROBLEM:
			return PHX_XFER_BAD_CLIENT_CERT;
		case CURLE_SSL_CRL_BADFILE:
			return PHX_XFER_BAD_CRL_FILE;
		case CURLE_UNSUPPORTED_PROTOCOL:
			return PHX_XFER_BAD_PROTOCOL;
		case CURLE_URL_MALFORMAT:
			return PHX_XFER_BAD_URL;
		default:
			return PHX_XFER_NETWORK_ERROR;
	}
}

/*
 * What a finished transfer came to.  The policy's refusal comes first, as
 * prereq_cb aborts a transfer just like an interrupt does.  A pending
 * interrupt is serviced here; one that does not throw (a cancel that came
 * too late, say) just ends the transfer.  Only an answer keeps its body.
 */
static void
describe_transfer(CURL *used, CURLcode rc, PhxResponseBuffer *rb, const char *errbuf,
				  PhxTransfer *out)
{
	memset(out, 0, sizeof(*out));
	out->policy = rb->policy;
	out->announced = rb->announced;
	if (rc != CURLE_OK && rb->policy.refused_address[0] != '\0')
		out->end = PHX_XFER_REFUSED;
	else if (rc == CURLE_ABORTED_BY_CALLBACK)
	{
		CHECK_FOR_INTERRUPTS();
		out->end = PHX_XFER_INTERRUPTED;
	}
	else if (rb->too_large)
		out->end = PHX_XFER_TOO_LARGE;
	else if (rb->oom)
		out->end = PHX_XFER_OUT_OF_MEMORY;
	else if (rc != CURLE_OK)
	{
		out->end = curl_failure(rc);
		out->error = pstrdup(errbuf[0] ? errbuf : curl_easy_strerror(rc));
	}
	else
	{
		char	   *ctype = NULL;

		out->end = PHX_XFER_ANSWERED;
		curl_easy_getinfo(used, CURLINFO_RESPONSE_CODE, &out->status);
		/* libcurl's copy lives until the handle's next request */
		if (curl_easy_getinfo(used, CURLINFO_CONTENT_TYPE, &ctype) == CURLE_OK && ctype)
			out->content_type = pstrdup(ctype);
		if (rb->data == NULL)
			rb->data = palloc(1);
		rb->data[rb->len] = '\0';
		out->body = rb->data;
		out->len = rb->len;
		return;
	}
	/* a body cut off may be as large as the limit: it goes now */
	if (rb->data)
		pfree(rb->data);
}

/*
 * Makes one request of the query whose body is given and waits for its
 * end; a prefetched request with this ticket is taken over instead of
 * sending it again.  Raises an error only for a request that cannot be
 * made (a key with a control character, libcurl refusing an option, a
 * proxied URL the policy refuses) and for interrupts: how the transfer
 * went is in *out, for the caller to decide on.
 */
void
phx_transport_perform(PhxServerConfig *cfg, const char *body, uint64 prefetched,
					  PhxTransfer *out)
{
	PhxResponseBuffer rb = {0};
	char		errbuf[CURL_ERROR_SIZE] = "";
	CURL	   *used;
	CURLcode	rc;

	rb.cxt = CurrentMemoryContext;
	rb.limit = (size_t) cfg->max_response_size;
	if (prefetch_matches(prefetched))
	{
		/* the request went out while the previous page was written */
		used = pf.easy;
		rc = prefetch_finish(&rb, errbuf);
	}
	else
	{
		used = get_curl();
		rc = perform_now(used, cfg, body, &rb, errbuf);
	}
	describe_transfer(used, rc, &rb, errbuf, out);
}
