/*-------------------------------------------------------------------------
 *
 * models.h
 *		The decode layer: what an export model is (its columns, keys and
 *		paging), and the models themselves.
 *
 *   registry.c       the models by name
 *   paging.c         the one keyset paging loop (page sizes: shrunk
 *                    when too big, grown back; has-more, cursor, prefetch)
 *                    and the earliest-data query
 *   keys.c           keys checked before use; the keyset cursor
 *   cell_convert.c   cells -> datums; a response's columns checked
 *   jsonb_build.c    JSON text -> jsonb, without a second parse
 *   events.c, persons.c, sessions.c   the models: their columns, queries
 *                    and row conversion
 *   hogql_model.c    the hogql model: the owner's own query, its columns
 *                    probed and stored per export
 *   custom.c         what an owner adds to a model: extra columns from
 *                   HogQL expressions, a filter and its values
 *
 * A model reads pages from the source (posthog/) and hands them, one row
 * at a time on demand, to the store layer; it never writes anything.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PHX_MODELS_H
#define PHX_MODELS_H

#include "posthog/posthog.h"

#include "utils/jsonb.h"

typedef struct PhxModelColumn
{
	const char *name;
	Oid			type;			/* type of the datum the model produces */
	const char *create_type;	/* SQL type used when creating the table */
} PhxModelColumn;

/*
 * How a column of an auxiliary stage (see PhxAuxStage) takes part in the
 * final merge.
 */
typedef enum PhxAuxHow
{
	PHX_AUX_KEY,				/* the join key: equal to model_column of the
								 * main stage */
	PHX_AUX_FILL,				/* fills model_column (NULL when no auxiliary
								 * row matches) */
	PHX_AUX_OR					/* a boolean: model_column becomes the main
								 * value OR this one (no match: the main
								 * value) */
} PhxAuxHow;

typedef struct PhxAuxFill
{
	PhxAuxHow	how;
	const char *model_column;	/* a name in the model's columns */
} PhxAuxFill;

/*
 * A second scan a staged model joins its rows with at the merge (persons:
 * the persons, joined to the mappings by person id).  Pages marked aux
 * carry rows of these columns; they are staged apart, and the one
 * statement that merges the stage reads the main stage LEFT JOINed to the
 * auxiliary one, each model column taken from the main stage unless an
 * auxiliary column fills it.  The join key must identify an auxiliary row
 * (the scan's keyset guarantees it).  Column types are the model's.
 */
typedef struct PhxAuxStage
{
	const PhxModelColumn *columns;	/* create_type is not used */
	const PhxAuxFill *fills;	/* one per column, in order */
	int			ncolumns;
} PhxAuxStage;

/*
 * A page fetched from PostHog.  Its rows are converted on demand, one at a
 * time, so a page never exists as datums all at once.
 */
typedef struct PhxModelPage
{
	int			nrows;			/* rows to write */

	/*
	 * Converts row r (0 <= r < nrows) into values/nulls indexed by model
	 * column, allocated in the current memory context.
	 */
	void		(*get_row) (void *arg, int r, Datum *values, bool *nulls);
	/* The row's key (uuid, distinct_id ...) for error messages, or NULL. */
	const char *(*row_key) (void *arg, int r);
	void	   *arg;
	const char *what;			/* "event", "session" ... in error messages */
	int			page_no;		/* 1-based, within the run */
	bool		aux;			/* rows of the model's auxiliary stage, indexed
								 * by its columns */

	int64		bytes;			/* response bytes received for the page */
	bool		has_more;
	List	   *cursor;			/* keyset position after this page */
} PhxModelPage;

typedef struct PhxModel
{
	const char *name;
	const PhxModelColumn *columns;
	int			ncolumns;
	const char *const *merge_key;	/* column names, NULL-terminated */

	/*
	 * Version columns (NULL-terminated): a merge updates a row only when one
	 * of those present grows.  NULL, or none present: when anything changed.
	 */
	const char *const *merge_versions;

	/*
	 * Merge-only models are written atomically per interval: pages go to a
	 * temporary staging table and one statement merges it at the end, so a
	 * reader never sees half a merge and a failed run changes nothing.
	 */
	bool		staged;
	/* a staged model's second scan, joined at the merge; NULL: none */
	const PhxAuxStage *aux;
	int			default_lookback_hours;
	/* takes the owner's extra columns and filter (exports.columns, filter) */
	bool		shapeable;

	/*
	 * Starts reading [start, end) after "cursor" (NIL: from the beginning);
	 * next_page() then returns successive pages allocated in the current
	 * memory context.
	 */
	void	   *(*begin) (PhxExport *exp, PhxServerConfig *cfg,
						  TimestampTz start, TimestampTz end, List *cursor);
	PhxModelPage *(*next_page) (void *state);

	/*
	 * Start of the project's data, for a backfill "from the beginning"
	 * (the caller rounds it down to an interval boundary); without data,
	 * a time in the last interval before "end".
	 */
	TimestampTz (*earliest) (PhxExport *exp, PhxServerConfig *cfg, TimestampTz end);

	/*
	 * For the settle pass (run/settle.c): the rows each of n intervals
	 * [starts[i], ends[i]) (sorted, not overlapping) holds at the source
	 * now, exactly the rows begin() and next_page() would read, counted
	 * with one request into counts[i].  NULL for models whose every run
	 * reads its whole range again (persons, sessions).
	 */
	void		(*count_intervals) (PhxExport *exp, PhxServerConfig *cfg, int n,
									const TimestampTz *starts, const TimestampTz *ends,
									int64 *counts);

	/*
	 * For create_export() and alter_export() (custom.c's probe): the
	 * model's query with the owner's custom columns (last, aliased by
	 * phx_custom_alias()) and filter, for no rows (LIMIT 0).  Returns
	 * how many columns it selects, which PostHog must return exactly.
	 * NULL: no probe.
	 */
	int			(*probe_query) (PhxExport *exp, PhxQuery *q);
} PhxModel;

extern const PhxModel phx_events_model;
extern const PhxModel phx_persons_model;
extern const PhxModel phx_sessions_model;

extern const PhxModel *phx_model_by_name(const char *name);
extern const PhxModel *phx_model_for_export(PhxExport *exp);

/* hogql_model.c */
extern const PhxModel phx_hogql_model_proto;
extern const PhxModel *phx_hogql_model(PhxExport *exp);
extern List *phx_hogql_probe(PhxServerConfig *cfg, const char *export_name, const char *query,
							 List *key);

/* custom.c */
extern bool phx_placeholder_reserved(const char *name);
extern List *phx_named_texts_arg(Jsonb *jb, const char *argname, bool json_values);
extern void phx_check_shape(const PhxExport *exp, const PhxModel *m);
extern char *phx_custom_alias(int i);
extern void phx_append_custom_select(StringInfo text, const PhxExport *exp);
extern void phx_append_filter(PhxQuery *q, const PhxExport *exp);
extern const PhxModel *phx_shaped_model(const PhxModel *base, PhxExport *exp);
extern void phx_probe_shape(const PhxModel *m, PhxExport *exp, PhxServerConfig *cfg);

/* jsonb_build.c */
extern Jsonb *phx_jsonb_from_text(char *text, int len);

/* ------------------------------------------------------------------------
 * cell_convert.c
 * ------------------------------------------------------------------------
 */
extern const char *phx_cell_kind_name(PhxCell *cell);
extern const char *phx_cell_string(const PhxCell *cell);
extern Jsonb *phx_cell_jsonb(PhxCell *cell, const char *column);
extern Datum phx_cell_datum(PhxCell *cell, Oid type, const char *column, bool *isnull);
extern char *phx_json_element_text(JsonbValue *v);
extern Oid	phx_custom_value_type(Oid atttype);
/* how a custom column's cells are read: their type, its input function looked up once */
typedef struct PhxCustomReader
{
	Oid			type;			/* from phx_custom_value_type() */
	FmgrInfo	input;
	Oid			ioparam;
} PhxCustomReader;

extern void phx_custom_reader_init(PhxCustomReader *rd, Oid type);
extern Datum phx_cell_to_type(PhxCell *cell, PhxCustomReader *rd, const char *column,
							  bool *isnull);
extern void phx_check_columns(PhxPage *page, const char *const *expected, int n,
							  const char *what);

/* ------------------------------------------------------------------------
 * keys.c
 * ------------------------------------------------------------------------
 */

/*
 * Keys: the cells a model pages by (its keyset cursor), merges by or looks
 * rows up by.  They come from the network, so each is checked for NULL,
 * type, size and form before use.
 */
typedef enum PhxKeyType
{
	PHX_KEY_TEXT,				/* a string */
	PHX_KEY_UUID,				/* a string holding a canonical UUID */
	PHX_KEY_INT,				/* a JSON integer, 64 bits */
	PHX_KEY_TIMESTAMP			/* a string holding a datetime */
} PhxKeyType;

typedef struct PhxKeyColumn
{
	int			col;			/* in the response */
	const char *name;			/* in error messages */
	PhxKeyType	type;
} PhxKeyColumn;

/* A checked key value. */
typedef struct PhxKey
{
	const char *str;			/* the string; an integer's or datetime's text
								 * once phx_keyset_next() made it */
	int64		i;				/* PHX_KEY_INT */
	TimestampTz ts;				/* PHX_KEY_TIMESTAMP */
} PhxKey;

/* The page keys are read from, and how its error messages name it. */
typedef struct PhxKeySource
{
	PhxPage    *page;
	const char *what;			/* "an event", "a session" ... */
	const char *export_name;
	int			page_no;
} PhxKeySource;

extern void phx_key_get(const PhxKeySource *src, int row, const PhxKeyColumn *kc, PhxKey *out);
extern void phx_key_check_rows(const PhxKeySource *src, const PhxKeyColumn *cols, int ncols);
extern void phx_keyset_next(const PhxKeySource *src, const PhxKeyColumn *keyset, int nkeys,
							const PhxKey *prev, PhxKey *next, MemoryContext cxt);
extern void phx_key_from_cursor(PhxKeyType type, const char *text, const char *export_name,
								PhxKey *out);
extern int	phx_keyset_check_unique(const PhxKeySource *src, const PhxKeyColumn *keyset, int nkeys,
									const PhxKey *cursor);

/* ------------------------------------------------------------------------
 * paging.c
 * ------------------------------------------------------------------------
 */

/*
 * What a model supplies to be paged: its keyset-paged query and how a
 * response becomes a PhxModelPage.  The pager (paging.c) does the loop.
 */
typedef struct PhxPaging
{
	/* the response: its columns in order, named "<query_name> query" */
	const char *query_name;		/* "events", in column-check messages */
	const char *const *columns;
	int			ncolumns;
	const char *row_what;		/* "an event", in key messages */
	const char *page_what;		/* "event": PhxModelPage.what */

	/* the keyset (the query's ORDER BY), and what every row must have */
	const PhxKeyColumn *keyset;
	int			nkeys;
	const PhxKeyColumn *row_keys;
	int			nrow_keys;

	/* request the next page while this one is converted and written */
	bool		prefetch;

	/*
	 * The keyset is the user's claim that it names one row, not the
	 * source's guarantee: every page must have strictly rising keys, and
	 * pages are asked for from the cursor on (build_query compares with
	 * >=, the pager asks for one row more), so the row equal to the cursor
	 * (the previous page's last, dropped by the pager) shows whether the
	 * key was duplicated across the page boundary.
	 */
	bool		unique_keyset;

	/*
	 * The request for up to page_size rows after cursor (nkeys keys, NULL
	 * for the first page).  Called again with a smaller page_size when
	 * PostHog says the query was too big for one page.
	 */
	void		(*build_query) (void *arg, const PhxKey *cursor, int page_size,
								PhxQuery *q);

	/*
	 * Turns a response (columns and row keys checked; src names it) into
	 * mp's rows: nrows, get_row, row_key, arg.  The pager has set bytes,
	 * has_more, cursor, what and page_no.
	 */
	void		(*fill_page) (void *arg, const PhxKeySource *src, PhxModelPage *mp);
} PhxPaging;

typedef struct PhxPager PhxPager;

extern PhxPager *phx_pager_begin(const PhxPaging *paging, void *arg, PhxExport *exp,
								 PhxServerConfig *cfg, List *cursor);
extern PhxModelPage *phx_pager_next_page(void *pager);
extern void phx_pager_number_after(PhxPager *pager, const PhxPager *before);
extern TimestampTz phx_query_earliest(PhxExport *exp, PhxServerConfig *cfg, const char *hogql,
									  TimestampTz fallback);

#endif							/* PHX_MODELS_H */
