/*-------------------------------------------------------------------------
 *
 * response.c
 *		Parsing of the query API's JSON response into rows of cells, and of
 *		its error bodies.
 *
 * The response is parsed in place: strings are de-escaped into the body
 * buffer itself (see json_scan.c), so a page costs one buffer plus one
 * cell array, and no tree of JSON nodes is ever built.  Only the members
 * a client needs (results, columns, types, hasMore) are kept; the rest are
 * skipped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "posthog/posthog.h"

/* Parses one cell of a row. */
static void
parse_cell(PhxJsonCursor *c, PhxCell *cell)
{
	char	   *start;

	phx_json_skip_ws(c);
	if (c->p >= c->end)
		phx_json_fail(c, "unexpected end of data");
	switch (*c->p)
	{
		case '"':
			cell->kind = PHX_CELL_STRING;
			cell->val = phx_json_parse_string(c, &cell->len);
			return;
		case 'n':
			phx_json_skip_value(c);
			cell->kind = PHX_CELL_NULL;
			cell->val = NULL;
			cell->len = 0;
			return;
		case 't':
		case 'f':
			start = phx_json_skip_value(c);
			cell->kind = PHX_CELL_BOOL;
			break;
		case '[':
		case '{':
			start = phx_json_skip_value(c);
			cell->kind = PHX_CELL_JSON;
			break;
		default:
			start = phx_json_skip_value(c);
			cell->kind = PHX_CELL_NUMBER;
			break;
	}
	/*
	 * All cell->len bytes, not pnstrdup(), which stops at a NUL: phx_json_skip_value()
	 * lets a raw NUL through inside a nested string, and the models read
	 * cell->len bytes (phx_cell_jsonb, which then refuses the NUL).
	 */
	cell->len = c->p - start;
	cell->val = palloc(cell->len + 1);
	memcpy(cell->val, start, cell->len);
	cell->val[cell->len] = '\0';
}

static void
parse_columns(PhxJsonCursor *c, PhxPage *page)
{
	int			cap = 16;

	page->columns = palloc(sizeof(char *) * cap);
	page->ncolumns = 0;
	phx_json_expect(c, '[', "expected array for \"columns\"");
	if (phx_json_accept(c, ']'))
		return;
	do
	{
		int			len;

		phx_json_skip_ws(c);
		if (c->p >= c->end || *c->p != '"')
			phx_json_fail(c, "expected a column name");
		if (page->ncolumns == cap)
		{
			cap *= 2;
			page->columns = repalloc(page->columns, sizeof(char *) * cap);
		}
		page->columns[page->ncolumns++] = phx_json_parse_string(c, &len);
	} while (phx_json_accept(c, ','));
	phx_json_expect(c, ']', "expected ] after columns");
}

/*
 * "types": [[name, ClickHouse type], ...], one per column.  Kept as the
 * type names in order (page->types); checked against "columns" once both
 * are known.
 */
static void
parse_types(PhxJsonCursor *c, PhxPage *page)
{
	int			cap = 16;

	page->types = palloc(sizeof(char *) * cap);
	page->ntypes = 0;
	phx_json_expect(c, '[', "expected array for \"types\"");
	if (phx_json_accept(c, ']'))
		return;
	do
	{
		int			len;

		phx_json_expect(c, '[', "expected a [name, type] pair in \"types\"");
		phx_json_skip_ws(c);
		if (c->p >= c->end || *c->p != '"')
			phx_json_fail(c, "expected a column name in \"types\"");
		(void) phx_json_parse_string(c, &len);
		phx_json_expect(c, ',', "expected , in a [name, type] pair");
		phx_json_skip_ws(c);
		if (c->p >= c->end || *c->p != '"')
			phx_json_fail(c, "expected a type name in \"types\"");
		if (page->ntypes == cap)
		{
			cap *= 2;
			page->types = repalloc(page->types, sizeof(char *) * cap);
		}
		page->types[page->ntypes++] = phx_json_parse_string(c, &len);
		phx_json_expect(c, ']', "expected ] after a [name, type] pair");
	} while (phx_json_accept(c, ','));
	phx_json_expect(c, ']', "expected ] after types");
}

/*
 * Rows are parsed into a growing array of cells whose row width is the
 * width of the first row; "columns" may come after "results" in the body,
 * so the check against it is made once both are known.
 */
static void
parse_results(PhxJsonCursor *c, PhxPage *page, int *width_out)
{
	int			cap = 1024;
	int			ncells = 0;
	int			width = -1;

	page->cells = palloc(sizeof(PhxCell) * cap);
	page->nrows = 0;
	phx_json_expect(c, '[', "expected array for \"results\"");
	if (phx_json_accept(c, ']'))
	{
		*width_out = 0;
		return;
	}
	do
	{
		int			n = 0;

		phx_json_expect(c, '[', "expected a row array");
		if (!phx_json_accept(c, ']'))
		{
			do
			{
				if (ncells == cap)
				{
					cap *= 2;
					page->cells = repalloc_huge(page->cells, sizeof(PhxCell) * cap);
				}
				parse_cell(c, &page->cells[ncells++]);
				n++;
			} while (phx_json_accept(c, ','));
			phx_json_expect(c, ']', "expected , or ] in row");
		}
		if (width < 0)
			width = n;
		else if (n != width)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("invalid response from PostHog: row %d has %d values, row 1 has %d",
							page->nrows + 1, n, width)));
		page->nrows++;
	} while (phx_json_accept(c, ','));
	phx_json_expect(c, ']', "expected , or ] after row");
	*width_out = width;
}

/*
 * Parses a 200 response of the query API.  "body" is modified (strings
 * are de-escaped in place) and must stay alive as long as the page.
 */
PhxPage *
phx_parse_page(char *body, size_t len)
{
	PhxJsonCursor	c;
	PhxPage    *page = palloc0(sizeof(PhxPage));
	bool		have_results = false;
	bool		have_columns = false;
	int			width = 0;

	phx_json_cursor_init(&c, body, len);
	phx_json_expect(&c, '{', "expected a JSON object");
	if (!phx_json_accept(&c, '}'))
	{
		do
		{
			char	   *key = phx_json_member_key(&c);

			if (strcmp(key, "results") == 0)
			{
				parse_results(&c, page, &width);
				have_results = true;
			}
			else if (strcmp(key, "columns") == 0)
			{
				parse_columns(&c, page);
				have_columns = true;
			}
			else if (strcmp(key, "types") == 0)
			{
				phx_json_skip_ws(&c);
				if (c.p < c.end && *c.p == 'n')
					phx_json_skip_value(&c);	/* null: no types */
				else
					parse_types(&c, page);
			}
			else if (strcmp(key, "hasMore") == 0)
			{
				phx_json_skip_ws(&c);
				page->has_more = (c.p < c.end && *c.p == 't');
				phx_json_skip_value(&c);
			}
			else
				phx_json_skip_value(&c);
		} while (phx_json_accept(&c, ','));
		phx_json_expect(&c, '}', "expected , or } in object");
	}
	phx_json_skip_ws(&c);
	if (c.p != c.end)
		phx_json_fail(&c, "trailing data after the JSON object");

	if (!have_results || !have_columns)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("invalid response from PostHog: \"%s\" is missing",
						have_results ? "columns" : "results")));
	if (page->nrows > 0 && width != page->ncolumns)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("invalid response from PostHog: rows have %d values but there are %d columns",
						width, page->ncolumns)));
	if (page->ntypes != 0 && page->ntypes != page->ncolumns)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("invalid response from PostHog: %d types for %d columns",
						page->ntypes, page->ncolumns)));
	return page;
}

/*
 * Parses a 200 body with "parser"; a body that is not the JSON we expect
 * (cut off by a proxy, say) returns NULL with the reason, so that it can
 * be retried.  Every such reason is raised as ERRCODE_FDW_INVALID_DATA_TYPE;
 * any other error (out of memory) is not the body's fault, and is thrown on.
 */
void *
phx_try_parse(PhxBodyParser parser, char *body, size_t len, char **problem)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	void	   *volatile result = NULL;

	PG_TRY();
	{
		result = parser(body, len);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_FDW_INVALID_DATA_TYPE)
			PG_RE_THROW();
		FlushErrorState();
		*problem = edata->message;
	}
	PG_END_TRY();
	return result;
}

/*
 * Reads "code" and "detail" from an error body of PostHog's shape
 * {"type": ..., "code": ..., "detail": ..., "attr": ...}.  Returns false
 * when the body is not such an object; never throws.
 */
bool
phx_parse_error_body(char *body, size_t len, char **code, char **detail)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	volatile bool ok = true;

	PG_TRY();
	{
		PhxJsonCursor	c;

		phx_json_cursor_init(&c, body, len);
		phx_json_expect(&c, '{', "expected a JSON object");
		if (!phx_json_accept(&c, '}'))
		{
			do
			{
				char	   *key = phx_json_member_key(&c);

				phx_json_skip_ws(&c);
				if (c.p < c.end && *c.p == '"' &&
					(strcmp(key, "code") == 0 || strcmp(key, "detail") == 0))
				{
					int			vlen;
					char	   *val = phx_json_parse_string(&c, &vlen);

					if (key[0] == 'c')
						*code = pstrdup(val);
					else
						*detail = pstrdup(val);
				}
				else
					phx_json_skip_value(&c);
			} while (phx_json_accept(&c, ','));
		}
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		FlushErrorState();
		ok = (*code != NULL || *detail != NULL);
	}
	PG_END_TRY();
	return ok;
}
