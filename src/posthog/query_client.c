/*-------------------------------------------------------------------------
 *
 * query_client.c
 *		One call of PostHog's query API as the models see it: the retry
 *		policy, and PostHog's answers turned into a page or an error.
 *
 * Retry policy, per page, decided from what the transfer came to (see
 * judge_transfer() and judge_answer()).  PostHog has mapped ClickHouse's
 * failures to other statuses from version to version (posthog/errors.py,
 * posthog/exceptions.py, posthog/api/query.py), so every form is known:
 *   429                 every user of the request budget waits as long
 *                       as PostHog's detail says (else backs off), then
 *                       retries; never counted as a failed attempt
 *   the query ran out of memory: 513 or 512 with code
 *     "clickhouse_memory_limit_exceeded", 400 with code
 *     "memory_limit_exceeded", 504 with PostHog's body;
 *   its estimated time was too long: 512;
 *   it hit max_execution_time: 504 with PostHog's body;
 *   it was too large: 500 "Query size exceeded.";
 *   a second 500 in a row for one page,
 *   a body past max_response_size
 *                       ask the caller to shrink the page, retry at once;
 *                       once it cannot shrink any more (the pager's
 *                       floor), fail, naming the page and what was tried
 *   500 (the first for a page), 502, 503, a proxy's 504 (no PostHog
 *   body), network errors, timeouts, malformed bodies
 *                       exponential backoff with jitter, then retry
 *   other statuses      fail at once (bad query, bad key, no access ...)
 *   certificate, URL
 *   and TLS set-up      fail at once: they fail the same way every time
 *
 * Errors are reported as postgres_fdw reports a remote server's: the
 * primary message is ours and holds no text from PostHog, the HTTP detail
 * (status, PostHog's error code and detail, libcurl's message) goes into
 * the DETAIL, and a CONTEXT line names the HogQL being run (never its
 * values, nor the key).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "storage/latch.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "posthog/posthog.h"

typedef enum PhxOutcome
{
	PHX_OK,
	PHX_RETRY,					/* back off, then retry */
	PHX_THROTTLED,				/* wait as told, then retry */
	PHX_SHRINK,					/* retry with a smaller page */
	PHX_FATAL					/* fail now */
} PhxOutcome;

/* What one request came to. */
typedef struct Attempt
{
	PhxTransfer xfer;
	PhxOutcome	outcome;
	char	   *code;			/* PostHog's error code, or NULL */
	char	   *detail;			/* PostHog's error detail, or NULL */
	bool		posthog_body;	/* the body was PostHog's JSON error shape */
	bool		not_api;		/* the body was not JSON at all (an HTML page ...) */
	char	   *problem;		/* why it failed, for the DETAIL of a report */
	long		wait_ms;		/* PHX_THROTTLED: as PostHog said, or -1 */
	PhxBodyParser parser;		/* of a 200 body */
	void	   *result;			/* PHX_OK: what the parser made of it */
} Attempt;

/* CONTEXT of every report made while a query runs, as postgres_fdw's "remote SQL command" */
static void
hogql_error_context(void *arg)
{
	PhxQuery   *q = (PhxQuery *) arg;

	if (q->kind)
		errcontext("PostHog query: %s", q->kind);
	else
		errcontext("HogQL query: %s", q->text.data);
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
 * Pulls "code" and "detail" from PostHog's error body.  True when the body
 * was PostHog's error shape: JSON with a code or a detail (a proxy or load
 * balancer in front of PostHog sends HTML, or nothing).
 */
static bool
describe_error_body(char *body, size_t len, char **code, char **detail)
{
	*code = NULL;
	*detail = NULL;
	if (body == NULL || len == 0)
		return false;
	body[len] = '\0';
	if (phx_parse_error_body(body, len, code, detail))
		return *code != NULL || *detail != NULL;
	return false;
}

/* A short printable copy of text from the network: control and non-ASCII bytes as '?', runs of spaces as one. */
static char *
printable_excerpt(const char *text, size_t len, size_t max)
{
	StringInfoData out;
	bool		space = false;
	size_t		i;

	initStringInfo(&out);
	for (i = 0; i < len && out.len < (int) max; i++)
	{
		unsigned char c = (unsigned char) text[i];

		if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
		{
			if (!space && out.len > 0)
				appendStringInfoChar(&out, ' ');
			space = true;
			continue;
		}
		space = false;
		appendStringInfoChar(&out, (c < 0x20 || c >= 0x7f || c == '"') ? '?' : (char) c);
	}
	if (i < len)
		appendStringInfoString(&out, "...");
	return out.data;
}

/*
 * Is the body of an answer something other than JSON (an HTML page, a
 * proxy's or load balancer's error, plain text)?  Then no PostHog API
 * sent it, and the problem names its content type and its first bytes,
 * never the whole page.
 */
static bool
judge_not_api(Attempt *a)
{
	const char *p = a->xfer.body;
	const char *end = p ? p + a->xfer.len : NULL;

	if (p == NULL || a->xfer.len == 0)
		return false;
	while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
		p++;
	if (p < end && (*p == '{' || *p == '['))
		return false;
	a->not_api = true;
	a->problem = psprintf("The answer (HTTP %ld, Content-Type %s, %zu bytes) is not a PostHog API response; it begins: \"%s\"",
						  a->xfer.status,
						  a->xfer.content_type ?
						  printable_excerpt(a->xfer.content_type, strlen(a->xfer.content_type), 100) : "not given",
						  a->xfer.len,
						  printable_excerpt(a->xfer.body, a->xfer.len, 80));
	return true;
}

/* The DETAIL of an HTTP answer other than 200: its status and what PostHog said. */
static char *
answer_detail(long status, const char *code, const char *detail)
{
	if (code && detail)
		return psprintf("PostHog answered HTTP %ld with error code \"%s\": %s", status, code, detail);
	if (code)
		return psprintf("PostHog answered HTTP %ld with error code \"%s\".", status, code);
	if (detail)
		return psprintf("PostHog answered HTTP %ld: %s", status, detail);
	return psprintf("PostHog answered HTTP %ld without an error body.", status);
}

/* PostHog's codes for a query that ran out of memory: current versions, older ones */
static bool
is_memory_limit_code(const char *code)
{
	return code != NULL &&
		(strcmp(code, "clickhouse_memory_limit_exceeded") == 0 ||
		 strcmp(code, "memory_limit_exceeded") == 0);
}

/*
 * Decides on an HTTP answer: a page, a retry, a smaller page, or failure
 * (the table at the top of this file).  A 500 is a retry here; the second
 * in a row for one page asks for a smaller page (phx_http_query()).
 */
static void
judge_answer(Attempt *a)
{
	long		status = a->xfer.status;

	if (status == 200)
	{
		/* a malformed body (cut off by a proxy, say) is retried like a network error */
		a->result = phx_try_parse(a->parser, a->xfer.body, a->xfer.len, &a->problem);
		a->outcome = a->result ? PHX_OK : PHX_RETRY;
		if (a->result == NULL)
			(void) judge_not_api(a);
		return;
	}
	a->posthog_body = describe_error_body(a->xfer.body, a->xfer.len, &a->code, &a->detail);
	if (!judge_not_api(a))
		a->problem = answer_detail(status, a->code, a->detail);
	if (status == 429)
	{
		a->outcome = PHX_THROTTLED;
		a->wait_ms = throttle_wait_ms(a->detail);
	}
	else if ((status == 400 || status >= 500) && is_memory_limit_code(a->code))
		a->outcome = PHX_SHRINK;
	else if (status == 512 || status == 513)
		a->outcome = PHX_SHRINK;	/* PostHog's own statuses: too slow, out of memory */
	else if (status == 504)
		/* PostHog's: max_execution_time (or, in some versions, memory); a gateway's: retry */
		a->outcome = a->posthog_body ? PHX_SHRINK : PHX_RETRY;
	else if (status == 500 && a->posthog_body && a->detail &&
			 strcmp(a->detail, "Query size exceeded.") == 0)
		a->outcome = PHX_SHRINK;	/* ClickHouseQuerySizeExceeded: fewer rows, a shorter query */
	else if (status == 500 || status == 502 || status == 503)
		a->outcome = PHX_RETRY;
	else
		a->outcome = PHX_FATAL;
}

static void
report_too_large(PhxServerConfig *cfg, PhxTransfer *x)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("PostHog response exceeds max_response_size (" INT64_FORMAT " bytes)",
					cfg->max_response_size),
			 x->announced > 0 ?
			 errdetail("The response announced a Content-Length of " UINT64_FORMAT " bytes; it was refused before its body was read.",
					   x->announced) :
			 cfg->compression ?
			 errdetail("The body, decompressed, passed the limit; the transfer and the decompression were stopped there.") :
			 errdetail("The body passed the limit; the transfer was stopped there."),
			 errhint("Lower the server option page_size or raise max_response_size.")));
}

/*
 * A certificate, URL or TLS set-up problem fails the same way every time,
 * so it is not retried.  libcurl's own words go into the DETAIL.
 */
static void
report_unusable_connection(PhxServerConfig *cfg, PhxTransfer *x)
{
	const char *name = cfg->server_name;

	switch (x->end)
	{
		case PHX_XFER_TLS_UNVERIFIED:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("could not connect to PostHog server \"%s\": its certificate was not accepted", name),
					 errdetail_internal("%s", x->error),
					 errhint("Check the server options ca_file and verify.")));
			break;
		case PHX_XFER_BAD_CA_FILE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("could not connect to PostHog server \"%s\": the trusted certificate authorities could not be loaded", name),
					 errdetail_internal("%s", x->error)));
			break;
		case PHX_XFER_BAD_CLIENT_CERT:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("could not connect to PostHog server \"%s\": the client certificate or key could not be used", name),
					 errdetail_internal("%s", x->error)));
			break;
		case PHX_XFER_BAD_CRL_FILE:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("could not connect to PostHog server \"%s\": the certificate revocation list could not be loaded", name),
					 errdetail_internal("%s", x->error)));
			break;
		case PHX_XFER_BAD_PROTOCOL:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("could not connect to PostHog server \"%s\": the protocol is not supported or not allowed", name),
					 errdetail_internal("%s", x->error)));
			break;
		default:
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
					 errmsg("could not connect to PostHog server \"%s\": its URL is malformed", name),
					 errdetail_internal("%s", x->error)));
			break;
	}
}

/*
 * Decides on what a transfer came to.  What no retry can change (the
 * network policy's refusal, a body past the limit, a certificate problem)
 * is reported at once; what may be better next time is retried.
 */
static void
judge_transfer(PhxServerConfig *cfg, Attempt *a)
{
	PhxTransfer *x = &a->xfer;

	switch (x->end)
	{
		case PHX_XFER_ANSWERED:
			judge_answer(a);
			break;
		case PHX_XFER_INTERRUPTED:
			/* a pending interrupt that did not throw: just try again */
			a->outcome = PHX_RETRY;
			a->problem = pstrdup("The request was interrupted.");
			break;
		case PHX_XFER_TIMED_OUT:
		case PHX_XFER_NO_CONNECTION:
		case PHX_XFER_NETWORK_ERROR:
			a->outcome = PHX_RETRY;
			a->problem = x->error;
			break;
		case PHX_XFER_REFUSED:
			phx_policy_report_refused(cfg, x->policy.refused_address, x->policy.policy_errno, false);
			break;
		case PHX_XFER_TOO_LARGE:
			/* fewer rows make a smaller body; without a page to shrink, an error */
			a->outcome = PHX_SHRINK;
			a->problem = pstrdup("The response passed max_response_size.");
			break;
		case PHX_XFER_OUT_OF_MEMORY:
			ereport(ERROR,
					(errcode(ERRCODE_OUT_OF_MEMORY),
					 errmsg("out of memory while receiving a PostHog response")));
			break;
		default:
			report_unusable_connection(cfg, x);
			break;
	}
}

/* Sends the query once (or collects its prefetched answer) and judges the outcome. */
static void
make_attempt(PhxServerConfig *cfg, PhxQuery *q, const char *label, uint64 prefetched,
			 PhxBodyParser parser, Attempt *a)
{
	char	   *body = phx_request_body(q, label);

	memset(a, 0, sizeof(*a));
	a->wait_ms = -1;
	a->parser = parser;
	phx_transport_perform(cfg, body, prefetched, &a->xfer);
	pfree(body);
	judge_transfer(cfg, a);
	/* the result, parsed in place, keeps the body; nothing else does */
	if (a->xfer.body && a->outcome != PHX_OK)
		pfree(a->xfer.body);
}

/* An answer that no retry changes: a bad key, a redirect, a bad query. */
static void
report_rejection(PhxServerConfig *cfg, Attempt *a)
{
	long		status = a->xfer.status;

	if (status == 401)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("PostHog server \"%s\" rejected the API key (HTTP %ld)",
						cfg->server_name, status),
				 errdetail_internal("%s", a->problem),
				 errhint("The key is not valid: check the api_key of the user mapping (a personal API key with the query:read scope for project " INT64_FORMAT ").",
						 cfg->project_id)));
	else if (status == 403)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("PostHog server \"%s\" rejected the API key (HTTP %ld)",
						cfg->server_name, status),
				 errdetail_internal("%s", a->problem),
				 errhint("The key was accepted but may not query project " INT64_FORMAT ": it needs the query:read scope and access to that project (check the server option project_id).",
						 cfg->project_id)));
	else if (status == 404)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("PostHog server \"%s\" has no query API at %s (HTTP 404)",
						cfg->server_name, phx_query_url(cfg)),
				 errdetail_internal("%s", a->problem),
				 errhint("Check the server options url (the base URL, as 'https://us.posthog.com') and project_id (" INT64_FORMAT ").",
						 cfg->project_id)));
	else if (status >= 300 && status < 400)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("PostHog server \"%s\" answered with a redirect (HTTP %ld)",
						cfg->server_name, status),
				 errdetail("Redirects are not followed, so the API key never reaches another host."),
				 errhint("Set the server option url to the final address.")));
	else if (a->not_api)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("the answer of PostHog server \"%s\" (HTTP %ld) is not a PostHog API response",
						cfg->server_name, status),
				 errdetail_internal("%s", a->problem),
				 errhint("Something other than PostHog answered at %s: check the server options url and proxy.",
						 phx_query_url(cfg))));
	else
		ereport(ERROR,
				(errcode(status == 400 ? ERRCODE_FDW_ERROR : ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg("PostHog server \"%s\" rejected the query (HTTP %ld)",
						cfg->server_name, status),
				 errdetail_internal("%s", a->problem)));
}

/*
 * The last of max_retries + 1 requests failed: the error says how, and its
 * DETAIL lists what every request came to ("tried").  Messages count
 * requests, not attempts: posthog_export.runs.attempts counts the runs of
 * an interval, each of which may make max_retries + 1 requests per page.
 * Only what may well pass by itself is called transient; a connection
 * that could not be made, or an answer from something other than PostHog,
 * points at the server options instead.
 */
static void
report_retries_exhausted(PhxServerConfig *cfg, int requests, Attempt *a, const char *tried)
{
	const char *name = cfg->server_name;

#define PHX_TRANSIENT_HINT \
	errhint("The error is transient; the run resumes from its last committed page when retried.")

	if (a->xfer.end == PHX_XFER_ANSWERED && a->not_api)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg_plural("PostHog request to server \"%s\" failed after %d request: the answer (HTTP %ld) was not a PostHog API response",
							   "PostHog request to server \"%s\" failed after %d requests: the last answer (HTTP %ld) was not a PostHog API response",
							   requests, name, requests, a->xfer.status),
				 errdetail_internal("%s. Answers, in order: %s.", a->problem, tried),
				 errhint("Something other than PostHog answered at %s (a proxy, a load balancer, a web site): check the server options url and proxy.",
						 phx_query_url(cfg))));
	else if (a->xfer.end == PHX_XFER_ANSWERED && a->xfer.status != 200)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg_plural("PostHog request to server \"%s\" failed after %d request: the answer was HTTP %ld",
							   "PostHog request to server \"%s\" failed after %d requests: the last answer was HTTP %ld",
							   requests, name, requests, a->xfer.status),
				 errdetail_internal("%s Answers, in order: %s.", a->problem, tried),
				 PHX_TRANSIENT_HINT));
	else if (a->xfer.end == PHX_XFER_ANSWERED)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg_plural("PostHog request to server \"%s\" failed after %d request: the answer was not a valid query result",
							   "PostHog request to server \"%s\" failed after %d requests: the last answer was not a valid query result",
							   requests, name, requests),
				 errdetail_internal("%s Answers, in order: %s.", a->problem, tried),
				 PHX_TRANSIENT_HINT));
	else if (a->xfer.end == PHX_XFER_INTERRUPTED)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg_plural("PostHog request to server \"%s\" failed after %d request: it was interrupted",
							   "PostHog request to server \"%s\" failed after %d requests: the last was interrupted",
							   requests, name, requests),
				 errdetail_internal("Answers, in order: %s.", tried),
				 PHX_TRANSIENT_HINT));
	else if (a->xfer.end == PHX_XFER_TIMED_OUT)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg_plural("PostHog request to server \"%s\" failed after %d request: it timed out",
							   "PostHog request to server \"%s\" failed after %d requests: the last timed out",
							   requests, name, requests),
				 errdetail_internal("%s Answers, in order: %s.", a->problem, tried),
				 PHX_TRANSIENT_HINT));
	else if (a->xfer.end == PHX_XFER_NO_CONNECTION)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg_plural("could not connect to PostHog server \"%s\" (%d request)",
							   "could not connect to PostHog server \"%s\" (%d requests)",
							   requests, name, requests),
				 errdetail_internal("%s Answers, in order: %s.", a->problem, tried),
				 cfg->proxy ?
				 errhint("Check that the proxy in the server option proxy is up and reachable from the database server, and the server option url.") :
				 errhint("Check the server option url (%s) and that the database server can reach it.", cfg->url)));
	else
		ereport(ERROR,
				(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
				 errmsg_plural("PostHog request to server \"%s\" failed after %d request: the connection failed",
							   "PostHog request to server \"%s\" failed after %d requests: the connection failed",
							   requests, name, requests),
				 errdetail_internal("%s Answers, in order: %s.", a->problem, tried),
				 PHX_TRANSIENT_HINT));
#undef PHX_TRANSIENT_HINT
}

/* Waits before retry n (1-based): a backoff. */
static void
wait_before_retry(PhxServerConfig *cfg, Attempt *a, int retry)
{
	long		wait_ms = backoff_ms(cfg, retry - 1);

	ereport(LOG,
			(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
			 errmsg("posthog_export: request to PostHog server \"%s\" failed; retry %d of %d in %ld ms",
					cfg->server_name, retry, cfg->max_retries, wait_ms),
			 errdetail_internal("%s", a->problem)));
	phx_sleep_ms(wait_ms);
}

/*
 * PostHog throttled the request: the key's budget is spent elsewhere too
 * (another client of the key), or its concurrency limit was hit.  Every
 * user of the budget holds off for the time PostHog gave, or, without
 * one, for a backoff that grows with each 429 in a row; the next attempt
 * waits for it in the budget (visible in posthog_export.progress).  Not
 * a failed attempt: a wait for the source is never a failure.
 */
static void
wait_throttled(PhxServerConfig *cfg, Attempt *a, int throttles)
{
	long		wait_ms = a->wait_ms >= 0 ? a->wait_ms : Max(backoff_ms(cfg, throttles), 1000);

	ereport(LOG,
			(errcode(ERRCODE_FDW_UNABLE_TO_ESTABLISH_CONNECTION),
			 errmsg("posthog_export: PostHog server \"%s\" throttled the request (HTTP 429); every request with its API key waits %ld ms",
					cfg->server_name, wait_ms),
			 errdetail_internal("%s", a->problem)));
	phx_budget_throttled(cfg, wait_ms);
}

/* Appends what an attempt came to, and at which page size, to the list of what was tried. */
static void
note_attempt(StringInfo tried, PhxQuery *q, Attempt *a)
{
	/* a page is shrunk at most ~13 times, retried max_retries times: keep the list readable */
	if (tried->len > 1500)
	{
		if (tried->data[tried->len - 1] != '.')
			appendStringInfoString(tried, ", ...");
		return;
	}
	if (tried->len > 0)
		appendStringInfoString(tried, ", ");
	if (a->xfer.end == PHX_XFER_ANSWERED)
		appendStringInfo(tried, "HTTP %ld", a->xfer.status);
	else if (a->xfer.end == PHX_XFER_TIMED_OUT)
		appendStringInfoString(tried, "a timeout");
	else if (a->xfer.end == PHX_XFER_INTERRUPTED)
		appendStringInfoString(tried, "an interruption");
	else if (a->xfer.end == PHX_XFER_NO_CONNECTION)
		appendStringInfoString(tried, "no connection");
	else
		appendStringInfoString(tried, "a network error");
	if (q->rows > 0)
		appendStringInfo(tried, " at %d rows", q->rows);
}

/*
 * PostHog could not run the query of a page even at the smallest page the
 * caller can ask for.  The error names the request (the page) and lists
 * every answer with the page size it was asked at.  A later run may fare
 * better (the cluster less busy), so it is not among the errors that pause
 * an export at once.
 */
static void
report_smallest_page_failed(PhxServerConfig *cfg, PhxQuery *q, const char *label,
							Attempt *a, StringInfo tried)
{
	ereport(ERROR,
			(errcode(ERRCODE_FDW_UNABLE_TO_CREATE_EXECUTION),
			 q->rows > 0 ?
			 errmsg("PostHog server \"%s\" could not run \"%s\" at any page size, down to %d rows",
					cfg->server_name, label, q->rows) :
			 errmsg("PostHog server \"%s\" could not run \"%s\" at any page size",
					cfg->server_name, label),
			 errdetail_internal("Answers, in order: %s. The last: %s", tried->data, a->problem),
			 errhint("PostHog ran out of memory or time, or found the query too large, even for the smallest page.  "
					 "The run is retried later; if it keeps failing, narrow the export (include_events, exclude_events) "
					 "or its interval.")));
}

/*
 * Performs one query: POSTs the request, retries per the policy above,
 * and returns what "parser" made of the 200 response.
 */
static void *
run_request(PhxServerConfig *cfg, PhxQuery *q, const char *label,
			PhxShrinkCallback shrink, void *shrink_arg, int64 *bytes_out,
			PhxBodyParser parser)
{
	ErrorContextCallback errcallback;
	int			retries = 0;
	int			throttles = 0;	/* 429s without a wait, for their backoff */
	int			repeated_500 = 0;	/* 500s in a row for this page */
	StringInfoData tried;		/* what every failed attempt came to */
	void	   *result;

	errcallback.callback = hogql_error_context;
	errcallback.arg = q;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;
	initStringInfo(&tried);

	for (int attempt = 0;; attempt++)
	{
		Attempt		a;

		CHECK_FOR_INTERRUPTS();
		/* only the first attempt may take over a prefetched request */
		make_attempt(cfg, q, label, attempt == 0 ? q->prefetched : 0, parser, &a);
		if (a.outcome == PHX_OK)
		{
			if (bytes_out)
				*bytes_out += a.xfer.len;
			result = a.result;
			break;
		}
		if (a.outcome == PHX_FATAL)
			report_rejection(cfg, &a);
		if (a.outcome == PHX_THROTTLED)
		{
			wait_throttled(cfg, &a, throttles++);
			continue;
		}
		note_attempt(&tried, q, &a);

		/*
		 * A 500 may be passing trouble (backed off and retried), or the
		 * query may be too large or too heavy for this page in a version
		 * of PostHog that answers everything with 500: the second in a row
		 * shrinks the page, and so does every further one.
		 */
		if (a.xfer.end == PHX_XFER_ANSWERED && a.xfer.status == 500 && a.outcome == PHX_RETRY)
		{
			if (++repeated_500 >= 2)
				a.outcome = PHX_SHRINK;
		}
		else if (a.outcome != PHX_SHRINK)
			repeated_500 = 0;

		/*
		 * A smaller page, at once; at the floor (or without a page to
		 * shrink) a body past the limit is that error, and anything else
		 * asking for a smaller page fails naming what was tried.
		 */
		if (a.outcome == PHX_SHRINK && (shrink || a.xfer.end == PHX_XFER_TOO_LARGE))
		{
			if (shrink == NULL || !shrink(shrink_arg, q))
			{
				if (a.xfer.end == PHX_XFER_TOO_LARGE)
					report_too_large(cfg, &a.xfer);
				report_smallest_page_failed(cfg, q, label, &a, &tried);
			}
			ereport(LOG,
					(errcode(ERRCODE_FDW_ERROR),
					 a.xfer.end == PHX_XFER_TOO_LARGE ?
					 errmsg("posthog_export: the answer of PostHog server \"%s\" was too large; retrying \"%s\" with a smaller page (%d rows)",
							cfg->server_name, label, q->rows) :
					 errmsg("posthog_export: PostHog server \"%s\" answered HTTP %ld; retrying \"%s\" with a smaller page (%d rows)",
							cfg->server_name, a.xfer.status, label, q->rows),
					 errdetail_internal("%s", a.problem)));
			continue;
		}
		/* without a page to shrink, an answer that asked for it is retried like any */
		if (retries >= cfg->max_retries)
			report_retries_exhausted(cfg, retries + 1, &a, tried.data);
		retries++;
		wait_before_retry(cfg, &a, retries);
	}

	error_context_stack = errcallback.previous;
	return result;
}

static void *
parse_page_any(char *body, size_t len)
{
	return phx_parse_page(body, len);
}

/*
 * Performs one query and returns the parsed page of its 200 response.
 * "label" names the request (the page) in PostHog's query log and in
 * errors.
 */
PhxPage *
phx_http_query(PhxServerConfig *cfg, PhxQuery *q, const char *label,
			   PhxShrinkCallback shrink, void *shrink_arg, int64 *bytes_out)
{
	return (PhxPage *) run_request(cfg, q, label, shrink, shrink_arg, bytes_out,
								   parse_page_any);
}

/*
 * The same for a query whose answer is not a page (the schema query):
 * "parser" reads its 200 body.  Nothing to shrink: an answer asking for a
 * smaller page is retried like any.
 */
void *
phx_http_request(PhxServerConfig *cfg, PhxQuery *q, const char *label,
				 PhxBodyParser parser, int64 *bytes_out)
{
	return run_request(cfg, q, label, NULL, NULL, bytes_out, parser);
}

/*
 * check_server(): one cheap query ("SELECT 1") through the same path as
 * every page (the request budget, the network policy, TLS), made once, so
 * that a wrong URL (404), key (401), scope or project (403), or network
 * fails now with the error a run would give, and precisely.  Returns a
 * short report of what answered.  The key is never part of it.
 */
char *
phx_check_server(PhxServerConfig *cfg)
{
	PhxQuery	q;
	PhxPage    *page;
	int64		bytes = 0;
	TimestampTz started = GetCurrentTimestamp();
	long		secs;
	int			usecs;

	/* one request: a check that retries for a minute is no check */
	cfg->max_retries = 0;
	phx_query_init(&q);
	appendStringInfoString(&q.text, "SELECT 1 AS ok");
	page = phx_http_query(cfg, &q, "posthog_export check_server", NULL, NULL, &bytes);
	if (page->nrows != 1 || page->ncolumns != 1)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_ERROR),
				 errmsg("PostHog server \"%s\" answered the check query with %d rows of %d columns, not one row of one",
						cfg->server_name, page->nrows, page->ncolumns),
				 errhint("Check that the server option url names a PostHog API.")));
	TimestampDifference(started, GetCurrentTimestamp(), &secs, &usecs);
	return psprintf("PostHog server \"%s\" answered a query of project " INT64_FORMAT " at %s with this API key in %ld ms",
					cfg->server_name, cfg->project_id, phx_query_url(cfg),
					secs * 1000 + usecs / 1000);
}
