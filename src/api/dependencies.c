/*-------------------------------------------------------------------------
 *
 * dependencies.c
 *		What an export depends on, kept consistent when its server or its
 *		owner changes: ALTER SERVER ... RENAME, DROP SERVER, DROP OWNED,
 *		REASSIGN OWNED and DROP ROLE.
 *
 * Postgres records such dependencies in pg_depend and pg_shdepend, but
 * only between catalog objects: an entry whose dependent is a row of
 * posthog_export.exports makes DROP SERVER, DROP OWNED and DROP ROLE fail
 * on "unrecognized object class".  So, like pglogical (an sql_drop event
 * trigger over its own dependency table), the extension watches the
 * commands itself:
 *
 *   event triggers (fire in every session, the library loaded or not)
 *     sql_drop           a dropped server that exports use: refused, or with
 *                        CASCADE the exports are dropped too (NOTICE each)
 *     ddl_command_start  DROP OWNED BY a drops a's exports (and their runs)
 *     ddl_command_end    ALTER SERVER a RENAME TO b: exports of a now use b
 *
 *   ProcessUtility_hook (in sessions that loaded the library: all of them
 *   with shared_preload_libraries; these two commands fire no event trigger)
 *     REASSIGN OWNED BY a TO b   a's exports move to b
 *     DROP ROLE a                refused while a owns exports here
 *
 * An export keeps its server's name, not its OID: the exports table is
 * dumped by pg_dump (and copied by pg_upgrade) with its values, and a
 * server's OID changes across both, its name does not.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/dbcommands.h"
#include "commands/event_trigger.h"
#include "executor/spi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "tcop/utility.h"
#include "utils/acl.h"
#include "utils/builtins.h"

#include "worker/worker.h"

PG_FUNCTION_INFO_V1(posthog_export_track_dependencies);

static ProcessUtility_hook_type prev_process_utility = NULL;

/*
 * One line per export for a DETAIL, as Postgres lists dependent objects:
 * its name, owner and server (for DROP SERVER), or its name and server
 * (for DROP ROLE of its owner).
 */
static char *
export_list_detail(List *exports, bool for_server)
{
	StringInfoData s;
	ListCell   *lc;

	initStringInfo(&s);
	foreach(lc, exports)
	{
		PhxExport  *exp = lfirst(lc);

		if (s.len > 0)
			appendStringInfoChar(&s, '\n');
		if (for_server)
			appendStringInfo(&s, "export \"%s\" of role \"%s\" depends on server %s",
							 exp->name, phx_role_name(exp->owner), exp->server_name);
		else
			appendStringInfo(&s, "owner of export \"%s\" (server %s)", exp->name, exp->server_name);
	}
	return s.data;
}

/*
 * sql_drop: for each dropped server that exports use, refuse the command
 * (RESTRICT, the default), or drop the exports too (CASCADE), as if they
 * were objects that depended on the server.
 */
static void
servers_dropped(Node *parsetree)
{
	DropBehavior behavior = DROP_RESTRICT;
	List	   *servers = NIL;
	ListCell   *lc;

	if (IsA(parsetree, DropStmt))
		behavior = ((DropStmt *) parsetree)->behavior;
	else if (IsA(parsetree, DropOwnedStmt))
		behavior = ((DropOwnedStmt *) parsetree)->behavior;

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
					 errdetail("%s", export_list_detail(exports, true)),
					 errhint("Move the exports to another server with posthog_export.alter_export(name, server => ...), "
							 "drop them with posthog_export.drop_export(name), or use DROP ... CASCADE to drop them too.")));
		foreach(e, exports)
		{
			PhxExport  *exp = lfirst(e);

			ereport(NOTICE,
					(errmsg("drop cascades to export \"%s\"", exp->name),
					 errdetail("Its runs and backfills are dropped with it; its table %s.%s is kept.",
							   quote_identifier(exp->schema_name), quote_identifier(exp->table_name))));
			/* as drop_export(): a run in flight finishes first */
			phx_lock_export_for_change(exp, "dropping");
			phx_export_delete(exp);
		}
	}
}

/*
 * ddl_command_start of DROP OWNED BY role, ...: the exports of the roles
 * go first, with their runs and backfills, as the roles' tables go with
 * the command.  A role the caller may not drop the objects of is left to
 * DROP OWNED, which refuses it and rolls this back.
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
		{
			/* as drop_export(): a run in flight finishes first */
			phx_lock_export_for_change(lfirst(e), "dropping");
			phx_export_delete(lfirst(e));
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
 * track_dependencies(): the function of the extension's event triggers
 * (sql_drop, ddl_command_start of DROP OWNED, ddl_command_end of ALTER
 * SERVER).  It does nothing unless the extension here is at this
 * library's version.
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
			servers_dropped(trig->parsetree);
		else if (strcmp(trig->event, "ddl_command_start") == 0 && IsA(trig->parsetree, DropOwnedStmt))
			drop_owned((DropOwnedStmt *) trig->parsetree);
		else if (strcmp(trig->event, "ddl_command_end") == 0)
			server_renamed(trig->parsetree);
	}
	SPI_finish();
	PG_RETURN_VOID();
}

/*
 * DROP ROLE: refused while a role to drop owns exports in this database,
 * as Postgres refuses it while the role owns objects.  Checked only for a
 * caller allowed to drop roles, so others learn nothing of the exports.
 */
static void
check_drop_role(DropRoleStmt *stmt)
{
	ListCell   *lc;

	if (!has_createrole_privilege(GetUserId()))
		return;
	foreach(lc, stmt->roles)
	{
		RoleSpec   *spec = lfirst(lc);
		Oid			role;
		List	   *exports;

		if (spec->roletype != ROLESPEC_CSTRING)
			continue;			/* DROP ROLE refuses CURRENT_USER and the like */
		role = get_role_oid(spec->rolename, true);
		if (!OidIsValid(role))
			continue;
		exports = phx_exports_owned_by(role);
		if (exports != NIL)
			ereport(ERROR,
					(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
					 errmsg("role \"%s\" cannot be dropped because some objects depend on it",
							spec->rolename),
					 errdetail("%s", export_list_detail(exports, false)),
					 errhint("Give them to another role with REASSIGN OWNED BY %s TO ..., "
							 "or drop them with DROP OWNED BY %s (in database \"%s\").",
							 quote_identifier(spec->rolename), quote_identifier(spec->rolename),
							 get_database_name(MyDatabaseId))));
	}
}

/* REASSIGN OWNED BY a, ... TO b, once Postgres has done it: the exports follow. */
static void
reassign_owned(ReassignOwnedStmt *stmt)
{
	Oid			new_owner = get_rolespec_oid(stmt->newrole, false);
	ListCell   *lc;

	foreach(lc, stmt->roles)
		phx_exports_reassign(get_rolespec_oid(lfirst(lc), false), new_owner);
}

/* Runs fn(stmt) with SPI, if the extension here is at this library's version. */
static void
with_catalog(void (*fn) (Node *), Node *stmt)
{
	if (!IsTransactionState())
		return;
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (phx_catalog_is_current())
		fn(stmt);
	SPI_finish();
}

static void
check_drop_role_node(Node *n)
{
	check_drop_role((DropRoleStmt *) n);
}

static void
reassign_owned_node(Node *n)
{
	reassign_owned((ReassignOwnedStmt *) n);
}

/* The hook: DROP ROLE checked before, REASSIGN OWNED followed after. */
static void
phx_process_utility(PlannedStmt *pstmt, const char *queryString, bool readOnlyTree,
					ProcessUtilityContext context, ParamListInfo params,
					QueryEnvironment *queryEnv, DestReceiver *dest, QueryCompletion *qc)
{
	Node	   *parsetree = pstmt->utilityStmt;

	if (IsA(parsetree, DropRoleStmt))
		with_catalog(check_drop_role_node, parsetree);

	if (prev_process_utility)
		prev_process_utility(pstmt, queryString, readOnlyTree, context, params,
							 queryEnv, dest, qc);
	else
		standard_ProcessUtility(pstmt, queryString, readOnlyTree, context, params,
								queryEnv, dest, qc);

	if (IsA(parsetree, ReassignOwnedStmt))
		with_catalog(reassign_owned_node, parsetree);
}

/* Called by _PG_init, whenever the library is loaded. */
void
phx_dependency_hooks_install(void)
{
	prev_process_utility = ProcessUtility_hook;
	ProcessUtility_hook = phx_process_utility;
}
