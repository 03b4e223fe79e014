/*-------------------------------------------------------------------------
 *
 * json_rows.c
 *		Parsing of the query API's JSON response into rows of cells, and of
 *		its error bodies.
 *
 * The response is parsed in place: strings are de-escaped into the body
 * buffer itself (an unescaped string is never longer than its escaped
 * form), so a page costs one buffer plus one cell array, and no tree of
 * JSON nodes is ever built.  Only the members a client needs (results,
 * columns, hasMore) are kept; the rest are skipped.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "posthog/posthog.h"

typedef struct JsonCursor
{
	char	   *p;
	char	   *end;
	char	   *start;
	int			depth;
} JsonCursor;

#define PHX_MAX_JSON_DEPTH 1000

static void json_fail(JsonCursor *c, const char *what) pg_attribute_noreturn();

static void
json_fail(JsonCursor *c, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
			 errmsg("invalid response from PostHog: %s at byte %ld", what,
					(long) (c->p - c->start)),
			 errhint("The response may have been cut off by a proxy or a dropped connection.")));
}

static inline void
skip_ws(JsonCursor *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\n' || *c->p == '\r' || *c->p == '\t'))
		c->p++;
}

static inline int
hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

static int
read_hex4(const char *s)
{
	int			v = 0;

	for (int i = 0; i < 4; i++)
	{
		int			h = hexval(s[i]);

		if (h < 0)
			return -1;
		v = (v << 4) | h;
	}
	return v;
}

/*
 * Copies raw (unescaped) bytes of a string to w, replacing each byte that
 * does not start a valid UTF-8 sequence by U+FFFD; returns the new end.
 */
static char *
copy_utf8_checked(char *w, const char *src, int n)
{
	int			i = 0;

	while (i < n)
	{
		unsigned char ch = (unsigned char) src[i];
		int			l;

		if (ch < 0x80)
		{
			*w++ = (char) ch;
			i++;
			continue;
		}
		l = pg_utf_mblen((const unsigned char *) &src[i]);
		if (i + l <= n && pg_utf8_islegal((const unsigned char *) &src[i], l))
		{
			memcpy(w, &src[i], l);
			w += l;
			i += l;
		}
		else
		{
			memcpy(w, "\xEF\xBF\xBD", 3);
			w += 3;
			i++;
		}
	}
	return w;
}

/*
 * The bytes the scan for a string's end stops at: '"', '\\', control
 * characters, and, until one has been seen, non-ASCII bytes.  Eight bytes
 * are tested at once (the usual "has a zero byte" arithmetic), as most
 * runs between them are long.
 */
static inline bool
byte_is_special(unsigned char ch, bool ascii)
{
	return ch < 0x20 || ch == '"' || ch == '\\' || (ascii && ch >= 0x80);
}

#define BYTES_OF(ch)	(UINT64CONST(0x0101010101010101) * (ch))
#define HIGH_BITS		BYTES_OF(0x80)

/* Flags (high bit) the bytes of v below n; exact as to whether any is, for n <= 0x80. */
static inline uint64
bytes_below(uint64 v, int n)
{
	return (v - BYTES_OF(n)) & ~v & HIGH_BITS;
}

static inline bool
word_has_byte(uint64 v, char ch)
{
	return bytes_below(v ^ BYTES_OF((unsigned char) ch), 1) != 0;
}

static inline bool
word_has_special(uint64 v, bool ascii)
{
	return bytes_below(v, 0x20) != 0 || word_has_byte(v, '"') || word_has_byte(v, '\\') ||
		(ascii && (v & HIGH_BITS) != 0);
}

/*
 * De-escapes the string between start and q.  Valid UTF-8 is de-escaped
 * in place (the result is never longer: an escape is longer than what it
 * stands for); otherwise ("checked") into a new buffer, as U+FFFD, three
 * bytes, may replace a single invalid byte.  On a bad escape, returns NULL
 * with *problem set and *at pointing at it.
 */
static char *
unescape_string(char *start, char *q, bool checked, int *len_out,
				const char **problem, char **at)
{
	char	   *out = checked ? palloc((q - start) * 3 + 1) : start;
	char	   *w = out;
	char	   *s = start;

	while (s < q)
	{
		if (checked)
		{
			char	   *run = s;

			while (s < q && *s != '\\')
				s++;
			w = copy_utf8_checked(w, run, s - run);
		}
		else
		{
			/* runs between escapes are short: copy as the scan goes */
			while (q - s >= 8)
			{
				uint64		v;

				memcpy(&v, s, sizeof(v));
				if (word_has_byte(v, '\\'))
					break;
				memcpy(w, &v, sizeof(v));
				w += 8;
				s += 8;
			}
			while (s < q && *s != '\\')
				*w++ = *s++;
		}
		if (s >= q)
			break;
		/* escape */
		s++;
		switch (*s++)
		{
			case '"':
				*w++ = '"';
				break;
			case '\\':
				*w++ = '\\';
				break;
			case '/':
				*w++ = '/';
				break;
			case 'b':
				*w++ = '\b';
				break;
			case 'f':
				*w++ = '\f';
				break;
			case 'n':
				*w++ = '\n';
				break;
			case 'r':
				*w++ = '\r';
				break;
			case 't':
				*w++ = '\t';
				break;
			case 'u':
				{
					int			cp;
					pg_wchar	ch = 0;

					if (q - s < 4 || (cp = read_hex4(s)) < 0)
					{
						*problem = "invalid \\u escape";
						*at = s - 1;
						return NULL;
					}
					s += 4;
					if (cp >= 0xD800 && cp <= 0xDBFF)
					{
						int			lo = -1;

						if (q - s >= 6 && s[0] == '\\' && s[1] == 'u')
							lo = read_hex4(s + 2);
						if (lo >= 0xDC00 && lo <= 0xDFFF)
						{
							ch = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
							s += 6;
						}
						/* else: lone high surrogate, dropped */
					}
					else if (cp < 0xDC00 || cp > 0xDFFF)
						ch = cp;
					/* lone low surrogates and U+0000 are dropped */
					if (ch != 0)
					{
						unicode_to_utf8(ch, (unsigned char *) w);
						w += pg_utf_mblen((unsigned char *) w);
					}
					break;
				}
			default:
				*problem = "invalid escape in string";
				*at = s - 1;
				return NULL;
		}
	}
	*w = '\0';
	*len_out = w - out;
	return out;
}

/*
 * Parses the JSON string at p (which points at its opening quote, before
 * end) and returns it de-escaped and NUL-terminated, setting *after to
 * the byte after its closing quote.  \u0000 and lone surrogates, which no
 * Postgres text can hold, are dropped as PostHog's own exporter drops
 * them; invalid UTF-8 becomes U+FFFD.  The common case (valid UTF-8) is
 * de-escaped in place, and without escapes not even copied.  A malformed
 * string returns NULL, with *problem set and *after pointing at the fault.
 */
char *
phx_json_string(char *p, char *end, char **after, int *len_out, const char **problem)
{
	char	   *start = p + 1;
	char	   *q = start;
	bool		escaped = false;
	bool		ascii = true;

	/* fast scan for the closing quote */
	for (;;)
	{
		while (end - q >= 8)
		{
			uint64		v;

			memcpy(&v, q, sizeof(v));
			if (word_has_special(v, ascii))
				break;
			q += 8;
		}
		while (q < end && !byte_is_special((unsigned char) *q, ascii))
			q++;
		if (q >= end)
		{
			*problem = "unterminated string";
			*after = end;
			return NULL;
		}
		if (*q == '"')
			break;
		if (*q == '\\')
		{
			escaped = true;
			q += 2;
			continue;
		}
		if ((unsigned char) *q < 0x20)
		{
			*problem = "control character in string";
			*after = q;
			return NULL;
		}
		ascii = false;
		q++;
	}
	*after = q + 1;

	if (!ascii && pg_encoding_verifymbstr(PG_UTF8, start, q - start) != q - start)
		return unescape_string(start, q, true, len_out, problem, after);
	if (escaped)
		return unescape_string(start, q, false, len_out, problem, after);
	*q = '\0';
	*len_out = q - start;
	return start;
}

static char *
parse_string(JsonCursor *c, int *len_out)
{
	const char *problem;
	char	   *after;
	char	   *s = phx_json_string(c->p, c->end, &after, len_out, &problem);

	c->p = after;
	if (s == NULL)
		json_fail(c, problem);
	return s;
}

/* Skips any JSON value, returning its start; used for nested cells and ignored members. */
static char *
skip_value(JsonCursor *c)
{
	char	   *start;

	skip_ws(c);
	start = c->p;
	if (c->p >= c->end)
		json_fail(c, "unexpected end of data");
	switch (*c->p)
	{
		case '{':
		case '[':
			{
				char		close = (*c->p == '{') ? '}' : ']';
				bool		first = true;

				if (++c->depth > PHX_MAX_JSON_DEPTH)
					json_fail(c, "nesting too deep");
				c->p++;
				for (;;)
				{
					skip_ws(c);
					if (c->p < c->end && *c->p == close)
					{
						c->p++;
						break;
					}
					if (!first)
					{
						if (c->p >= c->end || *c->p != ',')
							json_fail(c, "expected , or closing bracket");
						c->p++;
						skip_ws(c);
					}
					first = false;
					if (close == '}')
					{
						if (c->p >= c->end || *c->p != '"')
							json_fail(c, "expected object key");
						/* skip the key without de-escaping it */
						c->p++;
						while (c->p < c->end && *c->p != '"')
							c->p += (*c->p == '\\') ? 2 : 1;
						if (c->p >= c->end)
							json_fail(c, "unterminated string");
						c->p++;
						skip_ws(c);
						if (c->p >= c->end || *c->p != ':')
							json_fail(c, "expected :");
						c->p++;
					}
					skip_value(c);
				}
				c->depth--;
				break;
			}
		case '"':
			c->p++;
			while (c->p < c->end && *c->p != '"')
				c->p += (*c->p == '\\') ? 2 : 1;
			if (c->p >= c->end)
				json_fail(c, "unterminated string");
			c->p++;
			break;
		case 't':
			if (c->end - c->p < 4 || memcmp(c->p, "true", 4) != 0)
				json_fail(c, "invalid literal");
			c->p += 4;
			break;
		case 'f':
			if (c->end - c->p < 5 || memcmp(c->p, "false", 5) != 0)
				json_fail(c, "invalid literal");
			c->p += 5;
			break;
		case 'n':
			if (c->end - c->p < 4 || memcmp(c->p, "null", 4) != 0)
				json_fail(c, "invalid literal");
			c->p += 4;
			break;
		default:
			if (*c->p == '-' || (*c->p >= '0' && *c->p <= '9'))
			{
				c->p++;
				while (c->p < c->end &&
					   ((*c->p >= '0' && *c->p <= '9') || *c->p == '.' ||
						*c->p == 'e' || *c->p == 'E' || *c->p == '+' || *c->p == '-'))
					c->p++;
			}
			else
				json_fail(c, "unexpected character");
	}
	return start;
}

/* Parses one cell of a row. */
static void
parse_cell(JsonCursor *c, PhxCell *cell)
{
	char	   *start;

	skip_ws(c);
	if (c->p >= c->end)
		json_fail(c, "unexpected end of data");
	switch (*c->p)
	{
		case '"':
			cell->kind = PHX_CELL_STRING;
			cell->val = parse_string(c, &cell->len);
			return;
		case 'n':
			skip_value(c);
			cell->kind = PHX_CELL_NULL;
			cell->val = NULL;
			cell->len = 0;
			return;
		case 't':
		case 'f':
			start = skip_value(c);
			cell->kind = PHX_CELL_BOOL;
			break;
		case '[':
		case '{':
			start = skip_value(c);
			cell->kind = PHX_CELL_JSON;
			break;
		default:
			start = skip_value(c);
			cell->kind = PHX_CELL_NUMBER;
			break;
	}
	/*
	 * All cell->len bytes, not pnstrdup(), which stops at a NUL: skip_value()
	 * lets a raw NUL through inside a nested string, and the models read
	 * cell->len bytes (phx_cell_jsonb, which then refuses the NUL).
	 */
	cell->len = c->p - start;
	cell->val = palloc(cell->len + 1);
	memcpy(cell->val, start, cell->len);
	cell->val[cell->len] = '\0';
}

static void
expect_char(JsonCursor *c, char ch, const char *what)
{
	skip_ws(c);
	if (c->p >= c->end || *c->p != ch)
		json_fail(c, what);
	c->p++;
}

/* Returns true and consumes the character if it is next. */
static bool
accept_char(JsonCursor *c, char ch)
{
	skip_ws(c);
	if (c->p < c->end && *c->p == ch)
	{
		c->p++;
		return true;
	}
	return false;
}

static void
parse_columns(JsonCursor *c, PhxPage *page)
{
	int			cap = 16;

	page->columns = palloc(sizeof(char *) * cap);
	page->ncolumns = 0;
	expect_char(c, '[', "expected array for \"columns\"");
	if (accept_char(c, ']'))
		return;
	do
	{
		int			len;

		skip_ws(c);
		if (c->p >= c->end || *c->p != '"')
			json_fail(c, "expected a column name");
		if (page->ncolumns == cap)
		{
			cap *= 2;
			page->columns = repalloc(page->columns, sizeof(char *) * cap);
		}
		page->columns[page->ncolumns++] = parse_string(c, &len);
	} while (accept_char(c, ','));
	expect_char(c, ']', "expected ] after columns");
}

/*
 * Rows are parsed into a growing array of cells whose row width is the
 * width of the first row; "columns" may come after "results" in the body,
 * so the check against it is made once both are known.
 */
static void
parse_results(JsonCursor *c, PhxPage *page, int *width_out)
{
	int			cap = 1024;
	int			ncells = 0;
	int			width = -1;

	page->cells = palloc(sizeof(PhxCell) * cap);
	page->nrows = 0;
	expect_char(c, '[', "expected array for \"results\"");
	if (accept_char(c, ']'))
	{
		*width_out = 0;
		return;
	}
	do
	{
		int			n = 0;

		expect_char(c, '[', "expected a row array");
		if (!accept_char(c, ']'))
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
			} while (accept_char(c, ','));
			expect_char(c, ']', "expected , or ] in row");
		}
		if (width < 0)
			width = n;
		else if (n != width)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("invalid response from PostHog: row %d has %d values, row 1 has %d",
							page->nrows + 1, n, width)));
		page->nrows++;
	} while (accept_char(c, ','));
	expect_char(c, ']', "expected , or ] after row");
	*width_out = width;
}

/*
 * Parses a 200 response of the query API.  "body" is modified (strings
 * are de-escaped in place) and must stay alive as long as the page.
 */
PhxPage *
phx_parse_page(char *body, size_t len)
{
	JsonCursor	c;
	PhxPage    *page = palloc0(sizeof(PhxPage));
	bool		have_results = false;
	bool		have_columns = false;
	int			width = 0;

	c.start = c.p = body;
	c.end = body + len;
	c.depth = 0;

	expect_char(&c, '{', "expected a JSON object");
	if (!accept_char(&c, '}'))
	{
		do
		{
			char	   *key;
			int			klen;

			skip_ws(&c);
			if (c.p >= c.end || *c.p != '"')
				json_fail(&c, "expected object key");
			key = parse_string(&c, &klen);
			expect_char(&c, ':', "expected :");
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
			else if (strcmp(key, "hasMore") == 0)
			{
				skip_ws(&c);
				page->has_more = (c.p < c.end && *c.p == 't');
				skip_value(&c);
			}
			else
				skip_value(&c);
		} while (accept_char(&c, ','));
		expect_char(&c, '}', "expected , or } in object");
	}
	skip_ws(&c);
	if (c.p != c.end)
		json_fail(&c, "trailing data after the JSON object");

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
	return page;
}

/*
 * Parses a 200 body; a body that is not the JSON we expect (cut off by a
 * proxy, say) returns NULL with the reason, so that it can be retried.
 * Every such reason is raised above as ERRCODE_FDW_INVALID_DATA_TYPE; any
 * other error (out of memory) is not the body's fault, and is thrown on.
 */
PhxPage *
phx_try_parse_page(char *body, size_t len, char **problem)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	PhxPage    *volatile page = NULL;

	PG_TRY();
	{
		page = phx_parse_page(body, len);
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
	return page;
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
		JsonCursor	c;

		c.start = c.p = body;
		c.end = body + len;
		c.depth = 0;
		expect_char(&c, '{', "expected a JSON object");
		if (!accept_char(&c, '}'))
		{
			do
			{
				char	   *key;
				int			klen;

				skip_ws(&c);
				if (c.p >= c.end || *c.p != '"')
					json_fail(&c, "expected object key");
				key = parse_string(&c, &klen);
				expect_char(&c, ':', "expected :");
				skip_ws(&c);
				if (c.p < c.end && *c.p == '"' &&
					(strcmp(key, "code") == 0 || strcmp(key, "detail") == 0))
				{
					int			vlen;
					char	   *val = parse_string(&c, &vlen);

					if (key[0] == 'c')
						*code = pstrdup(val);
					else
						*detail = pstrdup(val);
				}
				else
					skip_value(&c);
			} while (accept_char(&c, ','));
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
