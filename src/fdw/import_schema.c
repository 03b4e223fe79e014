/*-------------------------------------------------------------------------
 *
 * import_schema.c
 *		IMPORT FOREIGN SCHEMA: a foreign table for each table PostHog's
 *		schema query lists, with its columns' types mapped.
 *
 * Remote schemas, as PostHog names its tables:
 *   posthog   every table the schema lists except system.*: events,
 *             persons, sessions, groups, raw_* ..., data-warehouse tables
 *             and views; "posthog.ai_events" is imported as ai_events
 *   system    the system.* tables, as teams for system.teams ...
 * Any other is refused as postgres_fdw refuses a schema the remote server
 * lacks (ERRCODE_FDW_SCHEMA_NOT_FOUND).
 *
 * Columns: every field PostHog types as a value (integer, string,
 * datetime, json ...: see hogql_types.c), and every field traverser whose
 * chain leads, through lazy joins, to such a field (events.person_id in
 * most projects).  Lazy joins, virtual tables, views and traversers to a
 * table (events.person, events.pdi, events.poe ...) are not columns: their
 * fields are reached with a column option expression instead.  PostHog
 * says nothing of NULLs, so no column is NOT NULL.
 *
 * Names: a HogQL name is kept as the Postgres name when it fits (quoted
 * as needed: "$session_id"); one longer than NAMEDATALEN - 1 bytes is cut
 * and given a hash suffix, a dotted warehouse name (stripe.charges) gets
 * underscores, and the HogQL name then travels in the foreign table's
 * option table or the column's option expression.  LIMIT TO and EXCEPT
 * name the Postgres names, as the core's own filter does.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "foreign/foreign.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"

#include "fdw/fdw.h"

#define MAX_TRAVERSAL	8		/* lazy joins a field traverser may pass */

/* A name from PostHog (UTF-8) in the database's encoding. */
static char *
server_text(const char *utf8)
{
	return pg_any_to_server(utf8, strlen(utf8), PG_UTF8);
}

/*
 * A Postgres name for a HogQL name: the name itself when it fits, else
 * its first bytes (whole characters) and a hash of the whole.
 */
static char *
fitting_name(const char *name)
{
	int			len = strlen(name);
	int			keep;

	if (len < NAMEDATALEN)
		return pstrdup(name);
	keep = pg_mbcliplen(name, len, NAMEDATALEN - 1 - 9);
	return psprintf("%.*s_%08x", keep, name,
					(unsigned int) hash_bytes((const unsigned char *) name, len));
}

static PhxSchemaField *
find_field(PhxSchemaTable *t, const char *name)
{
	for (int i = 0; i < t->nfields; i++)
		if (strcmp(t->fields[i].name, name) == 0)
			return &t->fields[i];
	return NULL;
}

/*
 * The SQL type of the value a field traverser of table t leads to, through
 * lazy joins to tables the schema lists; NULL when it leads to a table, or
 * anywhere the schema does not describe (a virtual table's fields).
 */
static const char *
traverser_type(List *tables, PhxSchemaTable *t, List *chain, int depth)
{
	ListCell   *lc;

	if (depth > MAX_TRAVERSAL || chain == NIL)
		return NULL;
	foreach(lc, chain)
	{
		PhxSchemaField *f = find_field(t, (const char *) lfirst(lc));

		if (f == NULL)
			return NULL;
		if (lnext(chain, lc) == NULL)
		{
			if (strcmp(f->type, "field_traverser") == 0)
				return traverser_type(tables, t, f->chain, depth + 1);
			return phx_hogql_type_sql(f->type);
		}
		if (strcmp(f->type, "lazy_table") != 0 || f->table == NULL)
			return NULL;
		t = phx_schema_find_table(tables, f->table);
		if (t == NULL || ++depth > MAX_TRAVERSAL)
			return NULL;
	}
	return NULL;
}

/* Is a table of that Postgres name to be imported, per LIMIT TO / EXCEPT? */
static bool
wanted(ImportForeignSchemaStmt *stmt, const char *local)
{
	ListCell   *lc;

	if (stmt->list_type == FDW_IMPORT_SCHEMA_ALL)
		return true;
	foreach(lc, stmt->table_list)
	{
		RangeVar   *rv = (RangeVar *) lfirst(lc);

		if (strcmp(rv->relname, local) == 0)
			return stmt->list_type == FDW_IMPORT_SCHEMA_LIMIT_TO;
	}
	return stmt->list_type == FDW_IMPORT_SCHEMA_EXCEPT;
}

/*
 * The Postgres name of a HogQL table in the remote schema, or NULL when
 * the table is not in it.
 */
static char *
local_table_name(const char *remote_schema, const char *hogql, List *tables)
{
	bool		system = strncmp(hogql, "system.", 7) == 0;
	char	   *name;

	if (strcmp(remote_schema, "system") == 0)
		return system ? fitting_name(server_text(hogql + 7)) : NULL;
	if (system)
		return NULL;
	/* posthog.ai_events, unless a table is called ai_events too */
	if (strncmp(hogql, "posthog.", 8) == 0 && hogql[8] != '\0' &&
		phx_schema_find_table(tables, hogql + 8) == NULL)
		return fitting_name(server_text(hogql + 8));
	name = server_text(hogql);
	if (strchr(name, '.'))
	{
		name = pstrdup(name);
		for (char *p = name; *p; p++)
			if (*p == '.')
				*p = '_';
	}
	return fitting_name(name);
}

/* The CREATE FOREIGN TABLE command of one table, or NULL when it has no column. */
static char *
table_command(List *tables, PhxSchemaTable *t, const char *local, const char *server_name)
{
	StringInfoData buf;
	List	   *seen = NIL;
	int			ncols = 0;

	initStringInfo(&buf);
	appendStringInfo(&buf, "CREATE FOREIGN TABLE %s (\n", quote_identifier(local));
	for (int i = 0; i < t->nfields; i++)
	{
		PhxSchemaField *f = &t->fields[i];
		const char *type = phx_hogql_type_sql(f->type);
		char	   *name;
		char	   *colname;
		ListCell   *lc;
		bool		dup = false;

		if (type == NULL && strcmp(f->type, "field_traverser") == 0)
			type = traverser_type(tables, t, f->chain, 0);
		if (type == NULL)
			continue;
		name = server_text(f->name);
		colname = fitting_name(name);
		foreach(lc, seen)
			dup |= strcmp((char *) lfirst(lc), colname) == 0;
		if (dup)
			continue;			/* a field listed twice */
		seen = lappend(seen, colname);
		if (ncols++ > 0)
			appendStringInfoString(&buf, ",\n");
		appendStringInfo(&buf, "  %s %s", quote_identifier(colname), type);
		if (strcmp(colname, name) != 0)
			appendStringInfo(&buf, " OPTIONS (expression %s)",
							 quote_literal_cstr(phx_hogql_name(name)));
	}
	if (ncols == 0)
		return NULL;
	appendStringInfo(&buf, "\n) SERVER %s", quote_identifier(server_name));
	if (strcmp(local, server_text(t->name)) != 0)
		appendStringInfo(&buf, "\nOPTIONS (table %s)", quote_literal_cstr(server_text(t->name)));
	appendStringInfoChar(&buf, ';');
	return buf.data;
}

/*
 * ImportForeignSchema: the commands creating a foreign table for each
 * table of the remote schema, as postgres_fdw's.  The schema is read as
 * the current user, through its user mapping (USAGE on the server checked).
 */
List *
phx_import_foreign_schema(ImportForeignSchemaStmt *stmt, Oid serverOid)
{
	ForeignServer *server = GetForeignServer(serverOid);
	PhxServerConfig *cfg;
	List	   *tables;
	List	   *commands = NIL;
	List	   *locals = NIL;
	ListCell   *lc;

	if (stmt->options != NIL)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_OPTION_NAME),
				 errmsg("invalid option \"%s\"", linitial_node(DefElem, stmt->options)->defname),
				 errhint("IMPORT FOREIGN SCHEMA from a posthog_export server takes no options.")));
	if (strcmp(stmt->remote_schema, "posthog") != 0 && strcmp(stmt->remote_schema, "system") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_SCHEMA_NOT_FOUND),
				 errmsg("schema \"%s\" is not present on foreign server \"%s\"",
						stmt->remote_schema, server->servername),
				 errhint("A PostHog server has the schemas posthog (its HogQL tables) and system (its system.* tables).")));

	cfg = phx_get_server_config(server->servername, GetUserId());
	tables = phx_schema_query(cfg);

	foreach(lc, tables)
	{
		PhxSchemaTable *t = lfirst(lc);
		char	   *local = local_table_name(stmt->remote_schema, t->name, tables);
		char	   *cmd;
		ListCell   *lc2;
		bool		dup = false;

		CHECK_FOR_INTERRUPTS();
		if (local == NULL || !wanted(stmt, local))
			continue;
		foreach(lc2, locals)
			dup |= strcmp((char *) lfirst(lc2), local) == 0;
		if (dup)
			continue;			/* a table listed twice */
		cmd = table_command(tables, t, local, server->servername);
		if (cmd == NULL)
			continue;
		locals = lappend(locals, local);
		commands = lappend(commands, cmd);
	}
	return commands;
}
