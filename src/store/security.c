/*-------------------------------------------------------------------------
 *
 * security.c
 *		Whose identity the extension's work runs under.
 *
 * Catalog writes run as the catalog's owner, and destination work as the
 * export's owner, each with search_path pinned, the way a SECURITY
 * DEFINER function with a pinned search_path would.  An export's own code
 * (triggers, defaults ...) may only ever run in its owner's own session:
 * phx_session_is_owner() says whether this is one, and
 * phx_owner_session_problem() whether a background worker can open one.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_class.h"
#include "miscadmin.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "store/store.h"

/*
 * Runs what follows as "role", with search_path = pg_catalog, pg_temp,
 * the way a SECURITY DEFINER function with a pinned search_path would.
 * An error unwinds both with the (sub)transaction; otherwise phx_restore()
 * must be called before the transaction ends.
 */
void
phx_become(Oid role, PhxRoleSwitch *sw)
{
	GetUserIdAndSecContext(&sw->save_userid, &sw->save_sec_context);
	sw->save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp",
							 PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	SetUserIdAndSecContext(role, sw->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

void
phx_restore(PhxRoleSwitch *sw)
{
	AtEOXact_GUC(true, sw->save_nestlevel);
	SetUserIdAndSecContext(sw->save_userid, sw->save_sec_context);
}

/* The owner of the extension's tables, i.e. the role that created it. */
Oid
phx_catalog_owner(void)
{
	Oid			nsp = get_namespace_oid(PHX_SCHEMA_NAME, false);
	Oid			relid = get_relname_relid("exports", nsp);
	HeapTuple	tup;
	Oid			owner;

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_TABLE),
				 errmsg("table posthog_export.exports is missing"),
				 errhint("Reinstall the extension: DROP EXTENSION posthog_export; CREATE EXTENSION posthog_export;")));
	tup = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tup))->relowner;
	ReleaseSysCache(tup);
	return owner;
}

/*
 * SPI in a non-atomic context needs an outer snapshot: a CALL has its
 * portal's, a background worker has none, so one is pushed for the
 * statement and popped before any commit.
 */
bool
phx_snapshot_ensure(void)
{
	if (ActiveSnapshotSet())
		return false;
	PushActiveSnapshot(GetTransactionSnapshot());
	return true;
}

void
phx_snapshot_release(bool pushed)
{
	if (pushed)
		PopActiveSnapshot();
}

/*
 * Whether this session is the owner's own: the session user and the
 * current user are the owner, outside any security-restricted operation
 * or SECURITY DEFINER function.  Only then may the owner's code run here;
 * it could not gain anything (RESET ROLE leads back to the owner).
 */
bool
phx_session_is_owner(Oid owner)
{
	return GetUserId() == owner && GetSessionUserId() == owner &&
		!InSecurityRestrictedOperation() && !InLocalUserIdChange();
}

/* A role's name for messages, also when it is gone. */
char *
phx_role_name(Oid role)
{
	char	   *name = GetUserNameFromId(role, true);

	return name ? name : psprintf("role with OID %u", role);
}

/*
 * Whether a background worker can connect as "owner".  Before
 * PostgreSQL 17 a worker cannot connect as a role without LOGIN; the
 * message says what to do.  Returns NULL when it can, else the reason.
 */
char *
phx_owner_session_problem(Oid owner)
{
	HeapTuple	tup = SearchSysCache1(AUTHOID, ObjectIdGetDatum(owner));
	char	   *problem = NULL;

	if (!HeapTupleIsValid(tup))
		return psprintf("its owner (role with OID %u) does not exist", owner);
#if PG_VERSION_NUM < 170000
	if (!((Form_pg_authid) GETSTRUCT(tup))->rolcanlogin)
		problem = psprintf("its owner \"%s\" cannot log in, and an export runs in a session of its owner",
						   NameStr(((Form_pg_authid) GETSTRUCT(tup))->rolname));
#endif
	ReleaseSysCache(tup);
	return problem;
}

