/*-------------------------------------------------------------------------
 *
 * remote_rows.c
 *		A response's cells into the datums of a tuple: for foreign table
 *		scans and for posthog_export.query().
 *
 * Each response column fills one attribute.  Its conversion is chosen
 * once, by the attribute's type (phx_row_shape()); a cell is then turned
 * into a datum by the type's own input function, except where PostHog's
 * serialization needs more:
 *   boolean             true/false, and the 0/1 of ClickHouse's Int8 and
 *                       UInt8 columns (cell_convert.c)
 *   jsonb               a JSON column comes as a string holding the JSON
 *                       text, a nested array or object as itself
 *                       (cell_convert.c, jsonb_build.c); an empty string
 *                       is NULL, as for the export models
 *   arrays              a JSON array, each element through the element
 *                       type's input function (a nested array or object as
 *                       its JSON text); a string holding a JSON array too
 *   numeric types       a boolean cell as 1 or 0
 *   anything else       the cell's text (a string, a number as sent, a
 *                       boolean as true/false) through the input function:
 *                       a DateTime with its offset into timestamptz, a
 *                       number into text ...
 * A cell that does not fit is an error: ours, ERRCODE_FDW_INVALID_DATA_TYPE,
 * when its JSON kind cannot be the type's, else the input function's own;
 * either way a CONTEXT line names the column, the rows ("what") and the row.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"

#include "fdw/fdw.h"
#include "models/models.h"

typedef enum PhxConv
{
	CONV_TEXT,					/* text: the cell's text as is */
	CONV_BOOL,
	CONV_JSONB,
	CONV_NUMERIC,				/* a number type: the input function, booleans as 1/0 */
	CONV_ARRAY,					/* elements through the element type's input function */
	CONV_STRINGY,				/* a string-like or json type: any cell's text */
	CONV_INPUT					/* other types: scalars' text through the input function */
} PhxConv;

typedef struct PhxColumnShape
{
	int			attnum;			/* 1-based */
	const char *attname;
	Oid			type;
	int32		typmod;
	PhxConv		conv;
	FmgrInfo	input;
	Oid			ioparam;
	/* CONV_ARRAY: the element type's */
	Oid			elem_type;
	FmgrInfo	elem_input;
	Oid			elem_ioparam;
	int16		elem_len;
	bool		elem_byval;
	char		elem_align;
} PhxColumnShape;

struct PhxRowShape
{
	int			n;
	int			natts;
	const char *what;
	PhxColumnShape *cols;
};

/* the position being converted, for the CONTEXT of an error */
typedef struct RowPosition
{
	PhxRowShape *shape;
	int			col;
	int			row;
} RowPosition;

static void
row_error_context(void *arg)
{
	RowPosition *pos = (RowPosition *) arg;

	if (pos->col >= 0)
		errcontext("column \"%s\" of %s, row %d", pos->shape->cols[pos->col].attname,
				   pos->shape->what, pos->row + 1);
}

static PhxConv
choose_conv(Oid type)
{
	char		category;
	bool		preferred;

	switch (type)
	{
		case TEXTOID:
			return CONV_TEXT;
		case BOOLOID:
			return CONV_BOOL;
		case JSONBOID:
			return CONV_JSONB;
		case JSONOID:
			return CONV_STRINGY;
		default:
			break;
	}
	if (OidIsValid(get_element_type(type)))
		return CONV_ARRAY;
	get_type_category_preferred(getBaseType(type), &category, &preferred);
	if (category == TYPCATEGORY_NUMERIC)
		return CONV_NUMERIC;
	if (category == TYPCATEGORY_STRING || category == TYPCATEGORY_USER)
		return CONV_STRINGY;
	return CONV_INPUT;
}

/*
 * The shape of rows whose response column i fills attribute attnums[i]
 * of tupdesc (0: none); input functions are looked up here, once.
 */
PhxRowShape *
phx_row_shape(TupleDesc tupdesc, const int *attnums, int n, const char *what)
{
	PhxRowShape *shape = palloc0(sizeof(PhxRowShape));

	shape->n = n;
	shape->natts = tupdesc->natts;
	shape->what = pstrdup(what);
	shape->cols = palloc0(sizeof(PhxColumnShape) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		PhxColumnShape *col = &shape->cols[i];
		Form_pg_attribute att;
		Oid			infunc;

		if (attnums[i] == 0)
			continue;			/* read by the caller (a keyset), not a column */
		if (attnums[i] < 1 || attnums[i] > tupdesc->natts)
			elog(ERROR, "posthog_export: attribute %d out of range", attnums[i]);
		att = TupleDescAttr(tupdesc, attnums[i] - 1);
		if (att->attisdropped)
			elog(ERROR, "posthog_export: attribute %d is dropped", attnums[i]);
		col->attnum = attnums[i];
		col->attname = pstrdup(NameStr(att->attname));
		col->type = att->atttypid;
		col->typmod = att->atttypmod;
		col->conv = choose_conv(col->type);
		getTypeInputInfo(col->type, &infunc, &col->ioparam);
		fmgr_info(infunc, &col->input);
		if (col->conv == CONV_ARRAY)
		{
			col->elem_type = get_element_type(col->type);
			getTypeInputInfo(col->elem_type, &infunc, &col->elem_ioparam);
			fmgr_info(infunc, &col->elem_input);
			get_typlenbyvalalign(col->elem_type, &col->elem_len, &col->elem_byval,
								 &col->elem_align);
		}
	}
	return shape;
}

pg_attribute_noreturn() static void
cell_misfit(PhxColumnShape *col, PhxCell *cell, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
			 errmsg("PostHog returned %s for column \"%s\" of %s, which is of type %s",
					phx_cell_kind_name(cell), col->attname, what,
					format_type_with_typemod(col->type, col->typmod))));
}

/* A JSON array (a nested cell, or a string holding one) as an array of the element type. */
static Datum
cell_array(PhxColumnShape *col, PhxCell *cell, const char *what, bool *isnull)
{
	Jsonb	   *jb;
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	ArrayBuildState *astate;

	if (cell->kind != PHX_CELL_JSON && cell->kind != PHX_CELL_STRING)
		cell_misfit(col, cell, what);
	jb = phx_cell_jsonb(cell, col->attname);
	if (jb == NULL)
	{
		*isnull = true;
		return (Datum) 0;
	}
	if (!JB_ROOT_IS_ARRAY(jb) || JB_ROOT_IS_SCALAR(jb))
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("PostHog returned %s that is not a JSON array for column \"%s\" of %s, which is of type %s",
						phx_cell_kind_name(cell), col->attname, what,
						format_type_with_typemod(col->type, col->typmod))));
	astate = initArrayResult(col->elem_type, CurrentMemoryContext, false);
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		char	   *text;

		if (tok != WJB_ELEM)
			continue;
		text = phx_json_element_text(&v);
		if (text == NULL)
		{
			accumArrayResult(astate, (Datum) 0, true, col->elem_type, CurrentMemoryContext);
			continue;
		}
		accumArrayResult(astate,
						 InputFunctionCall(&col->elem_input, text, col->elem_ioparam, -1),
						 false, col->elem_type, CurrentMemoryContext);
	}
	/* the column's typmod applies to its elements */
	if (col->typmod >= 0)
	{
		Datum		arr = makeArrayResult(astate, CurrentMemoryContext);

		return InputFunctionCall(&col->input,
								 DatumGetCString(DirectFunctionCall1(array_out, arr)),
								 col->ioparam, col->typmod);
	}
	return makeArrayResult(astate, CurrentMemoryContext);
}

static Datum
cell_datum(PhxColumnShape *col, PhxCell *cell, const char *what, bool *isnull)
{
	*isnull = false;
	switch (col->conv)
	{
		case CONV_TEXT:
			return PointerGetDatum(cstring_to_text_with_len(cell->val, cell->len));
		case CONV_BOOL:
			return phx_cell_datum(cell, BOOLOID, col->attname, isnull);
		case CONV_JSONB:
			return phx_cell_datum(cell, JSONBOID, col->attname, isnull);
		case CONV_ARRAY:
			return cell_array(col, cell, what, isnull);
		case CONV_NUMERIC:
			if (cell->kind == PHX_CELL_JSON)
				cell_misfit(col, cell, what);
			if (cell->kind == PHX_CELL_BOOL)
				return InputFunctionCall(&col->input, cell->val[0] == 't' ? "1" : "0",
										 col->ioparam, col->typmod);
			break;
		case CONV_STRINGY:
			break;
		case CONV_INPUT:
			if (cell->kind == PHX_CELL_JSON)
				cell_misfit(col, cell, what);
			break;
	}
	return InputFunctionCall(&col->input, cell->val, col->ioparam, col->typmod);
}

/*
 * Row "row" of "page" into values/nulls (natts long, by attribute),
 * allocated in the current memory context.
 */
void
phx_row_values(PhxRowShape *shape, PhxPage *page, int row, Datum *values, bool *nulls)
{
	ErrorContextCallback errcallback;
	RowPosition pos;

	if (page->ncolumns != shape->n)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("PostHog returned %d columns for %s, %d were expected",
						page->ncolumns, shape->what, shape->n)));
	if (row < 0 || row >= page->nrows)
		elog(ERROR, "posthog_export: row %d out of range", row);

	for (int a = 0; a < shape->natts; a++)
	{
		values[a] = (Datum) 0;
		nulls[a] = true;
	}
	pos.shape = shape;
	pos.row = row;
	pos.col = -1;
	errcallback.callback = row_error_context;
	errcallback.arg = &pos;
	errcallback.previous = error_context_stack;
	error_context_stack = &errcallback;

	for (int i = 0; i < shape->n; i++)
	{
		PhxColumnShape *col = &shape->cols[i];
		PhxCell    *cell = PHX_CELL(page, row, i);
		bool		isnull;
		Datum		d;

		pos.col = i;
		if (cell->kind == PHX_CELL_NULL || col->attnum == 0)
			continue;
		d = cell_datum(col, cell, shape->what, &isnull);
		values[col->attnum - 1] = isnull ? (Datum) 0 : d;
		nulls[col->attnum - 1] = isnull;
	}
	error_context_stack = errcallback.previous;
}
