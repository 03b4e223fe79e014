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
#include "nodes/makefuncs.h"
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
	bool		pushed = phx_snapshot_ensure();
	int			rc = SPI_execute(sql, false, 0);

	phx_snapshot_release(pushed);
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

/*
 * A page travels as one array per column; a column whose values are
 * arrays themselves (sessions' urls) cannot be nested that way, so it
 * travels as the text of each array and is cast back in the statement.
 */
static Oid
transport_type(Oid type)
{
	return OidIsValid(get_array_type(type)) ? type : TEXTOID;
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

static bool
name_in(const char *name, const char *const *list)
{
	for (int i = 0; list && list[i]; i++)
		if (strcmp(list[i], name) == 0)
			return true;
	return false;
}

/*
 * The ON CONFLICT clause of a merge: update the non-key columns, but only
 * when a version column present in the table grows (an older version that
 * arrives late never overwrites a newer one), or, without version columns,
 * when something changed, so unchanged rows are never rewritten.
 */
static void
append_on_conflict(StringInfo sql, PhxDestination *dest, const char *keylist)
{
	const PhxModel *model = dest->model;
	StringInfoData set;
	StringInfoData lhs;
	StringInfoData rhs;
	StringInfoData versions;

	initStringInfo(&set);
	initStringInfo(&lhs);
	initStringInfo(&rhs);
	initStringInfo(&versions);
	for (int n = 0; n < dest->nused; n++)
	{
		const char *q = quote_identifier(model->columns[dest->used[n]].name);
		const char *name = model->columns[dest->used[n]].name;

		if (name_in(name, model->merge_key))
			continue;
		appendStringInfo(&set, "%s%s = EXCLUDED.%s", set.len ? ", " : "", q, q);
		appendStringInfo(&lhs, "%st.%s", lhs.len ? ", " : "", q);
		appendStringInfo(&rhs, "%sEXCLUDED.%s", rhs.len ? ", " : "", q);
		if (name_in(name, model->merge_versions))
			appendStringInfo(&versions, "%sEXCLUDED.%s > t.%s OR (t.%s IS NULL AND EXCLUDED.%s IS NOT NULL)",
							 versions.len ? " OR " : "", q, q, q, q);
	}
	appendStringInfo(sql, " ON CONFLICT (%s) DO ", keylist);
	if (set.len == 0)
		appendStringInfoString(sql, "NOTHING");
	else if (versions.len > 0)
		appendStringInfo(sql, "UPDATE SET %s WHERE %s", set.data, versions.data);
	else
		appendStringInfo(sql, "UPDATE SET %s WHERE ROW(%s) IS DISTINCT FROM ROW(%s)",
						 set.data, lhs.data, rhs.data);
}

static void
prepare_insert(PhxDestination *dest, const char *sql, Oid *argtypes)
{
	dest->insert_plan = SPI_prepare(sql, dest->nused, argtypes);
	if (dest->insert_plan == NULL)
		elog(ERROR, "could not prepare the insert into %s: %s", dest->qualified_name,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(dest->insert_plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
}

#define STAGE_TABLE "pg_temp.posthog_export_stage"

/*
 * Opens (creating if needed) the destination of an export and prepares
 * the statement that writes a page: every model column present in the
 * table travels as one array parameter, unnested server-side, so a page of
 * any size is a single statement with a saved plan.  For staged models the
 * page goes to a temporary table instead, merged by phx_destination_finish().
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
	AclMode		needed;
	AclResult	aclresult;
	bool		merge = (strcmp(exp->mode, "merge") == 0);
	StringInfoData cols;		/* destination column names */
	StringInfoData casts;		/* stage/unnest columns cast to the destination's types */
	StringInfoData alias;		/* c0, c1, ... */
	StringInfoData stagedef;	/* c0 type0, ... */
	StringInfoData unnest;		/* unnest($1), ... */
	StringInfoData sql;

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
	dest->transport = palloc(sizeof(Oid) * model->ncolumns);
	argtypes = palloc(sizeof(Oid) * model->ncolumns);
	initStringInfo(&cols);
	initStringInfo(&casts);
	initStringInfo(&alias);
	initStringInfo(&stagedef);
	initStringInfo(&unnest);
	for (int i = 0; i < model->ncolumns; i++)
	{
		const PhxModelColumn *col = &model->columns[i];
		Form_pg_attribute att = NULL;
		int			n = dest->nused;
		const char *sep = n ? ", " : "";

		for (int a = 0; a < desc->natts; a++)
		{
			Form_pg_attribute at = TupleDescAttr(desc, a);

			if (!at->attisdropped && strcmp(NameStr(at->attname), col->name) == 0)
			{
				att = at;
				break;
			}
		}
		if (att == NULL || att->attgenerated)
			continue;

		dest->used[dest->nused++] = i;
		dest->transport[n] = transport_type(col->type);
		argtypes[n] = get_array_type(dest->transport[n]);
		appendStringInfo(&cols, "%s%s", sep, quote_identifier(col->name));
		appendStringInfo(&alias, "%sc%d", sep, n);
		appendStringInfo(&stagedef, "%sc%d %s", sep, n,
						 format_type_extended(dest->transport[n], -1, FORMAT_TYPE_FORCE_QUALIFY));
		appendStringInfo(&unnest, "%spg_catalog.unnest($%d)", sep, n + 1);
		if (same_type_family(dest->transport[n], att->atttypid))
			appendStringInfo(&casts, "%su.c%d", sep, n);
		else
			appendStringInfo(&casts, "%su.c%d::%s", sep, n,
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

	/* the merge needs a unique key to infer its arbiter, and the key columns */
	if (merge)
	{
		char	   *keylist = column_list(model, model->merge_key);
		bool		keys_present = true;

		for (int k = 0; model->merge_key[k]; k++)
		{
			bool		found = false;

			for (int n = 0; n < dest->nused; n++)
				if (strcmp(model->columns[dest->used[n]].name, model->merge_key[k]) == 0)
					found = true;
			keys_present &= found;
		}
		if (!keys_present || !has_unique_key(rel, model))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("table %s has no primary key or unique index on (%s), which the merge of export \"%s\" needs",
							qualified, keylist, exp->name),
					 errdetail("Merging updates existing rows by that key; without it rows would be duplicated."),
					 errhint("Add it with: ALTER TABLE %s ADD PRIMARY KEY (%s);", qualified, keylist)));
	}
	table_close(rel, AccessShareLock);

	initStringInfo(&sql);
	if (model->staged)
	{
		/* pages go to a temporary table of the model's types ... */
		if (OidIsValid(RangeVarGetRelid(makeRangeVar("pg_temp", "posthog_export_stage", -1),
										NoLock, true)))
			spi_exec_or_error("DROP TABLE " STAGE_TABLE);
		appendStringInfo(&sql, "CREATE TEMPORARY TABLE posthog_export_stage (%s)", stagedef.data);
		spi_exec_or_error(sql.data);
		resetStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO " STAGE_TABLE " SELECT * FROM ROWS FROM (%s)", unnest.data);
		prepare_insert(dest, sql.data, argtypes);

		/* ... and one statement merges them at the end */
		resetStringInfo(&sql);
		appendStringInfo(&sql, "INSERT INTO %s AS t (%s) SELECT %s FROM " STAGE_TABLE " AS u",
						 qualified, cols.data, casts.data);
		append_on_conflict(&sql, dest, column_list(model, model->merge_key));
		dest->merge_sql = sql.data;
	}
	else
	{
		appendStringInfo(&sql, "INSERT INTO %s AS t (%s) SELECT %s FROM ROWS FROM (%s) AS u(%s)",
						 qualified, cols.data, casts.data, unnest.data, alias.data);
		if (merge)
			append_on_conflict(&sql, dest, column_list(model, model->merge_key));
		prepare_insert(dest, sql.data, argtypes);
	}
	return dest;
}

/*
 * Writes one page.  values/nulls are indexed [row][model column]; only the
 * columns present in the table are sent.  Returns the rows written to the
 * table: a merge skips unchanged rows, and a staged page writes none yet.
 */
uint64
phx_destination_insert(PhxDestination *dest, int nrows, Datum **values, bool **nulls)
{
	Datum	   *params;
	Datum	   *elems;
	bool	   *elemnulls;
	int			rc;

	if (nrows == 0)
		return 0;

	params = palloc(sizeof(Datum) * dest->nused);
	elems = palloc(sizeof(Datum) * nrows);
	elemnulls = palloc(sizeof(bool) * nrows);
	for (int n = 0; n < dest->nused; n++)
	{
		int			c = dest->used[n];
		Oid			type = dest->transport[n];
		bool		as_text = (type != dest->model->columns[c].type);
		Oid			outfunc = InvalidOid;
		bool		isvarlena;
		int16		typlen;
		bool		typbyval;
		char		typalign;
		int			dims[1] = {nrows};
		int			lbs[1] = {1};

		if (as_text)
			getTypeOutputInfo(dest->model->columns[c].type, &outfunc, &isvarlena);
		for (int r = 0; r < nrows; r++)
		{
			elemnulls[r] = nulls[r][c];
			if (as_text && !elemnulls[r])
				elems[r] = CStringGetTextDatum(OidOutputFunctionCall(outfunc, values[r][c]));
			else
				elems[r] = values[r][c];
		}
		get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
		params[n] = PointerGetDatum(construct_md_array(elems, elemnulls, 1, dims, lbs,
													   type, typlen, typbyval, typalign));
	}

	{
		bool		pushed = phx_snapshot_ensure();

		rc = SPI_execute_plan(dest->insert_plan, params, NULL, false, 0);
		phx_snapshot_release(pushed);
	}
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "insert into %s failed: %s", dest->qualified_name, SPI_result_code_string(rc));
	for (int n = 0; n < dest->nused; n++)
		pfree(DatumGetPointer(params[n]));
	pfree(params);
	pfree(elems);
	pfree(elemnulls);
	return dest->model->staged ? 0 : SPI_processed;
}

/* Merges the staged pages into the table; returns the rows written. */
uint64
phx_destination_finish(PhxDestination *dest)
{
	int			rc;
	uint64		written;

	if (dest->merge_sql == NULL)
		return 0;
	{
		bool		pushed = phx_snapshot_ensure();

		rc = SPI_execute(dest->merge_sql, false, 0);
		phx_snapshot_release(pushed);
	}
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "merge into %s failed: %s", dest->qualified_name, SPI_result_code_string(rc));
	written = SPI_processed;
	spi_exec_or_error("DROP TABLE " STAGE_TABLE);
	return written;
}

void
phx_destination_close(PhxDestination *dest)
{
	if (dest->insert_plan)
		SPI_freeplan(dest->insert_plan);
	dest->insert_plan = NULL;
}
