/*-------------------------------------------------------------------------
 *
 * dependencies.c
 *		What an export depends on, kept consistent when its server or its
 *		owner changes: ALTER SERVER ... RENAME, DROP SERVER, DROP OWNED,
 *		DROP TYPE of an export's type, DROP EXTENSION.
 *
 * An export's owner is the owner of a type that stands for it
 * (store/ownership.c), so REASSIGN OWNED, ALTER TYPE ... OWNER TO and
 * DROP ROLE need nothing from here: Postgres moves the type, or refuses
 * to drop its owner, itself.  Postgres records no dependency of a row of
 * posthog_export.exports, so, like pglogical (an sql_drop event trigger
 * over its own dependency table), the extension watches the rest of the
 * commands with event triggers, which fire in every session, the library
 * loaded or not (they load it):
 *
 *   sql_drop           a dropped server that exports use: refused, or with
 *                      CASCADE the exports are dropped too (NOTICE each);
 *                      likewise a dropped type of an export (DROP TYPE);
 *                      DROP OWNED drops the exports whose type it dropped
 *   ddl_command_start  DROP OWNED BY a drops a's exports first, waiting
 *                      for their runs before Postgres takes any lock;
 *                      DROP EXTENSION posthog_export drops the exports'
 *                      types (they are not members of the extension)
 *   ddl_command_end    ALTER SERVER a RENAME TO b: exports of a now use b;
 *                      ALTER TYPE of an export's type may change its
 *                      owner, not its name or schema
 *
 * An export keeps its server's name, not its OID: the exports table is
 * dumped by pg_dump (and copied by pg_upgrade) with its values, and a
 * server's OID changes across both, its name does not.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/dependency.h"
#include "catalog/pg_type.h"
#include "commands/event_trigger.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/syscache.h"

#include "worker/worker.h"

PG_FUNCTION_INFO_V1(posthog_export_track_dependencies);

/*
 * One line per export for a DETAIL, as Postgres lists dependent objects:
 * its name, owner and server.
 */
static char *
export_list_detail(List *exports)
{
	StringInfoData s;
	ListCell   *lc;

	initStringInfo(&s);
	foreach(lc, exports)
	{
		PhxExport  *exp = lfirst(lc);

		if (s.len > 0)
			appendStringInfoChar(&s, '\n');
		appendStringInfo(&s, "export \"%s\" of role \"%s\" depends on server %s",
						 exp->name, phx_role_name(exp->owner), exp->server_name);
	}
	return s.data;
}

/* Drops an export a dropped object takes with it, as drop_export() would. */
static void
drop_with(PhxExport *exp, bool notice)
{
	if (notice)
		ereport(NOTICE,
				(errmsg("drop cascades to export \"%s\"", exp->name),
				 errdetail("Its runs and backfills are dropped with it; its table %s.%s is kept.",
						   quote_identifier(exp->schema_name), quote_identifier(exp->table_name))));
	/* as drop_export(): a run in flight finishes first */
	phx_lock_export_for_change(exp, "dropping");
	phx_export_delete(exp);
}

/* The behaviour (RESTRICT or CASCADE) of a DROP command. */
static DropBehavior
drop_behavior(Node *parsetree)
{
	if (IsA(parsetree, DropStmt))
		return ((DropStmt *) parsetree)->behavior;
	if (IsA(parsetree, DropOwnedStmt))
		return ((DropOwnedStmt *) parsetree)->behavior;
	return DROP_RESTRICT;
}

/*
 * sql_drop: for each dropped server that exports use, refuse the command
 * (RESTRICT, the default), or drop the exports too (CASCADE), as if they
 * were objects that depended on the server.
 */
static void
servers_dropped(Node *parsetree)
{
	DropBehavior behavior = drop_behavior(parsetree);
	List	   *servers = NIL;
	ListCell   *lc;

	if (SPI_execute("SELECT address_names[1] FROM pg_catalog.pg_event_trigger_dropped_objects() "
					"WHERE classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_foreign_server'::pg_catalog.regclass",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the dropped objects");
	for (uint64 i = 0; i < SPI_processed; i++)
		servers = lappend(servers, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));

	foreach(lc, servers)
	{
		const char *server = lfirst(lc);
		List	   *exports = phx_exports_using_server(server);
		ListCell   *e;

		if (exports == NIL)
			continue;
		if (behavior != DROP_CASCADE)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("cannot drop server %s because exports depend on it", server),
					 errdetail("%s", export_list_detail(exports)),
					 errhint("Move the exports to another server with posthog_export.alter_export(name, server => ...), "
							 "drop them with posthog_export.drop_export(name), or use DROP ... CASCADE to drop them too.")));
		foreach(e, exports)
			drop_with(lfirst(e), true);
	}
}

/*
 * sql_drop: a dropped type that stands for an export's owner.  DROP OWNED
 * drops the export with it (its exports were dropped at the start of the
 * command, so this finds only what that missed); DROP TYPE is refused
 * (RESTRICT) or drops the export too (CASCADE), as for a server; anything
 * else that reaches the type (DROP SCHEMA ... CASCADE) drops it too.
 */
static void
owner_types_dropped(Node *parsetree)
{
	DropBehavior behavior = drop_behavior(parsetree);
	bool		refuse = IsA(parsetree, DropStmt) && behavior != DROP_CASCADE;
	List	   *types = NIL;
	List	   *identities = NIL;
	ListCell   *lc,
			   *li;

	if (SPI_execute("SELECT objid, object_identity FROM pg_catalog.pg_event_trigger_dropped_objects() "
					"WHERE classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the dropped objects");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		types = lappend_oid(types, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
																	SPI_tuptable->tupdesc, 1, &isnull)));
		identities = lappend(identities, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2));
	}

	forboth(lc, types, li, identities)
	{
		PhxExport  *exp = phx_export_by_owner_type(lfirst_oid(lc));

		if (exp == NULL)
			continue;
		if (refuse)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("cannot drop type %s because export \"%s\" depends on it",
							(char *) lfirst(li), exp->name),
					 errdetail("The owner of the type is the owner of the export."),
					 errhint("Drop the export with posthog_export.drop_export(%s), or use DROP ... CASCADE to drop it too.",
							 quote_literal_cstr(exp->name))));
		drop_with(exp, !IsA(parsetree, DropOwnedStmt));
	}
}

/*
 * ddl_command_start of DROP OWNED BY role, ...: the exports of the roles
 * go first, with their runs, backfills and types, as the roles' tables go
 * with the command.  Their runs are waited for now, before the command
 * locks any table a run writes to.  A role the caller may not drop the
 * objects of is left to DROP OWNED, which refuses it and rolls this back.
 */
static void
drop_owned(DropOwnedStmt *stmt)
{
	ListCell   *lc;

	foreach(lc, stmt->roles)
	{
		Oid			role = get_rolespec_oid(lfirst(lc), false);
		ListCell   *e;

		if (!has_privs_of_role(GetUserId(), role))
			continue;
		foreach(e, phx_exports_owned_by(role))
			drop_with(lfirst(e), false);
	}
}

/*
 * ddl_command_start of DROP EXTENSION posthog_export: the exports' types
 * are not members of the extension (pg_dump must dump them), so they are
 * dropped here, with the command's RESTRICT or CASCADE, before the
 * extension takes the exports table with it.  Only for a caller who may
 * drop the extension; anyone else is refused by the command itself.
 */
static void
extension_dropping(Node *parsetree)
{
	DropStmt   *stmt;
	ListCell   *lc;

	if (!IsA(parsetree, DropStmt) || ((DropStmt *) parsetree)->removeType != OBJECT_EXTENSION)
		return;
	stmt = (DropStmt *) parsetree;
	foreach(lc, stmt->objects)
	{
		ListCell   *t;

		if (!IsA(lfirst(lc), String) || strcmp(strVal(lfirst(lc)), PHX_EXTENSION_NAME) != 0)
			continue;
		if (!pg_extension_ownercheck(get_extension_oid(PHX_EXTENSION_NAME, false), GetUserId()))
			return;
		foreach(t, phx_exports_owner_types())
		{
			ObjectAddress obj;

			if (!SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(lfirst_oid(t))))
				continue;
			ObjectAddressSet(obj, TypeRelationId, lfirst_oid(t));
			performDeletion(&obj, stmt->behavior, 0);
		}
	}
}

/* ddl_command_end of ALTER SERVER a RENAME TO b: the exports of a use b. */
static void
server_renamed(Node *parsetree)
{
	RenameStmt *stmt;

	if (!IsA(parsetree, RenameStmt))
		return;
	stmt = (RenameStmt *) parsetree;
	if (stmt->renameType != OBJECT_FOREIGN_SERVER || !IsA(stmt->object, String))
		return;
	phx_exports_rename_server(strVal(stmt->object), stmt->newname);
}

/*
 * ddl_command_end of ALTER TYPE: the type of an export keeps the name and
 * schema the extension gave it (a name another export's type could need
 * must stay free; its owner may still ALTER it otherwise, e.g. OWNER TO).
 */
static void
type_altered(void)
{
	List	   *types = NIL;
	ListCell   *lc;

	if (SPI_execute("SELECT objid FROM pg_catalog.pg_event_trigger_ddl_commands() "
					"WHERE classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_type'::pg_catalog.regclass",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the altered objects");
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		types = lappend_oid(types, DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[i],
																	SPI_tuptable->tupdesc, 1, &isnull)));
	}
	foreach(lc, types)
	{
		PhxExport  *exp = phx_export_by_owner_type(lfirst_oid(lc));
		char	   *now;

		if (exp == NULL)
			continue;
		now = phx_owner_type_misplaced(exp->owner_type, exp->export_id, exp->name);
		if (now != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("cannot rename type %s, or move it to another schema, because export \"%s\" depends on it",
							quote_qualified_identifier(PHX_SCHEMA_NAME,
													   phx_owner_type_name(exp->export_id, exp->name)),
							exp->name),
					 errdetail("The owner of the type is the owner of the export; its name and schema are the extension's."),
					 errhint("Change the export's owner with posthog_export.alter_export(%s, owner => ...) or ALTER TYPE ... OWNER TO.",
							 quote_literal_cstr(exp->name))));
	}
}

/*
 * track_dependencies(): the function of the extension's event triggers
 * (sql_drop; ddl_command_start of DROP OWNED and DROP EXTENSION;
 * ddl_command_end of ALTER SERVER and ALTER TYPE).  It does nothing
 * unless the extension here is at this library's version.
 */
Datum
posthog_export_track_dependencies(PG_FUNCTION_ARGS)
{
	EventTriggerData *trig;

	if (!CALLED_AS_EVENT_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("track_dependencies() can only be called by an event trigger")));
	trig = (EventTriggerData *) fcinfo->context;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (phx_catalog_is_current())
	{
		if (strcmp(trig->event, "sql_drop") == 0)
		{
			servers_dropped(trig->parsetree);
			owner_types_dropped(trig->parsetree);
		}
		else if (strcmp(trig->event, "ddl_command_start") == 0 && IsA(trig->parsetree, DropOwnedStmt))
			drop_owned((DropOwnedStmt *) trig->parsetree);
		else if (strcmp(trig->event, "ddl_command_start") == 0)
			extension_dropping(trig->parsetree);
		else if (strcmp(trig->event, "ddl_command_end") == 0 && trig->tag == CMDTAG_ALTER_TYPE)
			type_altered();
		else if (strcmp(trig->event, "ddl_command_end") == 0)
			server_renamed(trig->parsetree);
	}
	SPI_finish();
	PG_RETURN_VOID();
}
