/*-------------------------------------------------------------------------
 *
 * posthog_export.h
 *		Declarations shared by the files of the posthog_export extension.
 *
 * The extension pulls PostHog data through PostHog's HTTP query API and
 * writes it into tables of the database it is installed in.  Each file
 * owns one responsibility; this header is the contract between them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef POSTHOG_EXPORT_H
#define POSTHOG_EXPORT_H

#include "postgres.h"

#include "access/tupdesc.h"
#include "datatype/timestamp.h"
#include "utils/date.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "nodes/pg_list.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "utils/jsonb.h"
#include "utils/relcache.h"

#define PHX_EXTENSION_NAME	"posthog_export"
#define PHX_SCHEMA_NAME		"posthog_export"
#define PHX_VERSION			"0.2.0"

/* First key of the advisory locks the extension takes ("phx" in ASCII). */
#define PHX_ADVISORY_LOCK_KEY	7366776

/* ------------------------------------------------------------------------
 * option.c: FOREIGN SERVER / USER MAPPING options
 * ------------------------------------------------------------------------
 */
typedef enum PhxVerify
{
	PHX_VERIFY_FULL,			/* certificate authority and host name */
	PHX_VERIFY_CA,				/* certificate authority only */
	PHX_VERIFY_NONE				/* encrypt, do not verify */
} PhxVerify;

typedef struct PhxServerConfig
{
	char	   *server_name;
	char	   *url;			/* base URL, without trailing slash */
	int64		project_id;
	char	   *ca_file;		/* NULL: the system's trust store */
	bool		allow_http;
	bool		compression;	/* ask for gzip/deflate responses */
	bool		allow_loopback; /* may connect to loopback/link-local addresses */
	PhxVerify	verify;
	char	   *client_cert;	/* mutual TLS */
	char	   *client_key;
	char	   *proxy;			/* http(s)://host:port */
	int			page_size;		/* rows per page requested */
	int			connect_timeout_ms;
	int			timeout_ms;		/* total time of one HTTP request */
	int			max_retries;	/* retries of one page after a retryable error */
	int			retry_base_delay_ms;
	int64		max_response_size;	/* bytes */
	char	   *api_key;		/* from the user mapping; never printed */
} PhxServerConfig;

extern PhxServerConfig *phx_get_server_config(const char *server_name, Oid userid);
extern bool phx_has_control_char(const char *value);

/* ------------------------------------------------------------------------
 * json_rows.c: parsing the query API's response
 * ------------------------------------------------------------------------
 */
typedef enum PhxCellKind
{
	PHX_CELL_NULL,
	PHX_CELL_STRING,			/* de-escaped UTF-8, NUL-terminated */
	PHX_CELL_NUMBER,			/* the number's text as sent */
	PHX_CELL_BOOL,				/* text "true" or "false" */
	PHX_CELL_JSON				/* nested array/object, its JSON text */
} PhxCellKind;

typedef struct PhxCell
{
	PhxCellKind kind;
	int			len;
	char	   *val;
} PhxCell;

typedef struct PhxPage
{
	int			ncolumns;
	char	  **columns;		/* names from "columns" */
	int			nrows;
	PhxCell    *cells;			/* nrows * ncolumns, row-major */
	bool		has_more;
} PhxPage;

#define PHX_CELL(page, row, col) (&(page)->cells[(row) * (page)->ncolumns + (col)])

extern PhxPage *phx_parse_page(char *body, size_t len);
extern char *phx_json_string(char *p, char *end, char **after, int *len_out,
							 const char **problem);
extern bool phx_parse_error_body(char *body, size_t len, char **code, char **detail);

/* jsonb_build.c */
extern Jsonb *phx_jsonb_from_text(char *text, int len);

/* ------------------------------------------------------------------------
 * hogql.c: building the HTTP request body
 * ------------------------------------------------------------------------
 */
typedef struct PhxQuery
{
	StringInfoData text;		/* HogQL with {placeholders} */
	StringInfoData values;		/* JSON members of "values", comma separated */
} PhxQuery;

extern void phx_query_init(PhxQuery *q);
extern void phx_value_text(PhxQuery *q, const char *name, const char *value);
extern void phx_value_text_array(PhxQuery *q, const char *name, List *values);
extern void phx_value_timestamp(PhxQuery *q, const char *name, TimestampTz ts);
extern void phx_value_int64(PhxQuery *q, const char *name, int64 value);
extern char *phx_format_utc(TimestampTz ts);
extern char *phx_request_body(PhxQuery *q, const char *label);

/* ------------------------------------------------------------------------
 * http_client.c: one query API call, with timeouts, retries and cancel
 * ------------------------------------------------------------------------
 */
/*
 * Asked when the server answers 504 or 512 (query too slow or too big): may
 * rebuild the query for a smaller page and return true to retry at once, or
 * return false to treat the answer like any retryable error.
 */
typedef bool (*PhxShrinkCallback) (void *arg, PhxQuery *q);

extern void phx_http_prefetch(PhxServerConfig *cfg, PhxQuery *q, const char *label);
extern PhxPage *phx_http_query(PhxServerConfig *cfg, PhxQuery *q,
							   const char *label,
							   PhxShrinkCallback shrink, void *shrink_arg,
							   int64 *bytes_out);

/* ------------------------------------------------------------------------
 * catalog.c: the extension's own tables (exports, runs)
 * ------------------------------------------------------------------------
 */
typedef struct PhxExport
{
	int32		export_id;
	char	   *name;
	Oid			owner;
	char	   *server_name;
	char	   *model;			/* events | persons | sessions */
	char	   *mode;			/* append | merge */
	char	   *schema_name;
	char	   *table_name;
	Interval	interval;
	List	   *include_events; /* of char * */
	List	   *exclude_events; /* of char * */
	Interval	lookback;
	/* the schedule */
	char	   *timezone;
	Interval	start_offset;
	Interval	delay;
	bool		has_exclude_window;
	TimeADT		exclude_start;
	TimeADT		exclude_end;
	TimestampTz next_interval_start;
	bool		paused;
	int32		consecutive_failures;
	bool		has_retry_at;
	TimestampTz retry_at;
} PhxExport;

/* A queued backfill's next interval. */
typedef struct PhxBackfill
{
	int64		backfill_id;
	TimestampTz next_start;
	TimestampTz end_at;
} PhxBackfill;

typedef struct PhxRun
{
	int64		run_id;
	char	   *status;
	int64		rows;
	int64		bytes;
	int32		pages;
	int32		attempts;
	List	   *cursor;			/* of char *, NIL before the first page */
	int64		rows_written;
	int32		crashes;		/* backends that died running it, in a row */
} PhxRun;

/* What some pages added to a run, recorded with phx_run_progress(). */
typedef struct PhxRunDelta
{
	int64		rows;
	int64		bytes;
	int32		pages;
	int64		rows_written;
} PhxRunDelta;

/* Saved state of a switch to another role for catalog or destination work. */
typedef struct PhxRoleSwitch
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;
} PhxRoleSwitch;

extern void phx_become(Oid role, PhxRoleSwitch *sw);
extern void phx_restore(PhxRoleSwitch *sw);
extern Oid	phx_catalog_owner(void);
extern bool phx_snapshot_ensure(void);
extern void phx_snapshot_release(bool pushed);
extern Datum phx_text_list_to_array(List *list);

extern PhxExport *phx_export_lookup(const char *name, bool missing_ok);
extern PhxExport *phx_export_by_id(int32 export_id);
extern List *phx_export_list(void);
extern bool phx_export_has_backfill(int32 export_id);
extern PhxBackfill *phx_backfill_next(PhxExport *exp);
extern void phx_backfill_advance(PhxBackfill *b, TimestampTz next_start);
extern void phx_export_advance(PhxExport *exp, TimestampTz next_start);
extern void phx_export_record_result(PhxExport *exp, ErrorData *edata);
extern void phx_mark_interrupted_runs(void);
extern void phx_export_update(PhxExport *exp, bool set_events, Datum include,
							  bool include_null, Datum exclude, bool exclude_null);
extern void phx_export_set_paused(PhxExport *exp, bool paused, const char *reason);
extern int64 phx_backfill_insert(PhxExport *exp, TimestampTz start, TimestampTz end);
extern bool phx_export_exists(const char *name);
extern int32 phx_export_insert(PhxExport *exp, Datum include, bool include_null,
							   Datum exclude, bool exclude_null);
extern void phx_export_delete(PhxExport *exp);
extern PhxRun *phx_run_begin(PhxExport *exp, TimestampTz start, TimestampTz end,
							 const char *trigger, bool force);
extern void phx_run_progress(PhxRun *run, PhxRunDelta *delta, List *cursor,
							 bool completed);
extern void phx_run_failed(PhxRun *run, const char *message);

/* ------------------------------------------------------------------------
 * destination.c: the table rows land in
 * ------------------------------------------------------------------------
 */
typedef struct PhxModelColumn
{
	const char *name;
	Oid			type;			/* type of the datum the model produces */
	const char *create_type;	/* SQL type used when creating the table */
} PhxModelColumn;

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
	int			default_lookback_hours;

	/*
	 * Starts reading [start, end) after "cursor" (NIL: from the beginning);
	 * next_page() then returns successive pages allocated in the current
	 * memory context.
	 */
	void	   *(*begin) (PhxExport *exp, PhxServerConfig *cfg,
						  TimestampTz start, TimestampTz end, List *cursor);
	PhxModelPage *(*next_page) (void *state);

	/* Start of the project's data, for a backfill "from the beginning". */
	TimestampTz (*earliest) (PhxExport *exp, PhxServerConfig *cfg, TimestampTz end);
} PhxModel;

extern const PhxModel *phx_model_by_name(const char *name);
extern void phx_check_database_encoding(void);

typedef struct PhxDestination
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
} PhxDestination;

extern Form_pg_attribute phx_written_column(TupleDesc desc, const char *name);
extern PhxDestination *phx_destination_open(PhxExport *exp, const PhxModel *model);
extern uint64 phx_destination_insert(PhxDestination *dest, PhxModelPage *page);
extern uint64 phx_destination_finish(PhxDestination *dest);
extern void phx_destination_close(PhxDestination *dest);

/* ------------------------------------------------------------------------
 * bulk_insert.c: rows into a table through the multi-insert path
 * ------------------------------------------------------------------------
 */
typedef struct PhxRowContext PhxRowContext;
typedef struct PhxBulkInsert PhxBulkInsert;

extern bool phx_bulk_insert_supported(Relation rel);
extern PhxBulkInsert *phx_bulk_insert_begin(Oid relid, const PhxModel *model,
											PhxRowContext *rc);
extern void phx_bulk_insert_row(PhxBulkInsert *bi, Datum *values, bool *nulls,
								int row, const char *key);
extern uint64 phx_bulk_insert_end(PhxBulkInsert *bi);

/* ------------------------------------------------------------------------
 * model_common.c: what the models share
 * ------------------------------------------------------------------------
 */
struct PhxRowContext
{
	ErrorContextCallback errcb;
	const char *what;			/* "event", "session" ... */
	const char *export_name;
	int			page_no;
	int			row;			/* current row, 0-based */
	const char *key;			/* its key (uuid ...), if known */
};

extern Jsonb *phx_cell_jsonb(PhxCell *cell, const char *column);
extern Datum phx_cell_datum(PhxCell *cell, Oid type, const char *column, bool *isnull);
extern void phx_check_columns(PhxPage *page, const char *const *expected, int n,
							  const char *what);
extern void phx_row_context_push(PhxRowContext *rc, const char *what,
								 const char *export_name, int page_no);
extern void phx_row_context_pop(PhxRowContext *rc);
extern bool phx_halve_page(int *page_size);
extern TimestampTz phx_query_earliest(PhxExport *exp, PhxServerConfig *cfg, const char *hogql,
									  TimestampTz fallback);

/*
 * Keys: the cells a model pages by (its keyset cursor), merges by or looks
 * rows up by.  They come from the network, so each is checked for NULL,
 * type, size and form before use (model_common.c).
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

/* ------------------------------------------------------------------------
 * model_events.c
 * ------------------------------------------------------------------------
 */
extern const PhxModel phx_events_model;
extern const PhxModel phx_persons_model;
extern const PhxModel phx_sessions_model;

/* ------------------------------------------------------------------------
 * schedule.c
 * ------------------------------------------------------------------------
 */
extern int	phx_max_failures;
extern int	phx_retry_interval;

extern TimestampTz phx_interval_floor(const PhxExport *exp, TimestampTz ts);
extern TimestampTz phx_interval_next(const PhxExport *exp, TimestampTz start);
extern bool phx_interval_is_supported(const Interval *iv);
extern int64 phx_interval_usecs(const Interval *iv);
extern bool phx_in_exclude_window(const PhxExport *exp, TimestampTz now);
extern TimestampTz phx_export_next_due(const PhxExport *exp, TimestampTz now, bool has_backfill);
extern bool phx_error_is_retryable(int sqlerrcode);
extern TimestampTz phx_retry_time(TimestampTz now, int failures);

/* ------------------------------------------------------------------------
 * export_run.c
 * ------------------------------------------------------------------------
 */
extern void phx_run_due_export(PhxExport *exp, bool nonatomic);

/* ------------------------------------------------------------------------
 * owner_session.c: runs in a background worker connected as the owner
 * ------------------------------------------------------------------------
 */
typedef enum PhxRunKind
{
	PHX_RUN_DUE,				/* the export's due intervals and backfills */
	PHX_RUN_RANGE				/* the intervals of [start, end), run_export */
} PhxRunKind;

extern bool phx_session_is_owner(Oid owner);
extern char *phx_role_name(Oid role);
extern void phx_require_nonatomic(PhxExport *exp, bool nonatomic, const char *what);
extern bool phx_export_is_due(PhxExport *exp);
extern char *phx_owner_session_problem(Oid owner);
extern void phx_run_worker_init(BackgroundWorker *worker, PhxExport *exp, PhxRunKind kind,
								TimestampTz start, TimestampTz end, bool force,
								dsm_handle seg);
extern void phx_run_in_worker(PhxExport *exp, PhxRunKind kind, TimestampTz start,
							  TimestampTz end, bool force, bool errors_as_warnings);

/* ------------------------------------------------------------------------
 * scheduler.c: the background workers, their shared memory, live progress
 * ------------------------------------------------------------------------
 */
extern void phx_scheduler_init(void);
extern void phx_wake_scheduler(void);
extern void phx_progress_begin(PhxExport *exp, TimestampTz start, TimestampTz end, PhxRun *run);
extern void phx_progress_page(int64 rows, int64 bytes);
extern void phx_progress_bytes(int64 bytes);
extern void phx_progress_end(void);
extern char *phx_ts_str(TimestampTz ts);
extern void phx_run_range(PhxExport *exp, TimestampTz start, TimestampTz end,
						  const char *trigger, bool force, bool nonatomic);

#endif							/* POSTHOG_EXPORT_H */
