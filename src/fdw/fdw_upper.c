/*-------------------------------------------------------------------------
 *
 * fdw_upper.c
 *		What is pushed to PostHog above a scan of one foreign table:
 *		aggregates with GROUP BY and HAVING, ORDER BY, LIMIT and OFFSET,
 *		as postgres_fdw pushes upper relations.
 *
 * A grouping scan, or a sorted one, is one request: PostHog returns at
 * most 50,000 rows, so a sort is pushed only with a LIMIT that fits, and
 * a grouping whose groups do not fit is an error at run time (never a
 * silently short result).  A LIMIT on an unsorted scan just stops the
 * paging early.  OFFSET is never sent (PostHog refuses it): the scan asks
 * for LIMIT + OFFSET rows and skips the first OFFSET itself.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "nodes/makefuncs.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/cost.h"
#include "optimizer/optimizer.h"
#include "optimizer/pathnode.h"
#include "optimizer/paths.h"
#include "optimizer/tlist.h"
#include "parser/parsetree.h"
#include "utils/selfuncs.h"

#include "fdw/fdw.h"

static List *
group_clause(PlannerInfo *root)
{
#if PG_VERSION_NUM >= 160000
	return root->processed_groupClause;
#else
	return root->parse->groupClause;
#endif
}

static Path *
upper_path(PlannerInfo *root, RelOptInfo *rel, PathTarget *target, double rows,
		   Cost startup, Cost total, List *pathkeys, List *private)
{
	return (Path *) create_foreign_upper_path(root, rel, target, rows,
#if PG_VERSION_NUM >= 180000
											  0,
#endif
											  startup, total, pathkeys, NULL,
#if PG_VERSION_NUM >= 170000
											  NIL,
#endif
											  private);
}

/*
 * Whether an expression of the grouping target is one of its grouping
 * expressions already listed.
 */
static bool
is_grouped_expr(List *tlist, Expr *e)
{
	ListCell   *lc;

	foreach(lc, tlist)
	{
		TargetEntry *tle = lfirst_node(TargetEntry, lc);

		if (tle->ressortgroupref != 0 && equal(tle->expr, e))
			return true;
	}
	return false;
}

/*
 * GROUP BY with aggregates, directly over the foreign table and when every
 * condition of the scan went to PostHog: the grouping expressions, the
 * aggregates and HAVING must all deparse.  An output expression that does
 * not (upper(event)) is computed here from the grouped columns and
 * aggregates it is made of.
 */
static void
add_grouping_path(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *grouped_rel,
				  GroupPathExtraData *extra)
{
	Query	   *parse = root->parse;
	PhxFdwRelInfo *in = input_rel->fdw_private;
	PathTarget *target = root->upper_targets[UPPERREL_GROUP_AGG];
	PhxFdwRelInfo *fp;
	List	   *tlist = NIL;
	List	   *having = NIL;
	List	   *group_exprs = NIL;
	ListCell   *lc;
	int			i = 0;
	double		rows;
	Cost		startup,
				total;

	if (parse->groupingSets || extra->patype != PARTITIONWISE_AGGREGATE_NONE)
		return;
	if (!IS_SIMPLE_REL(input_rel) || in->local_conds != NIL)
		return;

	/* grouping expressions first: the others may be built of them */
	foreach(lc, target->exprs)
	{
		Expr	   *e = lfirst(lc);
		Index		sgref = get_pathtarget_sortgroupref(target, i++);
		TargetEntry *tle;

		if (sgref == 0 || get_sortgroupref_clause_noerr(sgref, group_clause(root)) == NULL)
			continue;
		if (!phx_groupable_expr(root, in, e))
			return;
		tle = makeTargetEntry(copyObject(e), list_length(tlist) + 1, NULL, false);
		tle->ressortgroupref = sgref;
		tlist = lappend(tlist, tle);
		group_exprs = lappend(group_exprs, e);
	}
	i = 0;
	foreach(lc, target->exprs)
	{
		Expr	   *e = lfirst(lc);
		Index		sgref = get_pathtarget_sortgroupref(target, i++);
		List	   *parts;
		ListCell   *lp;

		if (sgref != 0 && get_sortgroupref_clause_noerr(sgref, group_clause(root)) != NULL)
			continue;
		if (IsA(e, Aggref) && phx_shippable_expr(root, in, e, true))
		{
			tlist = add_to_flat_tlist(tlist, list_make1(e));
			continue;
		}
		/* computed here: its aggregates go to PostHog, its columns are grouped */
		parts = pull_var_clause((Node *) e, PVC_INCLUDE_AGGREGATES);
		foreach(lp, parts)
		{
			Expr	   *part = lfirst(lp);

			if (IsA(part, Aggref))
			{
				if (!phx_shippable_expr(root, in, part, true))
					return;
				tlist = add_to_flat_tlist(tlist, list_make1(part));
			}
			else if (!is_grouped_expr(tlist, part))
				return;
		}
	}
	if (extra->havingQual)
	{
		foreach(lc, (List *) extra->havingQual)
		{
			Expr	   *qual = lfirst(lc);

			if (!phx_shippable_cond(root, in, qual, true))
				return;
			having = lappend(having, qual);
		}
	}

	fp = palloc0(sizeof(PhxFdwRelInfo));
	*fp = *in;
	fp->base = in;
	fp->pushdown_safe = true;
	fp->grouped = true;
	fp->grouped_tlist = tlist;
	fp->having_conds = having;
	grouped_rel->fdw_private = fp;

	rows = group_exprs == NIL ? 1 :
		estimate_num_groups(root, group_exprs, in->rows, NULL, NULL);
	if (having != NIL)
		rows = clamp_row_est(rows * 0.5);
	fp->rows = rows;
	/* PostHog aggregates at a fraction of the cost of sending the rows */
	startup = PHX_FDW_REQUEST_COST + in->rows * cpu_operator_cost;
	total = startup + rows * (PHX_FDW_ROW_COST + cpu_tuple_cost);
	fp->startup_cost = startup;
	fp->total_cost = total;
	add_path(grouped_rel, upper_path(root, grouped_rel, target, rows, startup, total, NIL, NIL));
}

/*
 * LIMIT and OFFSET when both are constants (FETCH FIRST ... WITH TIES is
 * not sent); *wanted = LIMIT + OFFSET, the rows the scan must return.
 */
static bool
constant_limit(PlannerInfo *root, int64 *wanted, int64 *offset)
{
	Query	   *parse = root->parse;
	Const	   *count = (Const *) parse->limitCount;
	Const	   *off = (Const *) parse->limitOffset;
	int64		n;

	if (count == NULL || !IsA(count, Const) || count->constisnull ||
		parse->limitOption == LIMIT_OPTION_WITH_TIES)
		return false;
	if (off != NULL && !IsA(off, Const))
		return false;
	n = DatumGetInt64(count->constvalue);
	*offset = (off == NULL || off->constisnull) ? 0 : DatumGetInt64(off->constvalue);
	if (n < 0 || *offset < 0 || n > PG_INT32_MAX || *offset > PG_INT32_MAX - n)
		return false;
	*wanted = n + *offset;
	return true;
}

/* whether every sort key of the query can be sent */
static bool
sort_shippable(PlannerInfo *root, PhxFdwRelInfo *fp)
{
	ListCell   *lc;
	Expr	   *e;

	foreach(lc, root->sort_pathkeys)
		if (!phx_shippable_sort(root, fp->grouped ? fp : (fp->base ? fp->base : fp),
								lfirst(lc), &e, fp->grouped))
			return false;
	return true;
}

/* A pushable input: the scan with all its conditions sent, or a grouping pushed. */
static bool
pushable_input(RelOptInfo *input_rel)
{
	PhxFdwRelInfo *in = input_rel->fdw_private;

	if (in == NULL)
		return false;
	if (IS_SIMPLE_REL(input_rel))
		return in->local_conds == NIL;
	return in->pushdown_safe;
}

/*
 * Whether a scan can return what an ORDER BY / LIMIT step above the
 * table needs: plain columns (no whole row, no system column).
 */
static bool
target_columns_ok(PathTarget *target, PhxFdwRelInfo *in)
{
	ListCell   *lc;

	if (in->grouped)
		return true;
	foreach(lc, pull_var_clause((Node *) target->exprs, PVC_RECURSE_PLACEHOLDERS))
	{
		Var		   *var = lfirst(lc);

		if (!IsA(var, Var) || var->varattno <= 0 || var->varattno > in->natts ||
			in->col_expr[var->varattno - 1] == NULL)
			return false;
	}
	return true;
}

static PhxFdwRelInfo *
upper_info(RelOptInfo *input_rel, RelOptInfo *output_rel)
{
	PhxFdwRelInfo *in = input_rel->fdw_private;
	PhxFdwRelInfo *fp = palloc0(sizeof(PhxFdwRelInfo));

	*fp = *in;
	fp->base = in->base ? in->base : in;
	fp->pushdown_safe = true;
	output_rel->fdw_private = fp;
	return fp;
}

/*
 * ORDER BY.  Over a grouping, one request anyway.  Over the scan, only
 * with a LIMIT that fits one request: the rows in their order cannot be
 * paged (a scan is paged in its keyset's order).  The path then returns
 * the first LIMIT + OFFSET rows; the Limit above takes its share.
 */
static void
add_ordered_path(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *ordered_rel)
{
	PhxFdwRelInfo *in = input_rel->fdw_private;
	PhxFdwRelInfo *fp;
	int64		wanted = -1,
				offset = 0;
	double		rows;

	if (root->parse->hasTargetSRFs || root->sort_pathkeys == NIL)
		return;
	if (!constant_limit(root, &wanted, &offset))
	{
		if (!in->grouped)
			return;
		wanted = -1;
	}
	else if (wanted > PHX_FDW_MAX_ROWS)
	{
		if (!in->grouped)
			return;
		wanted = -1;
	}
	if (!sort_shippable(root, in) ||
		!target_columns_ok(root->upper_targets[UPPERREL_ORDERED], in))
		return;

	fp = upper_info(input_rel, ordered_rel);
	fp->sorted = true;
	rows = wanted >= 0 ? Min(in->rows, (double) wanted) : in->rows;
	fp->rows = rows;
	fp->startup_cost = in->grouped ? in->startup_cost : PHX_FDW_REQUEST_COST;
	fp->total_cost = fp->startup_cost + rows * (PHX_FDW_ROW_COST + cpu_tuple_cost);
	add_path(ordered_rel, upper_path(root, ordered_rel, root->upper_targets[UPPERREL_ORDERED],
									 rows, fp->startup_cost, fp->total_cost, root->sort_pathkeys,
									 list_make3(makeInteger(1), makeInteger((int) wanted),
												makeInteger(0))));
}

/*
 * LIMIT / OFFSET as the last step: the scan returns exactly the rows of
 * the LIMIT, skipping the OFFSET itself, and no Limit runs above it.
 */
static void
add_final_path(PlannerInfo *root, RelOptInfo *input_rel, RelOptInfo *final_rel,
			   FinalPathExtraData *extra)
{
	Query	   *parse = root->parse;
	PhxFdwRelInfo *in = input_rel->fdw_private;
	PhxFdwRelInfo *fp;
	int64		wanted,
				offset;
	bool		sorted = in->sorted;
	double		rows;

	if (!extra->limit_needed || parse->hasTargetSRFs || parse->rowMarks != NIL)
		return;
	if (!constant_limit(root, &wanted, &offset))
		return;
	/* an ORDER BY is pushed by the ordering step, or not at all */
	if (root->sort_pathkeys != NIL && !sorted)
		return;
	if (sorted && wanted > PHX_FDW_MAX_ROWS)
		return;
	if (!target_columns_ok(root->upper_targets[UPPERREL_FINAL], in))
		return;

	fp = upper_info(input_rel, final_rel);
	rows = Min(in->rows, (double) (wanted - offset));
	fp->rows = rows;
	fp->startup_cost = in->grouped ? in->startup_cost : PHX_FDW_REQUEST_COST;
	fp->total_cost = fp->startup_cost + (rows + offset) * (PHX_FDW_ROW_COST + cpu_tuple_cost);
	add_path(final_rel, upper_path(root, final_rel, root->upper_targets[UPPERREL_FINAL],
								   rows, fp->startup_cost, fp->total_cost,
								   sorted ? root->sort_pathkeys : NIL,
								   list_make3(makeInteger(sorted ? 1 : 0), makeInteger((int) wanted),
											  makeInteger((int) offset))));
}

void
phx_get_upper_paths(PlannerInfo *root, UpperRelationKind stage, RelOptInfo *input_rel,
					RelOptInfo *output_rel, void *extra)
{
	if (output_rel->fdw_private != NULL || !pushable_input(input_rel))
		return;
	switch (stage)
	{
		case UPPERREL_GROUP_AGG:
			add_grouping_path(root, input_rel, output_rel, (GroupPathExtraData *) extra);
			break;
		case UPPERREL_ORDERED:
			add_ordered_path(root, input_rel, output_rel);
			break;
		case UPPERREL_FINAL:
			add_final_path(root, input_rel, output_rel, (FinalPathExtraData *) extra);
			break;
		default:
			break;
	}
}
