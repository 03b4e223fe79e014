/* TEMPORARY (removed before the branch is handed over): a handler with only ImportForeignSchema, to test import. */
#include "postgres.h"

#include "fmgr.h"
#include "foreign/fdwapi.h"

#include "fdw/fdw.h"

PG_FUNCTION_INFO_V1(posthog_export_fdw_handler_stub);

Datum
posthog_export_fdw_handler_stub(PG_FUNCTION_ARGS)
{
	FdwRoutine *routine = makeNode(FdwRoutine);

	routine->ImportForeignSchema = phx_import_foreign_schema;
	PG_RETURN_POINTER(routine);
}
