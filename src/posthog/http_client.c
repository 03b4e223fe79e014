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
#include <ifaddrs.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <curl/curl.h>

#include "common/pg_prng.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "posthog/posthog.h"

static CURL *phx_curl = NULL;

PhxBytesCallback phx_http_bytes_callback = NULL;

typedef struct ResponseBuffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		limit;
	bool		too_large;
	uint64		announced;		/* a Content-Length above limit, else 0 */
	bool		oom;
	MemoryContext cxt;
	CURL	   *curl;
	bool		allow_loopback;
	char		refused_address[64];	/* set when the SSRF policy refused one */
	int			policy_errno;	/* getifaddrs() failed: the policy could not be checked */
} ResponseBuffer;

/* the first allocation of a body, and how far a Content-Length may raise it */
#define PHX_BODY_MIN_ALLOC		((size_t) 64 * 1024)
#define PHX_BODY_HINT_MAX		((size_t) 1024 * 1024)

/*
 * repalloc_huge() that returns NULL instead of throwing: write_cb runs
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
static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	ResponseBuffer *rb = (ResponseBuffer *) userdata;
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
static size_t
header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	ResponseBuffer *rb = (ResponseBuffer *) userdata;
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

/*
 * The SSRF policy: whether connecting to this address (an in_addr or an
 * in6_addr) reaches this machine or its link.  That is: loopback; the
 * unspecified addresses, 0.0.0.0/8 and :: (a connect() to them reaches the
 * local host); link-local, 169.254.0.0/16 and fe80::/10 (a cloud's metadata
 * service lives there); and every address of this host's own interfaces (a
 * connection to the host's own address reaches its listeners on 0.0.0.0
 * just as well as one to 127.0.0.1).  An IPv6 spelling of an IPv4 address,
 * IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d or NAT64's
 * 64:ff9b::a.b.c.d, is judged by the IPv4 address it carries.
 *
 * Private networks (10/8, fc00::/7 ...) are not "this machine" and are
 * allowed: a self-hosted PostHog lives there.  If the interfaces cannot be
 * listed, the address counts as local (the policy fails closed) and *err is
 * set.  Runs inside libcurl callbacks: never throws.
 */
static bool
address_is_local(int family, const void *addr, int *err)
{
	static const uint8 nat64_prefix[12] = {0x00, 0x64, 0xff, 0x9b};
	struct ifaddrs *ifs;
	uint32		v4 = 0;
	bool		local = false;

	*err = 0;
	if (family == AF_INET6)
	{
		const struct in6_addr *a6 = (const struct in6_addr *) addr;

		if (IN6_IS_ADDR_UNSPECIFIED(a6) || IN6_IS_ADDR_LOOPBACK(a6) || IN6_IS_ADDR_LINKLOCAL(a6))
			return true;
		if (IN6_IS_ADDR_V4MAPPED(a6) || IN6_IS_ADDR_V4COMPAT(a6) ||
			memcmp(a6->s6_addr, nat64_prefix, sizeof(nat64_prefix)) == 0)
		{
			memcpy(&v4, &a6->s6_addr[12], sizeof(v4));
			family = AF_INET;
		}
	}
	else if (family == AF_INET)
		memcpy(&v4, &((const struct in_addr *) addr)->s_addr, sizeof(v4));
	else
		return true;			/* not an IP address: nothing to connect to */

	if (family == AF_INET)
	{
		uint32		a = ntohl(v4);

		if ((a >> 24) == 0 || (a >> 24) == 127 || (a >> 16) == 0xA9FE)
			return true;
	}

	if (getifaddrs(&ifs) != 0)
	{
		*err = errno ? errno : EIO;
		return true;
	}
	for (struct ifaddrs *i = ifs; i != NULL && !local; i = i->ifa_next)
	{
		if (i->ifa_addr == NULL || i->ifa_addr->sa_family != family)
			continue;
		if (family == AF_INET)
			local = ((struct sockaddr_in *) i->ifa_addr)->sin_addr.s_addr == v4;
		else
			local = memcmp(&((struct sockaddr_in6 *) i->ifa_addr)->sin6_addr, addr,
						   sizeof(struct in6_addr)) == 0;
	}
	freeifaddrs(ifs);
	return local;
}

/*
 * Applies the policy for one connection: true if it may go ahead; if not,
 * the refused address is kept in rb for the error message.
 */
static bool
policy_allows(ResponseBuffer *rb, int family, const void *addr)
{
	int			err;

	if (rb->allow_loopback)
		return true;
	if (!address_is_local(family, addr, &err))
		return true;
	if ((family != AF_INET && family != AF_INET6) ||
		inet_ntop(family, addr, rb->refused_address, sizeof(rb->refused_address)) == NULL)
		snprintf(rb->refused_address, sizeof(rb->refused_address), "(address family %d)", family);
	rb->policy_errno = err;
	return false;
}

/*
 * Every new connection (to PostHog, or to the proxy) is opened here, on the
 * address actually connected to, after name resolution: a host name that
 * resolves to a refused address is caught as well, and no packet is sent.
 */
static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *address)
{
	ResponseBuffer *rb = (ResponseBuffer *) clientp;
	const void *addr = NULL;

	if (address->family == AF_INET)
		addr = &((struct sockaddr_in *) &address->addr)->sin_addr;
	else if (address->family == AF_INET6)
		addr = &((struct sockaddr_in6 *) &address->addr)->sin6_addr;
	if (!policy_allows(rb, address->family, addr))
		return CURL_SOCKET_BAD;
	/* another address of the same name was refused before: that is not the error */
	rb->refused_address[0] = '\0';
	rb->policy_errno = 0;
	return socket(address->family, address->socktype, address->protocol);
}

#if LIBCURL_VERSION_NUM >= 0x075000
/*
 * The same policy for a connection that libcurl reuses, which
 * opensocket_cb never sees: one kept alive for a server with
 * allow_loopback 'true' must not carry the request of a server without it.
 * Runs before every request, with the address the connection goes to (the
 * proxy's, with a proxy).
 */
static int
prereq_cb(void *clientp, char *conn_primary_ip, char *conn_local_ip,
		  int conn_primary_port, int conn_local_port)
{
	ResponseBuffer *rb = (ResponseBuffer *) clientp;
	char		ip[INET6_ADDRSTRLEN + 1];
	struct in6_addr a6;
	struct in_addr a4;

	if (rb->allow_loopback)
		return CURL_PREREQFUNC_OK;
	strlcpy(ip, conn_primary_ip ? conn_primary_ip : "", sizeof(ip));
	ip[strcspn(ip, "%")] = '\0';	/* an IPv6 zone id */
	if (inet_pton(AF_INET, ip, &a4) == 1)
		return policy_allows(rb, AF_INET, &a4) ? CURL_PREREQFUNC_OK : CURL_PREREQFUNC_ABORT;
	if (inet_pton(AF_INET6, ip, &a6) == 1)
		return policy_allows(rb, AF_INET6, &a6) ? CURL_PREREQFUNC_OK : CURL_PREREQFUNC_ABORT;
	/* an address that cannot be checked is refused */
	strlcpy(rb->refused_address, ip[0] ? ip : "(unknown)", sizeof(rb->refused_address));
	return CURL_PREREQFUNC_ABORT;
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

/* The error for an address the SSRF policy refused (see address_is_local()). */
static void
report_refused_address(PhxServerConfig *cfg, const char *address, int policy_errno, bool via_proxy)
{
	if (policy_errno != 0)
	{
		errno = policy_errno;
		ereport(ERROR,
				(errcode(ERRCODE_SYSTEM_ERROR),
				 errmsg("could not list the network addresses of this host to check address %s of PostHog server \"%s\": %m",
						address, cfg->server_name),
				 errdetail("With allow_loopback 'false', connections to this host's own addresses are refused, so without the list no connection is made.")));
	}
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("refusing to connect PostHog server \"%s\" to local address %s",
					cfg->server_name, address),
			 via_proxy ?
			 errdetail("The url names a loopback, unspecified or link-local address, or one of this host's; the proxy would connect to its own such address (or to its cloud's metadata service)."):
			 errdetail("Loopback, unspecified and link-local addresses, and this host's own addresses, are refused, so an export cannot be pointed at services of the database host or at its cloud's metadata service."),
			 errhint("Set the server option allow_loopback 'true' for a PostHog (or proxy) running on this host.")));
}

/*
 * With a proxy, the proxy connects to the URL's host, out of this backend's
 * sight.  A URL whose host is an address literal that the policy refuses
 * (http://169.254.169.254, the metadata service of the proxy's own cloud)
 * is refused before the request goes out.  A host name is resolved by the
 * proxy, and cannot be checked here.
 */
static void
check_proxied_url(PhxServerConfig *cfg, const char *url)
{
	CURLU	   *u;
	char	   *host = NULL;

	if (cfg->allow_loopback || cfg->proxy == NULL)
		return;
	if ((u = curl_url()) == NULL)
		ereport(ERROR, (errcode(ERRCODE_OUT_OF_MEMORY), errmsg("out of memory")));
	/* libcurl's own parser, so the host is the one libcurl sends the proxy */
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
		curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK)
	{
		char		lit[INET6_ADDRSTRLEN + 1];
		size_t		n = strlen(host);
		struct in6_addr a6;
		struct in_addr a4;
		int			family = 0;
		void	   *addr = NULL;
		int			err = 0;

		if (n >= 2 && host[0] == '[' && host[n - 1] == ']')
			strlcpy(lit, host + 1, Min(n - 1, sizeof(lit)));
		else
			strlcpy(lit, host, sizeof(lit));
		if (inet_pton(AF_INET, lit, &a4) == 1)
		{
			family = AF_INET;
			addr = &a4;
		}
		else if (inet_pton(AF_INET6, lit, &a6) == 1)
		{
			family = AF_INET6;
			addr = &a6;
		}
		curl_free(host);
		if (family != 0 && address_is_local(family, addr, &err))
		{
			curl_url_cleanup(u);
			report_refused_address(cfg, lit, err, true);
		}
	}
	curl_url_cleanup(u);
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
			 const char *body, ResponseBuffer *rb, char *errbuf)
{
	check_proxied_url(cfg, url);
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
	rb->refused_address[0] = '\0';
	rb->policy_errno = 0;
	rb->allow_loopback = cfg->allow_loopback;
	PHX_SETOPT(curl, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	PHX_SETOPT(curl, CURLOPT_OPENSOCKETDATA, rb);
#if LIBCURL_VERSION_NUM >= 0x075000
	PHX_SETOPT(curl, CURLOPT_PREREQFUNCTION, prereq_cb);
	PHX_SETOPT(curl, CURLOPT_PREREQDATA, rb);
#else
	/* no check of a reused connection: make every one new, for opensocket_cb */
	if (!cfg->allow_loopback)
	{
		PHX_SETOPT(curl, CURLOPT_FRESH_CONNECT, 1L);
		PHX_SETOPT(curl, CURLOPT_FORBID_REUSE, 1L);
	}
#endif
	PHX_SETOPT(curl, CURLOPT_WRITEFUNCTION, write_cb);
	PHX_SETOPT(curl, CURLOPT_WRITEDATA, rb);
	PHX_SETOPT(curl, CURLOPT_HEADERFUNCTION, header_cb);
	PHX_SETOPT(curl, CURLOPT_HEADERDATA, rb);
	/* a proxy's CONNECT response is not the response: keep it from header_cb */
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
	if (pf.cxt)
		MemoryContextDelete(pf.cxt);
	pf.cxt = NULL;
	pf.body = NULL;
	pf.active = false;
	pf.started = false;
}

static void
prefetch_discard(void)
{
	if (pf.active)
		prefetch_release();
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
	rb->policy_errno = pf.rb.policy_errno;
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

static char *
query_url(PhxServerConfig *cfg)
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
	MemoryContext oldcxt;
	int			running;
	TimestampTz until = GetCurrentTimestamp() + 200 * 1000;

	(void) get_curl();
	prefetch_discard();
	if (pf.multi == NULL && (pf.multi = curl_multi_init()) == NULL)
		return 0;
	if (pf.easy == NULL && (pf.easy = curl_easy_init()) == NULL)
		return 0;
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
	setup_handle(pf.easy, cfg, query_url(cfg), pf.headers, pf.body, &pf.rb, pf.errbuf);
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

			if (attempt == 0 && prefetch_matches(q->prefetched))
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

			/* the policy's refusal first: prereq_cb aborts like an interrupt */
			if (rc != CURLE_OK && rb.refused_address[0] != '\0')
				report_refused_address(cfg, rb.refused_address, rb.policy_errno, false);
			else if (rc == CURLE_ABORTED_BY_CALLBACK)
			{
				CHECK_FOR_INTERRUPTS();
				/* a pending interrupt that did not throw: just try again */
				outcome = PHX_RETRY;
				last_problem = pstrdup("the request was interrupted");
			}
			else if (rb.too_large)
			{
				/* the body goes now: it may be as large as the limit */
				if (rb.data)
					pfree(rb.data);
				rb.data = NULL;
				ereport(ERROR,
						(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
						 errmsg("PostHog response exceeds max_response_size (" INT64_FORMAT " bytes)",
								cfg->max_response_size),
						 rb.announced > 0 ?
						 errdetail("The response announced a Content-Length of " UINT64_FORMAT " bytes; it was refused before its body was read.",
								   rb.announced) :
						 cfg->compression ?
						 errdetail("The body, decompressed, passed the limit; the transfer and the decompression were stopped there.") :
						 errdetail("The body passed the limit; the transfer was stopped there."),
						 errhint("Lower the server option page_size or raise max_response_size.")));
			}
			else if (rb.oom)
				ereport(ERROR,
						(errcode(ERRCODE_OUT_OF_MEMORY),
						 errmsg("out of memory while receiving a PostHog response")));
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
