/*-------------------------------------------------------------------------
 *
 * posthog_export.c
 *		Module entry point of the posthog_export extension, and the
 *		registry of export models.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "mb/pg_wchar.h"

#include "posthog_export.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* Settings, and (when preloaded) shared memory and the scheduler's launcher. */
void
_PG_init(void)
{
	phx_scheduler_init();
}

static const PhxModel *const models[] = {
	&phx_events_model,
	&phx_persons_model,
	&phx_sessions_model,
	NULL
};

const PhxModel *
phx_model_by_name(const char *name)
{
	for (int i = 0; models[i]; i++)
		if (strcmp(models[i]->name, name) == 0)
			return models[i];
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown model \"%s\"", name),
			 errhint("Valid models are events, persons and sessions.")));
	return NULL;				/* keep compiler quiet */
}

/*
 * Response text is UTF-8 and is written without conversion, so the
 * database must be UTF8 (as jsonb needs for \uXXXX escapes anyway).
 */
void
phx_check_database_encoding(void)
{
	if (GetDatabaseEncoding() != PG_UTF8)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("posthog_export needs a database with UTF8 encoding"),
				 errdetail("This database uses %s.", GetDatabaseEncodingName())));
}
