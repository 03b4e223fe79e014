/*-------------------------------------------------------------------------
 *
 * posthog_export.h
 *		What every layer of posthog_export shares: the extension's names
 *		and the definition of an export.
 *
 * The layers, each a folder with its own header, from the source up
 * (a file calls only into its own folder or the folders below it):
 *
 *   posthog/   the source: options, HTTP, HogQL request bodies, responses
 *   models/    decoding: events, persons and sessions, one paging loop
 *   store/     the database: catalog tables, security, destination table
 *   run/       one run: fetch -> convert -> write -> progress -> commit
 *   worker/    background workers: launcher, scheduler, run-as-owner
 *   api/       the SQL functions and procedures
 *   module.c   _PG_init: settings, shared memory, the launcher
 *
 *-------------------------------------------------------------------------
 */
#ifndef POSTHOG_EXPORT_H
#define POSTHOG_EXPORT_H

#include "postgres.h"

#include "datatype/timestamp.h"
#include "nodes/pg_list.h"
#include "utils/date.h"

#define PHX_EXTENSION_NAME	"posthog_export"
#define PHX_SCHEMA_NAME		"posthog_export"
#define PHX_VERSION			"0.2.0"

/* First key of the advisory locks the extension takes ("phx" in ASCII). */
#define PHX_ADVISORY_LOCK_KEY	7366776

/* A name and a text: a custom column and its HogQL, a placeholder and its value. */
typedef struct PhxNamedText
{
	char	   *name;
	char	   *text;
} PhxNamedText;

/* An export as its row in posthog_export.exports says (store/catalog.c). */
typedef struct PhxExport
{
	int32		export_id;
	char	   *name;
	Oid			owner;			/* the owner of owner_type (InvalidOid if it is gone) */
	Oid			owner_type;		/* the type that stands for the owner (store/ownership.c) */
	char	   *server_name;
	char	   *model;			/* events | persons | sessions | hogql */
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
	/* late rows (events): settle checks of completed intervals */
	Interval	settle_window;	/* checked this long after exported; 0: never */
	Interval	settle_every;	/* this often */
	bool		has_next_settle_at;
	TimestampTz next_settle_at; /* the next check due */
	/* shaped by the owner (the owner's HogQL, pasted as written) */
	List	   *columns;		/* of PhxNamedText: destination column ->
								 * HogQL expression, in jsonb's key order;
								 * NIL: none */
	char	   *filter;			/* HogQL boolean expression, or NULL */
	List	   *filter_values;	/* of PhxNamedText: placeholder -> the
								 * value's JSON text; NIL: none */
	char	   *query;			/* model hogql: the SELECT, or NULL */
	List	   *key;			/* model hogql: of char *; NIL: none */
	/* not in the catalog: SQL types of the columns for a new table
	 * (PhxNamedText, from create_export's probe); NIL: text */
	List	   *column_types;
} PhxExport;

#endif							/* POSTHOG_EXPORT_H */
