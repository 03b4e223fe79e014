/*-------------------------------------------------------------------------
 *
 * registry.c
 *		The export models, by name.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "models/models.h"

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
	/* in the catalog's list of models; its run side is not built yet */
	if (strcmp(name, "hogql") == 0)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("the hogql model is not implemented yet")));
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown model \"%s\"", name),
			 errhint("Valid models are events, persons and sessions.")));
	return NULL;				/* keep compiler quiet */
}
