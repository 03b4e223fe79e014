/*-------------------------------------------------------------------------
 *
 * catalog_spi.c
 *		How the catalog files run their statements: as the owner of the
 *		extension's tables, with search_path pinned (security.c), after
 *		checking that the tables are of this library's version; and the
 *		parameter lists and column readers they share.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/jsonb.h"

#include "store/catalog_spi.h"

/*
 * The library reads and writes the catalog of its own version: after the
 * new library is installed, the tables of an older version stay as they
 * were until ALTER EXTENSION ... UPDATE, and every use says so.
 */
static void
check_catalog_version(void)
{
	static bool checked = false;
	char	   *version;

	if (checked)
		return;
	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension "
					"WHERE extname OPERATOR(pg_catalog.=) '" PHX_EXTENSION_NAME "'",
					true, 1) != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the version of extension \"%s\"", PHX_EXTENSION_NAME);
	version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (strcmp(version, PHX_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"%s\" is at version %s, but its library is version %s",
						PHX_EXTENSION_NAME, version, PHX_VERSION),
				 errhint("Update it: ALTER EXTENSION %s UPDATE;", PHX_EXTENSION_NAME)));
	checked = true;
}

/* Adds the next parameter; a null one has its type but no value. */
void
phx_catalog_arg(CatalogArgs *args, Oid type, Datum value, bool isnull)
{
	Assert(args->n < CATALOG_MAX_ARGS);
	args->types[args->n] = type;
	args->values[args->n] = isnull ? (Datum) 0 : value;
	args->nulls[args->n] = isnull ? 'n' : ' ';
	args->n++;
}

/* A text parameter; NULL is SQL NULL. */
void
phx_catalog_arg_text(CatalogArgs *args, const char *s)
{
	phx_catalog_arg(args, TEXTOID, s ? CStringGetTextDatum(s) : (Datum) 0, s == NULL);
}

/* Executes a catalog statement (args may be NULL) as the catalog owner. */
int
phx_catalog_exec(const char *sql, CatalogArgs *args)
{
	PhxRoleSwitch sw;
	int			rc;
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		pushed = phx_snapshot_ensure();

	phx_become(phx_catalog_owner(), &sw);
	check_catalog_version();
	if (args)
		rc = SPI_execute_with_args(sql, args->n, args->types, args->values,
								   args->nulls, false, 0);
	else
		rc = SPI_execute_with_args(sql, 0, NULL, NULL, NULL, false, 0);
	phx_restore(&sw);
	phx_snapshot_release(pushed);
	/* SPI leaves its own procedure context current; the caller's results go elsewhere */
	MemoryContextSwitchTo(oldcxt);
	if (rc < 0)
		elog(ERROR, "posthog_export catalog statement failed: %s", SPI_result_code_string(rc));
	return rc;
}

char *
phx_catalog_get_text(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

List *
phx_catalog_get_text_array(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	Datum	   *elems;
	bool	   *elemnulls;
	int			n;
	List	   *result = NIL;

	if (isnull)
		return NIL;
	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, &elemnulls, &n);
	for (int i = 0; i < n; i++)
		if (!elemnulls[i])
			result = lappend(result, TextDatumGetCString(elems[i]));
	return result;
}

Datum
phx_text_list_to_array(List *list)
{
	Datum	   *elems;
	int			n = list_length(list);
	ListCell   *lc;

	if (n == 0)
		return PointerGetDatum(construct_empty_array(TEXTOID));
	elems = palloc(sizeof(Datum) * n);
	foreach(lc, list)
		elems[foreach_current_index(lc)] = CStringGetTextDatum((char *) lfirst(lc));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * A jsonb object column (exports.columns, exports.filter_values) as a
 * list of PhxNamedText in jsonb's key order: each value's string
 * ("json_values" false: the value must be a string) or its JSON text.
 * NULL: NIL.
 */
List *
phx_catalog_get_named_texts(HeapTuple tup, TupleDesc desc, int col, bool json_values)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tup, desc, col, &isnull);
	Jsonb	   *jb;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *result = NIL;
	PhxNamedText *nt = NULL;

	if (isnull)
		return NIL;
	jb = DatumGetJsonbP(d);
	if (!JB_ROOT_IS_OBJECT(jb))
		elog(ERROR, "posthog_export catalog column %s is not a JSON object",
			 NameStr(TupleDescAttr(desc, col - 1)->attname));
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			nt = palloc0(sizeof(PhxNamedText));
			nt->name = pnstrdup(v.val.string.val, v.val.string.len);
		}
		else if (tok == WJB_VALUE && nt != NULL)
		{
			if (!json_values)
			{
				if (v.type != jbvString)
					elog(ERROR, "posthog_export catalog column %s holds a value that is not a string",
						 NameStr(TupleDescAttr(desc, col - 1)->attname));
				nt->text = pnstrdup(v.val.string.val, v.val.string.len);
			}
			else
				nt->text = JsonbToCString(NULL, &JsonbValueToJsonb(&v)->root, 0);
			result = lappend(result, nt);
			nt = NULL;
		}
	}
	return result;
}

/* A list of PhxNamedText as a jsonb object parameter (NIL: NULL); see above. */
void
phx_catalog_arg_named_texts(CatalogArgs *args, List *list, bool json_values)
{
	StringInfoData json;
	ListCell   *lc;

	if (list == NIL)
	{
		phx_catalog_arg(args, JSONBOID, (Datum) 0, true);
		return;
	}
	initStringInfo(&json);
	appendStringInfoChar(&json, '{');
	foreach(lc, list)
	{
		PhxNamedText *nt = lfirst(lc);

		if (foreach_current_index(lc) > 0)
			appendStringInfoString(&json, ", ");
		escape_json(&json, nt->name);
		appendStringInfoString(&json, ": ");
		if (json_values)
			appendStringInfoString(&json, nt->text);
		else
			escape_json(&json, nt->text);
	}
	appendStringInfoChar(&json, '}');
	phx_catalog_arg(args, JSONBOID, DirectFunctionCall1(jsonb_in, CStringGetDatum(json.data)), false);
}

/* A list of char * as a text[] parameter (NIL: NULL). */
void
phx_catalog_arg_text_list(CatalogArgs *args, List *list)
{
	phx_catalog_arg(args, TEXTARRAYOID, list == NIL ? (Datum) 0 : phx_text_list_to_array(list),
					list == NIL);
}
