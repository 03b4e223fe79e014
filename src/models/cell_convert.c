/*-------------------------------------------------------------------------
 *
 * cell_convert.c
 *		Response cells into datums of a column's type, and the check that a
 *		response has the columns its query selected.
 *
 * PostHog's serialization is loose in places (booleans as 0/1 or
 * true/false, JSON columns as strings, datetimes with any offset), so each
 * converter accepts every form the API is known to send and rejects
 * anything else with an error that names the column.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/jsonapi.h"
#include "mb/pg_wchar.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "parser/parse_coerce.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "models/models.h"

/* What a cell holds, for a message: "a string", "NULL" ... */
const char *
phx_cell_kind_name(PhxCell *cell)
{
	switch (cell->kind)
	{
		case PHX_CELL_NULL:
			return "NULL";
		case PHX_CELL_STRING:
			return "a string";
		case PHX_CELL_NUMBER:
			return "a number";
		case PHX_CELL_BOOL:
			return "a boolean";
		default:
			return "a JSON value";
	}
}

/* A string cell's text, or NULL for any other cell: a row's key in messages. */
const char *
phx_cell_string(const PhxCell *cell)
{
	return (cell->kind == PHX_CELL_STRING) ? cell->val : NULL;
}

pg_attribute_noreturn() static void
bad_cell(PhxCell *cell, const char *column, const char *expected)
{
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
			 errmsg("PostHog returned %s for column \"%s\", where %s was expected",
					phx_cell_kind_name(cell), column, expected)));
}

/*
 * A JSON column: PostHog sends its text as a JSON string; an object or
 * array sent as such is accepted too.  What jsonb cannot hold (\u0000,
 * lone surrogates) is dropped.  The cell is left as it was: a person's
 * cells are read once for each of its distinct ids.
 */
Jsonb *
phx_cell_jsonb(PhxCell *cell, const char *column)
{
	char	   *text;

	if (cell->kind == PHX_CELL_NULL)
		return NULL;
	if (cell->kind == PHX_CELL_STRING && cell->len == 0)
		return NULL;
	text = palloc(cell->len + 1);
	memcpy(text, cell->val, cell->len + 1);
	return phx_jsonb_from_text(text, cell->len);
}

/*
 * An element of a JSON array as text, as Postgres's ->> gives it: a string
 * decoded, a number or boolean as its JSON text, a nested array or object
 * as its JSON; NULL for JSON null.
 */
char *
phx_json_element_text(JsonbValue *v)
{
	switch (v->type)
	{
		case jbvNull:
			return NULL;
		case jbvString:
			return pnstrdup(v->val.string.val, v->val.string.len);
		case jbvNumeric:
			return DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v->val.numeric)));
		case jbvBool:
			return pstrdup(v->val.boolean ? "true" : "false");
		default:
			return JsonbToCString(NULL, v->val.binary.data, v->val.binary.len);
	}
}

/*
 * A JSON array (a JSON cell, or a string holding one) as text[], each
 * element's text (phx_json_element_text()).  Sessions' $urls and a hogql
 * query's arrays are of scalars (nested: refused); a custom column's may
 * nest (nested values as their JSON).
 */
static Datum
cell_array_text(PhxCell *cell, const char *column, bool nested)
{
	const char *what = nested ? "an array" : "an array of strings";
	Jsonb	   *jb;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	ArrayBuildState *astate;

	if (!nested && cell->kind != PHX_CELL_JSON && cell->kind != PHX_CELL_STRING)
		bad_cell(cell, column, what);
	jb = phx_cell_jsonb(cell, column);
	if (jb == NULL || !JB_ROOT_IS_ARRAY(jb) || JB_ROOT_IS_SCALAR(jb))
		bad_cell(cell, column, what);
	astate = initArrayResult(TEXTOID, CurrentMemoryContext, false);
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *text;

		if (tok != WJB_ELEM)
			continue;
		if (v.type == jbvBinary && !nested)
			bad_cell(cell, column, what);
		text = phx_json_element_text(&v);
		accumArrayResult(astate, text ? CStringGetTextDatum(text) : (Datum) 0, text == NULL,
						 TEXTOID, CurrentMemoryContext);
	}
	return makeArrayResult(astate, CurrentMemoryContext);
}

static bool
cell_bool(PhxCell *cell, const char *column)
{
	if (cell->kind == PHX_CELL_BOOL)
		return cell->val[0] == 't';
	if (cell->kind == PHX_CELL_NUMBER && cell->len == 1 && (cell->val[0] == '0' || cell->val[0] == '1'))
		return cell->val[0] == '1';
	if (cell->kind == PHX_CELL_STRING)
	{
		bool		result;

		if (parse_bool(cell->val, &result))
			return result;
	}
	bad_cell(cell, column, "a boolean");
}

/*
 * Converts a cell to a datum of "type".  Strings and numbers are accepted
 * for numbers (ClickHouse's 64-bit integers may come quoted).
 */
Datum
phx_cell_datum(PhxCell *cell, Oid type, const char *column, bool *isnull)
{
	*isnull = (cell->kind == PHX_CELL_NULL);
	if (*isnull)
		return (Datum) 0;

	switch (type)
	{
		case TEXTOID:
			if (cell->kind == PHX_CELL_STRING || cell->kind == PHX_CELL_NUMBER ||
				cell->kind == PHX_CELL_BOOL)
				return PointerGetDatum(cstring_to_text_with_len(cell->val, cell->len));
			bad_cell(cell, column, "a string");
		case INT4OID:
			if (cell->kind == PHX_CELL_NUMBER || cell->kind == PHX_CELL_STRING)
				return Int32GetDatum(pg_strtoint32(cell->val));
			bad_cell(cell, column, "an integer");
		case INT8OID:
			if (cell->kind == PHX_CELL_NUMBER || cell->kind == PHX_CELL_STRING)
				return Int64GetDatum(pg_strtoint64(cell->val));
			bad_cell(cell, column, "an integer");
		case FLOAT8OID:
			if (cell->kind == PHX_CELL_NUMBER || cell->kind == PHX_CELL_STRING)
				return DirectFunctionCall1(float8in, CStringGetDatum(cell->val));
			bad_cell(cell, column, "a number");
		case BOOLOID:
			return BoolGetDatum(cell_bool(cell, column));
		case TIMESTAMPTZOID:
			if (cell->kind == PHX_CELL_STRING)
				return DirectFunctionCall3(timestamptz_in, CStringGetDatum(cell->val),
										   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
			bad_cell(cell, column, "a datetime");
		case NUMERICOID:
			if (cell->kind == PHX_CELL_NUMBER || cell->kind == PHX_CELL_STRING)
				return DirectFunctionCall3(numeric_in, CStringGetDatum(cell->val),
										   ObjectIdGetDatum(InvalidOid), Int32GetDatum(-1));
			bad_cell(cell, column, "a number");
		case UUIDOID:
			if (cell->kind == PHX_CELL_STRING)
				return DirectFunctionCall1(uuid_in, CStringGetDatum(cell->val));
			bad_cell(cell, column, "a UUID");
		case DATEOID:
			if (cell->kind == PHX_CELL_STRING)
				return DirectFunctionCall1(date_in, CStringGetDatum(cell->val));
			bad_cell(cell, column, "a date");
		case JSONBOID:
			{
				Jsonb	   *jb = phx_cell_jsonb(cell, column);

				*isnull = (jb == NULL);
				return JsonbPGetDatum(jb);
			}
		case TEXTARRAYOID:
			return cell_array_text(cell, column, false);
		default:
			elog(ERROR, "posthog_export: no conversion to type %u", type);
	}
	return (Datum) 0;			/* keep compiler quiet */
}

/*
 * The type of the values a custom column (exports.columns) gives a
 * destination column of type atttype: text for the string types, jsonb
 * for json and jsonb, text[] for arrays (the writer casts them to the
 * column's array type), timestamptz for timestamp, else the column's base
 * type itself, read from the cell's text by the type's input function.
 * See phx_cell_to_type().
 */
Oid
phx_custom_value_type(Oid atttype)
{
	Oid			base = getBaseType(atttype);

	if (base == JSONBOID || base == JSONOID)
		return JSONBOID;
	if (base == BOOLOID)
		return BOOLOID;
	/* with its offset, as the model's own timestamps: UTC wall time in the table */
	if (base == TIMESTAMPOID)
		return TIMESTAMPTZOID;
	switch (TypeCategory(base))
	{
		case TYPCATEGORY_STRING:
			return TEXTOID;
		case TYPCATEGORY_ARRAY:
			return TEXTARRAYOID;
		default:
			return base;
	}
}

/*
 * Does a string cell hold a JSON object or array?  One that only looks
 * like one ("[WIP] title", "{draft}") is a string to keep as such.
 */
static bool
string_holds_json(PhxCell *cell)
{
	JsonLexContext *lex;

	if (cell->len == 0 || (cell->val[0] != '{' && cell->val[0] != '['))
		return false;
	lex = makeJsonLexContextCstringLen(cell->val, cell->len, GetDatabaseEncoding(), false);
	return pg_parse_json(lex, &nullSemAction) == JSON_SUCCESS;
}

/* A reader of a custom column's values of "type" (phx_custom_value_type()), once per run. */
void
phx_custom_reader_init(PhxCustomReader *rd, Oid type)
{
	Oid			input;

	rd->type = type;
	getTypeInputInfo(type, &input, &rd->ioparam);
	fmgr_info(input, &rd->input);
}

/*
 * A custom column's cell as a datum of rd's type, one phx_custom_value_type()
 * returned.  A string into jsonb: the JSON it holds when it is an object
 * or array (PostHog sends JSON as strings), else a JSON string.  Other
 * types read the cell's text with their input function (a JSON value is
 * refused); a timestamp column gets timestamptz values (the offset
 * PostHog sends is kept; the writer stores them as UTC wall time).
 */
Datum
phx_cell_to_type(PhxCell *cell, PhxCustomReader *rd, const char *column, bool *isnull)
{
	*isnull = (cell->kind == PHX_CELL_NULL);
	if (*isnull)
		return (Datum) 0;
	switch (rd->type)
	{
		case TEXTOID:
			return PointerGetDatum(cstring_to_text_with_len(cell->val, cell->len));
		case BOOLOID:
			return BoolGetDatum(cell_bool(cell, column));
		case TEXTARRAYOID:
			return cell_array_text(cell, column, true);
		case JSONBOID:
			if (cell->kind == PHX_CELL_STRING && !string_holds_json(cell))
			{
				JsonbValue	jv;

				jv.type = jbvString;
				jv.val.string.val = cell->val;
				jv.val.string.len = cell->len;
				return JsonbPGetDatum(JsonbValueToJsonb(&jv));
			}
			return phx_cell_datum(cell, JSONBOID, column, isnull);
		default:
			if (cell->kind == PHX_CELL_JSON)
				bad_cell(cell, column, "a scalar");
			return InputFunctionCall(&rd->input, cell->val, rd->ioparam, -1);
	}
}

/*
 * The response must have the columns the query selected, in order: a
 * PostHog that renamed or dropped one would otherwise fill the wrong column.
 */
void
phx_check_columns(PhxPage *page, const char *const *expected, int n, const char *what)
{
	if (page->ncolumns != n)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("PostHog returned %d columns, the %s query selects %d",
						page->ncolumns, what, n)));
	for (int c = 0; c < n; c++)
		if (strcmp(page->columns[c], expected[c]) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("PostHog returned column \"%s\" where the %s query selects \"%s\"",
							page->columns[c], what, expected[c])));
}
