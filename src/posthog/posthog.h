/*-------------------------------------------------------------------------
 *
 * posthog.h
 *		The source layer: talking to PostHog's query API.
 *
 *   server_options.c   FOREIGN SERVER / USER MAPPING options, one table
 *   hogql.c            request bodies: HogQL text and its "values"
 *   query_client.c     one query API call: the retry policy, and PostHog's
 *                      answers turned into a page or an error
 *   http_transport.c   one request with libcurl: options, headers, TLS,
 *                      timeouts, cancel, the prefetch of the next page
 *   request_budget.c   PostHog's request budget and concurrency limit,
 *                      shared by the cluster: every request waits its turn
 *   http_receive.c     the bytes of a response: its buffer, its limit
 *   network_policy.c   which addresses a request may connect to (SSRF)
 *   response.c         a 200 body into a page of cells; error bodies
 *   json_scan.c        JSON scanning: strings (de-escaping, UTF-8 checks),
 *                      skipping values; also used by models/jsonb_build.c
 *   schema_query.c     PostHog's schema query (DatabaseSchemaQuery): its
 *                      tables and their fields
 *   hogql_types.c      HogQL and ClickHouse type names -> Postgres types
 *
 * Calls between them go one way: query_client -> http_transport ->
 * request_budget, http_receive and network_policy; response -> json_scan;
 * schema_query -> query_client, json_scan.  The sections
 * marked "for this folder only" are not for other layers.
 *
 * Nothing here knows about models, tables or runs.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PHX_POSTHOG_H
#define PHX_POSTHOG_H

#include "posthog_export.h"

#include "lib/stringinfo.h"

/* ------------------------------------------------------------------------
 * server_options.c
 * ------------------------------------------------------------------------
 */
typedef enum PhxVerify
{
	PHX_VERIFY_FULL,			/* certificate authority and host name */
	PHX_VERIFY_CA,				/* certificate authority only */
	PHX_VERIFY_NONE				/* encrypt, do not verify */
} PhxVerify;

typedef struct PhxServerConfig
{
	char	   *server_name;
	char	   *url;			/* base URL, without trailing slash */
	int64		project_id;
	char	   *ca_file;		/* NULL: the system's trust store */
	bool		allow_http;
	bool		compression;	/* ask for gzip/deflate responses */
	bool		allow_loopback; /* may connect to loopback/link-local addresses */
	PhxVerify	verify;
	char	   *client_cert;	/* mutual TLS */
	char	   *client_key;
	char	   *proxy;			/* http(s)://host:port */
	int			page_size;		/* rows per page requested */
	int			connect_timeout_ms;
	int			timeout_ms;		/* total time of one HTTP request */
	int			max_retries;	/* retries of one page after a retryable error */
	int			retry_base_delay_ms;
	int64		max_response_size;	/* bytes */
	int			requests_per_hour;	/* PostHog's budget of the key */
	int			max_concurrent_requests;	/* ... and of the project */
	char	   *api_key;		/* from the user mapping; never printed */
} PhxServerConfig;

extern PhxServerConfig *phx_get_server_config(const char *server_name, Oid userid);
extern int	phx_server_page_size(const char *server_name);
extern void phx_validate_options(List *options_list, Oid catalog);
extern bool phx_has_control_char(const char *value);

/* ------------------------------------------------------------------------
 * response.c
 * ------------------------------------------------------------------------
 */
typedef enum PhxCellKind
{
	PHX_CELL_NULL,
	PHX_CELL_STRING,			/* de-escaped UTF-8, NUL-terminated */
	PHX_CELL_NUMBER,			/* the number's text as sent */
	PHX_CELL_BOOL,				/* text "true" or "false" */
	PHX_CELL_JSON				/* nested array/object, its JSON text */
} PhxCellKind;

typedef struct PhxCell
{
	PhxCellKind kind;
	int			len;
	char	   *val;
} PhxCell;

typedef struct PhxPage
{
	int			ncolumns;
	char	  **columns;		/* names from "columns" */
	int			ntypes;			/* 0: the response had no "types" */
	char	  **types;			/* ClickHouse type names from "types", in order */
	int			nrows;
	PhxCell    *cells;			/* nrows * ncolumns, row-major */
	bool		has_more;
	char	   *types_json;		/* the text of "types", or NULL: read by
								 * phx_page_types() when wanted */
	int			types_len;
} PhxPage;

#define PHX_CELL(page, row, col) (&(page)->cells[(row) * (page)->ncolumns + (col)])

extern PhxPage *phx_parse_page(char *body, size_t len);
extern char **phx_page_types(PhxPage *page);

/*
 * Parses a 200 body into what the caller wants; a body not of the expected
 * shape is an ERRCODE_FDW_INVALID_DATA_TYPE error (see phx_json_fail), which
 * phx_try_parse() turns into a retry.
 */
typedef void *(*PhxBodyParser) (char *body, size_t len);
extern void *phx_try_parse(PhxBodyParser parser, char *body, size_t len, char **problem);
extern bool phx_parse_error_body(char *body, size_t len, char **code, char **detail);

/* ------------------------------------------------------------------------
 * json_scan.c
 * ------------------------------------------------------------------------
 */
extern char *phx_json_string(char *p, char *end, char **after, int *len_out,
							 const char **problem);

/* for response.c: a position in a JSON text being parsed */
typedef struct PhxJsonCursor
{
	char	   *p;
	char	   *end;
	char	   *start;
	int			depth;
} PhxJsonCursor;

#define PHX_MAX_JSON_DEPTH 1000

static inline void
phx_json_skip_ws(PhxJsonCursor *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
		c->p++;
}

extern void phx_json_fail(PhxJsonCursor *c, const char *what) pg_attribute_noreturn();
extern char *phx_json_skip_value(PhxJsonCursor *c);
extern void phx_json_cursor_init(PhxJsonCursor *c, char *body, size_t len);

/* Consumes the character ch, after white space, or fails saying "what". */
static inline void
phx_json_expect(PhxJsonCursor *c, char ch, const char *what)
{
	phx_json_skip_ws(c);
	if (c->p >= c->end || *c->p != ch)
		phx_json_fail(c, what);
	c->p++;
}

/* Returns true and consumes the character if it is next. */
static inline bool
phx_json_accept(PhxJsonCursor *c, char ch)
{
	phx_json_skip_ws(c);
	if (c->p < c->end && *c->p == ch)
	{
		c->p++;
		return true;
	}
	return false;
}

extern char *phx_json_parse_string(PhxJsonCursor *c, int *len_out);
extern char *phx_json_member_key(PhxJsonCursor *c);

/* ------------------------------------------------------------------------
 * hogql.c
 * ------------------------------------------------------------------------
 */
typedef struct PhxQuery
{
	StringInfoData text;		/* HogQL with {placeholders} */
	StringInfoData values;		/* JSON members of "values", comma separated */
	uint64		prefetched;		/* ticket of the phx_http_prefetch() that sent
								 * this same query, or 0 */
	int			rows;			/* the page size its LIMIT asks for, 0: none */
	const char *kind;			/* NULL: a HogQLQuery; else a query of this
								 * kind without text or values
								 * ("DatabaseSchemaQuery") */
} PhxQuery;

extern void phx_query_init(PhxQuery *q);
extern void phx_hogql_identifier(StringInfo buf, const char *name);
extern void phx_hogql_quoted_identifier(StringInfo buf, const char *name);
extern char *phx_hogql_name(const char *name);
extern void phx_value_text(PhxQuery *q, const char *name, const char *value);
extern void phx_value_text_array(PhxQuery *q, const char *name, List *values);
extern void phx_value_timestamp(PhxQuery *q, const char *name, TimestampTz ts);
extern void phx_value_int64(PhxQuery *q, const char *name, int64 value);
extern void phx_value_json(PhxQuery *q, const char *name, const char *json);
extern char *phx_format_utc(TimestampTz ts);
extern char *phx_request_body(PhxQuery *q, const char *label);

/* ------------------------------------------------------------------------
 * query_client.c and http_transport.c
 * ------------------------------------------------------------------------
 */
/*
 * Asked when PostHog's answer says the page's query was too heavy (out of
 * memory, too slow, too large: 512, 513, PostHog's 504, a memory-limit
 * 400, a second 500 in a row; see query_client.c): rebuilds the query for
 * a smaller page and returns true to retry at once, or returns false when
 * the page cannot shrink any more, and the query fails, naming the page.
 * Without a callback such answers are backed off and retried like any.
 */
typedef bool (*PhxShrinkCallback) (void *arg, PhxQuery *q);

/*
 * Told the bytes received so far for the response in flight, from inside
 * libcurl: it must not throw.  The run layer sets it to report progress.
 */
typedef void (*PhxBytesCallback) (int64 bytes);
extern PhxBytesCallback phx_http_bytes_callback;

/*
 * Told when a request starts waiting for the request budget (what it
 * waits for, and until when if known, else 0), and with what NULL when
 * the wait is over.  The run layer sets it to show waits in progress.
 */
typedef void (*PhxWaitCallback) (const char *what, TimestampTz until);
extern PhxWaitCallback phx_http_wait_callback;

/* request_budget.c: whose requests go first when several wait */
#define PHX_PRIORITY_SCHEDULED	0	/* scheduled and manual runs, checks */
#define PHX_PRIORITY_BACKFILL	1	/* backfills take the turns left */
extern int	phx_request_priority;
extern Size phx_budget_shmem_size(void);
extern void phx_budget_shmem_request(void);
extern void phx_budget_shmem_init(void);

/* http_transport.c */
extern uint64 phx_http_prefetch(PhxServerConfig *cfg, PhxQuery *q, const char *label);

/* query_client.c */
extern PhxPage *phx_http_query(PhxServerConfig *cfg, PhxQuery *q,
							   const char *label,
							   PhxShrinkCallback shrink, void *shrink_arg,
							   int64 *bytes_out);
extern char *phx_check_server(PhxServerConfig *cfg);
/* the same request, retries and errors, for an answer that is not a page */
extern void *phx_http_request(PhxServerConfig *cfg, PhxQuery *q, const char *label,
							  PhxBodyParser parser, int64 *bytes_out);

/* ------------------------------------------------------------------------
 * schema_query.c
 * ------------------------------------------------------------------------
 */
/* A field of a table, as PostHog's schema lists it. */
typedef struct PhxSchemaField
{
	char	   *name;
	char	   *type;			/* HogQL's field type: "integer", "lazy_table" ... */
	char	   *table;			/* lazy_table, virtual_table: the table it leads to, or NULL */
	List	   *chain;			/* field_traverser: the names it follows (char *), else NIL */
} PhxSchemaField;

/* A table PostHog's schema lists. */
typedef struct PhxSchemaTable
{
	char	   *name;			/* "events", "system.teams", "stripe.charges" ... */
	char	   *type;			/* "posthog", "system", "data_warehouse", "view" ... or NULL */
	int			nfields;
	PhxSchemaField *fields;		/* in PostHog's order */
} PhxSchemaTable;

/* Every table of the project, in PostHog's order (one request). */
extern List *phx_schema_query(PhxServerConfig *cfg);
extern PhxSchemaTable *phx_schema_find_table(List *tables, const char *name);

/* ------------------------------------------------------------------------
 * hogql_types.c
 * ------------------------------------------------------------------------
 */
extern const char *phx_hogql_type_sql(const char *type_name);

/* ------------------------------------------------------------------------
 * network_policy.c (for this folder only)
 * ------------------------------------------------------------------------
 */
struct sockaddr;

/* the policy of one request, and the address it refused */
typedef struct PhxNetPolicy
{
	bool		allow_loopback;
	char		refused_address[64];	/* set when the policy refused one */
	int			policy_errno;	/* getifaddrs() failed: the policy could not be checked */
} PhxNetPolicy;

extern void phx_policy_reset(PhxNetPolicy *policy, bool allow_loopback);
extern bool phx_policy_allows_sockaddr(PhxNetPolicy *policy, int family,
									   const struct sockaddr *sa);
extern bool phx_policy_allows_ip(PhxNetPolicy *policy, const char *conn_ip);
extern void phx_policy_check_proxied_url(PhxServerConfig *cfg, const char *url);
extern void phx_policy_report_refused(PhxServerConfig *cfg, const char *address,
									  int policy_errno, bool via_proxy) pg_attribute_noreturn();

/* ------------------------------------------------------------------------
 * http_transport.c (for this folder only)
 * ------------------------------------------------------------------------
 */
/* how a transfer ended, in the terms the retry policy decides on */
typedef enum PhxTransferEnd
{
	PHX_XFER_ANSWERED,			/* an HTTP answer: status and body */
	PHX_XFER_REFUSED,			/* the network policy refused the address */
	PHX_XFER_INTERRUPTED,		/* aborted for an interrupt that did not throw */
	PHX_XFER_TOO_LARGE,			/* the body passed max_response_size */
	PHX_XFER_OUT_OF_MEMORY,		/* the body could not be stored */
	PHX_XFER_TIMED_OUT,			/* connect_timeout or timeout passed */
	PHX_XFER_NO_CONNECTION,		/* refused, or the host name not resolved */
	PHX_XFER_NETWORK_ERROR,		/* could not connect, connection lost ... */
	PHX_XFER_TLS_UNVERIFIED,	/* the server's certificate was not accepted */
	PHX_XFER_BAD_CA_FILE,		/* the trusted certificates could not be loaded */
	PHX_XFER_BAD_CLIENT_CERT,	/* client_cert or client_key could not be used */
	PHX_XFER_BAD_CRL_FILE,		/* the revocation list could not be loaded */
	PHX_XFER_BAD_PROTOCOL,		/* a protocol this request may not use */
	PHX_XFER_BAD_URL			/* a URL libcurl cannot parse */
} PhxTransferEnd;

typedef struct PhxTransfer
{
	PhxTransferEnd end;
	long		status;			/* PHX_XFER_ANSWERED: the HTTP status */
	char	   *body;			/* PHX_XFER_ANSWERED: NUL-terminated, palloc'd */
	size_t		len;
	uint64		announced;		/* PHX_XFER_TOO_LARGE: a Content-Length, or 0 */
	PhxNetPolicy policy;		/* PHX_XFER_REFUSED: the address, and why */
	char	   *error;			/* a libcurl failure in libcurl's words */
	char	   *content_type;	/* PHX_XFER_ANSWERED: its Content-Type, or NULL */
} PhxTransfer;

extern void phx_transport_perform(PhxServerConfig *cfg, const char *body,
								  uint64 prefetched, PhxTransfer *out);
extern char *phx_query_url(PhxServerConfig *cfg);

/* ------------------------------------------------------------------------
 * request_budget.c (for this folder only)
 * ------------------------------------------------------------------------
 */
extern int	phx_budget_acquire(PhxServerConfig *cfg);
extern int	phx_budget_try_acquire(PhxServerConfig *cfg);
extern void phx_budget_release(int slot);
extern void phx_budget_throttled(PhxServerConfig *cfg, long wait_ms);

/* ------------------------------------------------------------------------
 * http_receive.c (for this folder only)
 * ------------------------------------------------------------------------
 */
/* the body of one response as it arrives, and how its transfer went */
typedef struct PhxResponseBuffer
{
	char	   *data;
	size_t		len;
	size_t		cap;
	size_t		limit;			/* max_response_size */
	bool		too_large;
	uint64		announced;		/* a Content-Length above limit, else 0 */
	bool		oom;
	MemoryContext cxt;
	void	   *curl;			/* the CURL handle of the transfer */
	PhxNetPolicy policy;		/* the SSRF policy of this request */
} PhxResponseBuffer;

extern size_t phx_receive_body(char *ptr, size_t size, size_t nmemb, void *userdata);
extern size_t phx_receive_header(char *buffer, size_t size, size_t nitems, void *userdata);

#endif							/* PHX_POSTHOG_H */
