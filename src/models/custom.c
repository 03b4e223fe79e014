/*-------------------------------------------------------------------------
 *
 * custom.c
 *		What an export's owner adds to a model: extra columns computed by
 *		PostHog from HogQL expressions, and a HogQL filter with its values
 *		(exports.columns, filter, filter_values).  Here they are read from
 *		create_export()'s and alter_export()'s arguments and checked.
 *
 * Expressions and the filter are the owner's own HogQL, pasted into the
 * model's query as written: they run in PostHog with the owner's key, so
 * they can do nothing the owner could not do with the query API.  Values
 * never are pasted: they travel as HogQL values ({placeholders}), so their
 * names must be valid placeholder names and must not be ones the models
 * use themselves (phx_placeholder_reserved()).
 *
 * The owner's text is pasted inside parentheses ("(<expression>\n) AS
 * phx_column_<n>", "AND (<filter>\n)"), so a lexical check
 * (check_hogql_lexically()) makes sure it stays inside them: brackets
 * balance outside string literals, quoted identifiers and comments, no
 * comma at the top level, and every {placeholder} is one of filter_values
 * (a model's own, such as {start}, would take the model's value in a run
 * and another, or none, in the settle count).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "parser/parse_type.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"

#include "models/models.h"

/*
 * The placeholders the models put into their own queries (events.c,
 * persons.c, sessions.c, and the settle count of events.c), and two that
 * PostHog treats itself: {filters} (posthog/hogql/placeholders.py) and
 * "variables" (which its query runner adds to the values).  The
 * patterns: "cursor_" followed by anything, and s, e, m followed by
 * digits, and r<digits>_start, r<digits>_end.
 */
static const char *const reserved_names[] = {
	"start", "end", "min_timestamp", "min_end", "include_events", "exclude_events",
	"filters", "variables", NULL
};

/* digits from p on, and then the string "tail"? */
static bool
digits_then(const char *p, const char *tail)
{
	const char *q = p;

	while (*q >= '0' && *q <= '9')
		q++;
	return q > p && strcmp(q, tail) == 0;
}

/* Is name a placeholder one of the models uses in its own queries? */
bool
phx_placeholder_reserved(const char *name)
{
	for (int i = 0; reserved_names[i]; i++)
		if (strcmp(name, reserved_names[i]) == 0)
			return true;
	if (strncmp(name, "cursor_", 7) == 0)
		return true;
	if ((name[0] == 's' || name[0] == 'e' || name[0] == 'm') && digits_then(name + 1, ""))
		return true;
	if (name[0] == 'r' && (digits_then(name + 1, "_start") || digits_then(name + 1, "_end")))
		return true;
	return false;
}

/* A HogQL placeholder name: a letter or _, then letters, digits or _. */
static bool
placeholder_name_valid(const char *name)
{
	if (!((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= 'A' && name[0] <= 'Z') || name[0] == '_'))
		return false;
	for (const char *p = name + 1; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_'))
			return false;
	return strlen(name) < NAMEDATALEN;
}

/* Control characters other than tab, line feed and carriage return? */
static bool
has_bad_control_char(const char *s)
{
	for (const unsigned char *p = (const unsigned char *) s; *p; p++)
		if ((*p < 0x20 && *p != '\t' && *p != '\n' && *p != '\r') || *p == 0x7f)
			return true;
	return false;
}

/* Only white space? */
static bool
is_blank(const char *s)
{
	for (; *s; s++)
		if (*s != ' ' && *s != '\t' && *s != '\n' && *s != '\r')
			return false;
	return true;
}

/* A value of filter_values: a scalar, or an array of scalars. */
static bool
value_is_simple(JsonbValue *v)
{
	JsonbIterator *it;
	JsonbValue	e;
	JsonbIteratorToken tok;

	if (v->type != jbvBinary)
		return true;
	if (!JsonContainerIsArray(v->val.binary.data))
		return false;
	it = JsonbIteratorInit(v->val.binary.data);
	while ((tok = JsonbIteratorNext(&it, &e, true)) != WJB_DONE)
		if (tok == WJB_ELEM && e.type == jbvBinary)
			return false;
	return true;
}

/*
 * create_export()'s or alter_export()'s columns (json_values false: each
 * value a string, the HogQL expression) or filter_values (json_values
 * true: each value's JSON text) as a list of PhxNamedText, in jsonb's key
 * order.  An empty object is NIL.
 */
List *
phx_named_texts_arg(Jsonb *jb, const char *argname, bool json_values)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;
	List	   *result = NIL;
	PhxNamedText *nt = NULL;

	if (!JB_ROOT_IS_OBJECT(jb))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a JSON object", argname),
				 json_values ?
				 errhint("Give each placeholder its value, as in '{\"plan\": \"pro\"}'.") :
				 errhint("Give each destination column its HogQL expression, as in '{\"browser\": \"properties.$browser\"}'.")));
	it = JsonbIteratorInit(&jb->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		if (tok == WJB_KEY)
		{
			nt = palloc0(sizeof(PhxNamedText));
			nt->name = pnstrdup(v.val.string.val, v.val.string.len);
			continue;
		}
		if (tok != WJB_VALUE || nt == NULL)
			continue;
		if (!json_values)
		{
			if (v.type != jbvString)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("the expression of column \"%s\" in %s must be a JSON string", nt->name, argname),
						 errhint("Write the HogQL expression as a string, as in '{\"browser\": \"properties.$browser\"}'.")));
			nt->text = pnstrdup(v.val.string.val, v.val.string.len);
		}
		else
		{
			if (!value_is_simple(&v))
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("the value of placeholder \"%s\" in %s must be a string, a number, a boolean, null or an array of those",
								nt->name, argname),
						 errdetail("HogQL values are constants or lists of constants.")));
			nt->text = JsonbToCString(NULL, &JsonbValueToJsonb(&v)->root, 0);
		}
		result = lappend(result, nt);
		nt = NULL;
	}
	return result;
}

/* The text of the reserved placeholders, for messages. */
#define RESERVED_PLACEHOLDERS_TEXT \
	"start, end, min_timestamp, min_end, include_events, exclude_events, filters, variables, " \
	"cursor_*, s<digits>, e<digits>, m<digits>, r<digits>_start and r<digits>_end"

/*
 * The most bytes of HogQL and values an owner may add: they are printed
 * into the SQL PostHog sends ClickHouse, whose max_query_size is 256 KiB,
 * beside the model's own query and its event lists.
 */
#define PHX_MAX_SHAPE_BYTES 65536
#define PHX_MAX_CUSTOM_COLUMNS 100

/* PostgreSQL's system columns, which no table column can be named as */
static const char *const system_columns[] = {
	"ctid", "xmin", "cmin", "xmax", "cmax", "tableoid", NULL
};

/* A piece of the owner's HogQL: not blank, no control characters but tab and line breaks. */
static void
check_hogql_text(const char *text, const char *what)
{
	if (is_blank(text))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be empty", what)));
	if (has_bad_control_char(text))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not contain control characters", what),
				 errdetail("Tabs and line breaks are allowed; other bytes below 0x20, and 0x7f, are not.")));
}

/* A destination column name: not empty, short enough not to be truncated, printable. */
static void
check_column_name(const char *name, const char *argname)
{
	if (name[0] == '\0')
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a column name in %s must not be empty", argname)));
	if (strlen(name) >= NAMEDATALEN)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("column name \"%s\" in %s is too long", name, argname),
				 errdetail("Column names are at most %d bytes.", NAMEDATALEN - 1)));
	if (phx_has_control_char(name))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a column name in %s must not contain control characters", argname)));
}

/* May c continue a HogQL identifier (letters, digits, _ and $)? */
static bool
ident_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '$';
}

/* White space as HogQL's lexer skips it (its Unicode spaces are refused elsewhere: they are not ASCII). */
static bool
space_char(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* Refuses the owner's text "what" for a lexical reason. */
static void
lexical_error(const char *what, const char *message, const char *detail)
{
	ereport(ERROR,
			(errcode(ERRCODE_SYNTAX_ERROR),
			 errmsg("%s %s", what, message),
			 detail ? errdetail("%s", detail) : 0,
			 errhint("Columns and the filter are single HogQL expressions: they are put inside parentheses in the export's query.")));
}

/*
 * Would PostHog's lexer read the '<' at p as the start of a HogQLX tag
 * (isOpeningTag() of posthog/hogql/grammar/HogQLLexer.python.g4)?  A
 * letter or _ after it, then a name, then '>' or '/', or white space and
 * then anything but an operator.  Erring towards "yes" only refuses.
 */
static bool
opens_tag(const char *p)
{
	const char *q = p + 1;

	if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || *q == '_'))
		return false;
	while (ident_char(*q) || *q == '-')
		q++;
	if (*q == '>' || *q == '/')
		return true;
	if (!space_char(*q))
		return false;
	while (space_char(*q))
		q++;
	return *q == '>' || *q == '/' || *q == '-' || *q == '#' || ident_char(*q);
}

/*
 * The end of the quoted text that starts at p (a string literal in '',
 * a quoted identifier in "" or ``): a backslash escapes the next byte,
 * a doubled quote is one quote.  NULL if it is not closed.
 */
static const char *
quoted_end(const char *p)
{
	char		quote = *p++;

	for (;;)
	{
		if (*p == '\0')
			return NULL;
		if (*p == '\\')
		{
			if (p[1] == '\0')
				return NULL;
			p += 2;
			continue;
		}
		if (*p == quote)
		{
			if (p[1] == quote)
			{
				p += 2;
				continue;
			}
			return p;
		}
		p++;
	}
}

/* Whether name is one of exp's filter_values. */
static bool
has_value(const PhxExport *exp, const char *name)
{
	ListCell   *lc;

	foreach(lc, exp->filter_values)
		if (strcmp(((PhxNamedText *) lfirst(lc))->name, name) == 0)
			return true;
	return false;
}

/*
 * The {placeholder} whose '{' is at p: a name between the braces (white
 * space around it allowed), one of filter_values and not reserved.
 * Returns the '}'.
 */
static const char *
check_placeholder(const char *p, const char *what, const PhxExport *exp)
{
	const char *q = p + 1;
	const char *start;
	char	   *name;

	while (space_char(*q))
		q++;
	start = q;
	if ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || *q == '_')
		while ((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') || *q == '_')
			q++;
	name = pnstrdup(start, q - start);
	while (space_char(*q))
		q++;
	if (name[0] == '\0' || *q != '}')
		lexical_error(what, "has a brace that does not enclose a placeholder name",
					  "Braces are allowed only around a placeholder, as in {name}, whose value is in filter_values.");
	if (phx_placeholder_reserved(name))
		ereport(ERROR,
				(errcode(ERRCODE_RESERVED_NAME),
				 errmsg("placeholder {%s} in %s is reserved", name, what),
				 errdetail("The export's own queries and PostHog use the placeholders " RESERVED_PLACEHOLDERS_TEXT "."),
				 errhint("Use a placeholder of your own, and give its value in filter_values.")));
	if (!has_value(exp, name))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_PARAMETER),
				 errmsg("placeholder {%s} in %s has no value in filter_values", name, what),
				 errhint("Give its value in filter_values, as in '{\"%s\": \"value\"}'.", name)));
	return q;
}

/*
 * The lexical check of the owner's HogQL text "what" (a column's
 * expression or the filter), which is pasted inside parentheses: outside
 * string literals, quoted identifiers and comments (as PostHog's lexer,
 * posthog/hogql/grammar/HogQLLexer.common.g4, reads them), parentheses
 * and brackets nest and balance, no comma or semicolon is at the top
 * level, placeholders are checked (check_placeholder()), and what this
 * check cannot follow is refused: unclosed quotes and comments, f'...'
 * template strings, HogQLX tags.
 */
static void
check_hogql_lexically(const char *text, const char *what, const PhxExport *exp)
{
	char	   *stack = palloc(strlen(text) + 1);
	int			depth = 0;

	for (const char *p = text; *p; p++)
	{
		switch (*p)
		{
			case '\'':
			case '"':
			case '`':
				if (*p == '\'' && p > text && (p[-1] == 'f' || p[-1] == 'F') &&
					(p - 1 == text || !ident_char(p[-2])))
					lexical_error(what, "has a template string (f'...')",
								  "Template strings are not allowed in columns and the filter; use concat().");
				p = quoted_end(p);
				if (p == NULL)
					lexical_error(what, "has an unterminated string literal or quoted identifier", NULL);
				break;
			case '-':
			case '/':
				if (p[1] == *p)
				{
					/* -- or // : a comment to the end of the line */
					while (p[1] != '\0' && p[1] != '\n' && p[1] != '\r')
						p++;
				}
				else if (*p == '/' && p[1] == '*')
				{
					const char *end = strstr(p + 2, "*/");

					if (end == NULL)
						lexical_error(what, "has an unterminated comment", NULL);
					p = end + 1;
				}
				break;
			case '(':
			case '[':
				stack[depth++] = *p;
				break;
			case ')':
			case ']':
				if (depth == 0)
					lexical_error(what, psprintf("closes a %s it did not open", *p == ')' ? "parenthesis" : "bracket"), NULL);
				if (stack[--depth] != (*p == ')' ? '(' : '['))
					lexical_error(what, psprintf("closes a %s with \"%c\"", stack[depth] == '(' ? "parenthesis" : "bracket", *p), NULL);
				break;
			case ',':
			case ';':
				if (depth == 0)
					lexical_error(what, psprintf("has a \"%c\" outside parentheses", *p),
								  "It must be a single expression.");
				break;
			case '{':
				p = check_placeholder(p, what, exp);
				break;
			case '}':
				lexical_error(what, "has a \"}\" that closes no placeholder", NULL);
				break;
			case '<':
				if (p[1] == '/' || opens_tag(p))
					lexical_error(what, "has a HogQLX tag",
								  "Tags are not allowed in columns and the filter; write \"a < b\" with spaces for a comparison.");
				break;
			default:
				break;
		}
	}
	if (depth > 0)
		lexical_error(what, psprintf("leaves %d parenthes%s or bracket%s open", depth,
									 depth == 1 ? "is" : "es", depth == 1 ? "" : "s"), NULL);
}

/*
 * Checks what the owner adds to export exp of model m (NULL: a model
 * that has no run side yet): columns and filter only where the model
 * takes them, no column named as a model column, valid and unreserved
 * placeholder names, query and key for the hogql model only, and sizes.
 */
void
phx_check_shape(const PhxExport *exp, const PhxModel *m)
{
	bool		hogql = strcmp(exp->model, "hogql") == 0;
	int64		bytes = 0;
	ListCell   *lc;

	/* a hogql export's columns are its query's, stored by the probe */
	if (((exp->columns != NIL && !hogql) || exp->filter != NULL || exp->filter_values != NIL) &&
		m != NULL && !m->shapeable)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("columns, filter and filter_values do not apply to the %s model", m->name),
				 errdetail("They apply to the events model (and the hogql model writes its own query)."),
				 errhint("Use the hogql model to export %s with columns or conditions of your own.", m->name)));
	if (exp->filter_values != NIL && exp->filter == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("filter_values needs a filter"),
				 errdetail("filter_values gives the values of the filter's {placeholders}.")));
	if (!hogql && (exp->query != NULL || exp->key != NIL))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("query and key apply to the hogql model only")));

	/* a hogql export's stored columns are its query's, not custom columns */
	if (!hogql && list_length(exp->columns) > PHX_MAX_CUSTOM_COLUMNS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("columns gives %d custom columns; at most %d are allowed",
						list_length(exp->columns), PHX_MAX_CUSTOM_COLUMNS)));
	foreach(lc, hogql ? NIL : exp->columns)
	{
		PhxNamedText *c = lfirst(lc);

		check_column_name(c->name, "columns");
		for (int i = 0; system_columns[i]; i++)
			if (strcmp(c->name, system_columns[i]) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_RESERVED_NAME),
						 errmsg("column name \"%s\" in columns is the name of a system column", c->name),
						 errdetail("Every PostgreSQL table has the system columns ctid, xmin, cmin, xmax, cmax and tableoid."),
						 errhint("Give the extra column another name.")));
		check_hogql_text(c->text, psprintf("the expression of column \"%s\"", c->name));
		for (int i = 0; m != NULL && i < m->ncolumns; i++)
			if (strcmp(m->columns[i].name, c->name) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_DUPLICATE_COLUMN),
						 errmsg("column \"%s\" in columns is a column of the %s model", c->name, m->name),
						 errhint("Give the extra column another name.")));
		bytes += strlen(c->name) + strlen(c->text);
	}
	if (exp->filter != NULL)
	{
		check_hogql_text(exp->filter, "filter");
		bytes += strlen(exp->filter);
	}
	foreach(lc, exp->filter_values)
	{
		PhxNamedText *v = lfirst(lc);

		if (!placeholder_name_valid(v->name))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("\"%s\" in filter_values is not a valid placeholder name", v->name),
					 errdetail("A placeholder name is a letter or an underscore followed by letters, digits or underscores, at most %d bytes.",
							   NAMEDATALEN - 1)));
		if (phx_placeholder_reserved(v->name))
			ereport(ERROR,
					(errcode(ERRCODE_RESERVED_NAME),
					 errmsg("placeholder name \"%s\" in filter_values is reserved", v->name),
					 errdetail("The export's own queries and PostHog use the placeholders " RESERVED_PLACEHOLDERS_TEXT "."),
					 errhint("Rename the placeholder in the filter and in filter_values.")));
		bytes += strlen(v->name) + strlen(v->text);
	}
	/* after the values' names: the text's placeholders are checked against them */
	foreach(lc, hogql ? NIL : exp->columns)
	{
		PhxNamedText *c = lfirst(lc);

		check_hogql_lexically(c->text, psprintf("the expression of column \"%s\"", c->name), exp);
	}
	if (exp->filter != NULL)
		check_hogql_lexically(exp->filter, "filter", exp);
	if (exp->query != NULL)
	{
		check_hogql_text(exp->query, "query");
		bytes += strlen(exp->query);
	}
	foreach(lc, exp->key)
	{
		const char *k = lfirst(lc);

		check_column_name(k, "key");
		bytes += strlen(k);
	}
	if (bytes > PHX_MAX_SHAPE_BYTES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("columns, filter, filter_values and query are too long for a PostHog query"),
				 errdetail("They take " INT64_FORMAT " bytes; at most %d fit beside the rest of the query under ClickHouse's 256 KiB max_query_size.",
						   bytes, PHX_MAX_SHAPE_BYTES)));
}

/* The alias of custom column i (0-based) in a model's query: ours, never the owner's text. */
char *
phx_custom_alias(int i)
{
	return psprintf("phx_column_%d", i + 1);
}

/*
 * ", (<expression>) AS phx_column_<n>" for each custom column of exp, to
 * follow a model's select list.  The expression is pasted as the owner
 * wrote it, its line ended, so that a -- comment in it ends there.
 */
void
phx_append_custom_select(StringInfo text, const PhxExport *exp)
{
	ListCell   *lc;

	foreach(lc, exp->columns)
	{
		PhxNamedText *c = lfirst(lc);

		appendStringInfo(text, ", (%s\n) AS %s", c->text, phx_custom_alias(foreach_current_index(lc)));
	}
}

/* " AND (<filter>)" with the filter's values, when exp has a filter. */
void
phx_append_filter(PhxQuery *q, const PhxExport *exp)
{
	ListCell   *lc;

	if (exp->filter == NULL)
		return;
	appendStringInfo(&q->text, " AND (%s\n)", exp->filter);
	foreach(lc, exp->filter_values)
	{
		PhxNamedText *v = lfirst(lc);

		phx_value_json(q, v->name, v->text);
	}
}

/* The SQL type a new table gets for custom column name: the probe's, else text. */
static const char *
create_type(const PhxExport *exp, const char *name)
{
	ListCell   *lc;

	foreach(lc, exp->column_types)
	{
		PhxNamedText *t = lfirst(lc);

		if (strcmp(t->name, name) == 0)
			return t->text;
	}
	return "text";
}

/*
 * The model export exp writes: base itself, or, with custom columns, a
 * copy with those columns after the model's.  The type of each custom
 * column's values follows the destination column when the table has it
 * (phx_custom_value_type()), else the type a new table gets.  Sets
 * exp->column_typeids, which tells the model's begin() to select and
 * convert the custom columns: the model written and the rows read agree
 * as long as both come from one call (once per interval).
 */
const PhxModel *
phx_shaped_model(const PhxModel *base, PhxExport *exp)
{
	PhxModel   *m;
	PhxModelColumn *cols;
	Oid			nsp = get_namespace_oid(exp->schema_name, true);
	Oid			relid = OidIsValid(nsp) ? get_relname_relid(exp->table_name, nsp) : InvalidOid;
	int			n = list_length(exp->columns);
	ListCell   *lc;

	exp->column_typeids = NULL;
	if (n == 0 || !base->shapeable)
		return base;
	m = palloc(sizeof(PhxModel));
	*m = *base;
	cols = palloc(sizeof(PhxModelColumn) * (base->ncolumns + n));
	memcpy(cols, base->columns, sizeof(PhxModelColumn) * base->ncolumns);
	exp->column_typeids = palloc(sizeof(Oid) * n);
	foreach(lc, exp->columns)
	{
		PhxNamedText *c = lfirst(lc);
		PhxModelColumn *col = &cols[base->ncolumns + foreach_current_index(lc)];
		AttrNumber	att = OidIsValid(relid) ? get_attnum(relid, c->name) : InvalidAttrNumber;
		Oid			atttype;
		int32		typmod;

		col->name = c->name;
		col->create_type = create_type(exp, c->name);
		if (att != InvalidAttrNumber && att > 0)
			atttype = get_atttype(relid, att);
		else
			parseTypeString(col->create_type, &atttype, &typmod, false);
		col->type = phx_custom_value_type(atttype);
		exp->column_typeids[foreach_current_index(lc)] = col->type;
	}
	m->columns = cols;
	m->ncolumns = base->ncolumns + n;
	return m;
}

/* Names the probe in the errors of its request. */
static void
probe_context(void *arg)
{
	errcontext("checking the columns and filter of export \"%s\" with PostHog (a query for no rows)",
			   (const char *) arg);
}

/*
 * One request to PostHog: the model's query of export exp with its custom
 * columns and filter, for no rows (LIMIT 0).  PostHog parses and types
 * it, so a bad expression fails here with PostHog's message; the types
 * of the custom columns become exp->column_types (SQL types for a new
 * table, by phx_hogql_type_sql()).  A model without a probe query: nothing.
 */
void
phx_probe_shape(const PhxModel *m, PhxExport *exp, PhxServerConfig *cfg)
{
	PhxQuery	q;
	PhxPage    *page;
	ErrorContextCallback cb;
	int			n = list_length(exp->columns);
	int			ncolumns;
	char	  **types;
	ListCell   *lc;

	if (m->probe_query == NULL)
		return;
	ncolumns = m->probe_query(exp, &q);
	cb.callback = probe_context;
	cb.arg = exp->name;
	cb.previous = error_context_stack;
	error_context_stack = &cb;
	page = phx_http_query(cfg, &q, psprintf("posthog_export %s check", exp->name), NULL, NULL, NULL);
	error_context_stack = cb.previous;
	/* exactly: an expression that added a column would shift the rows' cells */
	if (page->ncolumns != ncolumns)
		ereport(ERROR,
				(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
				 errmsg("PostHog returned %d columns for the check of export \"%s\", whose query selects %d",
						page->ncolumns, exp->name, ncolumns),
				 errdetail("Each of columns must be one expression, giving one column.")));
	if (n == 0)
		return;
	types = phx_page_types(page);
	exp->column_types = NIL;
	foreach(lc, exp->columns)
	{
		PhxNamedText *c = lfirst(lc);
		PhxNamedText *t = palloc(sizeof(PhxNamedText));
		int			col = page->ncolumns - n + foreach_current_index(lc);
		const char *sql = phx_hogql_type_sql(types[col]);

		if (strcmp(page->columns[col], phx_custom_alias(foreach_current_index(lc))) != 0)
			ereport(ERROR,
					(errcode(ERRCODE_FDW_INVALID_DATA_TYPE),
					 errmsg("PostHog returned column \"%s\" where the check of export \"%s\" selects \"%s\"",
							page->columns[col], exp->name, phx_custom_alias(foreach_current_index(lc)))));
		t->name = c->name;
		t->text = pstrdup(sql ? sql : "text");
		exp->column_types = lappend(exp->column_types, t);
	}
}
