/*-------------------------------------------------------------------------
 *
 * ownership.c
 *		Who owns an export: the owner of a type that stands for it.
 *
 * A row of posthog_export.exports is not an object pg_shdepend can point
 * at, so each export has a small object that is one: an empty enum type
 * in the extension's schema (posthog_export."export <name>", or
 * "export_<id>" when the name is too long for an identifier), created
 * with the export and dropped with it.  Its owner IS the export's owner
 * (exports.owner_type holds its OID; every read of the owner goes through
 * pg_type), so Postgres's own ownership machinery acts on exports in every
 * session, whether this library is loaded or not:
 *
 *   REASSIGN OWNED BY a TO b    moves the type, so the export is b's
 *   DROP OWNED BY a             drops the type (the event triggers of
 *                               api/dependencies.c drop the export too)
 *   DROP ROLE a                 refused while a owns the type, from any
 *                               database ("owner of type ...")
 *   ALTER TYPE ... OWNER TO b   a change of owner, with Postgres's checks
 *
 * Nobody but its owner (and superusers) may use the type: USAGE is
 * revoked from PUBLIC, so no other role can make an object depend on it
 * and hold back the owner's DROP OWNED or drop_export().  Only the
 * extension creates these types, always new ones: an existing type of the
 * name is an error, never adopted.
 *
 * pg_dump dumps the types (they are not members of the extension) with
 * their owners, and exports.owner_type as their names, so a restore links
 * each export to its type again although the OIDs change.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/dependency.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/typecmds.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/syscache.h"

#include "store/catalog_spi.h"

/* The name of the type that stands for the owner of export export_id named "name". */
char *
phx_owner_type_name(int32 export_id, const char *name)
{
	char	   *type_name = psprintf("export %s", name);

	/* an export's name is unique, but may not fit in an identifier */
	if (strlen(type_name) >= NAMEDATALEN)
		type_name = psprintf("export_%d", export_id);
	return type_name;
}

/*
 * Creates the type of a new export, owned by "owner"; returns its OID.
 * It is created as the catalog's owner (who may create in the schema),
 * closed to PUBLIC, then given to the owner, which needs no CREATE there.
 */
Oid
phx_owner_type_create(int32 export_id, const char *name, Oid owner)
{
	char	   *type_name = phx_owner_type_name(export_id, name);
	char	   *qualified = quote_qualified_identifier(PHX_SCHEMA_NAME, type_name);
	Oid			nsp = get_namespace_oid(PHX_SCHEMA_NAME, false);
	Oid			type;

	if (OidIsValid(GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
								   CStringGetDatum(type_name), ObjectIdGetDatum(nsp))))
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("cannot create export \"%s\" because type %s already exists", name, qualified),
				 errdetail("The owner of an export is the owner of a type of that name, which only the extension creates."),
				 errhint("Drop that type if it is left over, or choose another name for the export.")));

	phx_catalog_exec(psprintf("CREATE TYPE %s AS ENUM ()", qualified), NULL);
	phx_catalog_exec(psprintf("REVOKE ALL ON TYPE %s FROM PUBLIC", qualified), NULL);
	phx_catalog_exec(psprintf("COMMENT ON TYPE %s IS %s", qualified,
							  quote_literal_cstr(psprintf("its owner is the owner of export \"%s\" "
														  "(REASSIGN OWNED moves the export, DROP OWNED drops it)",
														  name))),
					 NULL);
	type = GetSysCacheOid2(TYPENAMENSP, Anum_pg_type_oid,
						   CStringGetDatum(type_name), ObjectIdGetDatum(nsp));
	if (!OidIsValid(type))
		elog(ERROR, "type %s was not created", qualified);
	phx_owner_type_set_owner(type, owner);
	return type;
}

/* Gives the type to "owner" (the caller has checked that it may). */
void
phx_owner_type_set_owner(Oid type, Oid owner)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(type));
	Oid			current;

	if (!HeapTupleIsValid(tup))
		elog(ERROR, "cache lookup failed for type %u", type);
	current = ((Form_pg_type) GETSTRUCT(tup))->typowner;
	ReleaseSysCache(tup);
	/* as ALTER TYPE ... OWNER TO: the owner, its ACL, pg_shdepend */
	if (current != owner)
		AlterTypeOwner_oid(type, owner, true);
}

/*
 * Drops the type of an export being dropped, unless it is gone already
 * (DROP OWNED or DROP TYPE dropped it first).  Another object that uses
 * it (only its owner or a superuser can make one) holds the drop back, as
 * for any type.
 */
void
phx_owner_type_drop(Oid type)
{
	ObjectAddress obj;

	if (!OidIsValid(type) || !SearchSysCacheExists1(TYPEOID, ObjectIdGetDatum(type)))
		return;
	ObjectAddressSet(obj, TypeRelationId, type);
	performDeletion(&obj, DROP_RESTRICT, 0);
}

/*
 * Whether the type of export export_id named "name" still has the name
 * and schema the extension gave it; NULL if so, else its name now.
 */
char *
phx_owner_type_misplaced(Oid type, int32 export_id, const char *name)
{
	HeapTuple	tup = SearchSysCache1(TYPEOID, ObjectIdGetDatum(type));
	Form_pg_type t;
	char	   *now = NULL;

	if (!HeapTupleIsValid(tup))
		return NULL;
	t = (Form_pg_type) GETSTRUCT(tup);
	if (t->typnamespace != get_namespace_oid(PHX_SCHEMA_NAME, false) ||
		strcmp(NameStr(t->typname), phx_owner_type_name(export_id, name)) != 0)
		now = quote_qualified_identifier(get_namespace_name(t->typnamespace), NameStr(t->typname));
	ReleaseSysCache(tup);
	return now;
}
