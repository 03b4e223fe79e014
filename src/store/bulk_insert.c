/*-------------------------------------------------------------------------
 *
 * bulk_insert.c
 *		Writes a model's rows straight into a table through the table access
 *		method's multi-insert, the way COPY FROM does.
 *
 * Rows are buffered in batches (1000 rows or 64 kB, COPY's limits) and
 * handed to table_multi_insert() with a bulk-insert state, so a batch
 * costs one WAL record per heap page and the writes cycle through a small
 * ring of buffers instead of evicting the whole of shared_buffers.  There
 * is no statement, no plan and no intermediate copy of the rows.
 *
 * What an INSERT would do besides is done here too: values are converted
 * to the columns' types with the assignment casts (so a varchar(n) still
 * refuses a longer value and a domain still checks its constraints),
 * columns the model does not fill get their defaults, stored generated
 * columns are computed, NOT NULL, CHECK and partition constraints are
 * checked, and every index is maintained (unique and exclusion constraints
 * included).  Tables this cannot honour -- triggers (foreign keys and
 * deferrable constraints are triggers too), row-level security, partitioned
 * tables -- are refused by phx_bulk_insert_supported(); the caller then
 * goes through an INSERT statement instead.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/sysattr.h"
#include "access/xact.h"
#include "catalog/pg_class.h"
#include "catalog/pg_collation.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/nodeModifyTable.h"
#include "miscadmin.h"
#include "nodes/makefuncs.h"
#include "nodes/params.h"
#include "optimizer/optimizer.h"
#include "parser/parse_coerce.h"
#include "parser/parse_relation.h"
#include "parser/parsetree.h"
#include "rewrite/rewriteHandler.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/rls.h"

#include "store/store.h"

/* COPY FROM's batch limits: enough to amortize, small enough to stay in cache */
#define MAX_BUFFERED_ROWS	1000
#define MAX_BUFFERED_BYTES	65535

struct PhxBulkInsert
{
	Relation	rel;
	EState	   *estate;
	ResultRelInfo *rri;
	const PhxModel *model;

	/* per model column: the attribute it fills (0: none) and its cast */
	AttrNumber *attnum;
	ExprState **cast;			/* NULL: the value is stored as it is */
	ParamListInfo params;		/* the row's model values, read by the casts */

	/* columns the model does not fill, with a default */
	int			ndefaults;
	AttrNumber *defattnum;
	ExprState **defexprs;

	TupleTableSlot **slots;		/* the batch */
	int		   *rows;			/* the page row each slot holds */
	const char **keys;			/* and that row's key, for error messages */
	int			nbuffered;
	int			maxbuffered;
	Size		bufferedbytes;
	MemoryContext batch_cxt;	/* what table_multi_insert() allocates */

	BulkInsertState bistate;
	CommandId	cid;
	PhxRowContext *rc;			/* names the row in errors, or NULL */
	uint64		inserted;
};

/*
 * The table column a model column of that name fills: a generated column
 * of the name is computed, not written, so it counts as absent.
 */
Form_pg_attribute
phx_written_column(TupleDesc desc, const char *name)
{
	for (int a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->attgenerated ? NULL : att;
	}
	return NULL;
}

/*
 * Can rows go straight into this table?  Only when nothing an INSERT
 * statement would run besides the insertion itself is involved: no
 * triggers, no row-level security policies, not a partitioned table.
 */
bool
phx_bulk_insert_supported(Relation rel)
{
	if (rel->rd_rel->relkind != RELKIND_RELATION)
		return false;
	if (rel->trigdesc != NULL)
		return false;
	if (check_enable_rls(RelationGetRelid(rel), InvalidOid, true) != RLS_NONE)
		return false;
	return true;
}

/*
 * A timestamptz into a "timestamp without time zone" column: the UTC wall
 * time, timezone('UTC', value), as PostHog's export writes it (its COPY
 * text carries "+00:00", which such a column drops), whatever the session's
 * TimeZone; the assignment cast would shift it by that TimeZone.  NULL for
 * any other pair of types.  destination.c's statement path does the same.
 */
static Node *
phx_utc_wall_time(Node *value, Oid value_type, Oid column_type)
{
	Const	   *utc;

	if (value_type != TIMESTAMPTZOID || getBaseType(column_type) != TIMESTAMPOID)
		return NULL;
	utc = makeConst(TEXTOID, -1, DEFAULT_COLLATION_OID, -1,
					CStringGetTextDatum("UTC"), false, false);
	return (Node *) makeFuncExpr(F_TIMEZONE_TEXT_TIMESTAMPTZ, TIMESTAMPOID,
								 list_make2(utc, value), InvalidOid, InvalidOid,
								 COERCE_EXPLICIT_CALL);
}

/*
 * The expression that turns a model value (a Param) into the column's
 * type: the assignment cast an INSERT would apply, or, where there is
 * none, the explicit one (text into jsonb, say).  NULL when the value can
 * be stored as it is.
 */
static ExprState *
column_cast(PhxBulkInsert *bi, int c, Form_pg_attribute att)
{
	const PhxModelColumn *col = &bi->model->columns[c];
	Param	   *param = makeNode(Param);
	Node	   *value;
	Oid			value_type = col->type;
	Node	   *expr;
	Node	   *bare;

	param->paramkind = PARAM_EXTERN;
	param->paramid = c + 1;
	param->paramtype = col->type;
	param->paramtypmod = -1;
	param->paramcollid = get_typcollation(col->type);
	param->location = -1;

	value = phx_utc_wall_time((Node *) param, col->type, att->atttypid);
	if (value != NULL)
		value_type = TIMESTAMPOID;
	else
		value = (Node *) param;

	expr = coerce_to_target_type(NULL, value, value_type,
								 att->atttypid, att->atttypmod,
								 COERCION_ASSIGNMENT, COERCE_IMPLICIT_CAST, -1);
	if (expr == NULL)
		expr = coerce_to_target_type(NULL, value, value_type,
									 att->atttypid, att->atttypmod,
									 COERCION_EXPLICIT, COERCE_IMPLICIT_CAST, -1);
	if (expr == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_DATATYPE_MISMATCH),
				 errmsg("column \"%s\" of table %s is of type %s, which %s values of the %s model cannot be converted to",
						col->name, RelationGetRelationName(bi->rel),
						format_type_with_typemod(att->atttypid, att->atttypmod),
						format_type_be(col->type), bi->model->name),
				 errhint("Change the column's type, or drop the column to leave it out of the export.")));

	bare = expr;
	while (IsA(bare, RelabelType))
		bare = (Node *) ((RelabelType *) bare)->arg;
	if (bare == (Node *) param)
		return NULL;
	return ExecInitExprWithParams(expression_planner((Expr *) expr), bi->params);
}

/*
 * The row's model values as parameters (the casts read them), and which
 * attribute each model column fills and how; returns the attributes
 * filled, for the INSERT privilege check.
 */
static Bitmapset *
map_model_columns(PhxBulkInsert *bi, TupleDesc desc)
{
	const PhxModel *model = bi->model;
	Bitmapset  *inserted_cols = NULL;

	bi->params = makeParamList(model->ncolumns);
	bi->params->numParams = model->ncolumns;
	for (int c = 0; c < model->ncolumns; c++)
	{
		bi->params->params[c].ptype = model->columns[c].type;
		bi->params->params[c].pflags = PARAM_FLAG_CONST;
		bi->params->params[c].isnull = true;
	}

	bi->attnum = palloc0(sizeof(AttrNumber) * model->ncolumns);
	bi->cast = palloc0(sizeof(ExprState *) * model->ncolumns);
	for (int c = 0; c < model->ncolumns; c++)
	{
		Form_pg_attribute att = phx_written_column(desc, model->columns[c].name);

		if (att == NULL)
			continue;
		bi->attnum[c] = att->attnum;
		bi->cast[c] = column_cast(bi, c, att);
		inserted_cols = bms_add_member(inserted_cols,
									   att->attnum - FirstLowInvalidHeapAttributeNumber);
	}
	return inserted_cols;
}

/* An executor state with the table as its only result relation, as COPY FROM builds. */
static void
init_executor_state(PhxBulkInsert *bi, Oid relid, Bitmapset *inserted_cols)
{
	RangeTblEntry *rte = makeNode(RangeTblEntry);

	rte->rtekind = RTE_RELATION;
	rte->relid = relid;
	rte->relkind = bi->rel->rd_rel->relkind;
	rte->rellockmode = RowExclusiveLock;
	bi->estate = CreateExecutorState();
	bi->estate->es_param_list_info = bi->params;
#if PG_VERSION_NUM >= 160000
	{
		List	   *perminfos = NIL;
		RTEPermissionInfo *perminfo = addRTEPermissionInfo(&perminfos, rte);

		perminfo->requiredPerms = ACL_INSERT;
		perminfo->insertedCols = inserted_cols;
		ExecInitRangeTable(bi->estate, list_make1(rte), perminfos);
	}
#else
	rte->requiredPerms = ACL_INSERT;
	rte->insertedCols = inserted_cols;
	ExecInitRangeTable(bi->estate, list_make1(rte));
#endif
	bi->rri = makeNode(ResultRelInfo);
	ExecInitResultRelation(bi->estate, bi->rri, 1);
#if PG_VERSION_NUM >= 170000
	CheckValidResultRel(bi->rri, CMD_INSERT, NIL);
#else
	CheckValidResultRel(bi->rri, CMD_INSERT);
#endif
	ExecOpenIndices(bi->rri, false);
}

/*
 * The defaults of the columns the model does not fill, as COPY FROM
 * evaluates them; returns whether one is volatile (it may look at the
 * table: then rows are inserted one by one).
 */
static bool
prepare_defaults(PhxBulkInsert *bi, TupleDesc desc)
{
	const PhxModel *model = bi->model;
	bool		volatile_defaults = false;

	bi->defattnum = palloc(sizeof(AttrNumber) * desc->natts);
	bi->defexprs = palloc(sizeof(ExprState *) * desc->natts);
	for (int a = 0; a < desc->natts; a++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, a);
		bool		filled = false;
		Expr	   *defexpr;

		if (att->attisdropped || att->attgenerated)
			continue;
		for (int c = 0; c < model->ncolumns; c++)
			filled |= (bi->attnum[c] == att->attnum);
		if (filled)
			continue;
		defexpr = (Expr *) build_column_default(bi->rel, att->attnum);
		if (defexpr == NULL)
			continue;
		defexpr = expression_planner(defexpr);
		bi->defattnum[bi->ndefaults] = att->attnum;
		bi->defexprs[bi->ndefaults] = ExecInitExpr(defexpr, NULL);
		bi->ndefaults++;
		volatile_defaults |= contain_volatile_functions_not_nextval((Node *) defexpr);
	}
	return volatile_defaults;
}

/*
 * Opens relid (which must pass phx_bulk_insert_supported()) for a batch
 * of rows of the model.  Model columns are matched to the table's columns
 * by name; rc, if given, is pointed at the row an error is about.
 */
PhxBulkInsert *
phx_bulk_insert_begin(Oid relid, const PhxModel *model, PhxRowContext *rc)
{
	PhxBulkInsert *bi = palloc0(sizeof(PhxBulkInsert));
	TupleDesc	desc;
	Bitmapset  *inserted_cols;
	bool		volatile_defaults;

	bi->model = model;
	bi->rc = rc;
	bi->rel = table_open(relid, RowExclusiveLock);
	if (!phx_bulk_insert_supported(bi->rel))
		elog(ERROR, "posthog_export: table \"%s\" cannot be written without an INSERT statement",
			 RelationGetRelationName(bi->rel));
	desc = RelationGetDescr(bi->rel);

	inserted_cols = map_model_columns(bi, desc);
	init_executor_state(bi, relid, inserted_cols);
	volatile_defaults = prepare_defaults(bi, desc);

	bi->maxbuffered = volatile_defaults ? 1 : MAX_BUFFERED_ROWS;
	bi->slots = palloc0(sizeof(TupleTableSlot *) * bi->maxbuffered);
	for (int i = 0; i < bi->maxbuffered; i++)
		bi->slots[i] = table_slot_create(bi->rel, &bi->estate->es_tupleTable);
	bi->rows = palloc0(sizeof(int) * bi->maxbuffered);
	bi->keys = palloc0(sizeof(char *) * bi->maxbuffered);
	bi->batch_cxt = AllocSetContextCreate(CurrentMemoryContext, "posthog_export batch",
										  ALLOCSET_DEFAULT_SIZES);
	bi->bistate = GetBulkInsertState();
	bi->cid = GetCurrentCommandId(true);
	return bi;
}

/* Inserts the buffered rows and their index entries. */
static void
flush_batch(PhxBulkInsert *bi)
{
	MemoryContext oldcxt;

	if (bi->nbuffered == 0)
		return;
	if (bi->rc)
	{
		bi->rc->row = bi->rows[0];
		bi->rc->key = NULL;
	}
	oldcxt = MemoryContextSwitchTo(bi->batch_cxt);
	table_multi_insert(bi->rel, bi->slots, bi->nbuffered, bi->cid, 0, bi->bistate);
	MemoryContextSwitchTo(oldcxt);

	for (int i = 0; i < bi->nbuffered; i++)
	{
		if (bi->rri->ri_NumIndices > 0)
		{
			List	   *recheck;

			if (bi->rc)
			{
				bi->rc->row = bi->rows[i];
				bi->rc->key = bi->keys[i];
			}
			/* deferred checks need triggers, which tables written here lack */
			recheck = ExecInsertIndexTuples(bi->rri, bi->slots[i], bi->estate,
#if PG_VERSION_NUM >= 160000
											false, false, NULL, NIL, false);
#else
											false, false, NULL, NIL);
#endif
			list_free(recheck);
			ResetPerTupleExprContext(bi->estate);
		}
		ExecClearTuple(bi->slots[i]);
	}
	bi->inserted += bi->nbuffered;
	bi->nbuffered = 0;
	bi->bufferedbytes = 0;
	MemoryContextReset(bi->batch_cxt);
}

/*
 * Adds one row: values/nulls are indexed by model column and may live in a
 * short-lived context (the row is copied).  row and key name it in errors.
 */
void
phx_bulk_insert_row(PhxBulkInsert *bi, Datum *values, bool *nulls, int row, const char *key)
{
	TupleTableSlot *slot;
	TupleDesc	desc = RelationGetDescr(bi->rel);
	ExprContext *econtext = GetPerTupleExprContext(bi->estate);
	MemoryContext oldcxt;

	slot = bi->slots[bi->nbuffered];

	oldcxt = MemoryContextSwitchTo(econtext->ecxt_per_tuple_memory);
	memset(slot->tts_isnull, true, sizeof(bool) * desc->natts);
	for (int c = 0; c < bi->model->ncolumns; c++)
	{
		bi->params->params[c].value = values[c];
		bi->params->params[c].isnull = nulls[c];
	}
	for (int c = 0; c < bi->model->ncolumns; c++)
	{
		int			a = bi->attnum[c] - 1;

		if (a < 0)
			continue;
		/* a NULL goes through the cast too: a domain may refuse it */
		if (bi->cast[c])
			slot->tts_values[a] = ExecEvalExpr(bi->cast[c], econtext, &slot->tts_isnull[a]);
		else
		{
			slot->tts_values[a] = values[c];
			slot->tts_isnull[a] = nulls[c];
		}
	}
	for (int d = 0; d < bi->ndefaults; d++)
	{
		int			a = bi->defattnum[d] - 1;

		slot->tts_values[a] = ExecEvalExpr(bi->defexprs[d], econtext, &slot->tts_isnull[a]);
	}
	ExecStoreVirtualTuple(slot);

	if (desc->constr && desc->constr->has_generated_stored)
		ExecComputeStoredGenerated(bi->rri, bi->estate, slot, CMD_INSERT);
	if (desc->constr)
		ExecConstraints(bi->rri, slot, bi->estate);
	if (bi->rel->rd_rel->relispartition)
		ExecPartitionCheck(bi->rri, slot, bi->estate, true);

	/* the batch outlives the row's memory: give the slot its own copy */
	MemoryContextSwitchTo(oldcxt);
	ExecMaterializeSlot(slot);
	ResetPerTupleExprContext(bi->estate);

	bi->rows[bi->nbuffered] = row;
	bi->keys[bi->nbuffered] = key;
	bi->nbuffered++;
	if (TTS_IS_BUFFERTUPLE(slot) || TTS_IS_HEAPTUPLE(slot))
		bi->bufferedbytes += ((HeapTupleTableSlot *) slot)->tuple->t_len;
	if (bi->nbuffered >= bi->maxbuffered || bi->bufferedbytes >= MAX_BUFFERED_BYTES)
		flush_batch(bi);
}

/* Writes what is buffered and closes the table; returns the rows inserted. */
uint64
phx_bulk_insert_end(PhxBulkInsert *bi)
{
	uint64		inserted;

	flush_batch(bi);
	inserted = bi->inserted;
	FreeBulkInsertState(bi->bistate);
	table_finish_bulk_insert(bi->rel, 0);
	ExecResetTupleTable(bi->estate->es_tupleTable, false);
	ExecCloseResultRelations(bi->estate);
	ExecCloseRangeTableRelations(bi->estate);
	FreeExecutorState(bi->estate);
	MemoryContextDelete(bi->batch_cxt);
	table_close(bi->rel, NoLock);
	/* later statements of the transaction see the rows */
	CommandCounterIncrement();
	return inserted;
}
