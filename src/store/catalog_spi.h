/*-------------------------------------------------------------------------
 *
 * catalog_spi.h
 *		Running statements on the extension's own tables, for the catalog
 *		files of store/ only (catalog.c, runs.c, ownership.c): every statement runs as
 *		the catalog's owner with search_path pinned, so this stays out of
 *		store.h.
 *
 *-------------------------------------------------------------------------
 */
#ifndef PHX_CATALOG_SPI_H
#define PHX_CATALOG_SPI_H

#include "store/store.h"

/* The most parameters one catalog statement takes (phx_export_insert). */
#define CATALOG_MAX_ARGS 26

/*
 * The parameters of one catalog statement, $1 ... $n in the order they
 * are added: each function states its SQL and its values, nothing else.
 */
typedef struct CatalogArgs
{
	int			n;
	Oid			types[CATALOG_MAX_ARGS];
	Datum		values[CATALOG_MAX_ARGS];
	char		nulls[CATALOG_MAX_ARGS];
} CatalogArgs;

extern void phx_catalog_arg(CatalogArgs *args, Oid type, Datum value, bool isnull);
extern void phx_catalog_arg_text(CatalogArgs *args, const char *s);
extern int	phx_catalog_exec(const char *sql, CatalogArgs *args);
extern char *phx_catalog_get_text(HeapTuple tup, TupleDesc desc, int col);
extern List *phx_catalog_get_text_array(HeapTuple tup, TupleDesc desc, int col);
extern List *phx_catalog_get_named_texts(HeapTuple tup, TupleDesc desc, int col, bool json_values);
extern void phx_catalog_arg_named_texts(CatalogArgs *args, List *list, bool json_values);
extern void phx_catalog_arg_text_list(CatalogArgs *args, List *list);

#endif							/* PHX_CATALOG_SPI_H */
