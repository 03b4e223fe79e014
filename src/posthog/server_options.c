/*-------------------------------------------------------------------------
 *
 * server_options.c
 *		Options of the posthog_export foreign data wrapper: validation at
 *		CREATE/ALTER SERVER and USER MAPPING time, and reading them back
 *		into a PhxServerConfig when an export runs, both from one table
 *		that describes each option fully.
 *
 * Like postgres_fdw, every option is checked where it is set, so that a
 * typo or a malformed value fails at DDL time rather than at 3 a.m. in the
 * middle of a scheduled run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <limits.h>

#include "access/reloptions.h"
#include "catalog/pg_attribute.h"
#include "catalog/pg_foreign_server.h"
#include "catalog/pg_foreign_table.h"
#include "catalog/pg_user_mapping.h"
#include "commands/defrem.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/syscache.h"

#include "posthog/posthog.h"

typedef enum PhxOptionKind
{
	PHX_OPT_STRING,				/* char *, not empty */
	PHX_OPT_PATH,				/* char *, an absolute path */
	PHX_OPT_URL,				/* char *, https:// (or http://), kept without trailing '/' */
	PHX_OPT_PROXY,				/* char *, http(s)://host:port */
	PHX_OPT_BOOL,				/* bool */
	PHX_OPT_VERIFY,				/* PhxVerify */
	PHX_OPT_INT,				/* int, from min to max, times scale */
	PHX_OPT_INT64				/* int64, from min to max, times scale */
} PhxOptionKind;

/*
 * One option, fully: where it is set, how its value is checked, where it
 * lands in PhxServerConfig, and its value when it is not set.  The
 * validator and phx_get_server_config() both loop over this one table.
 */
typedef struct PhxOption
{
	const char *name;
	Oid			context;		/* ForeignServerRelationId, UserMappingRelationId,
								 * ForeignTableRelationId, AttributeRelationId */
	PhxOptionKind kind;
	bool		required;		/* a server or user mapping must set it */
	int64		min;			/* PHX_OPT_INT, PHX_OPT_INT64 */
	int64		max;
	int			scale;			/* the field holds value * scale (seconds -> ms) */
	size_t		offset;			/* of its field in PhxServerConfig */
	const char *default_value;	/* as the option's text; NULL: zero, false, NULL */
} PhxOption;

#define SERVER		ForeignServerRelationId
#define MAPPING		UserMappingRelationId
#define TABLE		ForeignTableRelationId
#define COLUMN		AttributeRelationId
#define FIELD(f)	offsetof(PhxServerConfig, f)
#define NO_FIELD	0			/* foreign-table options: read by fdw/ */

/* in this order in the hint that lists the valid options */
static const PhxOption phx_options[] = {
	{"url", SERVER, PHX_OPT_URL, true, 0, 0, 1, FIELD(url), NULL},
	{"project_id", SERVER, PHX_OPT_INT64, true, 1, PG_INT64_MAX, 1, FIELD(project_id), NULL},
	{"ca_file", SERVER, PHX_OPT_PATH, false, 0, 0, 1, FIELD(ca_file), NULL},
	{"allow_http", SERVER, PHX_OPT_BOOL, false, 0, 0, 1, FIELD(allow_http), NULL},
	{"compression", SERVER, PHX_OPT_BOOL, false, 0, 0, 1, FIELD(compression), "true"},
	{"allow_loopback", SERVER, PHX_OPT_BOOL, false, 0, 0, 1, FIELD(allow_loopback), NULL},
	{"verify", SERVER, PHX_OPT_VERIFY, false, 0, 0, 1, FIELD(verify), "full"},
	{"client_cert", SERVER, PHX_OPT_PATH, false, 0, 0, 1, FIELD(client_cert), NULL},
	{"client_key", SERVER, PHX_OPT_PATH, false, 0, 0, 1, FIELD(client_key), NULL},
	{"proxy", SERVER, PHX_OPT_PROXY, false, 0, 0, 1, FIELD(proxy), NULL},
	{"page_size", SERVER, PHX_OPT_INT, false, 1, 50000, 1, FIELD(page_size), "50000"},
	{"connect_timeout", SERVER, PHX_OPT_INT, false, 1, 3600, 1000, FIELD(connect_timeout_ms), "10"},
	{"timeout", SERVER, PHX_OPT_INT, false, 1, 86400, 1000, FIELD(timeout_ms), "300"},
	{"max_retries", SERVER, PHX_OPT_INT, false, 0, 100, 1, FIELD(max_retries), "5"},
	{"retry_base_delay", SERVER, PHX_OPT_INT, false, 0, 600000, 1, FIELD(retry_base_delay_ms), "1000"},
	{"max_response_size", SERVER, PHX_OPT_INT64, false, 1024, (int64) 1 << 40, 1, FIELD(max_response_size), "536870912"},
	{"requests_per_hour", SERVER, PHX_OPT_INT, false, 1, 1000000, 1, FIELD(requests_per_hour), "120"},
	{"max_concurrent_requests", SERVER, PHX_OPT_INT, false, 1, 100, 1, FIELD(max_concurrent_requests), "3"},
	{"api_key", MAPPING, PHX_OPT_STRING, true, 0, 0, 1, FIELD(api_key), NULL},
	/* foreign tables: the HogQL table, and the columns it can be paged by */
	{"table", TABLE, PHX_OPT_STRING, false, 0, 0, 1, NO_FIELD, NULL},
	{"keyset", TABLE, PHX_OPT_STRING, false, 0, 0, 1, NO_FIELD, NULL},
	/* foreign table columns: the HogQL expression that computes it */
	{"expression", COLUMN, PHX_OPT_STRING, false, 0, 0, 1, NO_FIELD, NULL},
};

static const PhxOption *
find_option(const char *name, Oid context)
{
	for (int i = 0; i < lengthof(phx_options); i++)
		if (phx_options[i].context == context && strcmp(phx_options[i].name, name) == 0)
			return &phx_options[i];
	return NULL;
}

static int64
parse_int_option(const char *name, const char *value, int64 min, int64 max)
{
	char	   *end;
	long long	v;

	errno = 0;
	v = strtoll(value, &end, 10);
	if (errno != 0 || end == value || *end != '\0' || v < min || v > max)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("invalid value for option \"%s\": \"%s\"", name, value),
				 errdetail("Valid values are integers from " INT64_FORMAT " to " INT64_FORMAT ".",
						   min, max)));
	return (int64) v;
}

static bool
parse_bool_option(const char *name, const char *value)
{
	bool		result;

	if (!parse_bool(value, &result))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("invalid value for option \"%s\": \"%s\"", name, value),
				 errhint("Use true or false.")));
	return result;
}

/*
 * Whether a value holds a control character (a byte below 0x20, or 0x7f).
 * None belongs in any option, and in the ones that end up in the request
 * (api_key in its header line) a CR/LF would start lines of its own.
 */
bool
phx_has_control_char(const char *value)
{
	for (const unsigned char *p = (const unsigned char *) value; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return true;
	return false;
}

/*
 * A URL is checked for its scheme and host only: the query path is built
 * from project_id, so a path, query string or user-info part in the base URL
 * is almost certainly a mistake (or a credential pasted where it must not be).
 */
static void
check_url(const char *value, bool allow_http)
{
	const char *rest;
	bool		is_http = false;

	if (strncmp(value, "https://", 8) == 0)
		rest = value + 8;
	else if (strncmp(value, "http://", 7) == 0)
	{
		rest = value + 7;
		is_http = true;
	}
	else
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("invalid value for option \"url\": \"%s\"", value),
				 errdetail("The URL must start with https:// (or http:// together with allow_http 'true').")));

	if (*rest == '\0' || *rest == '/')
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("invalid value for option \"url\": \"%s\"", value),
				 errdetail("The URL has no host.")));
	if (strpbrk(rest, "@?# \t\r\n") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("invalid value for option \"url\""),
				 errdetail("The URL must not contain user information, a query string, a fragment or white space."),
				 errhint("Put the API key in a user mapping: CREATE USER MAPPING ... OPTIONS (api_key '...').")));
	/* the query path (/api/projects/N/query/) is ours to add */
	if (strstr(rest, "/api/") != NULL ||
		(strlen(rest) >= 4 && strcmp(rest + strlen(rest) - 4, "/api") == 0))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("invalid value for option \"url\": \"%s\"", value),
				 errdetail("The URL contains an API path; posthog_export adds /api/projects/<project_id>/query/ itself."),
				 errhint("Give the base URL, as 'https://us.posthog.com', and the project in the option project_id.")));
	if (is_http && !allow_http)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("plain http URL \"%s\" is not allowed", value),
				 errdetail("An http:// URL sends the API key unencrypted."),
				 errhint("Use an https:// URL, or set the server option allow_http 'true' for a local emulator or test server.")));
}

/* verify: full (CA and host name, the default) | ca (CA only) | none */
static PhxVerify
parse_verify(const char *value)
{
	if (strcmp(value, "full") == 0)
		return PHX_VERIFY_FULL;
	if (strcmp(value, "ca") == 0)
		return PHX_VERIFY_CA;
	if (strcmp(value, "none") == 0)
		return PHX_VERIFY_NONE;
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
			 errmsg("invalid value for option \"verify\": \"%s\"", value),
			 errhint("Valid values are full (certificate authority and host name), ca (certificate authority only) and none (encrypt without verifying).")));
	return PHX_VERIFY_FULL;		/* keep compiler quiet */
}

/* An HTTP(S) proxy: http://host:port or https://host:port, no credentials in the text. */
static void
check_proxy(const char *value)
{
	const char *rest = NULL;

	if (strncmp(value, "http://", 7) == 0)
		rest = value + 7;
	else if (strncmp(value, "https://", 8) == 0)
		rest = value + 8;
	if (rest == NULL || *rest == '\0' || *rest == '/' || strpbrk(rest, "@?# \t\r\n") != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("invalid value for option \"proxy\""),
				 errdetail("A proxy is given as http://host:port or https://host:port, without user information.")));
}

static void
check_option_value(const PhxOption *opt, const char *value, bool allow_http)
{
	switch (opt->kind)
	{
		case PHX_OPT_STRING:
			if (value[0] == '\0')
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
						 errmsg("option \"%s\" must not be empty", opt->name)));
			break;
		case PHX_OPT_PATH:
			if (!is_absolute_path(value))
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
						 errmsg("option \"%s\" must be an absolute path", opt->name)));
			break;
		case PHX_OPT_URL:
			check_url(value, allow_http);
			break;
		case PHX_OPT_PROXY:
			check_proxy(value);
			break;
		case PHX_OPT_BOOL:
			(void) parse_bool_option(opt->name, value);
			break;
		case PHX_OPT_VERIFY:
			(void) parse_verify(value);
			break;
		case PHX_OPT_INT:
		case PHX_OPT_INT64:
			(void) parse_int_option(opt->name, value, opt->min, opt->max);
			break;
	}
}

/* Stores a value (checked by the validator when it was set) in its field of cfg. */
static void
store_option(PhxServerConfig *cfg, const PhxOption *opt, const char *value)
{
	char	   *field = (char *) cfg + opt->offset;

	switch (opt->kind)
	{
		case PHX_OPT_STRING:
		case PHX_OPT_PATH:
		case PHX_OPT_PROXY:
			*(char **) field = pstrdup(value);
			break;
		case PHX_OPT_URL:
			{
				char	   *url = pstrdup(value);
				size_t		n = strlen(url);

				while (n > 0 && url[n - 1] == '/')
					url[--n] = '\0';
				*(char **) field = url;
				break;
			}
		case PHX_OPT_BOOL:
			*(bool *) field = parse_bool_option(opt->name, value);
			break;
		case PHX_OPT_VERIFY:
			*(PhxVerify *) field = parse_verify(value);
			break;
		case PHX_OPT_INT:
			*(int *) field = (int) parse_int_option(opt->name, value, opt->min, opt->max) * opt->scale;
			break;
		case PHX_OPT_INT64:
			*(int64 *) field = parse_int_option(opt->name, value, opt->min, opt->max) * opt->scale;
			break;
	}
}

/*
 * Stores the options of one catalog (a server's or a user mapping's) in
 * cfg, after the defaults; returns whether every required one was set.
 */
static bool
read_options(PhxServerConfig *cfg, List *options, Oid catalog)
{
	bool		set[lengthof(phx_options)] = {0};
	ListCell   *lc;

	for (int i = 0; i < lengthof(phx_options); i++)
		if (phx_options[i].context == catalog && phx_options[i].default_value)
			store_option(cfg, &phx_options[i], phx_options[i].default_value);
	foreach(lc, options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);
		const PhxOption *opt = find_option(def->defname, catalog);

		if (opt == NULL)
			continue;
		store_option(cfg, opt, defGetString(def));
		set[opt - phx_options] = true;
	}
	for (int i = 0; i < lengthof(phx_options); i++)
		if (phx_options[i].context == catalog && phx_options[i].required && !set[i])
			return false;
	return true;
}

/* how a hint names the object an option belongs on */
static const char *
context_name(Oid context)
{
	switch (context)
	{
		case SERVER:
			return "a SERVER";
		case MAPPING:
			return "a USER MAPPING";
		case TABLE:
			return "a FOREIGN TABLE";
		default:
			return "a column of a foreign table";
	}
}

/*
 * Checks the options of a server, user mapping, foreign table or column
 * (the wrapper's validator): rejects unknown options (with a hint listing
 * the valid ones, as postgres_fdw does), malformed values, a server
 * without url/project_id and a user mapping without api_key.
 */
void
phx_validate_options(List *options, Oid catalog)
{
	ListCell   *lc;
	bool		allow_http = false;
	bool		set[lengthof(phx_options)] = {0};

	if (catalog != SERVER && catalog != MAPPING && catalog != TABLE && catalog != COLUMN)
	{
		if (options != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("posthog_export accepts options only on servers, user mappings, foreign tables and their columns")));
		return;
	}

	/*
	 * Control characters first, before any message could print the value;
	 * no value is printed here, as it may be the API key.  Then allow_http,
	 * which decides whether an http:// url is valid.
	 */
	foreach(lc, options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		if (phx_has_control_char(defGetString(def)))
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
					 errmsg("invalid value for option \"%s\"", def->defname),
					 errdetail("Option values must not contain control characters (bytes below 0x20, and 0x7f), such as a line feed, a carriage return or a tab."),
					 strcmp(def->defname, "api_key") == 0 ?
					 errhint("Copy the key again, without a line break or any other invisible character.") : 0));
		if (strcmp(def->defname, "allow_http") == 0)
			allow_http = parse_bool_option(def->defname, defGetString(def));
	}

	foreach(lc, options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);
		const PhxOption *opt = find_option(def->defname, catalog);

		if (opt == NULL)
		{
			StringInfoData buf;

			for (int i = 0; i < lengthof(phx_options); i++)
				if (phx_options[i].context != catalog &&
					strcmp(phx_options[i].name, def->defname) == 0)
					ereport(ERROR,
							(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
							 errmsg("invalid option \"%s\"", def->defname),
							 errhint("Option \"%s\" belongs to %s.", def->defname,
									 context_name(phx_options[i].context))));

			initStringInfo(&buf);
			for (int i = 0; i < lengthof(phx_options); i++)
				if (phx_options[i].context == catalog)
					appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "", phx_options[i].name);
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\"", def->defname),
					 errhint("Valid options in this context are: %s", buf.data)));
		}
		check_option_value(opt, defGetString(def), allow_http);
		set[opt - phx_options] = true;
	}

	for (int i = 0; i < lengthof(phx_options); i++)
	{
		if (phx_options[i].context != catalog || !phx_options[i].required || set[i])
			continue;
		if (catalog == ForeignServerRelationId)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
					 errmsg("a posthog_export server needs the options \"url\" and \"project_id\""),
					 errhint("For example: OPTIONS (url 'https://us.posthog.com', project_id '12345').")));
		else
			ereport(ERROR,
					(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
					 errmsg("a posthog_export user mapping needs the option \"api_key\"")));
	}
}

/*
 * The page_size of a server, from its own options (with the default)
 * and nothing else: no user mapping is read, no privilege checked.  For
 * EXPLAIN, which shows a scan's first request without running it.
 */
int
phx_server_page_size(const char *server_name)
{
	PhxServerConfig cfg = {0};

	(void) read_options(&cfg, GetForeignServerByName(server_name, false)->options,
						ForeignServerRelationId);
	return cfg.page_size;
}

/*
 * Reads the server's options and the API key of the user mapping of
 * "userid" (or of PUBLIC).  The role must have USAGE on the server, like
 * any user of a foreign server.
 */
PhxServerConfig *
phx_get_server_config(const char *server_name, Oid userid)
{
	ForeignServer *server;
	UserMapping *um;
	PhxServerConfig *cfg = palloc0(sizeof(PhxServerConfig));
	AclResult	aclresult;

	server = GetForeignServerByName(server_name, false);
	if (strcmp(GetForeignDataWrapper(server->fdwid)->fdwname, PHX_EXTENSION_NAME) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("server \"%s\" does not use the posthog_export foreign data wrapper",
						server_name)));

#if PG_VERSION_NUM >= 160000
	aclresult = object_aclcheck(ForeignServerRelationId, server->serverid, userid, ACL_USAGE);
#else
	aclresult = pg_foreign_server_aclcheck(server->serverid, userid, ACL_USAGE);
#endif
	if (aclresult != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for foreign server %s", server_name),
				 errdetail("Role \"%s\" needs USAGE on the server.",
						   GetUserNameFromId(userid, false))));

	cfg->server_name = pstrdup(server_name);
	if (!read_options(cfg, server->options, ForeignServerRelationId))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("server \"%s\" lacks the option \"url\" or \"project_id\"", server_name)));
	/* the validator checked this already; re-check in case allow_http was dropped */
	check_url(cfg->url, cfg->allow_http);

	if (!SearchSysCacheExists2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(userid),
							   ObjectIdGetDatum(server->serverid)) &&
		!SearchSysCacheExists2(USERMAPPINGUSERSERVER, ObjectIdGetDatum(InvalidOid),
							   ObjectIdGetDatum(server->serverid)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("user mapping not found for role \"%s\" on server \"%s\"",
						GetUserNameFromId(userid, false), server_name),
				 errhint("Create one with: CREATE USER MAPPING FOR %s SERVER %s OPTIONS (api_key '...');",
						 quote_identifier(GetUserNameFromId(userid, false)),
						 quote_identifier(server_name))));
	um = GetUserMapping(userid, server->serverid);
	if (!read_options(cfg, um->options, UserMappingRelationId))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("user mapping for role \"%s\" on server \"%s\" has no api_key",
						GetUserNameFromId(userid, false), server_name)));
	return cfg;
}
