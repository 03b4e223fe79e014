/*-------------------------------------------------------------------------
 *
 * server_options.c
 *		Options of the posthog_export foreign data wrapper: validation at
 *		CREATE/ALTER SERVER and USER MAPPING time, and reading them back
 *		into a PhxServerConfig when an export runs.
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
#include "catalog/pg_foreign_server.h"
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
	PHX_OPT_VERIFY,
	PHX_OPT_STRING,
	PHX_OPT_URL,
	PHX_OPT_BOOL,
	PHX_OPT_INT,
	PHX_OPT_PATH
} PhxOptionKind;

typedef struct PhxOption
{
	const char *name;
	Oid			context;		/* ForeignServerRelationId or UserMappingRelationId */
	PhxOptionKind kind;
	int64		min;			/* for PHX_OPT_INT */
	int64		max;
} PhxOption;

static const PhxOption phx_options[] = {
	{"url", ForeignServerRelationId, PHX_OPT_URL, 0, 0},
	{"project_id", ForeignServerRelationId, PHX_OPT_INT, 1, PG_INT64_MAX},
	{"ca_file", ForeignServerRelationId, PHX_OPT_PATH, 0, 0},
	{"allow_http", ForeignServerRelationId, PHX_OPT_BOOL, 0, 0},
	{"compression", ForeignServerRelationId, PHX_OPT_BOOL, 0, 0},
	{"allow_loopback", ForeignServerRelationId, PHX_OPT_BOOL, 0, 0},
	{"verify", ForeignServerRelationId, PHX_OPT_VERIFY, 0, 0},
	{"client_cert", ForeignServerRelationId, PHX_OPT_PATH, 0, 0},
	{"client_key", ForeignServerRelationId, PHX_OPT_PATH, 0, 0},
	{"proxy", ForeignServerRelationId, PHX_OPT_URL, 0, 0},
	{"page_size", ForeignServerRelationId, PHX_OPT_INT, 1, 50000},
	{"connect_timeout", ForeignServerRelationId, PHX_OPT_INT, 1, 3600},
	{"timeout", ForeignServerRelationId, PHX_OPT_INT, 1, 86400},
	{"max_retries", ForeignServerRelationId, PHX_OPT_INT, 0, 100},
	{"retry_base_delay", ForeignServerRelationId, PHX_OPT_INT, 0, 600000},
	{"max_response_size", ForeignServerRelationId, PHX_OPT_INT, 1024, (int64) 1 << 40},
	{"api_key", UserMappingRelationId, PHX_OPT_STRING, 0, 0},
	{NULL, InvalidOid, PHX_OPT_STRING, 0, 0}
};

static const PhxOption *
find_option(const char *name, Oid context)
{
	for (const PhxOption *opt = phx_options; opt->name; opt++)
		if (opt->context == context && strcmp(opt->name, name) == 0)
			return opt;
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
		case PHX_OPT_URL:
			if (strcmp(opt->name, "proxy") == 0)
				check_proxy(value);
			else
				check_url(value, allow_http);
			break;
		case PHX_OPT_VERIFY:
			(void) parse_verify(value);
			break;
		case PHX_OPT_BOOL:
			(void) parse_bool_option(opt->name, value);
			break;
		case PHX_OPT_INT:
			(void) parse_int_option(opt->name, value, opt->min, opt->max);
			break;
		case PHX_OPT_PATH:
			if (!is_absolute_path(value))
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
						 errmsg("option \"%s\" must be an absolute path", opt->name)));
			break;
	}
}

/*
 * Checks the options of a server or user mapping (the wrapper's
 * validator): rejects unknown options (with a
 * hint listing the valid ones, as postgres_fdw does), malformed values, a
 * server without url/project_id and a user mapping without api_key.
 */
void
phx_validate_options(List *options, Oid catalog)
{
	ListCell   *lc;
	bool		allow_http = false;
	bool		have_url = false;
	bool		have_project = false;
	bool		have_key = false;

	if (catalog != ForeignServerRelationId && catalog != UserMappingRelationId)
	{
		if (options != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("posthog_export accepts options only on servers and user mappings")));
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
			Oid			other = (catalog == ForeignServerRelationId) ?
				UserMappingRelationId : ForeignServerRelationId;

			if (find_option(def->defname, other) != NULL)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
						 errmsg("invalid option \"%s\"", def->defname),
						 errhint("Option \"%s\" belongs to a %s.", def->defname,
								 other == UserMappingRelationId ? "USER MAPPING" : "SERVER")));

			initStringInfo(&buf);
			for (const PhxOption *o = phx_options; o->name; o++)
				if (o->context == catalog)
					appendStringInfo(&buf, "%s%s", buf.len > 0 ? ", " : "", o->name);
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
					 errmsg("invalid option \"%s\"", def->defname),
					 errhint("Valid options in this context are: %s", buf.data)));
		}
		check_option_value(opt, defGetString(def), allow_http);
		if (strcmp(opt->name, "url") == 0)
			have_url = true;
		else if (strcmp(opt->name, "project_id") == 0)
			have_project = true;
		else if (strcmp(opt->name, "api_key") == 0)
			have_key = true;
	}

	if (catalog == ForeignServerRelationId && (!have_url || !have_project))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("a posthog_export server needs the options \"url\" and \"project_id\""),
				 errhint("For example: OPTIONS (url 'https://us.posthog.com', project_id '12345').")));
	if (catalog == UserMappingRelationId && !have_key)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("a posthog_export user mapping needs the option \"api_key\"")));
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
	ListCell   *lc;
	AclResult	aclresult;

	server = GetForeignServerByName(server_name, false);
	if (strcmp(GetForeignDataWrapper(server->fdwid)->fdwname, PHX_EXTENSION_NAME) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("server \"%s\" does not use the posthog_export foreign data wrapper",
						server_name)));

	aclresult = pg_foreign_server_aclcheck(server->serverid, userid, ACL_USAGE);
	if (aclresult != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for foreign server %s", server_name),
				 errdetail("Role \"%s\" needs USAGE on the server.",
						   GetUserNameFromId(userid, false))));

	cfg->server_name = pstrdup(server_name);
	cfg->compression = true;
	cfg->verify = PHX_VERIFY_FULL;
	cfg->page_size = 10000;
	cfg->connect_timeout_ms = 10 * 1000;
	cfg->timeout_ms = 300 * 1000;
	cfg->max_retries = 5;
	cfg->retry_base_delay_ms = 1000;
	cfg->max_response_size = (int64) 512 * 1024 * 1024;

	foreach(lc, server->options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);
		const char *val = defGetString(def);

		if (strcmp(def->defname, "url") == 0)
		{
			size_t		n = strlen(val);

			cfg->url = pstrdup(val);
			while (n > 0 && cfg->url[n - 1] == '/')
				cfg->url[--n] = '\0';
		}
		else if (strcmp(def->defname, "project_id") == 0)
			cfg->project_id = parse_int_option(def->defname, val, 1, PG_INT64_MAX);
		else if (strcmp(def->defname, "ca_file") == 0)
			cfg->ca_file = pstrdup(val);
		else if (strcmp(def->defname, "allow_http") == 0)
			cfg->allow_http = parse_bool_option(def->defname, val);
		else if (strcmp(def->defname, "compression") == 0)
			cfg->compression = parse_bool_option(def->defname, val);
		else if (strcmp(def->defname, "allow_loopback") == 0)
			cfg->allow_loopback = parse_bool_option(def->defname, val);
		else if (strcmp(def->defname, "verify") == 0)
			cfg->verify = parse_verify(val);
		else if (strcmp(def->defname, "client_cert") == 0)
			cfg->client_cert = pstrdup(val);
		else if (strcmp(def->defname, "client_key") == 0)
			cfg->client_key = pstrdup(val);
		else if (strcmp(def->defname, "proxy") == 0)
			cfg->proxy = pstrdup(val);
		else if (strcmp(def->defname, "page_size") == 0)
			cfg->page_size = (int) parse_int_option(def->defname, val, 1, 50000);
		else if (strcmp(def->defname, "connect_timeout") == 0)
			cfg->connect_timeout_ms = (int) parse_int_option(def->defname, val, 1, 3600) * 1000;
		else if (strcmp(def->defname, "timeout") == 0)
			cfg->timeout_ms = (int) parse_int_option(def->defname, val, 1, 86400) * 1000;
		else if (strcmp(def->defname, "max_retries") == 0)
			cfg->max_retries = (int) parse_int_option(def->defname, val, 0, 100);
		else if (strcmp(def->defname, "retry_base_delay") == 0)
			cfg->retry_base_delay_ms = (int) parse_int_option(def->defname, val, 0, 600000);
		else if (strcmp(def->defname, "max_response_size") == 0)
			cfg->max_response_size = parse_int_option(def->defname, val, 1024, (int64) 1 << 40);
	}
	if (cfg->url == NULL || cfg->project_id == 0)
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
	foreach(lc, um->options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		if (strcmp(def->defname, "api_key") == 0)
			cfg->api_key = pstrdup(defGetString(def));
	}
	if (cfg->api_key == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_OPTION_NAME_NOT_FOUND),
				 errmsg("user mapping for role \"%s\" on server \"%s\" has no api_key",
						GetUserNameFromId(userid, false), server_name)));
	return cfg;
}
