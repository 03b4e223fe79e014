/*-------------------------------------------------------------------------
 *
 * destination.c
 *		The table exported rows land in: created when missing, inspected
 *		when present, written with one saved statement per page.
 *
 * The rules are the ones PostHog's own Postgres export follows, so users
 * who know it are not surprised: a missing table is created with the
 * model's columns; an existing table is never altered; only model columns
 * present in it are written, so a column a user adds later is filled from
 * then on and one a user drops is no longer written.
 *
 * All of this runs as the export's owner, so the export can only write
 * where that role could write by hand.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "catalog/index.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_index.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "utils/acl.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "posthog_export.h"

static void
spi_exec_or_error(const char *sql)
{
	int			rc = SPI_execute(sql, false, 0);

	if (rc < 0)
		elog(ERROR, "SPI_execute failed for \"%s\": %s", sql, SPI_result_code_string(rc));
}

static char *
column_list(const PhxModel *model, const char *const *names)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; names[i]; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "", quote_identifier(names[i]));
	return buf.data;
}

static void
create_table(PhxExport *exp, const PhxModel *model, const char *qualified)
{
	StringInfoData sql;

	if (!OidIsValid(get_namespace_oid(exp->schema_name, true)))
	{
		AclResult	aclresult = pg_database_aclcheck(MyDatabaseId, GetUserId(), ACL_CREATE);

		if (aclresult != ACLCHECK_OK)
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("schema \"%s\" does not exist and role \"%s\" may not create it",
							exp->schema_name, GetUserNameFromId(GetUserId(), false)),
					 errhint("Create the schema and grant USAGE and CREATE on it to the export's owner.")));
		initStringInfo(&sql);
		appendStringInfo(&sql, "CREATE SCHEMA IF NOT EXISTS %s", quote_identifier(exp->schema_name));
		spi_exec_or_error(sql.data);
	}

	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE TABLE IF NOT EXISTS %s (", qualified);
	for (int i = 0; i < model->ncolumns; i++)
		appendStringInfo(&sql, "%s%s %s", i ? ", " : "",
						 quote_identifier(model->columns[i].name),
						 model->columns[i].create_type);
	if (model->merge_key && (strcmp(exp->mode, "merge") == 0))
		appendStringInfo(&sql, ", PRIMARY KEY (%s)", column_list(model, model->merge_key));
	appendStringInfoChar(&sql, ')');
	spi_exec_or_error(sql.data);
}

/*
 * Is there a unique, non-partial, plain-column index whose key is exactly
 * the merge key?  ON CONFLICT needs one to infer the arbiter.
 */
static bool
has_unique_key(Relation rel, const PhxModel *model)
{
	List	   *indexes = RelationGetIndexList(rel);
	ListCell   *lc;
	int			nkey = 0;
	AttrNumber	keyatts[8];
	bool		found = false;

	for (; model->merge_key[nkey]; nkey++)
	{
		keyatts[nkey] = get_attnum(RelationGetRelid(rel), model->merge_key[nkey]);
		if (keyatts[nkey] == InvalidAttrNumber)
			return false;
	}

	foreach(lc, indexes)
	{
		HeapTuple	tup = SearchSysCache1(INDEXRELID, ObjectIdGetDatum(lfirst_oid(lc)));
		Form_pg_index idx;

		if (!HeapTupleIsValid(tup))
			continue;
		idx = (Form_pg_index) GETSTRUCT(tup);
		if (idx->indisunique && idx->indimmediate && idx->indisvalid &&
			idx->indnkeyatts == nkey &&
			heap_attisnull(tup, Anum_pg_index_indexprs, NULL) &&
			heap_attisnull(tup, Anum_pg_index_indpred, NULL))
		{
			int			matched = 0;

			for (int i = 0; i < nkey; i++)
				for (int j = 0; j < nkey; j++)
					if (idx->indkey.values[j] == keyatts[i])
						matched++;
			if (matched == nkey)
				found = true;
		}
		ReleaseSysCache(tup);
		if (found)
			break;
	}
	list_free(indexes);
	return found;
}

/* Does the destination column hold the model's datum without a cast? */
static bool
same_type_family(Oid model_type, Oid dest_type)
{
	if (model_type == dest_type)
		return true;
	/* text into varchar(n)/char(n): assignment keeps the length check */
	if (model_type == TEXTOID && (dest_type == VARCHAROID || dest_type == BPCHAROID))
		return true;
	return false;
}

/*
 * Opens (creating if needed) the destination of an export and prepares
 * the statement that writes a page: every model column present in the
 * table travels as one array parameter, unnested server-side, so a page of
 * any size is a single statement with a saved plan.
 */
PhxDestination *
phx_destination_open(PhxExport *exp, const PhxModel *model)
{
	PhxDestination *dest = palloc0(sizeof(PhxDestination));
	char	   *qualified = quote_qualified_identifier(exp->schema_name, exp->table_name);
	Oid			nsp;
	Relation	rel;
	TupleDesc	desc;
	Oid		   *argtypes;
	StringInfoData sql;
	AclMode		needed;
	AclResult	aclresult;
	bool		merge = (strcmp(exp->mode, "merge") == 0);

	dest->model = model;
	dest->qualified_name = qualified;
	dest->merge = merge;

	nsp = get_namespace_oid(exp->schema_name, true);
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid(exp->table_name, nsp)))
		create_table(exp, model, qualified);
	nsp = get_namespace_oid(exp->schema_name, false);

	aclresult = pg_namespace_aclcheck(nsp, GetUserId(), ACL_USAGE);
	if (aclresult != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for schema %s", exp->schema_name),
				 errdetail("Role \"%s\" needs USAGE on the schema.",
						   GetUserNameFromId(GetUserId(), false))));

	dest->relid = get_relname_relid(exp->table_name, nsp);
	if (!OidIsValid(dest->relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation %s does not exist", qualified)));

	rel = table_open(dest->relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", qualified)));

	needed = ACL_INSERT | (merge ? ACL_SELECT | ACL_UPDATE : 0);
	aclresult = pg_class_aclcheck(dest->relid, GetUserId(), needed);
	if (aclresult != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", qualified),
				 errdetail("Role \"%s\" needs %s on the table.",
						   GetUserNameFromId(GetUserId(), false),
						   merge ? "INSERT, SELECT and UPDATE" : "INSERT")));

	desc = RelationGetDescr(rel);
	dest->used = palloc(sizeof(int) * model->ncolumns);
	dest->nused = 0;
	argtypes = palloc(sizeof(Oid) * model->ncolumns);
	initStringInfo(&sql);
	appendStringInfo(&sql, "INSERT INTO %s AS t (", qualified);
	{
		StringInfoData select;
		StringInfoData alias;

		initStringInfo(&select);
		initStringInfo(&alias);
		for (int i = 0; i < model->ncolumns; i++)
		{
			const PhxModelColumn *col = &model->columns[i];
			AttrNumber	attnum = InvalidAttrNumber;
			Form_pg_attribute att = NULL;
			const char *qcol = quote_identifier(col->name);
			int			n = dest->nused;

			for (int a = 0; a < desc->natts; a++)
			{
				Form_pg_attribute at = TupleDescAttr(desc, a);

				if (!at->attisdropped && strcmp(NameStr(at->attname), col->name) == 0)
				{
					att = at;
					attnum = at->attnum;
					break;
				}
			}
			if (attnum == InvalidAttrNumber || att->attgenerated)
				continue;

			dest->used[dest->nused++] = i;
			argtypes[n] = get_array_type(col->type);
			appendStringInfo(&sql, "%s%s", n ? ", " : "", qcol);
			appendStringInfo(&alias, "%sc%d", n ? ", " : "", n);
			if (same_type_family(col->type, att->atttypid))
				appendStringInfo(&select, "%su.c%d", n ? ", " : "", n);
			else
				appendStringInfo(&select, "%su.c%d::%s", n ? ", " : "", n,
								 format_type_extended(att->atttypid, att->atttypmod,
													  FORMAT_TYPE_TYPEMOD_GIVEN |
													  FORMAT_TYPE_FORCE_QUALIFY));
		}
		if (dest->nused == 0)
		{
			StringInfoData names;

			initStringInfo(&names);
			for (int i = 0; i < model->ncolumns; i++)
				appendStringInfo(&names, "%s%s", i ? ", " : "", model->columns[i].name);
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("table %s has none of the columns of the %s model", qualified, model->name),
					 errdetail("The %s model writes the columns: %s.", model->name, names.data),
					 errhint("Use another table name, or add the model columns you want to the table.")));
		}
		appendStringInfo(&sql, ") SELECT %s FROM ROWS FROM (", select.data);
		for (int n = 0; n < dest->nused; n++)
			appendStringInfo(&sql, "%spg_catalog.unnest($%d)", n ? ", " : "", n + 1);
		appendStringInfo(&sql, ") AS u(%s)", alias.data);
	}

	if (merge)
	{
		const char *const *key = model->merge_key;
		char	   *keylist = column_list(model, key);
		bool		first = true;
		StringInfoData lhs;
		StringInfoData rhs;

		if (!has_unique_key(rel, model))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("table %s has no primary key or unique index on (%s), which the merge of export \"%s\" needs",
							qualified, keylist, exp->name),
					 errdetail("Merging updates existing rows by that key; without it rows would be duplicated."),
					 errhint("Add it with: ALTER TABLE %s ADD PRIMARY KEY (%s);", qualified, keylist)));

		appendStringInfo(&sql, " ON CONFLICT (%s) DO UPDATE SET ", keylist);
		initStringInfo(&lhs);
		initStringInfo(&rhs);
		for (int n = 0; n < dest->nused; n++)
		{
			const char *name = model->columns[dest->used[n]].name;
			bool		is_key = false;

			for (int k = 0; key[k]; k++)
				if (strcmp(key[k], name) == 0)
					is_key = true;
			if (is_key)
				continue;
			appendStringInfo(&sql, "%s%s = EXCLUDED.%s", first ? "" : ", ",
							 quote_identifier(name), quote_identifier(name));
			appendStringInfo(&lhs, "%st.%s", first ? "" : ", ", quote_identifier(name));
			appendStringInfo(&rhs, "%sEXCLUDED.%s", first ? "" : ", ", quote_identifier(name));
			first = false;
		}
		if (first)
		{
			/* only key columns: nothing to update */
			resetStringInfo(&lhs);
			sql.len = strstr(sql.data, " DO UPDATE SET ") - sql.data;
			sql.data[sql.len] = '\0';
			appendStringInfoString(&sql, " DO NOTHING");
		}
		else if (model->merge_condition)
			appendStringInfo(&sql, " WHERE %s", model->merge_condition);
		else
			/* rewrite a row only when something changed */
			appendStringInfo(&sql, " WHERE ROW(%s) IS DISTINCT FROM ROW(%s)", lhs.data, rhs.data);
	}
	table_close(rel, AccessShareLock);

	dest->insert_plan = SPI_prepare(sql.data, dest->nused, argtypes);
	if (dest->insert_plan == NULL)
		elog(ERROR, "could not prepare the insert into %s: %s", qualified,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(dest->insert_plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return dest;
}

/*
 * Writes one page.  values/nulls are indexed [row][model column]; only the
 * columns present in the table are sent.  Returns the rows written (in
 * merge mode, unchanged rows are not written).
 */
uint64
phx_destination_insert(PhxDestination *dest, int nrows, Datum **values, bool **nulls)
{
	Datum	   *params = palloc(sizeof(Datum) * dest->nused);
	Datum	   *elems = palloc(sizeof(Datum) * Max(nrows, 1));
	bool	   *elemnulls = palloc(sizeof(bool) * Max(nrows, 1));
	int			rc;

	if (nrows == 0)
		return 0;

	for (int n = 0; n < dest->nused; n++)
	{
		int			c = dest->used[n];
		Oid			type = dest->model->columns[c].type;
		int16		typlen;
		bool		typbyval;
		char		typalign;
		int			dims[1] = {nrows};
		int			lbs[1] = {1};

		for (int r = 0; r < nrows; r++)
		{
			elems[r] = values[r][c];
			elemnulls[r] = nulls[r][c];
		}
		get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
		params[n] = PointerGetDatum(construct_md_array(elems, elemnulls, 1, dims, lbs,
													   type, typlen, typbyval, typalign));
	}

	rc = SPI_execute_plan(dest->insert_plan, params, NULL, false, 0);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "insert into %s failed: %s", dest->qualified_name, SPI_result_code_string(rc));
	for (int n = 0; n < dest->nused; n++)
		pfree(DatumGetPointer(params[n]));
	pfree(params);
	pfree(elems);
	pfree(elemnulls);
	return SPI_processed;
}
