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
	/* its columns are per export: phx_model_for_export() */
	if (strcmp(name, "hogql") == 0)
		return &phx_hogql_model_proto;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("unknown model \"%s\"", name),
			 errhint("Valid models are events, persons, sessions and hogql.")));
	return NULL;				/* keep compiler quiet */
}

/*
 * The model an export runs with: the built-in model of its name, or, for
 * the hogql model, one built (palloc'd) from the export's own columns.
 */
const PhxModel *
phx_model_for_export(PhxExport *exp)
{
	if (strcmp(exp->model, "hogql") == 0)
		return phx_hogql_model(exp);
	return phx_model_by_name(exp->model);
}
