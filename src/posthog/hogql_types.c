/*-------------------------------------------------------------------------
 *
 * hogql_types.c
 *		The Postgres type of a PostHog column, from either name PostHog
 *		gives a type: HogQL's field types in its schema query ("integer",
 *		"datetime", "lazy_table" ...: DatabaseSerializedFieldType in
 *		posthog/schema.py) or ClickHouse's in the "types" of a query
 *		response ("DateTime64(6, 'UTC')", "Nullable(String)" ...).
 *
 * The two vocabularies do not overlap: HogQL's names are lower case,
 * ClickHouse's are capitalized, so one function reads both.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "posthog/posthog.h"

/* HogQL's field types (posthog/hogql/database/database.py, serialize_fields) */
static const struct
{
	const char *hogql;
	const char *sql;			/* NULL: not a column (a join, a table) */
}			hogql_types[] = {
	{"integer", "bigint"},
	{"float", "double precision"},
	{"decimal", "numeric"},
	{"string", "text"},
	{"datetime", "timestamp with time zone"},
	{"date", "date"},
	{"boolean", "boolean"},
	{"array", "text[]"},		/* StringArrayDatabaseField, and expressions of array type */
	{"json", "jsonb"},
	{"unknown", "text"},
	{"expression", "text"},		/* an expression field of a type HogQL does not name */
	{"lazy_table", NULL},
	{"virtual_table", NULL},
	{"field_traverser", NULL},
	{"view", NULL},
	{"materialized_view", NULL},
};

/* A ClickHouse type name of len bytes at s equals word (and no more)? */
static bool
name_is(const char *s, size_t len, const char *word)
{
	return strlen(word) == len && strncmp(s, word, len) == 0;
}

/*
 * The SQL type of a ClickHouse type, s..s+len; depth bounds the nesting of
 * wrappers (an untrusted name).  Arrays of scalars become arrays of their
 * type; arrays of arrays, tuples, maps and JSON become jsonb.
 */
static const char *
clickhouse_type_sql(const char *s, size_t len, int depth)
{
	const char *paren = memchr(s, '(', len);
	size_t		head = paren ? (size_t) (paren - s) : len;

	if (depth > 8)
		return "text";
	if (paren && len > head + 1 && s[len - 1] == ')')
	{
		const char *inner = paren + 1;
		size_t		ilen = len - head - 2;

		if (name_is(s, head, "Nullable") || name_is(s, head, "LowCardinality") ||
			name_is(s, head, "SimpleAggregateFunction"))
		{
			/* SimpleAggregateFunction(f, T): the type after the comma */
			if (name_is(s, head, "SimpleAggregateFunction"))
			{
				const char *comma = memchr(inner, ',', ilen);

				if (comma == NULL)
					return "text";
				ilen -= (comma + 1 - inner);
				inner = comma + 1;
				while (ilen > 0 && *inner == ' ')
					inner++, ilen--;
			}
			return clickhouse_type_sql(inner, ilen, depth + 1);
		}
		if (name_is(s, head, "Array"))
		{
			const char *elem;

			/* Array(Nullable(String)) is still text[] */
			while (ilen > 9 && strncmp(inner, "Nullable(", 9) == 0 && inner[ilen - 1] == ')')
				inner += 9, ilen -= 10;
			if (ilen >= 6 && strncmp(inner, "Array(", 6) == 0)
				return "jsonb";
			elem = clickhouse_type_sql(inner, ilen, depth + 1);
			if (strcmp(elem, "jsonb") == 0)
				return "jsonb";
			return psprintf("%s[]", elem);
		}
	}
	if (head >= 8 && strncmp(s, "DateTime", 8) == 0)
		return "timestamp with time zone";	/* DateTime, DateTime64(6, 'UTC') */
	if (name_is(s, head, "Date") || name_is(s, head, "Date32"))
		return "date";
	if (name_is(s, head, "String") || name_is(s, head, "FixedString") ||
		name_is(s, head, "Enum8") || name_is(s, head, "Enum16") ||
		name_is(s, head, "IPv4") || name_is(s, head, "IPv6") || name_is(s, head, "Nothing"))
		return "text";
	if (name_is(s, head, "UUID"))
		return "uuid";
	if (name_is(s, head, "Bool") || name_is(s, head, "Boolean"))
		return "boolean";
	if (name_is(s, head, "Int8") || name_is(s, head, "Int16") || name_is(s, head, "Int32") ||
		name_is(s, head, "Int64") || name_is(s, head, "UInt8") || name_is(s, head, "UInt16") ||
		name_is(s, head, "UInt32"))
		return "bigint";
	/* past bigint's range */
	if (name_is(s, head, "UInt64") || name_is(s, head, "Int128") || name_is(s, head, "UInt128") ||
		name_is(s, head, "Int256") || name_is(s, head, "UInt256"))
		return "numeric";
	if (name_is(s, head, "Float32") || name_is(s, head, "Float64"))
		return "double precision";
	if (head >= 7 && strncmp(s, "Decimal", 7) == 0)
		return "numeric";
	if (name_is(s, head, "JSON") || name_is(s, head, "Object") || name_is(s, head, "Tuple") ||
		name_is(s, head, "Map") || name_is(s, head, "Nested"))
		return "jsonb";
	return "text";
}

/*
 * The SQL type text ("bigint", "text[]", "timestamp with time zone" ...)
 * of a HogQL field type or a ClickHouse type name; NULL when the HogQL
 * field is not a column one can select as a value (a lazy join, a virtual
 * table, a field traverser, a view).  Unknown names are text.
 */
const char *
phx_hogql_type_sql(const char *type_name)
{
	if (type_name == NULL)
		return "text";
	for (int i = 0; i < lengthof(hogql_types); i++)
		if (strcmp(type_name, hogql_types[i].hogql) == 0)
			return hogql_types[i].sql;
	return clickhouse_type_sql(type_name, strlen(type_name), 0);
}
