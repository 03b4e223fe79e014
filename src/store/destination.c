/*-------------------------------------------------------------------------
 *
 * destination.c
 *		The table exported rows land in: created when missing, inspected
 *		when present, written through the bulk writer, directly or by way
 *		of a staging table.
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
 * The settle pass writes rows that became visible late through the same
 * paths; an append then goes through the stage, which takes only the rows
 * whose uuid the table does not hold yet (phx_destination_open_missing).
 *
 * A staged model with an auxiliary stage (persons) has a second staging
 * table for its second scan; the statement that merges the stage reads
 * the main stage LEFT JOINed to the auxiliary one, as the model's
 * PhxAuxStage describes (merge_sql.c writes that statement).
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
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "parser/parse_coerce.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "store/store.h"

struct PhxDestination
{
	const PhxModel *model;
	Oid			relid;
	char	   *qualified_name; /* quoted schema.table */
	const char *export_name;
	int			nused;			/* model columns present in the table */
	int		   *used;			/* their indexes in model->columns */
	bool		merge;
	char	   *stage_sql;		/* INSERT from the stage into the table */
	SPIPlanPtr	stage_plan;		/* its plan, once the stage exists */
	PhxModel	aux_model;		/* the auxiliary stage's columns, as a model
								 * for the bulk writer (ncolumns 0: none) */
	bool		only_missing;	/* an append writes only rows whose key the
								 * table does not hold yet (settle) */
};

static void
spi_exec_or_error(const char *sql)
{
	bool		pushed = phx_snapshot_ensure();
	int			rc = SPI_execute(sql, false, 0);

	phx_snapshot_release(pushed);
	if (rc < 0)
		elog(ERROR, "SPI_execute failed for \"%s\": %s", sql, SPI_result_code_string(rc));
}

/*
 * CREATE TABLE in an existing schema needs CREATE on it (and USAGE, to use
 * the table afterwards): checked first, so a missing privilege gets the
 * same clean error as the others, not the one of our internal statement.
 */
static void
check_schema_create(PhxExport *exp, Oid nsp, const char *qualified)
{
	const char *role = GetUserNameFromId(GetUserId(), false);
	bool		usage = pg_namespace_aclcheck(nsp, GetUserId(), ACL_USAGE) == ACLCHECK_OK;
	bool		create = pg_namespace_aclcheck(nsp, GetUserId(), ACL_CREATE) == ACLCHECK_OK;

	if (usage && create)
		return;
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for schema %s", exp->schema_name),
			 errdetail("Role \"%s\" needs %s on the schema to create the table %s.",
					   role, !usage && !create ? "USAGE and CREATE" : !create ? "CREATE" : "USAGE",
					   qualified),
			 errhint("Grant it with GRANT USAGE, CREATE ON SCHEMA %s TO %s, or create the table and grant INSERT on it to the role.",
					 quote_identifier(exp->schema_name), quote_identifier(role))));
}

static void
create_table(PhxExport *exp, const PhxModel *model, const char *qualified)
{
	StringInfoData sql;
	Oid			nsp = get_namespace_oid(exp->schema_name, true);

	if (OidIsValid(nsp))
		check_schema_create(exp, nsp, qualified);
	else
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
		appendStringInfo(&sql, ", PRIMARY KEY (%s)", phx_column_list(model->merge_key));
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
 * How a value of the model's type is written into a column of dest_type:
 * as is where the assignment an INSERT makes converts it (text into
 * varchar(n) keeps its length check), else through an explicit cast (text
 * into jsonb, say).  The bulk writer follows the same rule.
 */
static bool
needs_explicit_cast(Oid model_type, Oid dest_type)
{
	return !can_coerce_type(1, &model_type, &dest_type, COERCION_ASSIGNMENT);
}

#define STAGE_NAME "posthog_export_stage"
#define STAGE_TABLE "pg_temp." STAGE_NAME
#define AUX_STAGE_NAME "posthog_export_stage_aux"
#define AUX_STAGE_TABLE "pg_temp." AUX_STAGE_NAME

/*
 * The destination table, opened with AccessShareLock, once the role has
 * the privileges the export's mode needs on it and its schema.
 */
static Relation
open_checked_table(PhxExport *exp, const char *qualified, bool merge, Oid *relid)
{
	Oid			nsp = get_namespace_oid(exp->schema_name, false);
	Relation	rel;
	AclMode		needed;
	AclResult	aclresult;

	aclresult = pg_namespace_aclcheck(nsp, GetUserId(), ACL_USAGE);
	if (aclresult != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for schema %s", exp->schema_name),
				 errdetail("Role \"%s\" needs USAGE on the schema.",
						   GetUserNameFromId(GetUserId(), false))));

	*relid = get_relname_relid(exp->table_name, nsp);
	if (!OidIsValid(*relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("relation %s does not exist", qualified)));

	rel = table_open(*relid, AccessShareLock);
	if (rel->rd_rel->relkind != RELKIND_RELATION &&
		rel->rd_rel->relkind != RELKIND_PARTITIONED_TABLE)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("\"%s\" is not a table", qualified)));

	needed = ACL_INSERT | (merge ? ACL_SELECT | ACL_UPDATE : 0);
	aclresult = pg_class_aclcheck(*relid, GetUserId(), needed);
	if (aclresult != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", qualified),
				 errdetail("Role \"%s\" needs %s on the table.",
						   GetUserNameFromId(GetUserId(), false),
						   merge ? "INSERT, SELECT and UPDATE" : "INSERT")));
	return rel;
}

/*
 * Can a column of type dest_type take the model's values of model_type?
 * Yes where an INSERT would convert them (an assignment cast: text into
 * varchar(n), int4 into int8, timestamptz into timestamp ...), and where
 * an explicit cast reads the value's text as the column type means it
 * (text into uuid, inet or json).  Not where the values are of another
 * kind than the column's: text or jsonb into a number, a boolean or a
 * time, which would fail on the first row, or no cast at all.
 */
static bool
column_takes(Oid model_type, Oid dest_type)
{
	Oid			base = getBaseType(dest_type);
	char		dest_cat;
	char		model_cat;
	bool		preferred;

	if (can_coerce_type(1, &model_type, &dest_type, COERCION_ASSIGNMENT))
		return true;
	if (!can_coerce_type(1, &model_type, &dest_type, COERCION_EXPLICIT))
		return false;
	get_type_category_preferred(base, &dest_cat, &preferred);
	get_type_category_preferred(model_type, &model_cat, &preferred);
	if (dest_cat == model_cat)
		return true;
	return dest_cat != TYPCATEGORY_NUMERIC && dest_cat != TYPCATEGORY_BOOLEAN &&
		dest_cat != TYPCATEGORY_DATETIME && dest_cat != TYPCATEGORY_TIMESPAN;
}

/* The type a model column is created with, as a user would write it. */
static char *
expected_type(const PhxModelColumn *col)
{
	char	   *t;
	char	   *p;

	if (col->create_type == NULL)
		return format_type_be(col->type);
	t = pstrdup(col->create_type);
	if ((p = strstr(t, " NOT NULL")) != NULL)
		*p = '\0';
	if (strncmp(t, "pg_catalog.", 11) == 0)
		t += 11;
	return t;
}

/* An existing column that cannot take the model's values is refused, naming both types. */
static void
check_column_type(PhxDestination *dest, const PhxModelColumn *col, Form_pg_attribute att)
{
	if (column_takes(col->type, att->atttypid))
		return;
	ereport(ERROR,
			(errcode(ERRCODE_DATATYPE_MISMATCH),
			 errmsg("column \"%s\" of table %s is of type %s, which cannot take the %s model's values",
					col->name, dest->qualified_name,
					format_type_with_typemod(att->atttypid, att->atttypmod), dest->model->name),
			 errdetail("The %s model writes %s values into column \"%s\"; the expected type is %s.",
					   dest->model->name, format_type_be(col->type), col->name, expected_type(col)),
			 errhint("Change the column's type (ALTER TABLE %s ALTER COLUMN %s TYPE %s), or drop the column if you do not want it exported.",
					 dest->qualified_name, quote_identifier(col->name), expected_type(col))));
}

/*
 * The model columns the table has (dest->used), their names (cols) and
 * the stage's columns cast to the table's types (casts); an error when
 * it has none of them.
 */
static void
map_columns(PhxDestination *dest, TupleDesc desc, StringInfo cols, StringInfo casts)
{
	const PhxModel *model = dest->model;
	int			nused = 0;

	dest->used = palloc(sizeof(int) * model->ncolumns);
	for (int i = 0; i < model->ncolumns; i++)
	{
		const PhxModelColumn *col = &model->columns[i];
		const char *q = quote_identifier(col->name);
		Form_pg_attribute att = phx_written_column(desc, col->name);
		const char *sep = nused ? ", " : "";

		if (att == NULL)
			continue;
		check_column_type(dest, col, att);

		dest->used[nused++] = i;
		appendStringInfo(cols, "%s%s", sep, q);
		if (col->type == TIMESTAMPTZOID && getBaseType(att->atttypid) == TIMESTAMPOID)
			/* UTC wall time, as PostHog's export and the bulk writer write it */
			appendStringInfo(casts, "%spg_catalog.timezone('UTC', %s)", sep,
							 phx_stage_source_expr(dest->model, i));
		else if (needs_explicit_cast(col->type, att->atttypid))
			appendStringInfo(casts, "%s%s::%s", sep, phx_stage_source_expr(dest->model, i),
							 format_type_extended(att->atttypid, att->atttypmod,
												  FORMAT_TYPE_TYPEMOD_GIVEN |
												  FORMAT_TYPE_FORCE_QUALIFY));
		else
			appendStringInfo(casts, "%s%s", sep, phx_stage_source_expr(dest->model, i));
	}
	dest->nused = nused;
	if (nused == 0)
	{
		StringInfoData names;

		initStringInfo(&names);
		for (int i = 0; i < model->ncolumns; i++)
			appendStringInfo(&names, "%s%s", i ? ", " : "", model->columns[i].name);
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
				 errmsg("table %s has none of the columns of the %s model", dest->qualified_name, model->name),
				 errdetail("The %s model writes the columns: %s.", model->name, names.data),
				 errhint("Use another table name, or add the model columns you want to the table.")));
	}
}

/* The merge needs the key columns, and a unique key on them to infer its arbiter. */
static void
check_merge_key(PhxDestination *dest, Relation rel)
{
	const PhxModel *model = dest->model;
	char	   *keylist = phx_column_list(model->merge_key);
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
						dest->qualified_name, keylist, dest->export_name),
				 errdetail("Merging updates existing rows by that key; without it rows would be duplicated."),
				 errhint("Add it with: ALTER TABLE %s ADD PRIMARY KEY (%s);", dest->qualified_name, keylist)));
}

/*
 * Opens (creating if needed) the destination of an export and checks it:
 * privileges, the model columns it has, and for a merge the unique key.
 * It also prepares the statement that writes staged rows into the table;
 * see phx_destination_insert() for when rows are staged.
 */
PhxDestination *
phx_destination_open(PhxExport *exp, const PhxModel *model)
{
	PhxDestination *dest = palloc0(sizeof(PhxDestination));
	char	   *qualified = quote_qualified_identifier(exp->schema_name, exp->table_name);
	Oid			nsp;
	Relation	rel;
	StringInfoData cols;		/* destination column names */
	StringInfoData casts;		/* stage columns cast to the destination's types */
	StringInfoData sql;

	dest->model = model;
	dest->qualified_name = qualified;
	dest->export_name = exp->name;
	dest->merge = (strcmp(exp->mode, "merge") == 0);

	nsp = get_namespace_oid(exp->schema_name, true);
	if (!OidIsValid(nsp) || !OidIsValid(get_relname_relid(exp->table_name, nsp)))
		create_table(exp, model, qualified);

	rel = open_checked_table(exp, qualified, dest->merge, &dest->relid);
	initStringInfo(&cols);
	initStringInfo(&casts);
	map_columns(dest, RelationGetDescr(rel), &cols, &casts);
	if (dest->merge)
		check_merge_key(dest, rel);
	table_close(rel, AccessShareLock);

	initStringInfo(&sql);
	appendStringInfo(&sql, "INSERT INTO %s AS t (%s) SELECT %s FROM " STAGE_TABLE " AS u",
					 qualified, cols.data, casts.data);
	if (model->aux)
	{
		phx_append_aux_join(&sql, model, AUX_STAGE_TABLE);
		dest->aux_model.name = model->name;
		dest->aux_model.columns = model->aux->columns;
		dest->aux_model.ncolumns = model->aux->ncolumns;
	}
	if (dest->merge)
		phx_append_on_conflict(&sql, model, dest->used, dest->nused);
	dest->stage_sql = sql.data;
	return dest;
}

/*
 * For the settle pass: the destination of an export, open to write rows
 * that became visible late, each once.  A merge writes as always (rows it
 * holds already are skipped when unchanged); an append stages every page
 * and, at phx_destination_finish(), writes only the rows whose key (uuid)
 * the table does not hold yet: one anti-join per interval, which needs the
 * key column and SELECT on the table.
 */
PhxDestination *
phx_destination_open_missing(PhxExport *exp, const PhxModel *model)
{
	PhxDestination *dest = phx_destination_open(exp, model);
	StringInfoData sql;

	if (dest->merge)
		return dest;
	for (int k = 0; model->merge_key[k]; k++)
	{
		bool		found = false;

		for (int n = 0; n < dest->nused; n++)
			found |= (strcmp(model->columns[dest->used[n]].name, model->merge_key[k]) == 0);
		if (!found)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_TABLE_DEFINITION),
					 errmsg("table %s has no column \"%s\", which writing the late rows of export \"%s\" needs",
							dest->qualified_name, model->merge_key[k], exp->name),
					 errdetail("A late row is written only when the table does not hold its %s yet.",
							   model->merge_key[k]),
					 errhint("Add the column, or turn settling off: SELECT posthog_export.alter_export(%s, settle_window => '0');",
							 quote_literal_cstr(exp->name))));
	}
	if (pg_class_aclcheck(dest->relid, GetUserId(), ACL_SELECT) != ACLCHECK_OK)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied for table %s", dest->qualified_name),
				 errdetail("Role \"%s\" needs SELECT on the table to write the late rows of export \"%s\" once.",
						   GetUserNameFromId(GetUserId(), false), exp->name)));
	initStringInfo(&sql);
	appendStringInfoString(&sql, dest->stage_sql);
	phx_append_absent_filter(&sql, model, dest->qualified_name);
	dest->stage_sql = sql.data;
	dest->only_missing = true;
	return dest;
}

/* (Re)creates a staging table with the columns, of their types, of "model". */
static void
create_stage(const char *name, const PhxModel *model)
{
	StringInfoData sql;

	if (OidIsValid(RangeVarGetRelid(makeRangeVar("pg_temp", (char *) name, -1), NoLock, true)))
		spi_exec_or_error(psprintf("DROP TABLE pg_temp.%s", name));
	initStringInfo(&sql);
	appendStringInfo(&sql, "CREATE TEMPORARY TABLE %s (", name);
	for (int i = 0; i < model->ncolumns; i++)
		appendStringInfo(&sql, "%s%s %s", i ? ", " : "",
						 quote_identifier(model->columns[i].name),
						 format_type_extended(model->columns[i].type, -1,
											  FORMAT_TYPE_FORCE_QUALIFY));
	appendStringInfoChar(&sql, ')');
	spi_exec_or_error(sql.data);
}

/*
 * The temporary table rows are staged in (or, with "aux", the auxiliary
 * stage), created on first use with the other: one column per model
 * column, of the model's type, so rows are written into it exactly as
 * they would be into the table.  It lives in this session's temporary
 * schema, so concurrent runs never meet in it.
 */
static Oid
stage_relid(PhxDestination *dest, bool aux)
{
	RangeVar   *rv = makeRangeVar("pg_temp", aux ? AUX_STAGE_NAME : STAGE_NAME, -1);

	if (aux && dest->aux_model.ncolumns == 0)
		elog(ERROR, "model %s sent a page for an auxiliary stage it does not have", dest->model->name);
	if (dest->stage_plan != NULL)
		return RangeVarGetRelid(rv, NoLock, false);

	create_stage(STAGE_NAME, dest->model);
	if (dest->aux_model.ncolumns > 0)
		create_stage(AUX_STAGE_NAME, &dest->aux_model);

	dest->stage_plan = SPI_prepare(dest->stage_sql, 0, NULL);
	if (dest->stage_plan == NULL)
		elog(ERROR, "could not prepare the insert into %s: %s", dest->qualified_name,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(dest->stage_plan) != 0)
		elog(ERROR, "SPI_keepplan failed");
	return RangeVarGetRelid(rv, NoLock, false);
}

/* Writes the staged rows into the table; returns the rows it wrote. */
static uint64
write_stage(PhxDestination *dest)
{
	bool		pushed = phx_snapshot_ensure();
	int			rc = SPI_execute_plan(dest->stage_plan, NULL, NULL, false, 0);

	phx_snapshot_release(pushed);
	if (rc != SPI_OK_INSERT)
		elog(ERROR, "insert into %s failed: %s", dest->qualified_name, SPI_result_code_string(rc));
	return SPI_processed;
}

/*
 * Can this page's rows go straight into the table?  Asked per page, as
 * the table may change between pages (a trigger added, say).
 */
static bool
direct_write(PhxDestination *dest)
{
	Relation	rel;
	bool		direct;

	if (dest->model->staged || dest->merge || dest->only_missing)
		return false;
	rel = try_table_open(dest->relid, RowExclusiveLock);
	if (rel == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table %s was dropped during export \"%s\"",
						dest->qualified_name, dest->export_name)));
	direct = phx_bulk_insert_supported(rel);
	table_close(rel, NoLock);
	return direct;
}

/*
 * Writes one page and returns the rows written to the table.
 *
 * Rows are converted one at a time, in a context reset after each, and go
 * through the bulk writer: straight into the table when an append into a
 * table the bulk writer can honour (the fast path, as COPY FROM), else
 * into the stage.  A staged model's stage is merged by
 * phx_destination_finish() after the last page, so it writes nothing yet;
 * any other page is written from the stage at once by one INSERT, with the
 * merge's ON CONFLICT, the table's triggers and its policies.
 */
uint64
phx_destination_insert(PhxDestination *dest, PhxModelPage *page)
{
	const PhxModel *model;
	PhxRowContext rc;
	PhxBulkInsert *bi;
	MemoryContext row_cxt;
	MemoryContext oldcxt;
	Datum	   *values;
	bool	   *nulls;
	bool		direct;
	bool		pushed;
	uint64		written;

	if (page->nrows == 0)
		return 0;

	direct = direct_write(dest);
	pushed = phx_snapshot_ensure();
	phx_row_context_push(&rc, page->what, dest->export_name, page->page_no);
	model = page->aux ? &dest->aux_model : dest->model;
	bi = phx_bulk_insert_begin(direct ? dest->relid : stage_relid(dest, page->aux), model, &rc);
	values = palloc(sizeof(Datum) * model->ncolumns);
	nulls = palloc(sizeof(bool) * model->ncolumns);

	/*
	 * jsonb input leaves a parse tree several times the size of its text:
	 * only what the bulk writer copies outlives the row.
	 */
	row_cxt = AllocSetContextCreate(CurrentMemoryContext, "posthog_export row",
									ALLOCSET_DEFAULT_SIZES);
	for (int r = 0; r < page->nrows; r++)
	{
		rc.row = r;
		rc.key = page->row_key ? page->row_key(page->arg, r) : NULL;
		oldcxt = MemoryContextSwitchTo(row_cxt);
		page->get_row(page->arg, r, values, nulls);
		MemoryContextSwitchTo(oldcxt);
		phx_bulk_insert_row(bi, values, nulls, r, rc.key);
		MemoryContextReset(row_cxt);
	}
	written = phx_bulk_insert_end(bi);
	phx_row_context_pop(&rc);
	MemoryContextDelete(row_cxt);
	phx_snapshot_release(pushed);

	if (direct)
		return written;
	/* merged (or, late rows of an append, filtered) by phx_destination_finish() */
	if (dest->model->staged || dest->only_missing)
		return 0;
	written = write_stage(dest);
	spi_exec_or_error("TRUNCATE " STAGE_TABLE);
	return written;
}

/*
 * After the last page: merges a staged model's stage into the table, or
 * appends the late rows the table lacks (one anti-join for all the pages);
 * returns the rows written.
 */
uint64
phx_destination_finish(PhxDestination *dest)
{
	uint64		written = 0;

	if (dest->stage_plan == NULL)
		return 0;
	if (dest->aux_model.ncolumns > 0)
	{
		/* temporary tables have no statistics: the join is planned on them */
		spi_exec_or_error("ANALYZE " STAGE_TABLE ", " AUX_STAGE_TABLE);
	}
	if (dest->model->staged || dest->only_missing)
		written = write_stage(dest);
	spi_exec_or_error("DROP TABLE " STAGE_TABLE);
	if (dest->aux_model.ncolumns > 0)
		spi_exec_or_error("DROP TABLE " AUX_STAGE_TABLE);
	return written;
}

void
phx_destination_close(PhxDestination *dest)
{
	if (dest->stage_plan)
		SPI_freeplan(dest->stage_plan);
	dest->stage_plan = NULL;
}

/*
 * Response text is UTF-8 and is written without conversion, so the
 * database must be UTF8 (as jsonb needs for \uXXXX escapes anyway).
 */
void
phx_check_database_encoding(void)
{
	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("posthog_export needs a database with UTF8 encoding"),
				 errdetail("This database uses %s.", GetDatabaseEncodingName())));
}
