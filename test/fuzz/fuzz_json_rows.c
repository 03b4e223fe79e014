/*-------------------------------------------------------------------------
 *
 * fuzz_json_rows.c
 *		libFuzzer harness for the query API response parser (json_rows.c):
 *		phx_parse_page(), phx_parse_error_body() and the JSON string parser
 *		that property text goes through.  Any input must either parse or
 *		raise an ERROR (caught here); a crash, a sanitizer report or an
 *		uncaught error is a bug.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "posthog/posthog.h"

extern void fuzz_free_all(void);

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sigjmp_buf	jb;
	char	   *buf;

	/* the parser works in place on a NUL-terminated buffer, as in the server */
	buf = palloc(size + 1);
	memcpy(buf, data, size);
	buf[size] = '\0';
	PG_exception_stack = &jb;
	if (sigsetjmp(jb, 0) == 0)
	{
		PhxPage    *page = phx_parse_page(buf, size);

		/*
		 * walk every cell as a model would: property text is JSON, whose
		 * strings go through the same string parser
		 */
		for (int r = 0; r < page->nrows; r++)
			for (int c = 0; c < page->ncolumns; c++)
			{
				PhxCell    *cell = PHX_CELL(page, r, c);
				char	   *p;
				char	   *end;

				if (cell->kind != PHX_CELL_STRING && cell->kind != PHX_CELL_JSON)
					continue;
				p = cell->val;
				end = cell->val + cell->len;
				while ((p = memchr(p, '"', end - p)) != NULL)
				{
					const char *problem;
					char	   *after;
					int			n;
					char	   *s = phx_json_string(p, end, &after, &n, &problem);

					if (after < p || after > end)
						abort();
					if (s != NULL && (n < 0 || s[n] != '\0'))
						abort();
					if (s == NULL)
						break;
					p = after;
				}
			}
	}
	PG_exception_stack = &jb;
	if (sigsetjmp(jb, 0) == 0)
	{
		char	   *code = NULL;
		char	   *detail = NULL;

		memcpy(buf, data, size);
		buf[size] = '\0';
		(void) phx_parse_error_body(buf, size, &code, &detail);
	}
	PG_exception_stack = NULL;
	fuzz_free_all();
	return 0;
}
