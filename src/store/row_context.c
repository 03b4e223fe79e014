/*-------------------------------------------------------------------------
 *
 * row_context.c
 *		The error context of a row being written: which export, which page,
 *		which row and its key, so an error in a trigger, a constraint or a
 *		conversion names the row PostHog sent.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "store/store.h"

static void
row_error_callback(void *arg)
{
	PhxRowContext *rc = (PhxRowContext *) arg;

	if (rc->key)
		errcontext("%s %s (row %d of page %d) of export \"%s\"",
				   rc->what, rc->key, rc->row + 1, rc->page_no, rc->export_name);
	else
		errcontext("row %d of page %d of export \"%s\"",
				   rc->row + 1, rc->page_no, rc->export_name);
}

/* Names the row being converted in any error raised until the pop. */
void
phx_row_context_push(PhxRowContext *rc, const char *what, const char *export_name, int page_no)
{
	rc->what = what;
	rc->export_name = export_name;
	rc->page_no = page_no;
	rc->row = 0;
	rc->key = NULL;
	rc->errcb.callback = row_error_callback;
	rc->errcb.arg = rc;
	rc->errcb.previous = error_context_stack;
	error_context_stack = &rc->errcb;
}

void
phx_row_context_pop(PhxRowContext *rc)
{
	error_context_stack = rc->errcb.previous;
}
