/*-------------------------------------------------------------------------
 *
 * schema_query.c
 *		PostHog's schema query: the tables a project can query in HogQL
 *		and their fields, for IMPORT FOREIGN SCHEMA.
 *
 * The request is the query API's, {"query": {"kind": "DatabaseSchemaQuery"}},
 * sent through the one request path (query_client.c: the request budget,
 * TLS, timeouts, retries).  PostHog answers (posthog/api/services/query.py,
 * process_query_model; posthog/schema.py, DatabaseSchemaQueryResponse):
 *
 *   {"tables": {"events": {"type": "posthog", "id": "events", "name": "events",
 *                          "fields": {"uuid": {"name": "uuid", "hogql_value": "uuid",
 *                                              "type": "string", "schema_valid": true}, ...
 *                                     "pdi": {"name": "pdi", "type": "lazy_table",
 *                                             "table": "person_distinct_ids",
 *                                             "fields": [...], ...},
 *                                     "person": {"type": "field_traverser",
 *                                                "chain": ["pdi", "person"], ...}}},
 *               "system.teams": {"type": "system", ...}, ...},
 *    "joins": [...]}
 *
 * Field types are HogQL's (DatabaseSerializedFieldType): integer, float,
 * decimal, string, datetime, date, boolean, array, json, unknown,
 * expression, lazy_table, virtual_table, field_traverser, view,
 * materialized_view.  No field says whether it is nullable.
 *
 * The body is untrusted: it is parsed with the response parser's JSON
 * scanner (depth-limited), every member's JSON type is checked, and the
 * counts and lengths of names are bounded.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "posthog/posthog.h"

#define PHX_SCHEMA_MAX_TABLES		100000
#define PHX_SCHEMA_MAX_FIELDS		10000	/* per table */
#define PHX_SCHEMA_MAX_NAME			4096	/* bytes of a table or field name */
#define PHX_SCHEMA_MAX_CHAIN		64

static void
schema_fail(const char *what, const char *table, const char *field)
{
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
			 field ?
			 errmsg("invalid schema from PostHog: %s (field \"%s\" of table \"%s\")", what,
					field, table) :
			 table ?
			 errmsg("invalid schema from PostHog: %s (table \"%s\")", what, table) :
			 errmsg("invalid schema from PostHog: %s", what)));
}

/* A name: a JSON string, not empty, not too long, without control characters. */
static char *
parse_name(PhxJsonCursor *c, const char *what, const char *table)
{
	int			len;
	char	   *s;

	phx_json_skip_ws(c);
	if (c->p >= c->end || *c->p != '"')
		phx_json_fail(c, what);
	s = phx_json_parse_string(c, &len);
	if (len == 0 || len > PHX_SCHEMA_MAX_NAME || phx_has_control_char(s) ||
		(int) strlen(s) != len)
		schema_fail(psprintf("%s is empty, longer than %d bytes or holds control characters",
							 what, PHX_SCHEMA_MAX_NAME), table, NULL);
	return pstrdup(s);
}

/* A member that may be null or a string; NULL for null. */
static char *
parse_optional_string(PhxJsonCursor *c, const char *what, const char *table, const char *field)
{
	int			len;

	phx_json_skip_ws(c);
	if (c->p < c->end && *c->p == 'n')
	{
		phx_json_skip_value(c);
		return NULL;
	}
	if (c->p >= c->end || *c->p != '"')
		schema_fail(psprintf("\"%s\" is not a string", what), table, field);
	return pstrdup(phx_json_parse_string(c, &len));
}

/* A field traverser's chain: strings and integers (as text). */
static List *
parse_chain(PhxJsonCursor *c, const char *table, const char *field)
{
	List	   *chain = NIL;

	phx_json_skip_ws(c);
	if (c->p < c->end && *c->p == 'n')
	{
		phx_json_skip_value(c);
		return NIL;
	}
	phx_json_expect(c, '[', "expected an array for \"chain\"");
	if (phx_json_accept(c, ']'))
		return NIL;
	do
	{
		phx_json_skip_ws(c);
		if (list_length(chain) >= PHX_SCHEMA_MAX_CHAIN)
			schema_fail("\"chain\" is too long", table, field);
		if (c->p < c->end && *c->p == '"')
			chain = lappend(chain, parse_name(c, "a chain element", table));
		else if (c->p < c->end && (*c->p == '-' || (*c->p >= '0' && *c->p <= '9')))
		{
			char	   *start = phx_json_skip_value(c);

			chain = lappend(chain, pnstrdup(start, c->p - start));
		}
		else
			schema_fail("\"chain\" holds something other than names and numbers", table, field);
	} while (phx_json_accept(c, ','));
	phx_json_expect(c, ']', "expected , or ] in \"chain\"");
	return chain;
}

/* One field: {"name": ..., "type": ..., "table": ..., "chain": ...}. */
static void
parse_field(PhxJsonCursor *c, PhxSchemaField *f, const char *table)
{
	phx_json_expect(c, '{', "expected an object for a field");
	if (!phx_json_accept(c, '}'))
	{
		do
		{
			char	   *key = phx_json_member_key(c);

			if (strcmp(key, "type") == 0)
				f->type = parse_optional_string(c, "type", table, f->name);
			else if (strcmp(key, "table") == 0)
				f->table = parse_optional_string(c, "table", table, f->name);
			else if (strcmp(key, "chain") == 0)
				f->chain = parse_chain(c, table, f->name);
			else
				phx_json_skip_value(c);
		} while (phx_json_accept(c, ','));
		phx_json_expect(c, '}', "expected , or } in a field");
	}
	if (f->type == NULL)
		schema_fail("the field has no type", table, f->name);
}

/* "fields": {"name": {...}, ...}, in PostHog's order. */
static void
parse_fields(PhxJsonCursor *c, PhxSchemaTable *t)
{
	int			cap = 16;

	t->fields = palloc0(sizeof(PhxSchemaField) * cap);
	t->nfields = 0;
	phx_json_expect(c, '{', "expected an object for \"fields\"");
	if (phx_json_accept(c, '}'))
		return;
	do
	{
		PhxSchemaField *f;

		if (t->nfields >= PHX_SCHEMA_MAX_FIELDS)
			schema_fail(psprintf("more than %d fields", PHX_SCHEMA_MAX_FIELDS), t->name, NULL);
		if (t->nfields == cap)
		{
			cap *= 2;
			t->fields = repalloc(t->fields, sizeof(PhxSchemaField) * cap);
		}
		f = &t->fields[t->nfields++];
		memset(f, 0, sizeof(*f));
		f->name = parse_name(c, "expected a field name", t->name);
		phx_json_expect(c, ':', "expected :");
		parse_field(c, f, t->name);
	} while (phx_json_accept(c, ','));
	phx_json_expect(c, '}', "expected , or } in \"fields\"");
}

/* One table: {"type": ..., "fields": {...}, ...}. */
static void
parse_table(PhxJsonCursor *c, PhxSchemaTable *t)
{
	bool		have_fields = false;

	phx_json_expect(c, '{', "expected an object for a table");
	if (!phx_json_accept(c, '}'))
	{
		do
		{
			char	   *key = phx_json_member_key(c);

			if (strcmp(key, "fields") == 0)
			{
				parse_fields(c, t);
				have_fields = true;
			}
			else if (strcmp(key, "type") == 0)
				t->type = parse_optional_string(c, "type", t->name, NULL);
			else
				phx_json_skip_value(c);
		} while (phx_json_accept(c, ','));
		phx_json_expect(c, '}', "expected , or } in a table");
	}
	if (!have_fields)
		schema_fail("the table has no \"fields\"", t->name, NULL);
}

/* The body: {"tables": {"name": {...}, ...}, "joins": [...]}. */
static void *
parse_schema(char *body, size_t len)
{
	PhxJsonCursor c;
	List	   *tables = NIL;
	bool		have_tables = false;

	phx_json_cursor_init(&c, body, len);
	phx_json_expect(&c, '{', "expected a JSON object");
	if (!phx_json_accept(&c, '}'))
	{
		do
		{
			char	   *key = phx_json_member_key(&c);

			if (strcmp(key, "tables") == 0 && !have_tables)
			{
				have_tables = true;
				phx_json_expect(&c, '{', "expected an object for \"tables\"");
				if (phx_json_accept(&c, '}'))
					continue;
				do
				{
					PhxSchemaTable *t = palloc0(sizeof(PhxSchemaTable));

					if (list_length(tables) >= PHX_SCHEMA_MAX_TABLES)
						schema_fail(psprintf("more than %d tables", PHX_SCHEMA_MAX_TABLES), NULL, NULL);
					t->name = parse_name(&c, "expected a table name", NULL);
					phx_json_expect(&c, ':', "expected :");
					parse_table(&c, t);
					tables = lappend(tables, t);
				} while (phx_json_accept(&c, ','));
				phx_json_expect(&c, '}', "expected , or } in \"tables\"");
			}
			else
				phx_json_skip_value(&c);
		} while (phx_json_accept(&c, ','));
		phx_json_expect(&c, '}', "expected , or } in object");
	}
	phx_json_skip_ws(&c);
	if (c.p != c.end)
		phx_json_fail(&c, "trailing data after the JSON object");
	if (!have_tables)
		schema_fail("\"tables\" is missing", NULL, NULL);
	/* a list, even when empty: NULL means "not parsed" to phx_try_parse() */
	return tables ? (void *) tables : (void *) list_make1(NULL);
}

/*
 * Sends the schema query and returns its tables (PhxSchemaTable *), in
 * PostHog's order.  One request: the schema of a project is ~150 tables.
 */
List *
phx_schema_query(PhxServerConfig *cfg)
{
	PhxQuery	q;
	List	   *tables;

	phx_query_init(&q);
	q.kind = "DatabaseSchemaQuery";
	appendStringInfoString(&q.text, q.kind);
	tables = (List *) phx_http_request(cfg, &q, "posthog_export import foreign schema",
									   parse_schema, NULL);
	if (list_length(tables) == 1 && linitial(tables) == NULL)
		return NIL;
	return tables;
}

/* The table of that name in a schema, or NULL. */
PhxSchemaTable *
phx_schema_find_table(List *tables, const char *name)
{
	ListCell   *lc;

	foreach(lc, tables)
	{
		PhxSchemaTable *t = lfirst(lc);

		if (strcmp(t->name, name) == 0)
			return t;
	}
	return NULL;
}
