/*-------------------------------------------------------------------------
 *
 * persons.c
 *		The persons model: one row per (team_id, distinct_id) with its
 *		current person and that person's latest properties, merged by
 *		version as PostHog's own export merges them.
 *
 * How a run finds what changed: it does not.  PostHog's HogQL tables
 * expose no modification time for persons, so every run makes a full
 * keyset pass over raw_person_distinct_ids (collapsed to the latest version
 * of each mapping on PostHog's side) and, per page, one query for the
 * latest version of the persons that page names.  The merge then writes
 * only rows whose person_version or person_distinct_id_version grew, so the
 * cost of a run is reading every mapping once, while writes stay
 * proportional to what changed.  A backfill "from the beginning" is the
 * same pass.  Only the mappings query is keyset-paged (by the pager,
 * paging.c); the persons query of a page is made when the page is filled.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
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
 * Keys of the mappings: the keyset the pages follow, and what every row
 * must have (the person id goes into the persons query).
 */
static const PhxKeyColumn keyset[] = {
	{0, "team_id", PHX_KEY_INT},
	{1, "distinct_id", PHX_KEY_TEXT},
};
static const PhxKeyColumn mapping_keys[] = {
	{0, "team_id", PHX_KEY_INT},
	{1, "distinct_id", PHX_KEY_TEXT},
	{2, "person_id", PHX_KEY_UUID},
};
static const PhxKeyColumn person_keys[] = {
	{0, "id", PHX_KEY_UUID},
};

/* What the pager needs besides the paging description. */
typedef struct PersonsState
{
	PhxExport  *exp;
	PhxServerConfig *cfg;		/* for the persons query */
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

typedef struct PersonEntry
{
	char		id[64];			/* person uuid, the hash key */
	int			row;			/* in the persons page */
} PersonEntry;

/* The latest version of each person a page of mappings points to. */
static PhxPage *
fetch_persons(PersonsState *st, int page_no, List *ids, int64 *bytes)
{
	PhxQuery	q;
	PhxPage    *page;
	PhxKeySource src;

	phx_query_init(&q);
	appendStringInfoString(&q.text,
						   "SELECT id, argMax(properties, version) AS properties, "
						   "toTimeZone(argMax(created_at, version), 'UTC') AS created_at, "
						   "argMax(is_deleted, version) AS is_deleted, max(version) AS version "
						   "FROM raw_persons WHERE id IN {person_ids} GROUP BY id");
	/* without a LIMIT PostHog returns 100 rows; a page names at most page_size persons */
	appendStringInfo(&q.text, " LIMIT %d", Max(list_length(ids), 1));
	phx_value_text_array(&q, "person_ids", ids);
	page = phx_http_query(st->cfg, &q, psprintf("posthog_export %s persons of page %d",
												st->exp->name, page_no),
						  NULL, NULL, bytes);
	phx_check_columns(page, person_columns, lengthof(person_columns), "persons");
	src.page = page;
	src.what = "a person";
	src.export_name = st->exp->name;
	src.page_no = page_no;
	phx_key_check_rows(&src, person_keys, lengthof(person_keys));
	return page;
}

/* A fetched page of mappings and the persons they point to. */
typedef struct PersonsPage
{
	PhxPage    *mappings;
	PhxPage    *persons;		/* NULL when no mapping names a person */
	HTAB	   *byid;			/* person id -> row of persons */
} PersonsPage;

static const char *
persons_row_key(void *arg, int r)
{
	PersonsPage *pp = (PersonsPage *) arg;
	PhxCell    *did = PHX_CELL(pp->mappings, r, 1);

	return (did->kind == PHX_CELL_STRING) ? did->val : NULL;
}

/* One row per mapping, with the person it points to. */
static void
persons_get_row(void *arg, int r, Datum *values, bool *nulls)
{
	PersonsPage *pp = (PersonsPage *) arg;
	PhxPage    *mappings = pp->mappings;
	PhxPage    *persons = pp->persons;
	PhxCell    *did = PHX_CELL(mappings, r, 1);
	PhxCell    *pid = PHX_CELL(mappings, r, 2);
	PersonEntry *person = NULL;
	bool		mapping_deleted;
	bool		isnull;

	/* the keys (team_id, distinct_id, person_id) were checked by the pager */
	values[P_TEAM_ID] = phx_cell_datum(PHX_CELL(mappings, r, 0), INT4OID, "team_id", &nulls[P_TEAM_ID]);
	values[P_DISTINCT_ID] = phx_cell_datum(did, TEXTOID, "distinct_id", &nulls[P_DISTINCT_ID]);
	values[P_PERSON_ID] = phx_cell_datum(pid, TEXTOID, "person_id", &nulls[P_PERSON_ID]);
	values[P_PDI_VERSION] = phx_cell_datum(PHX_CELL(mappings, r, 4), INT8OID, "version", &nulls[P_PDI_VERSION]);
	mapping_deleted = DatumGetBool(phx_cell_datum(PHX_CELL(mappings, r, 3), BOOLOID, "is_deleted", &isnull));
	if (isnull)
		mapping_deleted = false;

	if (pp->byid && pid->kind == PHX_CELL_STRING && pid->len < sizeof(person->id))
		person = hash_search(pp->byid, pid->val, HASH_FIND, NULL);
	if (person)
	{
		int			pr = person->row;
		bool		person_deleted;

		values[P_PROPERTIES] = phx_cell_datum(PHX_CELL(persons, pr, 1), JSONBOID, "properties", &nulls[P_PROPERTIES]);
		values[P_CREATED_AT] = phx_cell_datum(PHX_CELL(persons, pr, 2), TIMESTAMPTZOID, "created_at", &nulls[P_CREATED_AT]);
		person_deleted = DatumGetBool(phx_cell_datum(PHX_CELL(persons, pr, 3), BOOLOID, "is_deleted", &isnull));
		if (isnull)
			person_deleted = false;
		values[P_PERSON_VERSION] = phx_cell_datum(PHX_CELL(persons, pr, 4), INT8OID, "version", &nulls[P_PERSON_VERSION]);
		values[P_IS_DELETED] = BoolGetDatum(mapping_deleted || person_deleted);
	}
	else
	{
		/* a mapping to a person PostHog does not have (any more) */
		nulls[P_PROPERTIES] = nulls[P_CREATED_AT] = nulls[P_PERSON_VERSION] = true;
		values[P_PROPERTIES] = values[P_CREATED_AT] = values[P_PERSON_VERSION] = (Datum) 0;
		values[P_IS_DELETED] = BoolGetDatum(mapping_deleted);
	}
	nulls[P_IS_DELETED] = false;
}

/*
 * A checked page of mappings (src) and the persons it points to, fetched
 * in one query, into one row per mapping.
 */
static void
fill_page(void *arg, const PhxKeySource *src, PhxModelPage *mp)
{
	PersonsState *st = (PersonsState *) arg;
	PhxPage    *mappings = src->page;
	PersonsPage *pp = palloc0(sizeof(PersonsPage));
	List	   *ids = NIL;

	pp->mappings = mappings;
	for (int r = 0; r < mappings->nrows; r++)
		ids = lappend(ids, PHX_CELL(mappings, r, 2)->val);
	if (ids != NIL)
	{
		HASHCTL		ctl;

		pp->persons = fetch_persons(st, src->page_no, list_copy(ids), &mp->bytes);
		memset(&ctl, 0, sizeof(ctl));
		ctl.keysize = sizeof(((PersonEntry *) 0)->id);
		ctl.entrysize = sizeof(PersonEntry);
		ctl.hcxt = CurrentMemoryContext;
		pp->byid = hash_create("posthog_export persons", pp->persons->nrows + 1, &ctl,
							   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		for (int r = 0; r < pp->persons->nrows; r++)
		{
			PhxCell    *id = PHX_CELL(pp->persons, r, 0);
			PersonEntry *e;

			/* checked: a UUID, which fits the key */
			e = hash_search(pp->byid, id->val, HASH_ENTER, NULL);
			e->row = r;
		}
	}

	mp->nrows = mappings->nrows;
	mp->get_row = persons_get_row;
	mp->row_key = persons_row_key;
	mp->arg = pp;
}

static const PhxPaging persons_paging = {
	.query_name = "person_distinct_ids",
	.columns = pdi_columns,
	.ncolumns = lengthof(pdi_columns),
	.row_what = "a person mapping",
	.page_what = "distinct_id",
	.keyset = keyset,
	.nkeys = lengthof(keyset),
	.row_keys = mapping_keys,
	.nrow_keys = lengthof(mapping_keys),
	/* full pages from the first, one request at a time (only events ramp and prefetch) */
	.ramp = false,
	.prefetch = false,
	.build_query = build_mappings_query,
	.fill_page = fill_page,
};

/* Every run reads every mapping: start and end do not narrow the query. */
static void *
persons_begin(PhxExport *exp, PhxServerConfig *cfg, TimestampTz start,
			  TimestampTz end, List *cursor)
{
	PersonsState *st = palloc0(sizeof(PersonsState));

	st->exp = exp;
	st->cfg = cfg;
	return phx_pager_begin(&persons_paging, st, exp, cfg, cursor);
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
	.default_lookback_hours = 0,
	.begin = persons_begin,
	.next_page = phx_pager_next_page,
	.earliest = persons_earliest,
};
