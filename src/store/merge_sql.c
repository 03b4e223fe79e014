/*-------------------------------------------------------------------------
 *
 * merge_sql.c
 *		The text of the statement that writes a stage into the destination
 *		(destination.c runs it): where each column is read from, the join
 *		of an auxiliary stage, a merge's ON CONFLICT clause, and the filter
 *		of an append of late rows (only keys the table lacks).
 *
 * Only identifiers go into this text, each quoted; no value is ever
 * pasted into it.  The stage is aliased u, an auxiliary stage a, the
 * destination t.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"

#include "store/store.h"

/* "a", "b" ...: the names, quoted, comma-separated. */
char *
phx_column_list(const char *const *names)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int i = 0; names[i]; i++)
		appendStringInfo(&buf, "%s%s", i ? ", " : "", quote_identifier(names[i]));
	return buf.data;
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
 * The expression the merge reads model column i from: the main stage's
 * column (u), or what the auxiliary stage (a) makes of it.
 */
char *
phx_stage_source_expr(const PhxModel *model, int i)
{
	const PhxAuxStage *aux = model->aux;
	const char *name = model->columns[i].name;

	for (int c = 0; aux && c < aux->ncolumns; c++)
	{
		const char *qa = quote_identifier(aux->columns[c].name);

		if (strcmp(aux->fills[c].model_column, name) != 0)
			continue;
		if (aux->fills[c].how == PHX_AUX_FILL)
			return psprintf("a.%s", qa);
		if (aux->fills[c].how == PHX_AUX_OR)
			return psprintf("(u.%s OR COALESCE(a.%s, false))", quote_identifier(name), qa);
	}
	return psprintf("u.%s", quote_identifier(name));
}

/*
 * " LEFT JOIN <aux_table> AS a ON a.<key> = u.<column>", after checking
 * the model's description (a mistake there is the model's, so an internal
 * error): every auxiliary column names a model column of its type, an OR
 * column is a boolean, and there is exactly one key.  aux_table is the
 * caller's constant, qualified name.
 */
void
phx_append_aux_join(StringInfo sql, const PhxModel *model, const char *aux_table)
{
	const PhxAuxStage *aux = model->aux;
	int			nkeys = 0;

	if (!model->staged)
		elog(ERROR, "model %s has an auxiliary stage but is not staged", model->name);
	for (int c = 0; c < aux->ncolumns; c++)
	{
		const char *target = aux->fills[c].model_column;
		int			m;

		for (m = 0; m < model->ncolumns; m++)
			if (strcmp(model->columns[m].name, target) == 0)
				break;
		if (m == model->ncolumns ||
			model->columns[m].type != aux->columns[c].type ||
			(aux->fills[c].how == PHX_AUX_OR && aux->columns[c].type != BOOLOID))
			elog(ERROR, "auxiliary column %s of model %s does not match model column %s",
				 aux->columns[c].name, model->name, target);
		if (aux->fills[c].how != PHX_AUX_KEY)
			continue;
		appendStringInfo(sql, " LEFT JOIN %s AS a ON a.%s = u.%s", aux_table,
						 quote_identifier(aux->columns[c].name), quote_identifier(target));
		nkeys++;
	}
	if (nkeys != 1)
		elog(ERROR, "the auxiliary stage of model %s needs one key column, not %d", model->name, nkeys);
}

/*
 * The ON CONFLICT clause of a merge on the model's key, over the model
 * columns the table has (used, nused): update the non-key columns, but
 * only when a version column present in the table grows (an older version
 * that arrives late never overwrites a newer one), or, without version
 * columns, when something changed, so unchanged rows are never rewritten.
 */
void
phx_append_on_conflict(StringInfo sql, const PhxModel *model, const int *used, int nused)
{
	StringInfoData set;
	StringInfoData lhs;
	StringInfoData rhs;
	StringInfoData versions;

	initStringInfo(&set);
	initStringInfo(&lhs);
	initStringInfo(&rhs);
	initStringInfo(&versions);
	for (int n = 0; n < nused; n++)
	{
		const char *q = quote_identifier(model->columns[used[n]].name);
		const char *name = model->columns[used[n]].name;

		if (name_in(name, model->merge_key))
			continue;
		appendStringInfo(&set, "%s%s = EXCLUDED.%s", set.len ? ", " : "", q, q);
		appendStringInfo(&lhs, "%st.%s", lhs.len ? ", " : "", q);
		appendStringInfo(&rhs, "%sEXCLUDED.%s", rhs.len ? ", " : "", q);
		if (name_in(name, model->merge_versions))
			appendStringInfo(&versions, "%sEXCLUDED.%s > t.%s OR (t.%s IS NULL AND EXCLUDED.%s IS NOT NULL)",
							 versions.len ? " OR " : "", q, q, q, q);
	}
	appendStringInfo(sql, " ON CONFLICT (%s) DO ", phx_column_list(model->merge_key));
	if (set.len == 0)
		appendStringInfoString(sql, "NOTHING");
	else if (versions.len > 0)
		appendStringInfo(sql, "UPDATE SET %s WHERE %s", set.data, versions.data);
	else
		appendStringInfo(sql, "UPDATE SET %s WHERE ROW(%s) IS DISTINCT FROM ROW(%s)",
						 set.data, lhs.data, rhs.data);
}

/*
 * " WHERE NOT EXISTS (SELECT 1 FROM <table> AS d WHERE d.<key> = u.<key>
 * ...)": an append of only the staged rows whose merge key the table does
 * not hold yet.  The table's key column is compared as the model's type.
 */
void
phx_append_absent_filter(StringInfo sql, const PhxModel *model, const char *qualified)
{
	appendStringInfo(sql, " WHERE NOT EXISTS (SELECT 1 FROM %s AS d WHERE ", qualified);
	for (int k = 0; model->merge_key[k]; k++)
	{
		const char *q = quote_identifier(model->merge_key[k]);
		Oid			type = InvalidOid;

		for (int i = 0; i < model->ncolumns; i++)
			if (strcmp(model->columns[i].name, model->merge_key[k]) == 0)
				type = model->columns[i].type;
		if (!OidIsValid(type))
			elog(ERROR, "merge key %s of model %s is not one of its columns", model->merge_key[k], model->name);
		appendStringInfo(sql, "%sd.%s::%s OPERATOR(pg_catalog.=) u.%s", k ? " AND " : "", q,
						 format_type_extended(type, -1, FORMAT_TYPE_FORCE_QUALIFY), q);
	}
	appendStringInfoChar(sql, ')');
}
