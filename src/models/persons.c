/*-------------------------------------------------------------------------
 *
 * persons.c
 *		The persons model: one row per (team_id, distinct_id) with its
 *		current person and that person's latest properties, merged by
 *		version as PostHog's own export merges them.
 *
 * How a run finds what changed: it does not.  PostHog's HogQL tables
 * expose no modification time for persons, so every run makes a full
 * pass, and the merge writes only rows whose person_version or
 * person_distinct_id_version grew: the cost of a run is reading every
 * mapping and every person once, while writes stay proportional to what
 * changed.  A backfill "from the beginning" is the same pass.
 *
 * The pass is two keyset scans, one after the other, each paged by the
 * pager (paging.c), so no query grows with the page (a page of mappings
 * naming its persons in an IN list would, past ClickHouse's 256 KiB
 * max_query_size at the default page size):
 *
 *	1. the mappings, raw_person_distinct_ids collapsed to the latest
 *	   version of each (team_id, distinct_id), in that order;
 *	2. the persons, raw_persons collapsed to the latest version of each id
 *	   (the keyset filter is applied before GROUP BY id, so each page reads
 *	   only the persons after the cursor), in ClickHouse's UUID order.
 *
 * Mappings first: a person exists before its mappings point to it, so a
 * mapping read in scan 1 finds its person in scan 2.  The model is
 * staged: the mappings go to the destination's stage, the persons to its
 * auxiliary stage (PhxAuxStage), and the store merges, in one statement at
 * the end of the pass, the mappings LEFT JOINed to their persons by id.
 * That join is why the pass needs no lookup per page, and it gives the
 * rows a lookup gave: a mapping whose person PostHog does not have keeps
 * NULL person columns; is_deleted is the mapping's or the person's.
 *
 * (A streaming merge join inside the model was the alternative; it would
 * need the mappings in person id order, which collapsing by
 * (team_id, distinct_id) cannot give without aggregating every mapping for
 * every page.)
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "mb/pg_wchar.h"
#include "utils/timestamp.h"

#include "models/models.h"

enum
{
	P_TEAM_ID,
	P_DISTINCT_ID,
	P_PERSON_ID,
	P_PROPERTIES,
	P_PDI_VERSION,
	P_PERSON_VERSION,
	P_CREATED_AT,
	P_IS_DELETED,
	P_NCOLUMNS
};

static const PhxModelColumn persons_columns[P_NCOLUMNS] = {
	{"team_id", INT4OID, "pg_catalog.int4 NOT NULL"},
	{"distinct_id", TEXTOID, "pg_catalog.text NOT NULL"},
	{"person_id", TEXTOID, "pg_catalog.text"},
	{"properties", JSONBOID, "pg_catalog.jsonb"},
	{"person_distinct_id_version", INT8OID, "pg_catalog.int4"},
	{"person_version", INT8OID, "pg_catalog.int4"},
	{"created_at", TIMESTAMPTZOID, "pg_catalog.timestamptz"},
	{"is_deleted", BOOLOID, "pg_catalog.bool"},
};

static const char *const persons_key[] = {"team_id", "distinct_id", NULL};
static const char *const persons_versions[] = {"person_version", "person_distinct_id_version", NULL};

/* the mappings query */
static const char *const pdi_columns[] = {"team_id", "distinct_id", "person_id", "is_deleted", "version"};

/* the persons query */
static const char *const person_columns[] = {"id", "properties", "created_at", "is_deleted", "version"};

/*
 * Keys of the mappings: the keyset their pages follow, and what every row
 * must have (the person id is the join key).
 */
static const PhxKeyColumn mapping_keyset[] = {
	{0, "team_id", PHX_KEY_INT},
	{1, "distinct_id", PHX_KEY_TEXT},
};
static const PhxKeyColumn mapping_keys[] = {
	{0, "team_id", PHX_KEY_INT},
	{1, "distinct_id", PHX_KEY_TEXT},
	{2, "person_id", PHX_KEY_UUID},
};

/* Keys of the persons: the id is both keyset and join key. */
static const PhxKeyColumn person_keyset[] = {
	{0, "id", PHX_KEY_UUID},
};

/* The auxiliary stage: a person's columns, joined on person_id = id. */
enum
{
	A_ID,
	A_PROPERTIES,
	A_CREATED_AT,
	A_IS_DELETED,
	A_VERSION,
	A_NCOLUMNS
};

static const PhxModelColumn person_stage_columns[A_NCOLUMNS] = {
	{"id", TEXTOID, NULL},
	{"properties", JSONBOID, NULL},
	{"created_at", TIMESTAMPTZOID, NULL},
	{"is_deleted", BOOLOID, NULL},
	{"version", INT8OID, NULL},
};

static const PhxAuxFill person_stage_fills[A_NCOLUMNS] = {
	{PHX_AUX_KEY, "person_id"},
	{PHX_AUX_FILL, "properties"},
	{PHX_AUX_FILL, "created_at"},
	{PHX_AUX_OR, "is_deleted"},
	{PHX_AUX_FILL, "person_version"},
};

static const PhxAuxStage person_stage = {
	.columns = person_stage_columns,
	.fills = person_stage_fills,
	.ncolumns = A_NCOLUMNS,
};

/* The two scans of a pass, the mappings first. */
typedef struct PersonsState
{
	PhxPager   *mappings;
	PhxPager   *persons;
	bool		mappings_done;
} PersonsState;

/* The request for a page of mappings after the cursor (team_id, distinct_id). */
static void
build_mappings_query(void *arg, const PhxKey *cursor, int page_size, PhxQuery *q)
{
	phx_query_init(q);
	appendStringInfoString(&q->text,
						   "SELECT team_id, distinct_id, argMax(person_id, version) AS person_id, "
						   "argMax(is_deleted, version) AS is_deleted, max(version) AS version "
						   "FROM raw_person_distinct_ids");
	if (cursor)
	{
		appendStringInfoString(&q->text,
							   " WHERE (team_id, distinct_id) > ({cursor_team_id}, {cursor_distinct_id})");
		phx_value_text(q, "cursor_distinct_id", cursor[1].str);
		/* team ids are integers: send the number, not its text */
		phx_value_int64(q, "cursor_team_id", cursor[0].i);
	}
	appendStringInfo(&q->text, " GROUP BY team_id, distinct_id ORDER BY team_id, distinct_id LIMIT %d",
					 page_size);
}

/*
 * The request for a page of persons after the cursor (id): every version
 * of the persons after it, collapsed to the latest.  The filter comes
 * before GROUP BY, as all versions of a person share its id.
 */
static void
build_persons_query(void *arg, const PhxKey *cursor, int page_size, PhxQuery *q)
{
	phx_query_init(q);
	appendStringInfoString(&q->text,
						   "SELECT id, argMax(properties, version) AS properties, "
						   "toTimeZone(argMax(created_at, version), 'UTC') AS created_at, "
						   "argMax(is_deleted, version) AS is_deleted, max(version) AS version "
						   "FROM raw_persons");
	if (cursor)
	{
		appendStringInfoString(&q->text, " WHERE id > {cursor_id}");
		phx_value_text(q, "cursor_id", cursor[0].str);
	}
	appendStringInfo(&q->text, " GROUP BY id ORDER BY id LIMIT %d", page_size);
}

/*
 * is_deleted, of a mapping or a person: ClickHouse's Int8, which PostHog
 * sends as 0 or 1 (some versions as true or false); NULL counts as not
 * deleted.  Anything else is an error (the row context names the row).
 */
static bool
deleted_flag(PhxCell *cell, const char *query)
{
	if (cell->kind == PHX_CELL_NULL)
		return false;
	if (cell->kind == PHX_CELL_BOOL)
		return cell->val[0] == 't';
	if (cell->kind == PHX_CELL_NUMBER && cell->len == 1 &&
		(cell->val[0] == '0' || cell->val[0] == '1'))
		return cell->val[0] == '1';
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
			 errmsg("PostHog returned %s for column \"is_deleted\" of the %s query, where 0, 1, true or false was expected",
					phx_cell_kind_name(cell), query),
			 errdetail("PostHog sent: %.*s", pg_mbcliplen(cell->val, cell->len, 64), cell->val)));
	return false;				/* keep compiler quiet */
}

static const char *
mapping_row_key(void *arg, int r)
{
	return phx_cell_string(PHX_CELL((PhxPage *) arg, r, 1));
}

/*
 * A mapping into the main stage: the person's columns are left NULL, the
 * merge fills them from the auxiliary stage.
 */
static void
mapping_get_row(void *arg, int r, Datum *values, bool *nulls)
{
	PhxPage    *mappings = (PhxPage *) arg;

	/* the keys (team_id, distinct_id, person_id) were checked by the pager */
	values[P_TEAM_ID] = phx_cell_datum(PHX_CELL(mappings, r, 0), INT4OID, "team_id", &nulls[P_TEAM_ID]);
	values[P_DISTINCT_ID] = phx_cell_datum(PHX_CELL(mappings, r, 1), TEXTOID, "distinct_id", &nulls[P_DISTINCT_ID]);
	values[P_PERSON_ID] = phx_cell_datum(PHX_CELL(mappings, r, 2), TEXTOID, "person_id", &nulls[P_PERSON_ID]);
	values[P_PDI_VERSION] = phx_cell_datum(PHX_CELL(mappings, r, 4), INT8OID, "version", &nulls[P_PDI_VERSION]);
	values[P_IS_DELETED] = BoolGetDatum(deleted_flag(PHX_CELL(mappings, r, 3), "person_distinct_ids"));
	nulls[P_IS_DELETED] = false;

	nulls[P_PROPERTIES] = nulls[P_CREATED_AT] = nulls[P_PERSON_VERSION] = true;
	values[P_PROPERTIES] = values[P_CREATED_AT] = values[P_PERSON_VERSION] = (Datum) 0;
}

static void
fill_mappings_page(void *arg, const PhxKeySource *src, PhxModelPage *mp)
{
	mp->nrows = src->page->nrows;
	mp->get_row = mapping_get_row;
	mp->row_key = mapping_row_key;
	mp->arg = src->page;
}

static const char *
person_row_key(void *arg, int r)
{
	return phx_cell_string(PHX_CELL((PhxPage *) arg, r, 0));
}

/* A person into the auxiliary stage (columns person_stage_columns). */
static void
person_get_row(void *arg, int r, Datum *values, bool *nulls)
{
	PhxPage    *persons = (PhxPage *) arg;

	/* the id was checked by the pager: a canonical UUID */
	values[A_ID] = phx_cell_datum(PHX_CELL(persons, r, 0), TEXTOID, "id", &nulls[A_ID]);
	values[A_PROPERTIES] = phx_cell_datum(PHX_CELL(persons, r, 1), JSONBOID, "properties", &nulls[A_PROPERTIES]);
	values[A_CREATED_AT] = phx_cell_datum(PHX_CELL(persons, r, 2), TIMESTAMPTZOID, "created_at", &nulls[A_CREATED_AT]);
	values[A_IS_DELETED] = BoolGetDatum(deleted_flag(PHX_CELL(persons, r, 3), "persons"));
	nulls[A_IS_DELETED] = false;
	values[A_VERSION] = phx_cell_datum(PHX_CELL(persons, r, 4), INT8OID, "version", &nulls[A_VERSION]);
}

static void
fill_persons_page(void *arg, const PhxKeySource *src, PhxModelPage *mp)
{
	mp->nrows = src->page->nrows;
	mp->get_row = person_get_row;
	mp->row_key = person_row_key;
	mp->arg = src->page;
	mp->aux = true;
}

/* Both scans: full pages from the first, one request at a time. */
static const PhxPaging mappings_paging = {
	.query_name = "person_distinct_ids",
	.columns = pdi_columns,
	.ncolumns = lengthof(pdi_columns),
	.row_what = "a person mapping",
	.page_what = "distinct_id",
	.keyset = mapping_keyset,
	.nkeys = lengthof(mapping_keyset),
	.row_keys = mapping_keys,
	.nrow_keys = lengthof(mapping_keys),
	.prefetch = false,
	.build_query = build_mappings_query,
	.fill_page = fill_mappings_page,
};

static const PhxPaging persons_paging = {
	.query_name = "persons",
	.columns = person_columns,
	.ncolumns = lengthof(person_columns),
	.row_what = "a person",
	.page_what = "person",
	.keyset = person_keyset,
	.nkeys = lengthof(person_keyset),
	.row_keys = person_keyset,
	.nrow_keys = lengthof(person_keyset),
	.prefetch = false,
	.build_query = build_persons_query,
	.fill_page = fill_persons_page,
};

/*
 * Every run reads everything: start and end do not narrow the queries, and
 * the pass always starts from the beginning (a staged model's run is
 * atomic, so there is no cursor to resume from).
 */
static void *
persons_begin(PhxExport *exp, PhxServerConfig *cfg, TimestampTz start,
			  TimestampTz end, List *cursor)
{
	PersonsState *st = palloc0(sizeof(PersonsState));

	st->mappings = phx_pager_begin(&mappings_paging, st, exp, cfg, NIL);
	st->persons = phx_pager_begin(&persons_paging, st, exp, cfg, NIL);
	return st;
}

/*
 * The next page of the pass: the mappings, then the persons.  The last
 * page of mappings says there is more, as the persons follow.
 */
static PhxModelPage *
persons_next_page(void *state)
{
	PersonsState *st = (PersonsState *) state;
	PhxModelPage *mp;

	if (!st->mappings_done)
	{
		mp = phx_pager_next_page(st->mappings);
		if (!mp->has_more)
		{
			st->mappings_done = true;
			phx_pager_number_after(st->persons, st->mappings);
			mp->has_more = true;
		}
		return mp;
	}
	return phx_pager_next_page(st->persons);
}

/* Every run is a full pass: the last interval before end covers everything. */
static TimestampTz
persons_earliest(PhxExport *exp, PhxServerConfig *cfg, TimestampTz end)
{
	return end - 1;
}

const PhxModel phx_persons_model = {
	.name = "persons",
	.columns = persons_columns,
	.ncolumns = P_NCOLUMNS,
	.merge_key = persons_key,
	.merge_versions = persons_versions,
	.staged = true,
	.aux = &person_stage,
	.default_lookback_hours = 0,
	.begin = persons_begin,
	.next_page = persons_next_page,
	.earliest = persons_earliest,
};
