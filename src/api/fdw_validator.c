/*-------------------------------------------------------------------------
 *
 * fdw_validator.c
 *		The validator of the posthog_export foreign data wrapper.
 *
 * Every option is checked where it is set, at CREATE/ALTER SERVER and
 * USER MAPPING time, against the one option table of
 * posthog/server_options.c, which also reads them back for a run.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/reloptions.h"
#include "fmgr.h"

#include "posthog/posthog.h"

PG_FUNCTION_INFO_V1(posthog_export_fdw_validator);

Datum
posthog_export_fdw_validator(PG_FUNCTION_ARGS)
{
	phx_validate_options(untransformRelOptions(PG_GETARG_DATUM(0)), PG_GETARG_OID(1));
	PG_RETURN_VOID();
}
