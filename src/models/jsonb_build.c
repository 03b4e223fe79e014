/*-------------------------------------------------------------------------
 *
 * jsonb_build.c
 *		jsonb straight from JSON text, for the property columns.
 *
 * jsonb_in is the single largest cost of an export (COPY FROM pays it
 * too): its lexer copies every string one character at a time and its
 * parser goes through a callback per token.  Here the text (ours, and
 * writable) is parsed in one pass into a tree of JsonbValues, strings are
 * de-escaped in place, and the tree is handed to the same
 * JsonbValueToJsonb() jsonb_in ends with, so the result is the same value:
 * object keys sorted by length then bytes, the last of duplicate keys
 * kept, numbers as numeric.  \u0000 and lone UTF-16 surrogates, which
 * jsonb refuses, are dropped, as PostHog's own exporter drops them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"

#include "models/models.h"

typedef struct JsonbBuilder
{
	char	   *p;
	char	   *end;
	char	   *start;
} JsonbBuilder;

static void parse_value(JsonbBuilder *b, JsonbValue *v);

static void build_fail(JsonbBuilder *b, const char *what) pg_attribute_noreturn();

static void
build_fail(JsonbBuilder *b, const char *what)
{
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_TEXT_REPRESENTATION),
			 errmsg("invalid input syntax for type json"),
			 errdetail("%s at byte %d of the JSON text.", what, (int) (b->p - b->start))));
}

static inline void
skip_ws(JsonbBuilder *b)
{
	while (b->p < b->end && (*b->p == ' ' || *b->p == '\n' || *b->p == '\r' || *b->p == '\t'))
		b->p++;
}

/* A token ends where a delimiter or the text does, as in Postgres's lexer. */
static inline bool
at_token_end(JsonbBuilder *b)
{
	char		ch;

	if (b->p >= b->end)
		return true;
	ch = *b->p;
	return !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
			 (ch >= '0' && ch <= '9') || ch == '_' || (unsigned char) ch >= 0x80);
}

static void
parse_string_value(JsonbBuilder *b, JsonbValue *v)
{
	const char *problem;
	char	   *after;
	int			len;
	char	   *s = phx_json_string(b->p, b->end, &after, &len, &problem);

	if (s == NULL)
	{
		b->p = after;
		build_fail(b, problem);
	}
	b->p = after;
	if (len > JENTRY_OFFLENMASK)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("string too long to represent as jsonb string"),
				 errdetail("Due to an implementation restriction, jsonb strings cannot exceed %d bytes.",
						   JENTRY_OFFLENMASK)));
	v->type = jbvString;
	v->val.string.val = s;
	v->val.string.len = len;
}

/*
 * A number, in JSON's grammar; integers of up to 18 digits are converted
 * directly, the rest by numeric_in, which is what jsonb_in uses for all.
 */
static void
parse_number(JsonbBuilder *b, JsonbValue *v)
{
	char	   *start = b->p;
	char	   *p = b->p;
	bool		integer = true;
	int			digits = 0;
	char		saved;

	if (p < b->end && *p == '-')
		p++;
	if (p < b->end && *p == '0')
	{
		p++;
		digits++;
	}
	else if (p < b->end && *p >= '1' && *p <= '9')
		while (p < b->end && *p >= '0' && *p <= '9')
		{
			p++;
			digits++;
		}
	else
		build_fail(b, "invalid number");
	if (p < b->end && *p == '.')
	{
		integer = false;
		p++;
		if (p >= b->end || *p < '0' || *p > '9')
		{
			b->p = p;
			build_fail(b, "invalid number");
		}
		while (p < b->end && *p >= '0' && *p <= '9')
			p++;
	}
	if (p < b->end && (*p == 'e' || *p == 'E'))
	{
		integer = false;
		p++;
		if (p < b->end && (*p == '+' || *p == '-'))
			p++;
		if (p >= b->end || *p < '0' || *p > '9')
		{
			b->p = p;
			build_fail(b, "invalid number");
		}
		while (p < b->end && *p >= '0' && *p <= '9')
			p++;
	}
	b->p = p;
	if (!at_token_end(b))
		build_fail(b, "invalid token");

	v->type = jbvNumeric;
	if (integer && digits <= 18)
	{
		int64		n = 0;

		for (char *d = start + (*start == '-'); d < p; d++)
			n = n * 10 + (*d - '0');
		v->val.numeric = int64_to_numeric(*start == '-' ? -n : n);
		return;
	}
	/* numeric_in wants a terminated string: borrow the next byte */
	saved = *p;
	*p = '\0';
	v->val.numeric = DatumGetNumeric(DirectFunctionCall3(numeric_in, CStringGetDatum(start),
														 ObjectIdGetDatum(InvalidOid),
														 Int32GetDatum(-1)));
	*p = saved;
}

static void
parse_literal(JsonbBuilder *b, JsonbValue *v)
{
	static const struct
	{
		const char *word;
		int			len;
		enum jbvType type;
		bool		value;
	}			literals[] = {
		{"true", 4, jbvBool, true},
		{"false", 5, jbvBool, false},
		{"null", 4, jbvNull, false},
	};

	for (int i = 0; i < lengthof(literals); i++)
		if (b->end - b->p >= literals[i].len &&
			memcmp(b->p, literals[i].word, literals[i].len) == 0)
		{
			b->p += literals[i].len;
			if (!at_token_end(b))
				break;
			v->type = literals[i].type;
			v->val.boolean = literals[i].value;
			return;
		}
	build_fail(b, "invalid token");
}

/* jsonb's key order: shorter first, then bytewise; among equal keys the later first. */
static inline int
pair_cmp(const JsonbPair *a, const JsonbPair *b)
{
	if (a->key.val.string.len != b->key.val.string.len)
		return a->key.val.string.len > b->key.val.string.len ? 1 : -1;
	{
		int			r = memcmp(a->key.val.string.val, b->key.val.string.val, a->key.val.string.len);

		if (r != 0)
			return r;
	}
	return a->order > b->order ? -1 : 1;
}

static int
pair_qsort_cmp(const void *a, const void *b)
{
	return pair_cmp((const JsonbPair *) a, (const JsonbPair *) b);
}

/*
 * Sorts the pairs into jsonb's order and keeps one per key (the last one
 * given), as jsonb_in does.  Keys are ordered by length first, so short
 * keys are first distributed by length (a counting sort, which keeps the
 * given order) and only keys of one length are compared; long keys fall
 * back to a general sort.
 */
#define SHORT_KEY 64

static void
sort_pairs(JsonbValue *obj)
{
	JsonbPair  *pairs = obj->val.object.pairs;
	int			n = obj->val.object.nPairs;
	int			out;

	if (n < 2)
		return;
	{
		int			count[SHORT_KEY + 1] = {0};
		bool		short_keys = true;
		JsonbPair  *sorted;

		for (int i = 0; i < n && short_keys; i++)
		{
			if (pairs[i].key.val.string.len < SHORT_KEY)
				count[pairs[i].key.val.string.len + 1]++;
			else
				short_keys = false;
		}
		if (short_keys)
		{
			for (int l = 1; l <= SHORT_KEY; l++)
				count[l] += count[l - 1];
			sorted = palloc(sizeof(JsonbPair) * n);
			for (int i = 0; i < n; i++)
				sorted[count[pairs[i].key.val.string.len]++] = pairs[i];
			/* now each length's keys are together, in the given order */
			for (int start = 0; start < n;)
			{
				int			len = sorted[start].key.val.string.len;
				int			end = start + 1;

				while (end < n && sorted[end].key.val.string.len == len)
					end++;
				for (int i = start + 1; i < end; i++)
				{
					JsonbPair	tmp = sorted[i];
					int			j = i;

					while (j > start && pair_cmp(&sorted[j - 1], &tmp) > 0)
					{
						sorted[j] = sorted[j - 1];
						j--;
					}
					sorted[j] = tmp;
				}
				start = end;
			}
			pairs = obj->val.object.pairs = sorted;
		}
		else
			qsort(pairs, n, sizeof(JsonbPair), pair_qsort_cmp);
	}

	out = 1;
	for (int i = 1; i < n; i++)
		if (pairs[i].key.val.string.len != pairs[out - 1].key.val.string.len ||
			memcmp(pairs[i].key.val.string.val, pairs[out - 1].key.val.string.val,
				   pairs[i].key.val.string.len) != 0)
			pairs[out++] = pairs[i];
	obj->val.object.nPairs = out;
}

/*
 * After a member of an object or array: true at a comma (another follows),
 * false at the closing bracket; both are consumed.
 */
static bool
another_member(JsonbBuilder *b, char close)
{
	skip_ws(b);
	if (b->p < b->end && *b->p == ',')
	{
		b->p++;
		return true;
	}
	if (b->p < b->end && *b->p == close)
	{
		b->p++;
		return false;
	}
	build_fail(b, close == '}' ? "expected \",\" or \"}\"" : "expected \",\" or \"]\"");
}

static void
parse_object(JsonbBuilder *b, JsonbValue *v)
{
	int			cap = 8;
	int			n = 0;
	JsonbPair  *pairs = palloc(sizeof(JsonbPair) * cap);

	b->p++;						/* { */
	skip_ws(b);
	if (b->p < b->end && *b->p == '}')
		b->p++;
	else
		for (;;)
		{
			if (n == cap)
			{
				cap *= 2;
				pairs = repalloc(pairs, sizeof(JsonbPair) * cap);
			}
			skip_ws(b);
			if (b->p >= b->end || *b->p != '"')
				build_fail(b, "expected an object key");
			parse_string_value(b, &pairs[n].key);
			skip_ws(b);
			if (b->p >= b->end || *b->p != ':')
				build_fail(b, "expected \":\"");
			b->p++;
			parse_value(b, &pairs[n].value);
			pairs[n].order = n;
			n++;
			if (!another_member(b, '}'))
				break;
		}
	v->type = jbvObject;
	v->val.object.pairs = pairs;
	v->val.object.nPairs = n;
	sort_pairs(v);
}

static void
parse_array(JsonbBuilder *b, JsonbValue *v)
{
	int			cap = 8;
	int			n = 0;
	JsonbValue *elems = palloc(sizeof(JsonbValue) * cap);

	b->p++;						/* [ */
	skip_ws(b);
	if (b->p < b->end && *b->p == ']')
		b->p++;
	else
		for (;;)
		{
			if (n == cap)
			{
				cap *= 2;
				elems = repalloc(elems, sizeof(JsonbValue) * cap);
			}
			parse_value(b, &elems[n++]);
			if (!another_member(b, ']'))
				break;
		}
	v->type = jbvArray;
	v->val.array.elems = elems;
	v->val.array.nElems = n;
	v->val.array.rawScalar = false;
}

static void
parse_value(JsonbBuilder *b, JsonbValue *v)
{
	/* nesting is bounded by the stack, as for jsonb_in */
	check_stack_depth();
	skip_ws(b);
	if (b->p >= b->end)
		build_fail(b, "unexpected end of the text");
	switch (*b->p)
	{
		case '{':
			parse_object(b, v);
			break;
		case '[':
			parse_array(b, v);
			break;
		case '"':
			parse_string_value(b, v);
			break;
		case 't':
		case 'f':
		case 'n':
			parse_literal(b, v);
			break;
		default:
			if (*b->p == '-' || (*b->p >= '0' && *b->p <= '9'))
				parse_number(b, v);
			else
				build_fail(b, "invalid token");
	}
}

/*
 * The jsonb value of the JSON text [text, text + len), which must be
 * followed by a NUL.  The text is de-escaped in place, so it is consumed.
 */
Jsonb *
phx_jsonb_from_text(char *text, int len)
{
	JsonbBuilder b;
	JsonbValue	root;

	b.p = b.start = text;
	b.end = text + len;
	parse_value(&b, &root);
	skip_ws(&b);
	if (b.p < b.end)
		build_fail(&b, "unexpected text after the JSON value");
	return JsonbValueToJsonb(&root);
}
