/*-------------------------------------------------------------------------
 *
 * json_scan.c
 *		The pieces of JSON scanning that the response parser (response.c)
 *		and the jsonb builder (models/jsonb_build.c) share: strings,
 *		de-escaped and checked as UTF-8, and skipping any value.
 *
 * Strings are de-escaped in place where they can be (an unescaped string
 * is never longer than its escaped form), and found with a scan that tests
 * eight bytes at a time, as most runs between escapes are long.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "mb/pg_wchar.h"

#include "posthog/posthog.h"

/*
 * A malformed response: every such error has this errcode, which
 * phx_try_parse() tells apart from any other error.
 */
void
phx_json_fail(PhxJsonCursor *c, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
			 errmsg("invalid response from PostHog: %s at byte %ld", what,
					(long) (c->p - c->start)),
			 errhint("The response may have been cut off by a proxy or a dropped connection.")));
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

/* Steps over the string at c->p (its opening quote) without de-escaping it. */
static void
skip_raw_string(PhxJsonCursor *c)
{
	c->p++;
	while (c->p < c->end && *c->p != '"')
		c->p += (*c->p == '\\') ? 2 : 1;
	if (c->p >= c->end)
		phx_json_fail(c, "unterminated string");
	c->p++;
}

/*
 * Skips any JSON value, returning its start; used for nested cells and
 * ignored members.  Strings are skipped without de-escaping them.
 */
char *
phx_json_skip_value(PhxJsonCursor *c)
{
	char	   *start;

	phx_json_skip_ws(c);
	start = c->p;
	if (c->p >= c->end)
		phx_json_fail(c, "unexpected end of data");
	switch (*c->p)
	{
		case '{':
		case '[':
			{
				char		close = (*c->p == '{') ? '}' : ']';
				bool		first = true;

				if (++c->depth > PHX_MAX_JSON_DEPTH)
					phx_json_fail(c, "nesting too deep");
				c->p++;
				for (;;)
				{
					phx_json_skip_ws(c);
					if (c->p < c->end && *c->p == close)
					{
						c->p++;
						break;
					}
					if (!first)
					{
						if (c->p >= c->end || *c->p != ',')
							phx_json_fail(c, "expected , or closing bracket");
						c->p++;
						phx_json_skip_ws(c);
					}
					first = false;
					if (close == '}')
					{
						if (c->p >= c->end || *c->p != '"')
							phx_json_fail(c, "expected object key");
						skip_raw_string(c);
						phx_json_skip_ws(c);
						if (c->p >= c->end || *c->p != ':')
							phx_json_fail(c, "expected :");
						c->p++;
					}
					phx_json_skip_value(c);
				}
				c->depth--;
				break;
			}
		case '"':
			skip_raw_string(c);
			break;
		case 't':
			if (c->end - c->p < 4 || memcmp(c->p, "true", 4) != 0)
				phx_json_fail(c, "invalid literal");
			c->p += 4;
			break;
		case 'f':
			if (c->end - c->p < 5 || memcmp(c->p, "false", 5) != 0)
				phx_json_fail(c, "invalid literal");
			c->p += 5;
			break;
		case 'n':
			if (c->end - c->p < 4 || memcmp(c->p, "null", 4) != 0)
				phx_json_fail(c, "invalid literal");
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
				phx_json_fail(c, "unexpected character");
	}
	return start;
}

/* A cursor at the start of a body. */
void
phx_json_cursor_init(PhxJsonCursor *c, char *body, size_t len)
{
	c->start = c->p = body;
	c->end = body + len;
	c->depth = 0;
}

/* The string at c->p (its opening quote), de-escaped in place. */
char *
phx_json_parse_string(PhxJsonCursor *c, int *len_out)
{
	const char *problem;
	char	   *after;
	char	   *s = phx_json_string(c->p, c->end, &after, len_out, &problem);

	c->p = after;
	if (s == NULL)
		phx_json_fail(c, problem);
	return s;
}

/* The key of the next member of an object, de-escaped, and its ":". */
char *
phx_json_member_key(PhxJsonCursor *c)
{
	char	   *key;
	int			klen;

	phx_json_skip_ws(c);
	if (c->p >= c->end || *c->p != '"')
		phx_json_fail(c, "expected object key");
	key = phx_json_parse_string(c, &klen);
	phx_json_expect(c, ':', "expected :");
	return key;
}
