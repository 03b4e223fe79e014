/*-------------------------------------------------------------------------
 *
 * deparse.c
 *		Planner expressions -> HogQL: what may be sent to PostHog, and its
 *		text.
 *
 * One walk does both: an expression is shippable when it deparses, so the
 * check (into a scratch buffer) and the text can never disagree.
 *
 * Values never enter the text.  Every constant, parameter and expression
 * that does not read the foreign table (now() - interval '1 day', a
 * nested-loop parameter) becomes a placeholder {pN}; fdw_scan.c evaluates
 * it once when the scan starts and sends it in the query's "values".
 *
 * Conditions follow Postgres's WHERE exactly, not HogQL's NULL rules:
 * a condition is sent in a two-valued form that is true exactly when the
 * Postgres condition is TRUE ("want true") or exactly when it is FALSE
 * ("want false", for NOT).  HogQL makes "a != b" true when a is NULL and
 * turns a comparison with a NULL constant into isNull(); both would differ
 * from Postgres, so negative comparisons carry "IS NOT NULL" guards for
 * what may be NULL, and values that may turn out NULL at run time are
 * guarded too.  Only built-in operators on types whose semantics agree
 * are sent: text ordering only under the C collation (ClickHouse compares
 * bytes), no arithmetic (ClickHouse's "/" is not Postgres's).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_aggregate.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_operator.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "miscadmin.h"
#include "nodes/nodeFuncs.h"
#include "optimizer/clauses.h"
#include "optimizer/optimizer.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/date.h"
#include "utils/datetime.h"
#include "utils/float.h"
#include "utils/json.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/pg_locale.h"
#include "utils/syscache.h"
#include "utils/typcache.h"

#include "fdw/fdw.h"

/* the classes of types whose comparisons mean the same in HogQL */
typedef enum TypeClass
{
	TC_NONE,
	TC_TEXT,
	TC_NUMBER,
	TC_BOOL,
	TC_TIMESTAMPTZ,
	TC_DATE,
	TC_UUID
} TypeClass;

static bool deparse_bool(PhxDeparse *dp, Expr *e, bool want);
static bool deparse_operand(PhxDeparse *dp, Expr *e, bool *maybe_null, bool *is_value);

static TypeClass
type_class(Oid type)
{
	switch (type)
	{
		case TEXTOID:
		case VARCHAROID:
			return TC_TEXT;
		case INT2OID:
		case INT4OID:
		case INT8OID:
		case FLOAT4OID:
		case FLOAT8OID:
		case NUMERICOID:
			return TC_NUMBER;
		case BOOLOID:
			return TC_BOOL;
		case TIMESTAMPTZOID:
			return TC_TIMESTAMPTZ;
		case DATEOID:
			return TC_DATE;
		case UUIDOID:
			return TC_UUID;
		default:
			return TC_NONE;
	}
}

/* Whether a value of this type can travel as a HogQL value (phx_add_value() sends it). */
static bool
value_type_ok(Oid type)
{
	if (type_class(type) != TC_NONE)
		return true;
	switch (type)
	{
		case TEXTARRAYOID:
		case VARCHARARRAYOID:
		case INT2ARRAYOID:
		case INT4ARRAYOID:
		case INT8ARRAYOID:
		case FLOAT4ARRAYOID:
		case FLOAT8ARRAYOID:
		case NUMERICARRAYOID:
		case BOOLARRAYOID:
		case UUIDARRAYOID:
			return true;
		default:
			return false;
	}
}

/*
 * Whether text ordering under this collation is byte order, as
 * ClickHouse's.  Equality needs only a deterministic collation.
 */
static bool
collation_is_bytewise(Oid collid)
{
	if (!OidIsValid(collid))
		return true;
	if (collid == C_COLLATION_OID || collid == POSIX_COLLATION_OID)
		return true;
#if PG_VERSION_NUM < 180000
	return lc_collate_is_c(collid);
#else
	return pg_newlocale_from_collation(collid)->collate_is_c;
#endif
}

static bool
collation_is_deterministic(Oid collid)
{
	if (!OidIsValid(collid) || collid == DEFAULT_COLLATION_OID)
		return true;			/* a database's default is deterministic */
	return get_collation_isdeterministic(collid);
}

void
phx_deparse_init(PhxDeparse *dp, PlannerInfo *root, PhxFdwRelInfo *rel, StringInfo buf,
				 bool aggregates)
{
	dp->root = root;
	dp->rel = rel;
	dp->buf = buf;
	dp->values = NIL;
	dp->aggregates = aggregates;
	dp->output = false;
}

/* a scratch deparse, for the "is it shippable" questions */
static void
scratch_init(PhxDeparse *dp, PlannerInfo *root, PhxFdwRelInfo *rel, bool aggregates)
{
	StringInfo	buf = makeStringInfo();

	phx_deparse_init(dp, root, rel, buf, aggregates);
}

/*
 * The placeholder number of a value: an equal one already sent is reused,
 * so that the same value in SELECT and GROUP BY is the same expression.
 */
static int
add_value(PhxDeparse *dp, Expr *e)
{
	ListCell   *lc;

	foreach(lc, dp->values)
		if (equal(lfirst(lc), e))
			return foreach_current_index(lc) + 1;
	dp->values = lappend(dp->values, e);
	return list_length(dp->values);
}

/*
 * A value: an expression that reads no column of any relation and calls
 * nothing volatile, of a type that can travel.  Printed as a placeholder,
 * wrapped so that HogQL reads it with the column's type.
 */
static bool
deparse_value(PhxDeparse *dp, Expr *e, bool *maybe_null)
{
	Oid			type = exprType((Node *) e);
	int			n;

	if (!value_type_ok(type))
		return false;
	if (contain_var_clause((Node *) e) || contain_volatile_functions((Node *) e) ||
		contain_agg_clause((Node *) e) || contain_subplans((Node *) e) ||
		contain_window_function((Node *) e))
		return false;
	if (IsA(e, Const) && ((Const *) e)->constisnull)
		return false;			/* never TRUE in Postgres: left to the executor */

	n = add_value(dp, e);
	dp->last_value = n;
	switch (type_class(type))
	{
		case TC_TIMESTAMPTZ:
			appendStringInfo(dp->buf, "toDateTime64({p%d}, 6, 'UTC')", n);
			break;
		case TC_DATE:
			appendStringInfo(dp->buf, "toDate({p%d})", n);
			break;
		default:
			appendStringInfo(dp->buf, "{p%d}", n);
			break;
	}
	*maybe_null = !IsA(e, Const);
	return true;
}

/* whether a column of the foreign table is declared NOT NULL */
static bool
column_not_null(Oid relid, AttrNumber attnum)
{
	HeapTuple	tup = SearchSysCache2(ATTNUM, ObjectIdGetDatum(relid), Int16GetDatum(attnum));
	bool		result = false;

	if (HeapTupleIsValid(tup))
	{
		result = ((Form_pg_attribute) GETSTRUCT(tup))->attnotnull;
		ReleaseSysCache(tup);
	}
	return result;
}

/* A column of the foreign table: its HogQL expression. */
static bool
deparse_column(PhxDeparse *dp, Var *var, bool *maybe_null)
{
	PhxFdwRelInfo *rel = dp->rel;
	const char *expr;

	if (var->varno != rel->relid || var->varlevelsup != 0 ||
		var->varattno <= 0 || var->varattno > rel->natts)
		return false;
	expr = rel->col_expr[var->varattno - 1];
	if (expr == NULL)
		return false;

	/*
	 * A column whose conversion changes the value (numeric(10,2) rounds,
	 * timestamptz(0) too, float4 narrows PostHog's Float64) would be
	 * compared, sorted or grouped on a value other than the one Postgres
	 * sees: such a column is only ever selected.
	 */
	if (!dp->output &&
		(var->vartype == FLOAT4OID || (var->vartypmod >= 0 && var->vartype != VARCHAROID)))
		return false;
	if (rel->col_simple[var->varattno - 1])
		appendStringInfoString(dp->buf, expr);
	else
		appendStringInfo(dp->buf, "(%s)", expr);
	*maybe_null = !column_not_null(rel->relation, var->varattno);
	return true;
}

/* the name of an operator, when it is a built-in one */
static char *
builtin_opname(Oid opno)
{
	if (opno >= FirstGenbkiObjectId)
		return NULL;
	return get_opname(opno);
}

/*
 * A property of a JSON column: "properties ->> 'key'", or a path of "->"
 * ending in "->>", with constant text keys.  HogQL's own property access
 * (properties.key) keeps a string's JSON escapes and converts properties
 * PostHog has typed, so the value is built from ClickHouse's JSON
 * functions to match Postgres exactly: a string decoded, a number or
 * boolean as its JSON text, NULL for JSON null or a missing key, an object
 * or array as its (compact) JSON text.  The keys travel as values.
 */
static bool
deparse_property(PhxDeparse *dp, OpExpr *op)
{
	List	   *keys = NIL;
	Expr	   *e = (Expr *) op;
	bool		top = true;
	bool		ignored;
	StringInfoData col;
	StringInfoData path;
	StringInfo	saved = dp->buf;
	ListCell   *lc;

	/* from the outermost operator in: "->>" once, then "->" */
	while (IsA(e, OpExpr))
	{
		OpExpr	   *o = (OpExpr *) e;
		char	   *name = builtin_opname(o->opno);
		Expr	   *right;

		if (name == NULL || list_length(o->args) != 2 ||
			strcmp(name, top ? "->>" : "->") != 0)
			return false;
		right = lsecond(o->args);
		if (!IsA(right, Const) || ((Const *) right)->consttype != TEXTOID ||
			((Const *) right)->constisnull)
			return false;
		keys = lcons(right, keys);
		e = linitial(o->args);
		top = false;
	}
	if (top || !IsA(e, Var) ||
		(exprType((Node *) e) != JSONBOID && exprType((Node *) e) != JSONOID))
		return false;

	initStringInfo(&col);
	dp->buf = &col;
	if (!deparse_column(dp, (Var *) e, &ignored))
	{
		dp->buf = saved;
		return false;
	}
	dp->buf = saved;
	initStringInfo(&path);
	appendStringInfoString(&path, col.data);
	foreach(lc, keys)
		appendStringInfo(&path, ", {p%d}", add_value(dp, lfirst(lc)));
	appendStringInfo(dp->buf,
					 "if(JSONType(%s) = 'String', JSONExtractString(%s), "
					 "nullIf(nullIf(JSONExtractRaw(%s), ''), 'null'))",
					 path.data, path.data, path.data);
	return true;
}

/*
 * An aggregate PostHog computes as Postgres does.  sum, min, max and avg
 * of no (non-NULL) rows are NULL in Postgres but 0 or a default in
 * ClickHouse, so they are sent as if(count(x) > 0, f(x), NULL).  avg only
 * of floating point (Postgres's avg of integers is an exact numeric);
 * min/max of text only under the C collation.
 */
static bool
deparse_aggregate(PhxDeparse *dp, Aggref *agg)
{
	char	   *fname;
	Expr	   *arg = NULL;
	TypeClass	argclass = TC_NONE;
	bool		ignored;

	if (!dp->aggregates || agg->agglevelsup != 0 || agg->aggfilter != NULL ||
		agg->aggorder != NIL || agg->aggdirectargs != NIL || agg->aggvariadic ||
		agg->aggkind != AGGKIND_NORMAL || agg->aggsplit != AGGSPLIT_SIMPLE ||
		agg->aggfnoid >= FirstGenbkiObjectId)
		return false;
	fname = get_func_name(agg->aggfnoid);
	if (fname == NULL)
		return false;
	if (list_length(agg->args) > 1)
		return false;
	if (list_length(agg->args) == 1)
	{
		TargetEntry *tle = linitial_node(TargetEntry, agg->args);

		arg = tle->expr;
		argclass = type_class(exprType((Node *) arg));
	}

	if (strcmp(fname, "count") == 0)
	{
		if (agg->aggstar)
		{
			appendStringInfoString(dp->buf, "count()");
			return true;
		}
		if (arg == NULL || argclass == TC_NONE)
			return false;
		if (agg->aggdistinct && !collation_is_deterministic(agg->inputcollid))
			return false;
		appendStringInfoString(dp->buf, agg->aggdistinct ? "count(DISTINCT " : "count(");
		if (!deparse_operand(dp, arg, &ignored, &ignored))
			return false;
		appendStringInfoChar(dp->buf, ')');
		return true;
	}
	if (agg->aggdistinct || arg == NULL)
		return false;
	if (strcmp(fname, "sum") == 0)
	{
		if (argclass != TC_NUMBER)
			return false;
	}
	else if (strcmp(fname, "avg") == 0)
	{
		Oid			t = exprType((Node *) arg);

		if (t != FLOAT4OID && t != FLOAT8OID)
			return false;
	}
	else if (strcmp(fname, "min") == 0 || strcmp(fname, "max") == 0)
	{
		if (argclass == TC_NONE || argclass == TC_BOOL || argclass == TC_UUID)
			return false;
		if (argclass == TC_TEXT && !collation_is_bytewise(agg->inputcollid))
			return false;
	}
	else
		return false;

	appendStringInfoString(dp->buf, "if(count(");
	if (!deparse_operand(dp, arg, &ignored, &ignored))
		return false;
	appendStringInfo(dp->buf, ") > 0, %s(", fname);
	if (!deparse_operand(dp, arg, &ignored, &ignored))
		return false;
	appendStringInfoString(dp->buf, "), NULL)");
	return true;
}

/*
 * An operand of a comparison, of an ORDER BY or of the SELECT list: a
 * column, a property, an aggregate (grouping only), or a value.
 * maybe_null: it may be NULL; is_value: it is a placeholder.
 */
static bool
deparse_operand(PhxDeparse *dp, Expr *e, bool *maybe_null, bool *is_value)
{
	*is_value = false;
	while (IsA(e, RelabelType))
		e = ((RelabelType *) e)->arg;

	if (IsA(e, Var))
		return deparse_column(dp, (Var *) e, maybe_null);
	if (IsA(e, OpExpr) && deparse_property(dp, (OpExpr *) e))
	{
		*maybe_null = true;
		return true;
	}
	if (IsA(e, Aggref))
	{
		*maybe_null = true;
		return deparse_aggregate(dp, (Aggref *) e);
	}
	*is_value = true;
	return deparse_value(dp, e, maybe_null);
}

/* the operators sent, and their negations */
typedef struct CmpOp
{
	const char *pg;
	const char *hogql;
	const char *negated;		/* pg name of the negation */
	bool		negative;		/* true for NULL in HogQL: needs guards */
	bool		ordering;		/* depends on the collation */
	bool		pattern;		/* LIKE family: text only */
} CmpOp;

static const CmpOp cmp_ops[] = {
	{"=", "=", "<>", false, false, false},
	{"<>", "!=", "=", true, false, false},
	{"<", "<", ">=", false, true, false},
	{"<=", "<=", ">", false, true, false},
	{">", ">", "<=", false, true, false},
	{">=", ">=", "<", false, true, false},
	{"~~", "LIKE", "!~~", false, false, true},
	{"!~~", "NOT LIKE", "~~", true, false, true},
	/* not ILIKE: ClickHouse folds the case of all of Unicode, Postgres per collation */
};

static const CmpOp *
find_cmp(const char *pgname)
{
	for (int i = 0; i < lengthof(cmp_ops); i++)
		if (strcmp(cmp_ops[i].pg, pgname) == 0)
			return &cmp_ops[i];
	return NULL;
}

/* appends " AND <text> IS NOT NULL" for each guarded operand */
static void
append_guard(PhxDeparse *dp, const char *operand_text)
{
	appendStringInfo(dp->buf, " AND %s IS NOT NULL", operand_text);
}

/*
 * A comparison "l op r", in its two-valued form: true exactly when the
 * Postgres comparison is TRUE (want) or FALSE (!want).
 */
static bool
deparse_comparison(PhxDeparse *dp, OpExpr *op, bool want)
{
	char	   *name = builtin_opname(op->opno);
	const CmpOp *cmp;
	Expr	   *l,
			   *r;
	TypeClass	lc,
				rc;
	StringInfoData lt,
				rt;
	char	   *lguard,
			   *rguard;
	StringInfo	saved = dp->buf;
	bool		lnull,
				rnull,
				lval,
				rval,
				ok;

	if (name == NULL || list_length(op->args) != 2 || (cmp = find_cmp(name)) == NULL)
		return false;
	l = linitial(op->args);
	r = lsecond(op->args);
	lc = type_class(exprType((Node *) l));
	rc = type_class(exprType((Node *) r));
	if (lc == TC_NONE || lc != rc)
		return false;
	if (cmp->pattern && lc != TC_TEXT)
		return false;
	/* ClickHouse orders uuids by their halves, low half first */
	if (cmp->ordering && lc == TC_UUID)
		return false;
	if (lc == TC_TEXT)
	{
		if (cmp->ordering && !collation_is_bytewise(op->inputcollid))
			return false;
		if (!collation_is_deterministic(op->inputcollid))
			return false;
	}
	if (!want)
		cmp = find_cmp(cmp->negated);

	initStringInfo(&lt);
	initStringInfo(&rt);
	dp->buf = &lt;
	ok = deparse_operand(dp, l, &lnull, &lval);
	/* a value is guarded as its bare placeholder, a column as itself */
	lguard = (ok && lval) ? psprintf("{p%d}", dp->last_value) : lt.data;
	dp->buf = &rt;
	ok = ok && deparse_operand(dp, r, &rnull, &rval);
	rguard = (ok && rval) ? psprintf("{p%d}", dp->last_value) : rt.data;
	dp->buf = saved;
	if (!ok || (lval && rval))
		return false;			/* two values: nothing to compare remotely */

	appendStringInfo(dp->buf, "(%s %s %s", lt.data, cmp->hogql, rt.data);
	/*
	 * A value may be NULL at run time.  A column matters when HogQL makes
	 * NULL true: "a != b" with a NULL, and "a = b" of two NULL columns.
	 */
	if (lnull && (lval || cmp->negative || !rval))
		append_guard(dp, lguard);
	if (rnull && (rval || cmp->negative || !lval))
		append_guard(dp, rguard);
	appendStringInfoChar(dp->buf, ')');
	return true;
}

/* "x = ANY(const array)" and "x <> ALL(const array)" as IN / NOT IN */
static bool
deparse_in(PhxDeparse *dp, ScalarArrayOpExpr *saop, bool want)
{
	char	   *name = builtin_opname(saop->opno);
	Expr	   *l = linitial(saop->args);
	Expr	   *r = lsecond(saop->args);
	Const	   *c;
	ArrayType  *arr;
	bool		in,
				lnull,
				lval;
	StringInfoData lt;
	StringInfo	saved = dp->buf;
	TypeClass	lc;

	if (name == NULL || list_length(saop->args) != 2)
		return false;
	if (saop->useOr && strcmp(name, "=") == 0)
		in = true;
	else if (!saop->useOr && strcmp(name, "<>") == 0)
		in = false;
	else
		return false;
	if (!want)
		in = !in;
	if (!IsA(r, Const) || ((Const *) r)->constisnull)
		return false;
	c = (Const *) r;
	if (!value_type_ok(c->consttype) || type_class(c->consttype) != TC_NONE)
		return false;
	arr = DatumGetArrayTypeP(c->constvalue);
	if (ARR_NDIM(arr) != 1 || array_contains_nulls(arr) || ArrayGetNItems(ARR_NDIM(arr), ARR_DIMS(arr)) == 0)
		return false;
	lc = type_class(exprType((Node *) l));
	if (lc == TC_NONE || lc != type_class(get_element_type(c->consttype)))
		return false;
	if (lc == TC_TEXT && !collation_is_deterministic(saop->inputcollid))
		return false;

	initStringInfo(&lt);
	dp->buf = &lt;
	if (!deparse_operand(dp, l, &lnull, &lval) || lval)
	{
		dp->buf = saved;
		return false;
	}
	dp->buf = saved;
	appendStringInfo(dp->buf, "(%s %s {p%d}", lt.data, in ? "IN" : "NOT IN",
					 add_value(dp, (Expr *) c));
	if (!in && lnull)
		append_guard(dp, lt.data);
	appendStringInfoChar(dp->buf, ')');
	return true;
}

/*
 * A boolean expression in its two-valued form (see the file's comment):
 * HogQL that is true exactly when e is TRUE (want) or FALSE (!want).
 */
static bool
deparse_bool(PhxDeparse *dp, Expr *e, bool want)
{
	check_stack_depth();

	switch (nodeTag(e))
	{
		case T_BoolExpr:
			{
				BoolExpr   *b = (BoolExpr *) e;
				const char *joiner;
				ListCell   *lc;

				if (b->boolop == NOT_EXPR)
					return deparse_bool(dp, linitial(b->args), !want);
				/* AND: TRUE when all are, FALSE when any is; OR the reverse */
				joiner = ((b->boolop == AND_EXPR) == want) ? " AND " : " OR ";
				appendStringInfoChar(dp->buf, '(');
				foreach(lc, b->args)
				{
					if (foreach_current_index(lc) > 0)
						appendStringInfoString(dp->buf, joiner);
					if (!deparse_bool(dp, lfirst(lc), want))
						return false;
				}
				appendStringInfoChar(dp->buf, ')');
				return true;
			}
		case T_OpExpr:
			return deparse_comparison(dp, (OpExpr *) e, want);
		case T_ScalarArrayOpExpr:
			return deparse_in(dp, (ScalarArrayOpExpr *) e, want);
		case T_NullTest:
			{
				NullTest   *nt = (NullTest *) e;
				bool		is_null = (nt->nulltesttype == IS_NULL) == want;
				bool		ignored,
							is_value;

				if (nt->argisrow)
					return false;
				/* an empty JSON column arrives as '' and becomes NULL here */
				if (IsA(nt->arg, Var) &&
					(((Var *) nt->arg)->vartype == JSONBOID || ((Var *) nt->arg)->vartype == JSONOID))
					return false;
				appendStringInfoChar(dp->buf, '(');
				if (!deparse_operand(dp, nt->arg, &ignored, &is_value) || is_value)
					return false;
				appendStringInfoString(dp->buf, is_null ? " IS NULL)" : " IS NOT NULL)");
				return true;
			}
		case T_BooleanTest:
			{
				BooleanTest *bt = (BooleanTest *) e;
				bool		positive;
				bool		truth;

				/* IS [NOT] TRUE / FALSE are never NULL: plain NOT is exact */
				switch (bt->booltesttype)
				{
					case IS_TRUE:
						positive = true, truth = true;
						break;
					case IS_NOT_TRUE:
						positive = false, truth = true;
						break;
					case IS_FALSE:
						positive = true, truth = false;
						break;
					case IS_NOT_FALSE:
						positive = false, truth = false;
						break;
					default:
						return false;
				}
				if (positive != want)
					appendStringInfoString(dp->buf, "(NOT ");
				if (!deparse_bool(dp, bt->arg, truth))
					return false;
				if (positive != want)
					appendStringInfoChar(dp->buf, ')');
				return true;
			}
		case T_Var:
		case T_RelabelType:
			{
				bool		maybe_null,
							is_value;

				if (exprType((Node *) e) != BOOLOID)
					return false;
				appendStringInfoChar(dp->buf, '(');
				if (!deparse_operand(dp, e, &maybe_null, &is_value) || is_value)
					return false;
				appendStringInfoString(dp->buf, want ? " = true)" : " = false)");
				return true;
			}
		default:
			return false;
	}
}

bool
phx_shippable_cond(PlannerInfo *root, PhxFdwRelInfo *rel, Expr *cond, bool aggregates)
{
	PhxDeparse	dp;

	scratch_init(&dp, root, rel, aggregates);
	return deparse_bool(&dp, cond, true);
}

void
phx_deparse_cond(PhxDeparse *dp, Expr *cond)
{
	if (!deparse_bool(dp, cond, true))
		elog(ERROR, "posthog_export: a condition checked as shippable did not deparse");
}

/*
 * An expression of the SELECT list or GROUP BY: a column, a property or
 * an aggregate.  Values are not selected: the executor has them.
 */
bool
phx_shippable_expr(PlannerInfo *root, PhxFdwRelInfo *rel, Expr *expr, bool aggregates)
{
	PhxDeparse	dp;
	bool		ignored,
				is_value;

	scratch_init(&dp, root, rel, aggregates);
	return deparse_operand(&dp, expr, &ignored, &is_value) && !is_value;
}

/*
 * A GROUP BY expression: shippable, of a type whose equality means the
 * same remotely (not jsonb: key order), under a deterministic collation.
 */
bool
phx_groupable_expr(PlannerInfo *root, PhxFdwRelInfo *rel, Expr *expr)
{
	if (type_class(exprType((Node *) expr)) == TC_NONE)
		return false;
	if (!collation_is_deterministic(exprCollation((Node *) expr)))
		return false;
	return phx_shippable_expr(root, rel, expr, false);
}

void
phx_deparse_expr(PhxDeparse *dp, Expr *expr)
{
	bool		ignored,
				is_value;

	if (!deparse_operand(dp, expr, &ignored, &is_value) || is_value)
		elog(ERROR, "posthog_export: an expression checked as shippable did not deparse");
}

/*
 * Whether a sort key can be sent: an expression of the relation (for a
 * grouping relation, one of its output expressions) ordered by its type's
 * default btree order, of a type ordered alike in ClickHouse (text: the C
 * collation).  Sets *expr_out to the expression to deparse.
 */
bool
phx_shippable_sort(PlannerInfo *root, PhxFdwRelInfo *rel, PathKey *pk, Expr **expr_out,
				   bool aggregates)
{
	EquivalenceClass *ec = pk->pk_eclass;
	ListCell   *lc;

	if (ec->ec_has_volatile)
		return false;
	if (!PHX_PK_ASC(pk) && !PHX_PK_DESC(pk))
		return false;
	foreach(lc, ec->ec_members)
	{
		EquivalenceMember *em = lfirst(lc);
		Expr	   *e = em->em_expr;
		TypeClass	tc;
		TypeCacheEntry *typentry;

		if (em->em_is_const || em->em_is_child)
			continue;
		if (aggregates)
		{
			bool		found = false;
			ListCell   *lt;

			foreach(lt, rel->grouped_tlist)
				if (equal(lfirst_node(TargetEntry, lt)->expr, e))
					found = true;
			if (!found)
				continue;
		}
		else if (!bms_equal(em->em_relids, bms_make_singleton(rel->relid)))
			continue;
		tc = type_class(exprType((Node *) e));
		if (tc == TC_NONE || tc == TC_UUID)
			continue;
		if (tc == TC_TEXT && !collation_is_bytewise(ec->ec_collation))
			continue;
		typentry = lookup_type_cache(exprType((Node *) e), TYPECACHE_BTREE_OPFAMILY);
		if (typentry->btree_opf != pk->pk_opfamily)
			continue;
		if (!phx_shippable_expr(root, rel, e, aggregates))
			continue;
		*expr_out = e;
		return true;
	}
	return false;
}

/*
 * A sort key.  PostHog drops NULLS FIRST/LAST from its grammar and
 * ClickHouse sorts NULLs last in either direction, so NULLs first (DESC's
 * default in Postgres) is sent as a leading isNull(x) DESC.
 */
void
phx_deparse_sort(PhxDeparse *dp, Expr *expr, PathKey *pk)
{
	if (pk->pk_nulls_first)
	{
		appendStringInfoString(dp->buf, "isNull(");
		phx_deparse_expr(dp, expr);
		appendStringInfoString(dp->buf, ") DESC, ");
	}
	phx_deparse_expr(dp, expr);
	appendStringInfoString(dp->buf, PHX_PK_ASC(pk) ? " ASC" : " DESC");
}

/* ------------------------------------------------------------------------
 * Values, at run time
 * ------------------------------------------------------------------------
 */

/* a number's text, refusing what JSON cannot carry */
static void
append_number(StringInfo buf, Datum value, Oid type)
{
	char	   *text;
	Oid			out;
	bool		varlena;

	if (type == FLOAT4OID || type == FLOAT8OID)
	{
		double		d = type == FLOAT4OID ? DatumGetFloat4(value) : DatumGetFloat8(value);

		if (isnan(d) || isinf(d))
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("cannot send %s to PostHog", isnan(d) ? "NaN" : "an infinite number"),
					 errdetail("A value compared with a column of a posthog_export foreign table must be a finite number.")));
	}
	getTypeOutputInfo(type, &out, &varlena);
	text = OidOutputFunctionCall(out, value);
	if (type == NUMERICOID && (strcmp(text, "NaN") == 0 || strstr(text, "Infinity") != NULL))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("cannot send %s to PostHog", text),
				 errdetail("A value compared with a column of a posthog_export foreign table must be a finite number.")));
	appendStringInfoString(buf, text);
}

/* one scalar value as JSON, in the form deparse_value()'s wrapper expects */
static void
append_scalar(StringInfo buf, Datum value, Oid type)
{
	switch (type_class(type))
	{
		case TC_TEXT:
		case TC_UUID:
			{
				Oid			out;
				bool		varlena;

				getTypeOutputInfo(type, &out, &varlena);
				escape_json(buf, OidOutputFunctionCall(out, value));
				break;
			}
		case TC_NUMBER:
			if (type == INT2OID || type == INT4OID || type == INT8OID)
			{
				int64		i = type == INT2OID ? DatumGetInt16(value) :
					type == INT4OID ? DatumGetInt32(value) : DatumGetInt64(value);

				appendStringInfo(buf, INT64_FORMAT, i);
			}
			else
				append_number(buf, value, type);
			break;
		case TC_BOOL:
			appendStringInfoString(buf, DatumGetBool(value) ? "true" : "false");
			break;
		case TC_TIMESTAMPTZ:
			escape_json(buf, phx_format_utc(DatumGetTimestampTz(value)));
			break;
		case TC_DATE:
			{
				DateADT		d = DatumGetDateADT(value);
				int			y,
							m,
							dd;

				if (DATE_NOT_FINITE(d))
					ereport(ERROR,
							(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
							 errmsg("date out of range for PostHog")));
				j2date(d + POSTGRES_EPOCH_JDATE, &y, &m, &dd);
				if (y < 1 || y > 9999)
					ereport(ERROR,
							(errcode(ERRCODE_DATETIME_VALUE_OUT_OF_RANGE),
							 errmsg("date out of range for PostHog")));
				appendStringInfo(buf, "\"%04d-%02d-%02d\"", y, m, dd);
				break;
			}
		case TC_NONE:
			elog(ERROR, "posthog_export: no HogQL value for type %u", type);
	}
}

/*
 * Sets placeholder pN of q to a value of one of the types
 * value_type_ok() accepts.  NULL travels as JSON null (the condition
 * that uses it carries a guard); NULL array elements are left out (x IN
 * (.., NULL) is TRUE only for the others).
 */
void
phx_add_value(PhxQuery *q, int n, Datum value, bool isnull, Oid type)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (isnull)
		appendStringInfoString(&buf, "null");
	else if (type_class(type) != TC_NONE)
		append_scalar(&buf, value, type);
	else
	{
		ArrayType  *arr = DatumGetArrayTypeP(value);
		Oid			elemtype = ARR_ELEMTYPE(arr);
		int16		typlen;
		bool		typbyval;
		char		typalign;
		Datum	   *elems;
		bool	   *nulls;
		int			nelems;
		bool		first = true;

		get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
		deconstruct_array(arr, elemtype, typlen, typbyval, typalign, &elems, &nulls, &nelems);
		appendStringInfoChar(&buf, '[');
		for (int i = 0; i < nelems; i++)
		{
			if (nulls[i])
				continue;
			if (!first)
				appendStringInfoChar(&buf, ',');
			first = false;
			append_scalar(&buf, elems[i], elemtype);
		}
		appendStringInfoChar(&buf, ']');
	}
	phx_value_json(q, psprintf("p%d", n), buf.data);
}
