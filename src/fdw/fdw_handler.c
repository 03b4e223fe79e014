/*-------------------------------------------------------------------------
 *
 * fdw_handler.c
 *		The posthog_export foreign data wrapper's handler, and the planning
 *		of a scan of one foreign table: what it reads, which conditions go
 *		to PostHog, its size and cost, and the HogQL of the plan.
 *
 * A foreign table names a HogQL table (option "table", default its own
 * name); each column is a HogQL expression (option "expression", default
 * the column's name).  A scan is one HogQL query: the conditions PostHog
 * can evaluate exactly as Postgres would go in its WHERE, and the rest is
 * filtered here.  It is read in pages with a keyset cursor when the table
 * has a key to page by (built in for PostHog's tables, option "keyset"
 * for others).  fdw_upper.c adds aggregates, ORDER BY and LIMIT on top.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <math.h>

#include "access/table.h"
#include "catalog/pg_type.h"
#include "commands/defrem.h"
#include "foreign/fdwapi.h"
#include "foreign/foreign.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/planmain.h"
#include "optimizer/restrictinfo.h"
#include "optimizer/tlist.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/varlena.h"

#include "fdw/fdw.h"
#include "models/models.h"

PG_FUNCTION_INFO_V1(posthog_export_fdw_handler);

/* rows assumed in a PostHog table: there are no statistics */
#define PHX_FDW_TABLE_ROWS	1000000.0

/* the keys PostHog's own tables can be paged by (HogQL schema) */
typedef struct BuiltinKeyset
{
	const char *table;
	const char *exprs[3];
	PhxKeyType	types[3];
} BuiltinKeyset;

static const BuiltinKeyset builtin_keysets[] = {
	{"events", {"timestamp", "uuid"}, {PHX_KEY_TIMESTAMP, PHX_KEY_UUID}},
	{"persons", {"id"}, {PHX_KEY_UUID}},
	{"raw_persons", {"id", "version"}, {PHX_KEY_UUID, PHX_KEY_INT}},
	{"person_distinct_ids", {"distinct_id"}, {PHX_KEY_TEXT}},
	{"raw_person_distinct_ids", {"distinct_id", "version"}, {PHX_KEY_TEXT, PHX_KEY_INT}},
	{"sessions", {"session_id"}, {PHX_KEY_TEXT}},
	{"groups", {"index", "key"}, {PHX_KEY_INT, PHX_KEY_TEXT}},
};

/* Whether a HogQL expression is a plain field path: name(.name)* */
static bool
is_field_path(const char *s)
{
	bool		start = true;

	for (; *s; s++)
	{
		if (*s == '.')
		{
			if (start)
				return false;
			start = true;
			continue;
		}
		if (!(isalpha((unsigned char) *s) || *s == '_' || *s == '$' ||
			  (!start && isdigit((unsigned char) *s))))
			return false;
		start = false;
	}
	return !start;
}

/* a HogQL table name: each dot-separated part an identifier (system.cohorts) */
static char *
hogql_table_name(const char *name)
{
	StringInfoData buf;
	char	   *copy = pstrdup(name);
	char	   *part;
	char	   *save;

	initStringInfo(&buf);
	for (part = strtok_r(copy, ".", &save); part; part = strtok_r(NULL, ".", &save))
	{
		if (buf.len > 0)
			appendStringInfoChar(&buf, '.');
		phx_hogql_identifier(&buf, part);
	}
	if (buf.len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
				 errmsg("invalid value for option \"table\": \"%s\"", name)));
	return buf.data;
}

/* the key type a column of this Postgres type pages by, or -1 */
static int
key_type_of(Oid type)
{
	switch (type)
	{
		case TIMESTAMPTZOID:
			return PHX_KEY_TIMESTAMP;
		case INT2OID:
		case INT4OID:
		case INT8OID:
			return PHX_KEY_INT;
		case UUIDOID:
			return PHX_KEY_UUID;
		case TEXTOID:
		case VARCHAROID:
			return PHX_KEY_TEXT;
		default:
			return -1;
	}
}

/*
 * The keyset of a foreign table: its option "keyset" (column names of
 * the foreign table), else the built-in one of PostHog's table, else none.
 */
static List *
table_keyset(Relation rel, PhxFdwRelInfo *fp, const char *option, const char *hogql_table)
{
	List	   *keyset = NIL;

	if (option != NULL)
	{
		List	   *names;
		ListCell   *lc;
		char	   *copy = pstrdup(option);

		if (!SplitIdentifierString(copy, ',', &names) || names == NIL)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
					 errmsg("invalid value for option \"keyset\" of foreign table \"%s\": \"%s\"",
							RelationGetRelationName(rel), option),
					 errhint("Give the columns that order and identify the rows, separated by commas, e.g. 'created_at, id'.")));
		foreach(lc, names)
		{
			char	   *name = lfirst(lc);
			AttrNumber	attnum = get_attnum(RelationGetRelid(rel), name);
			PhxFdwKey  *key;
			int			type;

			if (attnum <= 0 || fp->col_expr[attnum - 1] == NULL)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_COLUMN),
						 errmsg("column \"%s\" of option \"keyset\" does not exist in foreign table \"%s\"",
								name, RelationGetRelationName(rel))));
			type = key_type_of(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid);
			if (type < 0)
				ereport(ERROR,
						(errcode(ERRCODE_FDW_INVALID_ATTRIBUTE_VALUE),
						 errmsg("column \"%s\" of option \"keyset\" has type %s", name,
								format_type_be(TupleDescAttr(RelationGetDescr(rel), attnum - 1)->atttypid)),
						 errdetail("A keyset column must be timestamptz, an integer, uuid or text.")));
			key = palloc(sizeof(PhxFdwKey));
			key->expr = fp->col_expr[attnum - 1];
			key->type = type;
			keyset = lappend(keyset, key);
		}
		return keyset;
	}
	for (int i = 0; i < lengthof(builtin_keysets); i++)
	{
		if (strcmp(builtin_keysets[i].table, hogql_table) != 0)
			continue;
		for (int k = 0; k < 3 && builtin_keysets[i].exprs[k]; k++)
		{
			PhxFdwKey  *key = palloc(sizeof(PhxFdwKey));

			key->expr = phx_hogql_name(builtin_keysets[i].exprs[k]);
			key->type = builtin_keysets[i].types[k];
			keyset = lappend(keyset, key);
		}
	}
	return keyset;
}

/* The foreign table: its HogQL table, column expressions and keyset. */
static void
read_table(PhxFdwRelInfo *fp, Oid foreigntableid)
{
	ForeignTable *ft = GetForeignTable(foreigntableid);
	Relation	rel = table_open(foreigntableid, NoLock);
	TupleDesc	tupdesc = RelationGetDescr(rel);
	const char *table = NULL;
	const char *keyset = NULL;
	ListCell   *lc;

	fp->relation = foreigntableid;
	fp->server_name = GetForeignServer(ft->serverid)->servername;
	foreach(lc, ft->options)
	{
		DefElem    *def = lfirst_node(DefElem, lc);

		if (strcmp(def->defname, "table") == 0)
			table = defGetString(def);
		else if (strcmp(def->defname, "keyset") == 0)
			keyset = defGetString(def);
	}
	if (table == NULL)
		table = RelationGetRelationName(rel);
	fp->table = hogql_table_name(table);

	fp->natts = tupdesc->natts;
	fp->col_expr = palloc0(sizeof(char *) * fp->natts);
	fp->col_simple = palloc0(sizeof(bool) * fp->natts);
	for (int i = 0; i < tupdesc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(tupdesc, i);
		const char *expr = NULL;

		if (att->attisdropped)
			continue;
		foreach(lc, GetForeignColumnOptions(foreigntableid, att->attnum))
		{
			DefElem    *def = lfirst_node(DefElem, lc);

			if (strcmp(def->defname, "expression") == 0)
				expr = defGetString(def);
		}
		if (expr == NULL)
		{
			fp->col_expr[i] = phx_hogql_name(NameStr(att->attname));
			fp->col_simple[i] = true;
		}
		else
		{
			fp->col_expr[i] = pstrdup(expr);
			fp->col_simple[i] = is_field_path(expr);
		}
	}
	fp->keyset = table_keyset(rel, fp, keyset, table);
	table_close(rel, NoLock);
}

/*
 * Size: which conditions go to PostHog, the rows expected, the cost.
 * Without statistics, a table is assumed large and Postgres's default
 * selectivities apply; a request is expensive and rows cost to transfer,
 * so that the planner prefers plans that send work to PostHog.
 */
static void
phx_get_rel_size(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	PhxFdwRelInfo *fp = palloc0(sizeof(PhxFdwRelInfo));
	ListCell   *lc;
	Selectivity remote_sel,
				local_sel;
	double		remote_rows;

	baserel->fdw_private = fp;
	fp->relid = baserel->relid;
	read_table(fp, foreigntableid);

	foreach(lc, baserel->baserestrictinfo)
	{
		RestrictInfo *ri = lfirst_node(RestrictInfo, lc);

		/* a condition on no column (WHERE $1 > 0) gates the plan above the scan */
		if (ri->pseudoconstant)
			continue;
		if (phx_shippable_cond(root, fp, ri->clause, false))
			fp->remote_conds = lappend(fp->remote_conds, ri);
		else
			fp->local_conds = lappend(fp->local_conds, ri);
	}
	pull_varattnos((Node *) baserel->reltarget->exprs, baserel->relid, &fp->attrs_used);
	foreach(lc, fp->local_conds)
		pull_varattnos((Node *) lfirst_node(RestrictInfo, lc)->clause, baserel->relid,
					   &fp->attrs_used);

	remote_sel = clauselist_selectivity(root, fp->remote_conds, baserel->relid, JOIN_INNER, NULL);
	local_sel = clauselist_selectivity(root, fp->local_conds, baserel->relid, JOIN_INNER, NULL);
	remote_rows = clamp_row_est(PHX_FDW_TABLE_ROWS * remote_sel);
	baserel->tuples = PHX_FDW_TABLE_ROWS;
	baserel->rows = clamp_row_est(remote_rows * local_sel);
	fp->rows = remote_rows;

	fp->startup_cost = PHX_FDW_REQUEST_COST;
	fp->total_cost = fp->startup_cost +
		ceil(remote_rows / PHX_FDW_MAX_ROWS) * PHX_FDW_REQUEST_COST +
		remote_rows * (PHX_FDW_ROW_COST + cpu_tuple_cost);
	{
		QualCost	qc;

		cost_qual_eval(&qc, fp->local_conds, root);
		fp->startup_cost += qc.startup;
		fp->total_cost += qc.startup + qc.per_tuple * remote_rows;
	}
}

/*
 * The pathkeys of the query, when they are a prefix of the keyset in
 * ascending order: a paged scan returns its rows in that order anyway.
 */
static List *
keyset_pathkeys(PlannerInfo *root, PhxFdwRelInfo *fp)
{
	ListCell   *lc;
	int			k = 0;

	if (root->query_pathkeys == NIL || list_length(root->query_pathkeys) > list_length(fp->keyset))
		return NIL;
	foreach(lc, root->query_pathkeys)
	{
		PathKey    *pk = lfirst(lc);
		PhxFdwKey  *key = list_nth(fp->keyset, k++);
		Expr	   *e;
		bool		match = false;

		if (!PHX_PK_ASC(pk) || pk->pk_nulls_first)
			return NIL;
		if (!phx_shippable_sort(root, fp, pk, &e, false))
			return NIL;
		while (IsA(e, RelabelType))
			e = ((RelabelType *) e)->arg;
		if (IsA(e, Var) && ((Var *) e)->varattno > 0 &&
			strcmp(fp->col_expr[((Var *) e)->varattno - 1], key->expr) == 0)
			match = true;
		/* ClickHouse orders uuids otherwise than Postgres */
		if (!match || key->type == PHX_KEY_UUID)
			return NIL;
	}
	return root->query_pathkeys;
}

/* a scan of the table, in the order of pathkeys (NIL: none) */
static void
add_scan_path(PlannerInfo *root, RelOptInfo *baserel, PhxFdwRelInfo *fp, List *pathkeys)
{
	add_path(baserel, (Path *)
			 create_foreignscan_path(root, baserel, NULL, baserel->rows,
#if PG_VERSION_NUM >= 180000
									 0,
#endif
									 fp->startup_cost, fp->total_cost, pathkeys,
									 baserel->lateral_relids, NULL,
#if PG_VERSION_NUM >= 170000
									 NIL,
#endif
									 NIL));
}

static void
phx_get_paths(PlannerInfo *root, RelOptInfo *baserel, Oid foreigntableid)
{
	PhxFdwRelInfo *fp = baserel->fdw_private;
	List	   *pathkeys;

	add_scan_path(root, baserel, fp, NIL);
	pathkeys = fp->keyset != NIL ? keyset_pathkeys(root, fp) : NIL;
	if (pathkeys != NIL)
		add_scan_path(root, baserel, fp, pathkeys);
}

/* the base relation's info under an upper one, and the upper's own */
static PhxFdwRelInfo *
base_info(RelOptInfo *rel)
{
	PhxFdwRelInfo *fp = rel->fdw_private;

	return fp->base ? fp->base : fp;
}

/*
 * The plan: the HogQL of the path, in pieces fdw_scan.c puts together
 * (the keyset cursor and LIMIT of each page are its own), the values'
 * expressions in fdw_exprs, the conditions left here in the plan's qual.
 */
static ForeignScan *
phx_get_plan(PlannerInfo *root, RelOptInfo *foreignrel, Oid foreigntableid,
			 ForeignPath *best_path, List *tlist, List *scan_clauses, Plan *outer_plan)
{
	PhxFdwRelInfo *fp = foreignrel->fdw_private;
	PhxFdwRelInfo *base = base_info(foreignrel);
	bool		upper = IS_UPPER_REL(foreignrel);
	Index		scan_relid = upper ? 0 : foreignrel->relid;
	List	   *local_exprs = NIL;
	List	   *remote_conds = NIL;
	List	   *fdw_scan_tlist = NIL;
	List	   *attnums = NIL;
	List	   *keyset_exprs = NIL;
	List	   *keyset_types = NIL;
	StringInfoData select,
				where,
				group,
				order;
	PhxDeparse	dp;
	ListCell   *lc;
	int			limit = -1;
	int			offset = 0;
	bool		sorted = false;
	List	   *private;

	initStringInfo(&select);
	initStringInfo(&where);
	initStringInfo(&group);
	initStringInfo(&order);
	phx_deparse_init(&dp, root, base, &select, false);

	if (!upper)
	{
		foreach(lc, scan_clauses)
		{
			RestrictInfo *ri = lfirst_node(RestrictInfo, lc);

			if (ri->pseudoconstant)
				continue;
			if (list_member_ptr(fp->remote_conds, ri))
				remote_conds = lappend(remote_conds, ri->clause);
			else
				local_exprs = lappend(local_exprs, ri->clause);
		}
	}
	else
	{
		foreach(lc, base->remote_conds)
			remote_conds = lappend(remote_conds, lfirst_node(RestrictInfo, lc)->clause);
		if (best_path->fdw_private != NIL)
		{
			sorted = intVal(linitial(best_path->fdw_private)) != 0;
			limit = intVal(lsecond(best_path->fdw_private));
			offset = intVal(lthird(best_path->fdw_private));
		}
	}

	/* SELECT */
	appendStringInfoString(&select, "SELECT ");
	if (!upper)
	{
		bool		whole = bms_is_member(0 - FirstLowInvalidHeapAttributeNumber, base->attrs_used);

		for (int i = 1; i <= base->natts; i++)
		{
			if (base->col_expr[i - 1] == NULL)
				continue;
			if (!whole && !bms_is_member(i - FirstLowInvalidHeapAttributeNumber, base->attrs_used))
				continue;
			if (attnums != NIL)
				appendStringInfoString(&select, ", ");
			appendStringInfoString(&select, base->col_simple[i - 1] ? base->col_expr[i - 1] :
								   psprintf("(%s)", base->col_expr[i - 1]));
			attnums = lappend_int(attnums, i);
		}
		if (attnums == NIL)
		{
			appendStringInfoString(&select, "1");	/* a row, nothing of it needed */
			attnums = lappend_int(attnums, 0);
		}
	}
	else
	{
		if (fp->grouped)
			fdw_scan_tlist = copyObject(fp->grouped_tlist);
		else
		{
			List	   *vars = pull_var_clause((Node *) best_path->path.pathtarget->exprs,
											   PVC_RECURSE_PLACEHOLDERS);

			fdw_scan_tlist = add_to_flat_tlist(NIL, vars);
		}
		foreach(lc, fdw_scan_tlist)
		{
			TargetEntry *tle = lfirst_node(TargetEntry, lc);

			if (foreach_current_index(lc) > 0)
				appendStringInfoString(&select, ", ");
			dp.aggregates = fp->grouped;
			dp.output = !fp->grouped;
			phx_deparse_expr(&dp, tle->expr);
			dp.output = false;
			attnums = lappend_int(attnums, tle->resno);
		}
		if (fdw_scan_tlist == NIL)
		{
			appendStringInfoString(&select, "1");
			attnums = lappend_int(attnums, 0);
		}
	}
	/* the keyset of a paged scan: read after the columns, never returned */
	if (!upper || (!fp->grouped && !sorted))
	{
		foreach(lc, base->keyset)
		{
			PhxFdwKey  *key = lfirst(lc);

			appendStringInfo(&select, ", %s", key->expr);
			keyset_exprs = lappend(keyset_exprs, makeString(key->expr));
			keyset_types = lappend_int(keyset_types, key->type);
		}
	}
	appendStringInfo(&select, " FROM %s", base->table);

	/* WHERE */
	dp.buf = &where;
	dp.aggregates = false;
	foreach(lc, remote_conds)
	{
		if (foreach_current_index(lc) > 0)
			appendStringInfoString(&where, " AND ");
		phx_deparse_cond(&dp, lfirst(lc));
	}

	/* GROUP BY, HAVING */
	if (upper && fp->grouped)
	{
		bool		first = true;

		dp.buf = &group;
		dp.aggregates = true;
		foreach(lc, fp->grouped_tlist)
		{
			TargetEntry *tle = lfirst_node(TargetEntry, lc);

			if (tle->ressortgroupref == 0 ||
				get_sortgroupref_clause_noerr(tle->ressortgroupref,
#if PG_VERSION_NUM >= 160000
											  root->processed_groupClause
#else
											  root->parse->groupClause
#endif
											  ) == NULL)
				continue;
			appendStringInfoString(&group, first ? " GROUP BY " : ", ");
			first = false;
			phx_deparse_expr(&dp, tle->expr);
		}
		foreach(lc, fp->having_conds)
		{
			appendStringInfoString(&group, foreach_current_index(lc) == 0 ? " HAVING " : " AND ");
			phx_deparse_cond(&dp, lfirst(lc));
		}
	}

	/* ORDER BY of an ordered upper path (a paged scan orders by its keyset) */
	if (sorted)
	{
		dp.buf = &order;
		dp.aggregates = fp->grouped;
		foreach(lc, best_path->path.pathkeys)
		{
			PathKey    *pk = lfirst(lc);
			Expr	   *e;

			if (!phx_shippable_sort(root, fp->grouped ? fp : base, pk, &e, fp->grouped))
				elog(ERROR, "posthog_export: a sort key checked as shippable did not deparse");
			if (foreach_current_index(lc) > 0)
				appendStringInfoString(&order, ", ");
			phx_deparse_sort(&dp, e, pk);
		}
	}

	private = NIL;
	private = lappend(private, makeString(select.data));
	private = lappend(private, makeString(where.data));
	private = lappend(private, makeString(group.data));
	private = lappend(private, makeString(order.data));
	private = lappend(private, makeInteger(limit));
	private = lappend(private, makeInteger(offset));
	private = lappend(private, attnums);
	private = lappend(private, keyset_exprs);
	private = lappend(private, keyset_types);
	private = lappend(private, makeString(base->table));
	private = lappend(private, makeString(base->server_name));
	Assert(list_length(private) == PHX_SCAN_NPRIVATE);

	return make_foreignscan(tlist, local_exprs, scan_relid, dp.values, private,
							fdw_scan_tlist, NIL, outer_plan);
}

Datum
posthog_export_fdw_handler(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	routine->GetForeignRelSize = phx_get_rel_size;
	routine->GetForeignPaths = phx_get_paths;
	routine->GetForeignPlan = phx_get_plan;
	routine->GetForeignUpperPaths = phx_get_upper_paths;
	routine->BeginForeignScan = phx_begin_foreign_scan;
	routine->IterateForeignScan = phx_iterate_foreign_scan;
	routine->ReScanForeignScan = phx_rescan_foreign_scan;
	routine->EndForeignScan = phx_end_foreign_scan;
	routine->ExplainForeignScan = phx_explain_foreign_scan;
	routine->ImportForeignSchema = phx_import_foreign_schema;
	PG_RETURN_POINTER(routine);
}
