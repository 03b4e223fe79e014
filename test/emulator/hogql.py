"""The HogQL parser: tokens -> an AST of tuples and dicts (the subset the emulator supports), and its text."""

import re

from errors import HogQLError, HogQLSyntaxError
from lexer import tokenize


# The AST (tuples)
#
# Expressions:
#   ('const', value)  ('ph', name)  ('field', [names])  ('call', name, args, distinct)
#   ('star',)  ('cmp', op, l, r)  ('and', [..])  ('or', [..])  ('not', e)
#   ('in', lhs, rhs, negated)  rhs: ('tuple', [..]) | ('ph', name) | ('subquery', sel)
#   ('isnull', e, negated)  ('tuple', [..])  ('neg', e)  ('arith', op, l, r)  ('index', e, key)
#   ('like', l, r, negated, case_insensitive)
# Select: dict(select=[(expr, alias)], from_=source|None, joins=[(kind, source, on)], where, group_by,
#              having, order_by=[(expr, desc, nulls)], limit)
# Source: ('table', name, alias) | ('subquery', sel, alias)

CLAUSE_WORDS = {"SELECT", "FROM", "WHERE", "GROUP", "HAVING", "ORDER", "LIMIT", "OFFSET", "JOIN", "LEFT",
                "RIGHT", "INNER", "OUTER", "FULL", "CROSS", "ON", "USING", "AS", "UNION", "SETTINGS",
                "PREWHERE", "ARRAY", "WITH", "SAMPLE", "FINAL", "FORMAT", "WINDOW", "QUALIFY", "INTO",
                "AND", "OR", "NOT", "IN", "IS", "BY", "ASC", "DESC", "NULLS", "EXCEPT", "INTERSECT",
                "ANY", "ALL", "SEMI", "ANTI", "ASOF", "GLOBAL", "PASTE", "LIKE", "ILIKE", "BETWEEN",
                "CASE", "WHEN", "THEN", "ELSE", "END", "INTERVAL", "DISTINCT"}
UNSUPPORTED_CLAUSES = {"UNION", "SETTINGS", "PREWHERE", "ARRAY", "WITH", "SAMPLE", "FINAL", "FORMAT",
                       "WINDOW", "QUALIFY", "INTO", "EXCEPT", "INTERSECT", "RIGHT", "FULL", "CROSS",
                       "USING", "ANY", "ALL", "SEMI", "ANTI", "ASOF", "GLOBAL", "PASTE"}
CMP_OPS = {"=", "==", "!=", "<>", "<", "<=", ">", ">="}
# posthog/hogql/constants.py: RESERVED_KEYWORDS = [*KEYWORDS, "team_id"] with KEYWORDS = ["true", "false", "null"];
# the parser rejects an alias (of a column or a table) equal to one of them, compared in lower case.  The
# newest parser lets a quoted alias through; older ones strip the quotes first and reject it too, and so does
# the emulator.
RESERVED_ALIASES = ("true", "false", "null", "team_id")


class Parser:
    def __init__(self, text):
        self.text = text
        self.toks = tokenize(text)
        self.i = 0
        for t in self.toks:
            if t.kind == "id" and t.upper == "OFFSET":
                raise HogQLError(
                    "OFFSET is not allowed in queries made with a personal API key (position %d). "
                    "Paginate with a keyset cursor instead, e.g. WHERE (timestamp, uuid) > (...) "
                    "ORDER BY timestamp, uuid LIMIT n." % t.pos)

    # -- helpers
    def peek(self, k=0):
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self):
        t = self.toks[self.i]
        if t.kind != "eof":
            self.i += 1
        return t

    def is_kw(self, word, k=0):
        t = self.peek(k)
        return t.kind == "id" and t.upper == word

    def accept_kw(self, word):
        if self.is_kw(word):
            self.i += 1
            return True
        return False

    def expect_kw(self, word):
        if not self.accept_kw(word):
            self.error("expected %s" % word)

    def is_op(self, op, k=0):
        t = self.peek(k)
        return t.kind == "op" and t.value == op

    def accept_op(self, op):
        if self.is_op(op):
            self.i += 1
            return True
        return False

    def expect_op(self, op):
        if not self.accept_op(op):
            self.error("expected '%s'" % op)

    def error(self, msg, tok=None):
        t = tok or self.peek()
        got = "end of query" if t.kind == "eof" else repr(t.value)
        raise HogQLSyntaxError("Syntax error at position %d (near %s): %s" % (t.pos, got, msg))

    def unsupported(self, what, tok=None):
        t = tok or self.peek()
        raise HogQLError("%s is not supported by the emulator (position %d)" % (what, t.pos))

    # -- entry
    def parse_query(self):
        sel = self.parse_select()
        t = self.peek()
        if t.kind != "eof":
            if self.accept_op(";") and self.peek().kind == "eof":
                return sel
            if t.kind == "id" and t.upper in UNSUPPORTED_CLAUSES:
                self.unsupported(t.upper)
            self.error("unexpected text after the end of the query")
        return sel

    def parse_select(self):
        if self.is_op("("):
            self.unsupported("A parenthesized top-level SELECT")
        self.expect_kw("SELECT")
        if self.is_kw("DISTINCT"):
            self.unsupported("SELECT DISTINCT")
        sel = dict(select=[], from_=None, joins=[], where=None, group_by=[], having=None, order_by=[],
                   limit=None, limit_by=None)
        while True:
            if self.is_op("*"):
                # SELECT * (alone) over a subquery: its columns, in order (posthog/hogql/resolver.py,
                # _asterisk_columns); over a table the emulator does not expand it
                star = self.next()
                if sel["select"] or self.is_op(","):
                    self.unsupported("* beside other columns", star)
                sel["star"] = star.pos
                break
            e = self.parse_expr()
            alias = None
            if self.accept_kw("AS"):
                alias = self.parse_alias_name()
            sel["select"].append((e, alias))
            if not self.accept_op(","):
                break
        if self.accept_kw("FROM"):
            sel["from_"] = self.parse_source()
            while True:
                kind = None
                t = self.peek()
                if self.is_kw("JOIN"):
                    kind = "INNER"
                    self.next()
                elif self.is_kw("INNER") and self.is_kw("JOIN", 1):
                    kind = "INNER"
                    self.i += 2
                elif self.is_kw("LEFT"):
                    self.next()
                    self.accept_kw("OUTER")
                    if not self.accept_kw("JOIN"):
                        if self.peek().kind == "id" and self.peek().upper in UNSUPPORTED_CLAUSES:
                            self.unsupported("LEFT %s JOIN" % self.peek().upper)
                        self.error("expected JOIN")
                    kind = "LEFT"
                elif t.kind == "id" and t.upper in ("RIGHT", "FULL", "CROSS", "ANY", "ALL", "SEMI", "ANTI",
                                                     "ASOF", "GLOBAL", "ARRAY", "PASTE"):
                    self.unsupported("%s JOIN" % t.upper)
                elif self.is_op(","):
                    self.unsupported("A comma join (FROM a, b)")
                if kind is None:
                    break
                src = self.parse_source()
                if self.is_kw("USING"):
                    self.unsupported("JOIN ... USING")
                self.expect_kw("ON")
                on = self.parse_expr()
                sel["joins"].append((kind, src, on))
        if self.accept_kw("WHERE"):
            sel["where"] = self.parse_expr()
        if self.is_kw("GROUP"):
            self.next()
            self.expect_kw("BY")
            if self.is_kw("ALL") or self.is_kw("ROLLUP") or self.is_kw("CUBE"):
                self.unsupported("GROUP BY %s" % self.peek().upper)
            sel["group_by"] = self.parse_expr_list()
            if self.is_kw("WITH"):
                self.unsupported("GROUP BY ... WITH")
        if self.accept_kw("HAVING"):
            sel["having"] = self.parse_expr()
        if self.is_kw("ORDER"):
            self.next()
            self.expect_kw("BY")
            while True:
                e = self.parse_expr()
                desc = False
                if self.accept_kw("DESC") or self.accept_kw("DESCENDING"):
                    desc = True
                elif self.accept_kw("ASC") or self.accept_kw("ASCENDING"):
                    desc = False
                nulls = None
                if self.accept_kw("NULLS"):
                    if self.accept_kw("FIRST"):
                        nulls = "FIRST"
                    elif self.accept_kw("LAST"):
                        nulls = "LAST"
                    else:
                        self.error("expected FIRST or LAST")
                    # posthog/hogql/parser.py visitOrderExpr (and the C++ parser): the grammar accepts
                    # NULLS FIRST/LAST, but ast.OrderExpr keeps only expr and ASC/DESC, so PostHog drops
                    # it and ClickHouse sorts NULLs last in both directions.  The emulator does the same.
                    nulls = None
                if self.is_kw("WITH") or self.is_kw("COLLATE"):
                    self.unsupported("ORDER BY ... %s" % self.peek().upper)
                sel["order_by"].append((e, desc, nulls))
                if not self.accept_op(","):
                    break
        if self.accept_kw("LIMIT"):
            tok = self.peek()
            sel["limit"] = self.parse_primary()
            if self.is_op(","):
                raise HogQLError("OFFSET is not allowed in queries made with a personal API key "
                                 "(LIMIT offset, count at position %d)" % tok.pos)
            if self.is_kw("BY"):
                self.unsupported("LIMIT ... BY")
            if self.is_kw("WITH"):
                self.unsupported("LIMIT ... WITH TIES")
        return sel

    def parse_alias_name(self):
        t = self.next()
        if t.kind == "qid" or (t.kind == "id" and t.upper not in CLAUSE_WORDS):
            return self.check_alias(t)
        self.error("expected an alias name", t)

    @staticmethod
    def check_alias(t):
        """The alias of token t, unless it is one of PostHog's reserved keywords (its SyntaxError text)."""
        if t.value.lower() in RESERVED_ALIASES:
            raise HogQLSyntaxError("\"%s\" cannot be an alias or identifier, as it's a reserved keyword" % t.value)
        return t.value

    def parse_source(self):
        t = self.peek()
        if self.accept_op("("):
            if not self.is_kw("SELECT"):
                self.error("expected SELECT in a subquery")
            sub = self.parse_select()
            self.expect_op(")")
            src = ["subquery", sub, None]
        elif t.kind in ("id", "qid"):
            if t.kind == "id" and t.upper in CLAUSE_WORDS:
                self.error("expected a table name")
            self.next()
            name = t.value
            if self.is_op("."):
                self.unsupported("A qualified table name")
            if self.is_op("("):
                self.unsupported("A table function")
            src = ["table", name, None]
        else:
            self.error("expected a table name or a subquery")
        if self.is_kw("FINAL") or self.is_kw("SAMPLE"):
            self.unsupported(self.peek().upper)
        if self.accept_kw("AS"):
            src[2] = self.parse_alias_name()
        else:
            t = self.peek()
            if t.kind == "qid" or (t.kind == "id" and t.upper not in CLAUSE_WORDS):
                self.next()
                src[2] = self.check_alias(t)
        return tuple(src)

    def parse_expr_list(self):
        items = [self.parse_expr()]
        while self.accept_op(","):
            items.append(self.parse_expr())
        return items

    def parse_expr(self):
        return self.parse_or()

    def parse_or(self):
        items = [self.parse_and()]
        while self.accept_kw("OR"):
            items.append(self.parse_and())
        return items[0] if len(items) == 1 else ("or", items)

    def parse_and(self):
        items = [self.parse_not()]
        while self.accept_kw("AND"):
            items.append(self.parse_not())
        return items[0] if len(items) == 1 else ("and", items)

    def parse_not(self):
        if self.accept_kw("NOT"):
            return ("not", self.parse_not())
        return self.parse_cmp()

    def parse_cmp(self):
        left = self.parse_additive()
        t = self.peek()
        if t.kind == "op" and t.value in CMP_OPS:
            self.next()
            right = self.parse_additive()
            self.check_no_chain()
            return ("cmp", t.value, left, right)
        negated = False
        if self.is_kw("NOT") and (self.is_kw("IN", 1) or self.is_kw("LIKE", 1) or self.is_kw("ILIKE", 1)
                                  or self.is_kw("BETWEEN", 1)):
            self.next()
            negated = True
            t = self.peek()
        if self.accept_kw("IN"):
            if self.is_kw("GLOBAL"):
                self.unsupported("GLOBAL IN")
            rhs = self.parse_in_rhs()
            return ("in", left, rhs, negated)
        if t.kind == "id" and t.upper in ("LIKE", "ILIKE"):
            self.next()
            right = self.parse_additive()
            self.check_no_chain()
            return ("like", left, right, negated, t.upper == "ILIKE")
        if t.kind == "id" and t.upper in ("BETWEEN", "REGEXP"):
            self.unsupported(t.upper)
        if self.accept_kw("IS"):
            neg = self.accept_kw("NOT")
            if not self.accept_kw("NULL"):
                self.error("expected NULL after IS [NOT]")
            return ("isnull", left, neg)
        return left

    def check_no_chain(self):
        t = self.peek()
        if t.kind == "op" and t.value in CMP_OPS:
            self.error("chained comparison operators need parentheses")

    def parse_in_rhs(self):
        t = self.peek()
        if t.kind == "ph":
            self.next()
            return ("ph", t.value)
        if t.kind == "id" and t.value.lower() == "tuple" and self.is_op("(", 1):
            self.next()  # tuple(a, b, ...): HogQL's tuple() function, the same set as (a, b, ...)
            self.expect_op("(")
            items = [] if self.is_op(")") else self.parse_expr_list()
            self.expect_op(")")
            return ("tuple", items)
        if self.accept_op("("):
            if self.is_kw("SELECT"):
                sub = self.parse_select()
                self.expect_op(")")
                return ("subquery", sub)
            if self.accept_op(")"):
                return ("tuple", [])
            items = self.parse_expr_list()
            self.expect_op(")")
            return ("tuple", items)
        self.error("expected a tuple, a {placeholder} or a subquery after IN")

    # HogQLParser.g4 columnExpr precedence: [] and . access, unary minus, then * / %, then + - ||,
    # then comparisons; left-associative
    def parse_additive(self):
        e = self.parse_multiplicative()
        while True:
            t = self.peek()
            if t.kind == "op" and t.value in ("+", "-"):
                self.next()
                e = ("arith", t.value, e, self.parse_multiplicative())
            elif t.kind == "op" and t.value == "||":
                self.unsupported("The operator '||'")
            else:
                return e

    def parse_multiplicative(self):
        e = self.parse_unary()
        while True:
            t = self.peek()
            if t.kind == "op" and t.value in ("*", "/", "%"):
                self.next()
                e = ("arith", t.value, e, self.parse_unary())
            else:
                return e

    def parse_unary(self):
        if self.accept_op("-"):
            e = self.parse_unary()
            if e[0] == "const" and isinstance(e[1], (int, float)) and not isinstance(e[1], bool):
                return ("const", -e[1])
            return ("neg", e)
        e = self.parse_primary()
        while self.accept_op("["):
            key = self.parse_expr()
            self.expect_op("]")
            e = ("index", e, key)
        t = self.peek()
        if t.kind == "op" and t.value in ("::", "->", "?", ":"):
            self.unsupported("The syntax '%s'" % t.value)
        return e

    def parse_primary(self):
        t = self.next()
        k = t.kind
        if k == "num":
            v = t.value
            if re.fullmatch(r"\d+", v):
                return ("const", int(v))
            return ("const", float(v))
        if k == "str":
            return ("const", t.value)
        if k == "ph":
            return ("ph", t.value)
        if k == "op":
            if t.value == "(":
                if self.is_kw("SELECT"):
                    self.unsupported("A scalar subquery", t)
                items = self.parse_expr_list()
                self.expect_op(")")
                if len(items) == 1:
                    return items[0]
                return ("tuple", items)
            if t.value == "*":
                self.unsupported("*", t)
            if t.value == "[":
                self.unsupported("Array literals", t)
            if t.value == "{":
                self.error("invalid placeholder", t)
            self.error("unexpected token", t)
        if k == "eof":
            self.error("unexpected end of query", t)
        if k == "id":
            u = t.upper
            if u == "TRUE":
                return ("const", True)
            if u == "FALSE":
                return ("const", False)
            if u == "NULL":
                return ("const", None)
            if u in ("CASE", "INTERVAL", "DISTINCT"):
                self.unsupported(u, t)
            if u in CLAUSE_WORDS:
                self.error("unexpected keyword %s (quote it with backticks to use it as a name)" % u, t)
        # identifier or function call
        if self.is_op("(") and k == "id":
            self.next()
            distinct = False
            args = []
            if self.accept_kw("DISTINCT"):
                distinct = True
            if self.is_op("*") and self.is_op(")", 1):
                self.next()
                args = [("star",)]
            elif not self.is_op(")"):
                args = self.parse_expr_list()
            self.expect_op(")")
            if self.is_op("("):
                self.unsupported("Parametric aggregate functions")
            if self.is_kw("OVER"):
                self.unsupported("Window functions")
            return ("call", t.value, args, distinct)
        chain = [t.value]
        while self.is_op("."):
            self.next()
            n = self.next()
            if n.kind in ("id", "qid"):
                chain.append(n.value)
            elif n.kind == "num" and re.fullmatch(r"\d+", n.value):
                self.unsupported("Tuple/array element access by index", n)
            else:
                self.error("expected a name after '.'", n)
        return ("field", chain)


def print_expr(e):
    """HogQL-ish text of an expression, used as the default column name."""
    k = e[0]
    if k == "const":
        v = e[1]
        if v is None:
            return "NULL"
        if v is True:
            return "true"
        if v is False:
            return "false"
        if isinstance(v, str):
            return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
        return repr(v)
    if k == "ph":
        return "{%s}" % e[1]
    if k == "field":
        return ".".join(e[1])
    if k == "star":
        return "*"
    if k == "call":
        return "%s(%s%s)" % (e[1], "DISTINCT " if e[3] else "", ", ".join(print_expr(a) for a in e[2]))
    if k == "cmp":
        return "%s %s %s" % (print_expr(e[2]), e[1], print_expr(e[3]))
    if k in ("and", "or"):
        return "(" + (" %s " % k.upper()).join(print_expr(x) for x in e[1]) + ")"
    if k == "not":
        return "NOT " + print_expr(e[1])
    if k == "neg":
        return "-" + print_expr(e[1])
    if k == "tuple":
        return "(" + ", ".join(print_expr(x) for x in e[1]) + ")"
    if k == "isnull":
        return print_expr(e[1]) + (" IS NOT NULL" if e[2] else " IS NULL")
    if k == "arith":
        return "%s %s %s" % (print_expr(e[2]), e[1], print_expr(e[3]))
    if k == "index":
        return "%s[%s]" % (print_expr(e[1]), print_expr(e[2]))
    if k == "like":
        return "%s %s%s %s" % (print_expr(e[1]), "NOT " if e[3] else "", "ILIKE" if e[4] else "LIKE",
                               print_expr(e[2]))
    if k == "in":
        rhs = e[2]
        r = "(subquery)" if rhs[0] == "subquery" else print_expr(rhs)
        return "%s %sIN %s" % (print_expr(e[1]), "NOT " if e[3] else "", r)
    return k
