/*-------------------------------------------------------------------------
 *
 * fuzz_jsonb.c
 *		Differential libFuzzer harness for the jsonb builder
 *		(src/jsonb_build.c, phx_jsonb_from_text) against PostgreSQL's own
 *		jsonb_in, built in from the server's sources (pg_jsonb_ref.c).
 *
 * The rule under test: for any text, the jsonb we build must be byte for
 * byte the jsonb that jsonb_in builds from the same text cleaned as the
 * pipeline documents it (inside JSON strings, keys and values alike:
 * \u0000 and lone UTF-16 surrogate escapes dropped, each byte that does
 * not start a well-formed UTF-8 sequence replaced by U+FFFD; everything
 * else kept as it is) -- or both must refuse it with an ERROR.  The
 * cleaning here is written independently of src/json_rows.c, as a plain
 * byte loop.  Each input is tried three ways:
 *
 *	direct		phx_jsonb_from_text() on the input itself;
 *	string cell	the input as the text of a JSON string in a query API
 *				response (as PostHog sends properties), through
 *				phx_parse_page() and phx_cell_datum(.., JSONBOID, ..);
 *				twice: non-ASCII sent raw, and sent as \u escapes;
 *	JSON cell	the input as a nested JSON value in a response, the same
 *				way (when the response parser takes it as one cell).
 *
 * A difference, a success on one side only, an internal error (elog) on
 * either, a sanitizer report or a crash aborts with a report.  The one
 * difference allowed is the stack depth limit: the two parsers use
 * different amounts of stack per level, so near the limit one may refuse
 * ("stack depth limit exceeded") what the other still takes.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <stdio.h>
#include <stdlib.h>

#include "catalog/pg_type.h"
#include "utils/jsonb.h"

#include "models/models.h"

extern void fuzz_free_all(void);
extern char *fuzz_stack_base;
extern Jsonb *fuzz_ref_jsonb(char *json, int len);
extern char *fuzz_jsonb_to_text(Jsonb *jb);

int			LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct Outcome
{
	Jsonb	   *jb;				/* the value, or NULL */
	bool		sql_null;		/* the cell gave SQL NULL (not an error) */
	int			sqlerrcode;		/* when it failed */
} Outcome;

/* ---- the cleaning, written plainly ---- */

static inline bool
is_cont(unsigned char c)
{
	return c >= 0x80 && c <= 0xBF;
}

/* Length of the well-formed UTF-8 sequence at s (Unicode's table 3-7), or 0. */
static int
utf8_seq_len(const unsigned char *s, const unsigned char *end)
{
	unsigned char c = s[0];
	ptrdiff_t	n = end - s;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		return n >= 2 && is_cont(s[1]) ? 2 : 0;
	if (c == 0xE0)
		return n >= 3 && s[1] >= 0xA0 && s[1] <= 0xBF && is_cont(s[2]) ? 3 : 0;
	if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
		return n >= 3 && is_cont(s[1]) && is_cont(s[2]) ? 3 : 0;
	if (c == 0xED)
		return n >= 3 && s[1] >= 0x80 && s[1] <= 0x9F && is_cont(s[2]) ? 3 : 0;
	if (c == 0xF0)
		return n >= 4 && s[1] >= 0x90 && s[1] <= 0xBF && is_cont(s[2]) && is_cont(s[3]) ? 4 : 0;
	if (c >= 0xF1 && c <= 0xF3)
		return n >= 4 && is_cont(s[1]) && is_cont(s[2]) && is_cont(s[3]) ? 4 : 0;
	if (c == 0xF4)
		return n >= 4 && s[1] >= 0x80 && s[1] <= 0x8F && is_cont(s[2]) && is_cont(s[3]) ? 4 : 0;
	return 0;
}

static bool
hex4(const unsigned char *s, const unsigned char *end, int *cp)
{
	int			v = 0;

	if (end - s < 4)
		return false;
	for (int i = 0; i < 4; i++)
	{
		int			c = s[i];

		if (c >= '0' && c <= '9')
			v = v * 16 + c - '0';
		else if (c >= 'a' && c <= 'f')
			v = v * 16 + c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			v = v * 16 + c - 'A' + 10;
		else
			return false;
	}
	*cp = v;
	return true;
}

/* Copies the byte(s) at *s to *w, or U+FFFD for a byte that starts no well-formed sequence. */
static void
copy_char(const unsigned char **s, const unsigned char *end, char **w)
{
	int			l = utf8_seq_len(*s, end);

	if (l == 0)
	{
		memcpy(*w, "\xEF\xBF\xBD", 3);
		*w += 3;
		*s += 1;
		return;
	}
	memcpy(*w, *s, l);
	*w += l;
	*s += l;
}

/*
 * The JSON text as the pipeline means jsonb_in to see it: within strings,
 * \u0000 and lone surrogate escapes dropped and invalid UTF-8 replaced;
 * outside strings (where anything but ASCII is a syntax error anyway), the
 * bytes as they are; from a malformed escape on, everything as it is, for
 * jsonb_in to refuse.
 */
static char *
clean_json(const unsigned char *in, size_t n, int *outlen)
{
	const unsigned char *s = in;
	const unsigned char *end = in + n;
	char	   *out = palloc(n * 3 + 1);
	char	   *w = out;
	bool		in_string = false;

	while (s < end)
	{
		int			cp;
		int			lo;

		if (!in_string)
		{
			in_string = (*s == '"');
			*w++ = *s++;
		}
		else if (*s == '"')
		{
			in_string = false;
			*w++ = *s++;
		}
		else if (*s == '\\' && end - s >= 2 && s[1] == 'u' && hex4(s + 2, end, &cp))
		{
			if (cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF))
				s += 6;			/* U+0000, lone low surrogate: dropped */
			else if (cp >= 0xD800 && cp <= 0xDBFF)
			{
				if (end - s >= 12 && s[6] == '\\' && s[7] == 'u' &&
					hex4(s + 8, end, &lo) && lo >= 0xDC00 && lo <= 0xDFFF)
				{
					memcpy(w, s, 12);	/* a pair: kept */
					w += 12;
					s += 12;
				}
				else
					s += 6;		/* lone high surrogate: dropped */
			}
			else
			{
				memcpy(w, s, 6);
				w += 6;
				s += 6;
			}
		}
		else if (*s == '\\' && end - s >= 2 && strchr("\"\\/bfnrt", s[1]) != NULL && s[1] != '\0')
		{
			*w++ = *s++;		/* any other good escape: as it is */
			*w++ = *s++;
		}
		else if (*s == '\\')
		{
			/*
			 * A bad escape: the text is invalid JSON.  The rest goes as it is,
			 * so that dropping an escape after it cannot make it a good one
			 * ("\u00\u00001f" is not "\u001f").
			 */
			memcpy(w, s, end - s);
			w += end - s;
			s = end;
		}
		else
			copy_char(&s, end, &w);
	}
	*w = '\0';
	*outlen = w - out;
	return out;
}

/* What the de-escaped text of a JSON string holds: NUL dropped, invalid UTF-8 replaced. */
static char *
clean_raw(const unsigned char *in, size_t n, int *outlen)
{
	const unsigned char *s = in;
	const unsigned char *end = in + n;
	char	   *out = palloc(n * 3 + 1);
	char	   *w = out;

	while (s < end)
	{
		if (*s == '\0')
			s++;
		else
			copy_char(&s, end, &w);
	}
	*w = '\0';
	*outlen = w - out;
	return out;
}

/* ---- building a response around the input ---- */

#define RESPONSE_HEAD "{\"columns\": [\"properties\"], \"results\": [["
#define RESPONSE_TAIL "]], \"hasMore\": false}"

static void
append_u_escape(StringInfo buf, int cp)
{
	static const char hex[] = "0123456789abcdef";
	char		e[6] = {'\\', 'u', hex[(cp >> 12) & 15], hex[(cp >> 8) & 15],
	hex[(cp >> 4) & 15], hex[cp & 15]};

	appendBinaryStringInfo(buf, e, 6);
}

/*
 * A response whose one cell is the input as a JSON string: quote and
 * backslash escaped, control characters as \u00XX; non-ASCII raw, or (when
 * ascii_only, as json.dumps does by default) every well-formed character
 * as a \u escape, a surrogate pair above U+FFFF.  Ill-formed bytes stay raw.
 */
static StringInfoData
string_cell_response(const unsigned char *in, size_t n, bool ascii_only)
{
	StringInfoData buf;
	const unsigned char *s = in;
	const unsigned char *end = in + n;

	initStringInfo(&buf);
	appendStringInfoString(&buf, RESPONSE_HEAD "\"");
	while (s < end)
	{
		int			l;

		if (*s == '"' || *s == '\\')
		{
			appendStringInfoChar(&buf, '\\');
			appendStringInfoChar(&buf, *s++);
		}
		else if (*s < 0x20)
			append_u_escape(&buf, *s++);
		else if (*s >= 0x80 && ascii_only && (l = utf8_seq_len(s, end)) > 0)
		{
			int			cp = (l == 2) ? (s[0] & 0x1F) :
				(l == 3) ? (s[0] & 0x0F) : (s[0] & 0x07);

			for (int i = 1; i < l; i++)
				cp = (cp << 6) | (s[i] & 0x3F);
			if (cp >= 0x10000)
			{
				append_u_escape(&buf, 0xD800 + ((cp - 0x10000) >> 10));
				append_u_escape(&buf, 0xDC00 + ((cp - 0x10000) & 0x3FF));
			}
			else
				append_u_escape(&buf, cp);
			s += l;
		}
		else
			appendStringInfoChar(&buf, *s++);
	}
	appendStringInfoString(&buf, "\"" RESPONSE_TAIL);
	return buf;
}

/* ---- running the two sides ---- */

static int
caught_sqlerrcode(void)
{
	return CopyErrorData()->sqlerrcode;
}

static void
run_ours_text(char *text, int len, Outcome *o)
{
	sigjmp_buf	jb;

	memset(o, 0, sizeof(*o));
	PG_exception_stack = &jb;
	if (sigsetjmp(jb, 0) == 0)
		o->jb = phx_jsonb_from_text(text, len);
	else
		o->sqlerrcode = caught_sqlerrcode();
	PG_exception_stack = NULL;
}

static void
run_ours_cell(PhxCell *cell, Outcome *o)
{
	sigjmp_buf	jb;

	memset(o, 0, sizeof(*o));
	PG_exception_stack = &jb;
	if (sigsetjmp(jb, 0) == 0)
	{
		bool		isnull;
		Datum		d = phx_cell_datum(cell, JSONBOID, "properties", &isnull);

		if (isnull)
			o->sql_null = true;
		else
			o->jb = (Jsonb *) DatumGetPointer(d);
	}
	else
		o->sqlerrcode = caught_sqlerrcode();
	PG_exception_stack = NULL;
}

static void
run_ref(const char *text, int len, Outcome *o)
{
	sigjmp_buf	jb;
	char	   *copy = palloc(len + 1);

	memcpy(copy, text, len + 1);
	memset(o, 0, sizeof(*o));
	PG_exception_stack = &jb;
	if (sigsetjmp(jb, 0) == 0)
		o->jb = fuzz_ref_jsonb(copy, len);
	else
		o->sqlerrcode = caught_sqlerrcode();
	PG_exception_stack = NULL;
}

/* parses a response with our parser; NULL when it refuses it */
static PhxPage *
parse_response(StringInfo body)
{
	sigjmp_buf	jb;
	PhxPage    *volatile page = NULL;

	PG_exception_stack = &jb;
	if (sigsetjmp(jb, 0) == 0)
		page = phx_parse_page(body->data, body->len);
	PG_exception_stack = NULL;
	return page;
}

/* ---- reporting ---- */

static void
print_bytes(const char *label, const char *s, int len)
{
	fprintf(stderr, "%s (%d bytes): \"", label, len);
	for (int i = 0; i < len; i++)
	{
		unsigned char c = s[i];

		if (c == '"' || c == '\\')
			fprintf(stderr, "\\%c", c);
		else if (c >= 0x20 && c < 0x7F)
			fputc(c, stderr);
		else
			fprintf(stderr, "\\x%02x", c);
	}
	fprintf(stderr, "\"\n");
}

static void
print_outcome(const char *label, Outcome *o)
{
	if (o->sql_null)
		fprintf(stderr, "%s: SQL NULL\n", label);
	else if (o->jb == NULL)
		fprintf(stderr, "%s: ERROR, SQLSTATE %s\n", label, unpack_sql_state(o->sqlerrcode));
	else
	{
		sigjmp_buf	jb;

		PG_exception_stack = &jb;
		if (sigsetjmp(jb, 0) == 0)
			fprintf(stderr, "%s: %s\n", label, fuzz_jsonb_to_text(o->jb));
		PG_exception_stack = NULL;
		fprintf(stderr, "%s bytes:", label);
		for (int i = 0; i < (int) VARSIZE(o->jb); i++)
			fprintf(stderr, " %02x", ((unsigned char *) o->jb)[i]);
		fprintf(stderr, "\n");
	}
}

static void
mismatch(const char *how, const char *mode, const uint8_t *data, size_t size,
		 const char *ref_text, int ref_len, Outcome *ours, Outcome *ref)
{
	fprintf(stderr, "\n==== jsonb mismatch (%s): %s\n", mode, how);
	print_bytes("input", (const char *) data, (int) size);
	print_bytes("text given to jsonb_in", ref_text, ref_len);
	print_outcome("posthog_export", ours);
	print_outcome("jsonb_in", ref);
	fflush(stderr);
	abort();
}

static void
compare(const char *mode, const uint8_t *data, size_t size,
		const char *ref_text, int ref_len, Outcome *ours, Outcome *ref)
{
	if ((ours->jb == NULL && !ours->sql_null && ours->sqlerrcode == ERRCODE_INTERNAL_ERROR) ||
		(ref->jb == NULL && !ref->sql_null && ref->sqlerrcode == ERRCODE_INTERNAL_ERROR))
		mismatch("an internal error (elog)", mode, data, size, ref_text, ref_len, ours, ref);
	if (ours->sql_null != ref->sql_null)
		mismatch("SQL NULL on one side only", mode, data, size, ref_text, ref_len, ours, ref);
	if (ours->jb != NULL && ref->jb != NULL)
	{
		if (VARSIZE(ours->jb) != VARSIZE(ref->jb) ||
			memcmp(ours->jb, ref->jb, VARSIZE(ref->jb)) != 0)
			mismatch("different jsonb", mode, data, size, ref_text, ref_len, ours, ref);
	}
	else if (ours->jb != NULL && ref->sqlerrcode != ERRCODE_STATEMENT_TOO_COMPLEX)
		mismatch("accepted by posthog_export, refused by jsonb_in", mode, data, size,
				 ref_text, ref_len, ours, ref);
	else if (ref->jb != NULL && ours->sqlerrcode != ERRCODE_STATEMENT_TOO_COMPLEX)
		mismatch("refused by posthog_export, accepted by jsonb_in", mode, data, size,
				 ref_text, ref_len, ours, ref);
}

/* ---- the three ways ---- */

static void
try_direct(const uint8_t *data, size_t size)
{
	char	   *text = palloc(size + 1);
	char	   *cleaned;
	int			clen;
	Outcome		ours;
	Outcome		ref;

	memcpy(text, data, size);
	text[size] = '\0';
	run_ours_text(text, (int) size, &ours);
	cleaned = clean_json(data, size, &clen);
	run_ref(cleaned, clen, &ref);
	compare("direct", data, size, cleaned, clen, &ours, &ref);

	/*
	 * PHX_FUZZ_JSONB_DUMP=1 ./fuzz_jsonb FILES: for each, a line with the
	 * text given to jsonb_in (hex) and what it built (jsonb_out's text) or
	 * the SQLSTATE, to compare with a real server's jsonb_in.
	 */
	if (getenv("PHX_FUZZ_JSONB_DUMP") != NULL)
	{
		for (int i = 0; i < clen; i++)
			printf("%02x", (unsigned char) cleaned[i]);
		if (ref.jb != NULL)
			printf("\t%s\n", fuzz_jsonb_to_text(ref.jb));
		else
			printf("\tERROR %s\n", unpack_sql_state(ref.sqlerrcode));
	}
}

static void
try_string_cell(const uint8_t *data, size_t size, bool ascii_only)
{
	StringInfoData body = string_cell_response(data, size, ascii_only);
	const char *mode = ascii_only ? "string cell, \\u escapes" : "string cell";
	PhxPage    *page = parse_response(&body);
	char	   *value;
	int			vlen;
	char	   *cleaned;
	int			clen;
	Outcome		ours;
	Outcome		ref;

	/* a well-formed response of one string: the response parser must take it */
	if (page == NULL || page->nrows != 1 || page->ncolumns != 1 ||
		PHX_CELL(page, 0, 0)->kind != PHX_CELL_STRING)
	{
		print_bytes("response", body.data, body.len);
		fprintf(stderr, "==== the response parser refused a well-formed response (%s)\n", mode);
		abort();
	}
	run_ours_cell(PHX_CELL(page, 0, 0), &ours);

	value = clean_raw(data, size, &vlen);
	memset(&ref, 0, sizeof(ref));
	if (vlen == 0)
		ref.sql_null = true;	/* an empty string is SQL NULL */
	else
	{
		cleaned = clean_json((const unsigned char *) value, vlen, &clen);
		run_ref(cleaned, clen, &ref);
		compare(mode, data, size, cleaned, clen, &ours, &ref);
		return;
	}
	compare(mode, data, size, "", 0, &ours, &ref);
}

static void
try_json_cell(const uint8_t *data, size_t size)
{
	StringInfoData body;
	PhxPage    *page;
	PhxCell    *cell;
	const uint8_t *start = data;
	const uint8_t *end = data + size;
	char	   *cleaned;
	int			clen;
	Outcome		ours;
	Outcome		ref;

	initStringInfo(&body);
	appendStringInfoString(&body, RESPONSE_HEAD);
	appendBinaryStringInfo(&body, (const char *) data, (int) size);
	appendStringInfoString(&body, RESPONSE_TAIL);
	page = parse_response(&body);
	if (page == NULL || page->nrows != 1 || page->ncolumns != 1)
		return;
	cell = PHX_CELL(page, 0, 0);
	if (cell->kind == PHX_CELL_NULL || cell->kind == PHX_CELL_STRING)
		return;					/* NULL, or the string-cell case */

	/* first, as the models do: the cell holds cell->len bytes */
	run_ours_cell(cell, &ours);

	/* the cell must be the input, less white space around it */
	while (start < end && (*start == ' ' || *start == '\t' || *start == '\n' || *start == '\r'))
		start++;
	while (end > start && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\n' || end[-1] == '\r'))
		end--;
	if (cell->len != end - start || memcmp(cell->val, start, cell->len) != 0)
		return;					/* the input closed the row and opened more */

	cleaned = clean_json(start, end - start, &clen);
	run_ref(cleaned, clen, &ref);
	compare("JSON cell", data, size, cleaned, clen, &ours, &ref);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1024 * 1024)
		return 0;
	fuzz_stack_base = (char *) __builtin_frame_address(0);
	try_direct(data, size);
	try_string_cell(data, size, false);
	try_string_cell(data, size, true);
	try_json_cell(data, size);
	fuzz_free_all();
	return 0;
}
