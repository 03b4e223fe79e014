"""Translation of HogQL expressions to SQLite SQL: fields, operators, comparisons, coercions, functions.

Every value is bound as a named parameter.  translate.Translator adds the SELECT level on top."""

from difflib import get_close_matches

from condjson import COND_JSON_CI_FUNCTIONS, COND_JSON_FUNCTIONS, CondJsonMixin
from errors import HogQLError, HogQLQueryError
from hogtypes import K_ARRAY, K_BOOL, K_DATETIME, K_FLOAT, K_INT, K_JSON, K_NOTHING, K_STRING, K_TUPLE, \
    K_INT8, K_UINT8, K_UINT64, K_UUID, NUMERIC, T, K_ENUM8, ENUM_VALUE
from values import canonical_uuid, get_tz, has_surrogates, parse_datetime_us, truncate_us


class TE:
    """A translated expression."""
    __slots__ = ("sql", "t", "agg", "const", "value", "kind", "children", "maybe_null", "name", "qsql", "prio",
                 "json_base")

    def __init__(self, sql, t, kind="op", children=(), agg=False, const=False, value=None, maybe_null=None,
                 name=None, qsql=None, prio=0):
        self.qsql = qsql
        self.json_base = None  # (JSON column TE, [keys]) of a property access
        self.prio = prio  # AND terms with a higher prio are written first (see tr_cmp)
        self.sql = sql
        self.t = t
        self.kind = kind          # 'field' 'const' 'tuple' 'agg' 'func' 'op'
        self.children = list(children)
        self.agg = agg or any(c.agg for c in self.children)
        self.const = const
        self.value = value
        if maybe_null is None:
            maybe_null = t.nullable or t.kind == K_NOTHING or any(c.maybe_null for c in self.children)
        self.maybe_null = maybe_null
        self.name = name


AGGREGATES = {"argMax", "max", "min", "count", "countIf", "sum", "avg"}


def null_safe_cmp(a, op, b):
    """A comparison as PostHog prints it for operands that can be NULL (printer visit_compare_operation):
    = is ifNull(equals(a, b), isNull(a) and isNull(b)) (x = NULL is isNull(x)), != is
    ifNull(notEquals(a, b), isNotNull(a) or isNotNull(b)), and < <= > >= are ifNull(..., 0): two-valued,
    never NULL.  SQLite's IS / IS NOT are exactly the first two."""
    if op == "=":
        return "(%s IS %s)" % (a, b)
    if op == "!=":
        return "(%s IS NOT %s)" % (a, b)
    return "coalesce((%s %s %s), 0)" % (a, op, b)


class ExprTranslator(CondJsonMixin):
    """Expression-level translation.  The subclass translate.Translator provides translate_select(), used
    here for IN (SELECT ...)."""

    def __init__(self, values, project_tz, uuid_mode):
        self.values = values or {}
        self.project_tz = project_tz
        self.uuid = uuid_mode
        self.params = {}

    @staticmethod
    def func_te(sql, t, children, maybe_null):
        return TE(sql, t, kind="func", children=children, maybe_null=maybe_null)

    # -- parameters
    def bind(self, value):
        """A parameter for a value.  The same value (and Python type) gets the same parameter: PostHog's
        client substitutes its values into the SQL text before ClickHouse sees it, so two equal
        placeholders ({p1} in SELECT, {p2} in GROUP BY) make identical expressions there."""
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int) and not (-(1 << 63) <= value < (1 << 63)):
            raise HogQLError("Integer constant out of the supported range: %d" % value)
        seen = self.__dict__.setdefault("_bound", {})
        key = (type(value), value)
        try:
            if key in seen:
                return ":" + seen[key]
        except TypeError:
            key = None
        name = "p%d" % len(self.params)
        self.params[name] = value
        if key is not None:
            seen[key] = name
        return ":" + name

    def const_te(self, value, t=None):
        if value is None:
            return TE("NULL", T(K_NOTHING, nullable=True), kind="const", const=True, value=None)
        if t is None:
            if isinstance(value, bool):
                t = T(K_BOOL)
            elif isinstance(value, int):
                t = T(K_INT)
            elif isinstance(value, float):
                t = T(K_FLOAT)
            elif isinstance(value, str):
                if has_surrogates(value):
                    raise HogQLError("String constant contains a lone UTF-16 surrogate")
                t = T(K_STRING)
            else:
                raise HogQLError("Unsupported constant of type %s" % type(value).__name__)
        return TE(self.bind(value), t, kind="const", const=True, value=value)

    # -- expressions
    def tr(self, e, scope, clause):
        k = e[0]
        m = getattr(self, "tr_" + k, None)
        if m is None:
            raise HogQLError("Unsupported expression: %s" % k)
        return m(e, scope, clause)

    def tr_const(self, e, scope, clause):
        return self.const_te(e[1])

    def tr_ph(self, e, scope, clause):
        name = e[1]
        if name not in self.values:
            raise HogQLError("Placeholder {%s} is not defined in values" % name)
        v = self.values[name]
        if isinstance(v, list):
            items = [self.value_te(x, name) for x in v]
            return TE("(" + ", ".join(i.sql for i in items) + ")", T(K_TUPLE), kind="tuple", children=items,
                      const=True, value=v)
        return self.value_te(v, name)

    def value_te(self, v, name):
        if isinstance(v, (dict, list)):
            raise HogQLError("Unsupported value type for placeholder {%s}: %s" % (name, type(v).__name__))
        return self.const_te(v)

    def tr_star(self, e, scope, clause):
        raise HogQLError("* is only supported inside count(*)")

    def tr_field(self, e, scope, clause):
        chain = e[1]
        name = chain[0]
        te = None
        rest = chain[1:]
        if len(chain) > 1 and name in scope.sources:
            src = scope.sources[name]
            col = src.columns.get(chain[1])
            if col is None:
                raise HogQLQueryError("Field not found: %s" % chain[1])  # PostHog's text
            te = TE(col.sql, col.t, kind="field", maybe_null=col.maybe_null, name=".".join(chain[:2]),
                    qsql=col.qsql)
            rest = chain[2:]
        elif clause != "on" and name in scope.aliases:
            te = scope.aliases[name]
        elif name == "person" and len(chain) > 1 and self.events_source(scope) is not None:
            src = self.person_join(scope)
            col = src.columns.get(chain[1])
            if col is None:
                raise HogQLQueryError("Field not found: %s" % chain[1])
            te = TE(col.sql, col.t, kind="field", maybe_null=True, name=".".join(chain[:2]), qsql=col.qsql)
            rest = chain[2:]
        else:
            found = [s for s in scope.order if name in s.columns]
            if not found:
                raise HogQLQueryError("Unable to resolve field: %s" % name)  # PostHog's text
            if len(found) > 1:
                raise HogQLError("Ambiguous query. Found multiple sources for field: %s" % name)
            col = found[0].columns[name]
            te = TE(col.sql, col.t, kind="field", maybe_null=col.maybe_null, name=name, qsql=col.qsql)
        if rest:
            if te.t.kind != K_JSON:
                raise HogQLError("Cannot access property %s of a non-JSON column" % ".".join(chain))
            return self.property_te(te, rest)
        return te

    @staticmethod
    def events_source(scope):
        found = [s for s in scope.order if getattr(s, "table", None) == "events"]
        return found[0] if len(found) == 1 else None

    def person_join(self, scope):
        """events.person: PostHog's lazy join to the person (schema/events.py; with the default persons-on-events
        mode the event's person_id, the person's columns from the persons table).  The emulator LEFT JOINs the
        collapsed persons table on person_id, once per SELECT."""
        if scope.person is None:
            ev = self.events_source(scope)
            scope.person = self.make_lazy_person(ev)
        return scope.person

    def property_te(self, te, keys):
        """Property access on a JSON column, as PostHog prints it for ClickHouse (printer.py
        _unsafe_json_extract_trim_quotes): replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(col, k1, k2, ...), ''),
        'null'), '^"|"$', ''), a Nullable(String).  See sqlfuncs._json_get for what that gives."""
        sql = "_json_get(%s, %s)" % (te.sql, ", ".join(self.bind(k) for k in keys))
        out = TE(sql, T(K_STRING, nullable=True), kind="func", children=[te], maybe_null=True)
        out.json_base = (te, list(keys))
        return out

    def tr_index(self, e, scope, clause):
        """x[key]: posthog/hogql/resolver.py visit_array_access folds a constant str/int key on a JSON column
        (or on a property access) into the property chain, so properties[{k}] is properties.<k> -- the
        placeholder is a constant by then (values are replaced while parsing).  Anything else is an array
        or map access ClickHouse would run (or refuse); the emulator refuses it."""
        base = self.tr(e[1], scope, clause)
        key = self.tr(e[2], scope, clause)
        if not key.const or key.kind == "tuple" or isinstance(key.value, bool) or \
                not isinstance(key.value, (str, int)):
            if base.t.kind == K_JSON or getattr(base, "json_base", None) is not None:
                raise HogQLError("Illegal types of arguments (String, %s) of function arrayElement: a property "
                                 "key in [...] must be a constant string or integer" % key.t.ch())
            raise HogQLError("Array/map element access x[...] is not supported by the emulator")
        k = key.value
        if k == 0:
            raise HogQLQueryError("SQL indexes start from one, not from zero. E.g: array[1]")
        jb = getattr(base, "json_base", None)
        if jb is not None:
            return self.property_te(jb[0], jb[1] + [k])
        if base.t.kind == K_JSON and base.kind == "field":
            return self.property_te(base, [k])
        raise HogQLError("Array/map element access x[...] is not supported by the emulator")

    def tr_tuple(self, e, scope, clause):
        items = [self.tr(x, scope, clause) for x in e[1]]
        for i in items:
            if i.kind == "tuple":
                raise HogQLError("Nested tuples are not supported by the emulator")
        return TE("(" + ", ".join(i.sql for i in items) + ")", T(K_TUPLE), kind="tuple", children=items,
                  const=all(i.const for i in items), value=[i.value for i in items])

    def tr_neg(self, e, scope, clause):
        x = self.tr(e[1], scope, clause)
        if x.t.kind not in NUMERIC:
            raise HogQLError("Illegal type %s of argument of unary minus" % x.t.ch())
        return TE("(-%s)" % x.sql, x.t.with_(), kind="op", children=[x])

    def logical(self, items, op):
        for i in items:
            if i.kind == "tuple":
                raise HogQLError("A tuple cannot be used as a boolean")
            if i.t.kind in (K_STRING, K_JSON, K_DATETIME, K_UUID, K_ARRAY, K_ENUM8):
                raise HogQLError("Illegal type %s of argument of function %s" % (i.t.ch(), op.lower()))
        return TE("(" + (" %s " % op).join(i.sql for i in items) + ")", T(K_UINT8), kind="op", children=items)

    def tr_and(self, e, scope, clause):
        items = [self.tr(x, scope, clause) for x in e[1]]
        items.sort(key=lambda te: -te.prio)  # stable; AND is commutative in SQL
        return self.logical(items, "AND")

    def tr_or(self, e, scope, clause):
        return self.logical([self.tr(x, scope, clause) for x in e[1]], "OR")

    def tr_not(self, e, scope, clause):
        x = self.tr(e[1], scope, clause)
        self.logical([x], "NOT")
        return TE("(NOT %s)" % x.sql, T(K_UINT8), kind="op", children=[x])

    def tr_isnull(self, e, scope, clause):
        x = self.tr(e[1], scope, clause)
        if x.kind == "tuple":
            raise HogQLError("IS NULL on a tuple is not supported")
        return TE("(%s IS %sNULL)" % (x.sql, "NOT " if e[2] else ""), T(K_UINT8), kind="op", children=[x],
                  maybe_null=False)

    # coercion of constants to the type of the other side of a comparison
    def coerce(self, te, target):
        """Return te converted to the type target if it is a string constant (or string expression)."""
        if te.t.kind == K_NOTHING or target.kind in (K_NOTHING, K_TUPLE):
            return te
        if te.t.kind == target.kind:
            return te
        tk = target.kind
        if te.const:
            v = te.value
            if tk == K_DATETIME:
                if isinstance(v, str):
                    try:
                        us = parse_datetime_us(v, target.tz)
                    except ValueError as ex:
                        raise HogQLError(str(ex))
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    us = int(round(v * 1000000))
                else:
                    raise HogQLError("Cannot compare DateTime with %r" % (v,))
                return TE(self.bind(us), target.with_(nullable=False), kind="const", const=True, value=us)
            if tk == K_ENUM8:
                if not isinstance(v, str):
                    raise HogQLError("No common type for %s and a %s constant" % (target.ch(), type(v).__name__))
                if v not in ENUM_VALUE:
                    raise HogQLError("Unknown element '%s' for enum: while converting '%s' to %s"
                                     % (v, v, target.with_(nullable=False).ch()))
                n = ENUM_VALUE[v]
                return TE(self.bind(n), T(K_ENUM8), kind="const", const=True, value=v)
            if tk == K_UUID and isinstance(v, str):
                try:
                    key = self.uuid.to_key(canonical_uuid(v))
                except ValueError as ex:
                    raise HogQLError(str(ex))
                return TE(self.bind(key), T(K_UUID), kind="const", const=True, value=v)
            if tk in (K_INT, K_INT8, K_UINT8, K_UINT64, K_BOOL) and isinstance(v, str):
                try:
                    n = int(v)
                except ValueError:
                    raise HogQLError("Cannot convert string %r to a number" % v)
                return TE(self.bind(n), T(K_INT), kind="const", const=True, value=n)
            if tk == K_FLOAT and isinstance(v, str):
                try:
                    n = float(v)
                except ValueError:
                    raise HogQLError("Cannot convert string %r to a number" % v)
                return TE(self.bind(n), T(K_FLOAT), kind="const", const=True, value=n)
            if tk in (K_STRING, K_JSON, K_UUID, K_DATETIME) and not isinstance(v, str):
                raise HogQLError("No common type for %s and a %s constant" % (target.ch(), type(v).__name__))
            return te
        if te.t.kind == K_STRING and tk == K_DATETIME:
            return TE("_parse_dt(%s, %s, 6)" % (te.sql, self.bind(target.tz)), target.with_(nullable=True),
                      kind="func", children=[te])
        if te.t.kind == K_STRING and tk == K_UUID:
            return TE("_to_uuid(%s)" % te.sql, T(K_UUID, nullable=True), kind="func", children=[te])
        return te

    def check_comparable(self, a, b, op):
        ka, kb = a.t.kind, b.t.kind
        if K_NOTHING in (ka, kb):
            return
        groups = [(K_INT, K_INT8, K_UINT8, K_UINT64, K_FLOAT, K_BOOL), (K_STRING, K_JSON), (K_DATETIME,), (K_UUID,),
                  (K_ARRAY,), (K_ENUM8,)]
        for g in groups:
            if ka in g and kb in g:
                return
        raise HogQLError("No supertype for types %s and %s in comparison %s" % (a.t.ch(), b.t.ch(), op))

    def tr_cmp(self, e, scope, clause):
        op = e[1]
        a = self.tr(e[2], scope, clause)
        b = self.tr(e[3], scope, clause)
        sqlop = {"==": "=", "<>": "!="}.get(op, op)
        if a.kind == "tuple" or b.kind == "tuple":
            if not (a.kind == "tuple" and b.kind == "tuple"):
                raise HogQLError("Cannot compare a tuple with a non-tuple")
            if len(a.children) != len(b.children):
                raise HogQLError("Cannot compare tuples of different sizes")
            if not a.children:
                raise HogQLError("Cannot compare empty tuples")
            la, lb = [], []
            for x, y in zip(a.children, b.children):
                x2 = self.coerce(x, y.t)
                y2 = self.coerce(y, x2.t)
                self.check_comparable(x2, y2, op)
                la.append(x2)
                lb.append(y2)
            sql = "((%s) %s (%s))" % (", ".join(x.sql for x in la), sqlop, ", ".join(y.sql for y in lb))
            prio = 0
            if sqlop in (">", ">=", "<", "<=") and len(la) > 1:
                # A keyset cursor (a, b) > (x, y): also state a >= x (implied, so the result is the same)
                # and put it first among the AND terms, so that SQLite starts its index range scan at
                # the cursor instead of at an earlier, looser bound on the same column.
                sql = "((%s %s %s) AND %s)" % (la[0].sql, sqlop[0] + "=", lb[0].sql, sql)
                prio = 1
            return TE(sql, T(K_UINT8), kind="op", children=la + lb, prio=prio)
        a2 = self.coerce(a, b.t)
        b2 = self.coerce(b, a2.t)
        self.check_comparable(a2, b2, op)
        if not (a2.maybe_null or b2.maybe_null):
            return TE("(%s %s %s)" % (a2.sql, sqlop, b2.sql), T(K_UINT8), kind="op", children=[a2, b2])
        return TE(null_safe_cmp(a2.sql, sqlop, b2.sql), T(K_UINT8), kind="op", children=[a2, b2],
                  maybe_null=False)

    def tr_in(self, e, scope, clause):
        lhs = self.tr(e[1], scope, clause)
        rhs = e[2]
        neg = "NOT IN" if e[3] else "IN"
        if lhs.kind == "tuple":
            raise HogQLError("A tuple on the left of IN is not supported by the emulator")
        if rhs[0] == "subquery":
            sub_sql, sub_cols, _ = self.translate_select(rhs[1], top=False)
            if len(sub_cols) != 1:
                raise HogQLError("The subquery on the right of IN must return exactly one column")
            self.check_comparable(lhs, sub_cols[0][2], "IN")
            return TE("coalesce((%s %s (%s)), %d)" % (lhs.sql, neg, sub_sql, 1 if e[3] else 0), T(K_UINT8),
                      kind="op", children=[lhs], maybe_null=False)
        if rhs[0] == "ph":
            r = self.tr_ph(rhs, scope, clause)
            items = r.children if r.kind == "tuple" else [r]
        else:
            items = []
            for x in rhs[1]:
                te = self.tr(x, scope, clause)
                if te.kind == "tuple":
                    raise HogQLError("Tuples inside IN (...) are not supported by the emulator")
                items.append(te)
        conv = []
        dropped = False
        for it in items:
            if it.const and it.value is None:
                dropped = True  # ClickHouse (transform_null_in = 0) leaves NULL out of the set
                continue
            it2 = self.coerce(it, lhs.t)
            self.check_comparable(lhs, it2, "IN")
            conv.append(it2)
        sql = "(%s %s (%s))" % (lhs.sql, neg, ", ".join(c.sql for c in conv))
        if lhs.maybe_null or dropped or any(c.maybe_null for c in conv):
            # in()/notIn() return a UInt8, never NULL: a NULL on the left is in no set
            sql = "coalesce(%s, %d)" % (sql, 1 if e[3] else 0)
        return TE(sql, T(K_UINT8), kind="op", children=[lhs] + conv, maybe_null=False)

    def tr_like(self, e, scope, clause):
        """x [NOT] LIKE / ILIKE p: ClickHouse like()/ilike()/notLike()/notILike() (see sqlfuncs._like), with
        HogQL's NULL handling (printer visit_compare_operation): LIKE/ILIKE of a NULL is false, NOT LIKE of a
        NULL true; "x LIKE NULL" is isNull(x), "x NOT LIKE NULL" isNotNull(x)."""
        _, l_e, r_e, negated, ci = e
        a = self.tr(l_e, scope, clause)
        b = self.tr(r_e, scope, clause)
        name = ("notILike" if ci else "notLike") if negated else ("ilike" if ci else "like")
        for x in (a, b):
            if x.kind == "tuple" or x.t.kind not in (K_STRING, K_JSON, K_NOTHING):
                raise HogQLError("Illegal type %s of argument of function %s"
                                 % ("Tuple" if x.kind == "tuple" else x.t.ch(), name))
        if b.const and b.value is None:
            return TE("(%s IS %sNULL)" % (a.sql, "NOT " if negated else ""), T(K_UINT8), kind="op",
                      children=[a], maybe_null=False)
        if a.const and a.value is None:
            return TE("(%s IS %sNULL)" % (b.sql, "NOT " if negated else ""), T(K_UINT8), kind="op",
                      children=[b], maybe_null=False)
        sql = "_like(%s, %s, %d)" % (a.sql, b.sql, 1 if ci else 0)
        if negated:
            sql = "(NOT %s)" % sql
        if a.maybe_null or b.maybe_null:
            if b.const or a.const:
                sql = "coalesce(%s, %d)" % (sql, 1 if negated else 0)
            elif negated:
                sql = "coalesce(%s, (%s IS NOT NULL OR %s IS NOT NULL))" % (sql, a.sql, b.sql)
            else:
                sql = "coalesce(%s, (%s IS NULL AND %s IS NULL))" % (sql, a.sql, b.sql)
        return TE(sql, T(K_UINT8), kind="op", children=[a, b], maybe_null=False)

    def tr_arith(self, e, scope, clause):
        """a + - * / % b on numbers (ClickHouse plus, minus, multiply, divide, modulo): integers stay Int64
        (UInt64 if both are unsigned), a Float64 makes Float64, / is always Float64 (x/0 is inf or nan, which
        PostHog's JSON renderer (orjson) writes as null, as SQLite's NULL is written).  NULL in, NULL out."""
        _, op, l_e, r_e = e
        a = self.tr(l_e, scope, clause)
        b = self.tr(r_e, scope, clause)
        fn = {"+": "plus", "-": "minus", "*": "multiply", "/": "divide", "%": "modulo"}[op]
        for x in (a, b):
            if x.kind == "tuple" or x.t.kind not in NUMERIC + (K_NOTHING,):
                raise HogQLError("Illegal types %s and %s of arguments of function %s (the emulator does "
                                 "arithmetic on numbers only)" % (a.t.ch(), b.t.ch(), fn))
        nullable = a.t.nullable or b.t.nullable or K_NOTHING in (a.t.kind, b.t.kind)
        if op == "/":
            t = T(K_FLOAT, nullable=nullable)
            sql = "(CAST(%s AS REAL) / %s)" % (a.sql, b.sql)
        else:
            if K_FLOAT in (a.t.kind, b.t.kind):
                t = T(K_FLOAT, nullable=nullable)
            elif a.t.kind in (K_UINT8, K_UINT64, K_BOOL) and b.t.kind in (K_UINT8, K_UINT64, K_BOOL) and op != "-":
                t = T(K_UINT64, nullable=nullable)
            else:
                t = T(K_INT, nullable=nullable)
            sql = "(%s %s %s)" % (a.sql, op, b.sql)
            if op == "%" and t.kind == K_FLOAT:
                sql = "_fmod(%s, %s)" % (a.sql, b.sql)
        return TE(sql, t, kind="op", children=[a, b])

    # -- functions
    def const_str_arg(self, te, fname, what="time zone"):
        if not te.const or not isinstance(te.value, str):
            raise HogQLError("Argument %s of %s must be a constant string" % (what, fname))
        return te.value

    def tr_call(self, e, scope, clause):
        _, fname, args, distinct = e
        lname = fname.lower()
        if distinct and lname != "count":
            raise HogQLError("DISTINCT inside %s() is not supported by the emulator" % fname)
        if fname in AGGREGATES or lname in ("count", "max", "min", "sum", "avg"):
            if clause in ("where", "on", "group"):
                raise HogQLError("Aggregate function %s() is not allowed in %s" % (fname, clause.upper()))
            if lname == "count":
                return self.fn_count(args, scope, clause, distinct)
            if fname == "countIf":  # case-sensitive in PostHog, as argMax
                return self.fn_count_if(args, scope)
            tes = [self.tr(a, scope, "aggarg") for a in args]
            for a in tes:
                if a.agg:
                    raise HogQLError(
                        "Aggregate function found inside the arguments of %s() (note: a select alias that "
                        "names an aggregate, e.g. max(version) AS version, shadows the column in later "
                        "expressions; ClickHouse rejects this too)" % fname)
                if a.kind == "tuple":
                    raise HogQLError("Tuples are not supported as arguments of %s()" % fname)
            if lname in ("max", "min"):
                if len(tes) != 1:
                    raise HogQLError("Function %s takes exactly 1 argument" % fname)
                return self.fn_min_max(lname, tes[0])
            if lname in ("sum", "avg"):
                fname = lname
                if len(tes) != 1:
                    raise HogQLError("Aggregation '%s' expects 1 argument, found %d" % (fname, len(tes)))
                return self.fn_sum_avg(fname, tes[0])
            if fname == "argMax":
                if len(tes) != 2:
                    raise HogQLError("Function argMax takes exactly 2 arguments")
                return TE("_argmax(%s, %s)" % (tes[0].sql, tes[1].sql), tes[0].t.with_(), kind="agg",
                          agg=True, maybe_null=True)
        if clause == "aggarg":
            clause = "select"
        h = FUNCTIONS.get(fname) or CI_FUNCTIONS.get(lname)
        if h is None:
            # PostHog's printer (visit_call): a QueryError, with difflib's closest known name
            known = list(FUNCTIONS) + ["argMax", "avg", "count", "countIf", "max", "min", "sum", "coalesce",
                                       "ifNull", "lower", "upper", "length", "if", "nullIf"]
            close = get_close_matches(fname, known, 1)
            raise HogQLQueryError("Unsupported function call '%s(...)'%s (the emulator supports: %s)"
                                  % (fname, ". Perhaps you meant '%s(...)'?" % close[0] if close else "",
                                     ", ".join(sorted(known))))
        tes = []
        for a in args:
            if a[0] == "star":
                raise HogQLError("* is only supported inside count(*)")
            te = self.tr(a, scope, clause)
            if te.kind == "tuple":
                raise HogQLError("Tuples are not supported as arguments of %s()" % fname)
            tes.append(te)
        return getattr(self, h)(fname, tes)

    def fn_min_max(self, lname, x):
        """min/max: the argument's type.  Over no rows ClickHouse gives the type's default value (0, '',
        1970-01-01 00:00:00, the nil UUID) for a non-Nullable argument, NULL for a Nullable one; NULLs are
        skipped.  Strings compare bytewise (SQLite's BINARY collation is memcmp of the UTF-8)."""
        if x.t.kind in (K_NOTHING, K_ARRAY) or x.kind == "tuple":
            raise HogQLError("Illegal type %s of argument of aggregate function %s" % (x.t.ch(), lname))
        sql = "%s(%s)" % (lname, x.sql)
        if x.t.nullable:
            return TE(sql, x.t.with_(), kind="agg", agg=True, maybe_null=True)
        k = x.t.kind
        if k in (K_STRING, K_JSON):
            default = "''"
        elif k == K_UUID:
            default = self.bind(self.uuid.to_key("00000000-0000-0000-0000-000000000000"))
        elif k == K_FLOAT:
            default = "0.0"
        else:
            default = "0"
        return TE("coalesce(%s, %s)" % (sql, default), x.t.with_(), kind="agg", agg=True, maybe_null=False)

    def fn_sum_avg(self, fname, x):
        """sum: Int64 for signed integers, UInt64 for unsigned ones and Bool, Float64 for floats; avg: Float64.
        NULLs are skipped.  Over no rows (or only NULLs): sum of a non-Nullable argument is 0 and avg nan
        (written as null by PostHog's orjson renderer); of a Nullable argument both are NULL."""
        k = x.t.kind
        if x.kind == "tuple" or k not in NUMERIC:
            raise HogQLError("Illegal type %s of argument for aggregate function %s" % (
                "Tuple" if x.kind == "tuple" else x.t.ch(), fname))
        nullable = x.t.nullable
        if fname == "avg":
            return TE("avg(%s)" % x.sql, T(K_FLOAT, nullable=nullable), kind="agg", agg=True, maybe_null=True)
        if k == K_FLOAT:
            t, zero = T(K_FLOAT, nullable=nullable), "0.0"
        elif k in (K_UINT8, K_UINT64, K_BOOL):
            t, zero = T(K_UINT64, nullable=nullable), "0"
        else:
            t, zero = T(K_INT, nullable=nullable), "0"
        if nullable:
            return TE("sum(%s)" % x.sql, t, kind="agg", agg=True, maybe_null=True)
        return TE("coalesce(sum(%s), %s)" % (x.sql, zero), t, kind="agg", agg=True, maybe_null=False)

    def fn_case(self, fname, tes):
        """lower/upper (ASCII only in ClickHouse: other bytes are left as they are), lowerUTF8/upperUTF8
        (Unicode), length (bytes of the UTF-8 text), lengthUTF8 (code points)."""
        if len(tes) != 1:
            raise HogQLError("Function '%s' expects 1 argument, found %d" % (fname, len(tes)))
        x = tes[0]
        if x.t.kind == K_NOTHING:
            return x
        if x.t.kind not in (K_STRING, K_JSON) and not (fname.lower() == "length" and x.t.kind == K_ARRAY):
            raise HogQLError("Illegal type %s of argument of function %s" % (x.t.ch(), fname))
        f = {"lower": "_lower_ascii", "upper": "_upper_ascii", "lowerutf8": "_lower_utf8",
             "upperutf8": "_upper_utf8", "length": "_length_bytes", "lengthutf8": "length"}[fname.lower()]
        if fname.lower() == "length" and x.t.kind == K_ARRAY:
            return TE("json_array_length(%s)" % x.sql, T(K_UINT64, nullable=x.t.nullable), kind="func",
                      children=[x])
        t = T(K_UINT64, nullable=x.t.nullable) if "length" in f else T(K_STRING, nullable=x.t.nullable)
        return TE("%s(%s)" % (f, x.sql), t, kind="func", children=[x])

    def fn_is_null(self, fname, tes):
        if len(tes) != 1:
            raise HogQLError("Function '%s' expects 1 argument, found %d" % (fname, len(tes)))
        neg = fname == "isNotNull"
        return TE("(%s IS %sNULL)" % (tes[0].sql, "NOT " if neg else ""), T(K_UINT8), kind="op",
                  children=[tes[0]], maybe_null=False)

    def fn_count(self, args, scope, clause, distinct):
        if not args or (len(args) == 1 and args[0][0] == "star"):
            if distinct:
                raise HogQLError("count(DISTINCT) needs an argument")
            return TE("count(*)", T(K_UINT64), kind="agg", agg=True, maybe_null=False)
        if len(args) != 1:
            raise HogQLError("count takes at most 1 argument in the emulator")
        a = self.tr(args[0], scope, "aggarg")
        if a.agg:
            raise HogQLError("Aggregate function count() found inside another aggregate function")
        if a.kind == "tuple":
            raise HogQLError("Tuples are not supported as arguments of count()")
        return TE("count(%s%s)" % ("DISTINCT " if distinct else "", a.sql), T(K_UINT64), kind="agg",
                  agg=True, maybe_null=False)

    def fn_count_if(self, args, scope):
        """countIf(cond) counts the rows where cond holds (NULL does not), countIf(x, cond) those where x is
        not NULL too; 0 over no rows, as ClickHouse."""
        if len(args) not in (1, 2) or any(a[0] == "star" for a in args):
            raise HogQLError("Function countIf takes 1 or 2 arguments")
        tes = [self.tr(a, scope, "aggarg") for a in args]
        for a in tes:
            if a.agg:
                raise HogQLError("Aggregate function countIf() found inside another aggregate function")
            if a.kind == "tuple":
                raise HogQLError("Tuples are not supported as arguments of countIf()")
        cond = tes[-1]
        self.logical([cond], "countIf")
        what = tes[0].sql if len(tes) == 2 else "1"
        return TE("count(CASE WHEN %s THEN %s END)" % (cond.sql, what), T(K_UINT64), kind="agg", agg=True,
                  maybe_null=False)

    def fn_coalesce(self, fname, tes):
        if not tes:
            raise HogQLError("Function %s needs at least one argument" % fname)
        if fname.lower() == "ifnull" and len(tes) != 2:
            raise HogQLError("Function ifNull takes exactly 2 arguments")
        t = None
        for x in tes:
            if x.t.kind != K_NOTHING:
                t = x.t
                break
        if t is None:
            return TE("NULL", T(K_NOTHING, nullable=True), kind="const", const=True, value=None)
        conv = [self.coerce(x, t) for x in tes]
        for x in conv:
            self.check_comparable(conv[0] if conv[0].t.kind != K_NOTHING else x, x, fname)
        nullable = all(x.t.nullable or x.t.kind == K_NOTHING for x in conv)
        if len(conv) == 1:
            sql = conv[0].sql
        else:
            sql = "coalesce(%s)" % ", ".join(x.sql for x in conv)
        return TE(sql, t.with_(nullable=nullable), kind="func", children=conv,
                  maybe_null=all(x.maybe_null for x in conv))

    def fn_to_datetime64(self, fname, tes):
        if not 1 <= len(tes) <= 3:
            raise HogQLError("Function toDateTime64 takes 1 to 3 arguments")
        if len(tes) >= 2:
            p = tes[1]
            if not p.const or not isinstance(p.value, int) or isinstance(p.value, bool) or not 0 <= p.value <= 9:
                raise HogQLError("The precision argument of toDateTime64 must be a constant integer 0..9")
            prec = p.value
        else:
            prec = 3
        tz = self.const_str_arg(tes[2], fname) if len(tes) == 3 else None
        return self.to_datetime(fname, tes[0], tz, prec)

    def fn_to_datetime(self, fname, tes):
        if not 1 <= len(tes) <= 2:
            raise HogQLError("Function toDateTime takes 1 or 2 arguments")
        tz = self.const_str_arg(tes[1], fname) if len(tes) == 2 else None
        return self.to_datetime(fname, tes[0], tz, None)

    def to_datetime(self, fname, x, tz, prec):
        if tz is not None:
            get_tz(tz)
        eff = min(prec or 0, 6)
        k = x.t.kind
        if k == K_DATETIME:
            tz2 = tz or x.t.tz
            t = T(K_DATETIME, tz2, prec, x.t.nullable)
            cur = 0 if x.t.prec is None else min(x.t.prec, 6)
            if eff < cur:
                unit = 10 ** (6 - eff)
                return TE("(%s - (%s %% %d))" % (x.sql, x.sql, unit), t, kind="func", children=[x])
            return TE(x.sql, t, kind="func", children=[x])
        tzr = tz or self.project_tz
        t = T(K_DATETIME, tzr, prec)
        if x.const:
            v = x.value
            if v is None:
                return TE("NULL", t.with_(nullable=True), kind="const", const=True, value=None)
            if isinstance(v, str):
                try:
                    us = parse_datetime_us(v, tzr)
                except ValueError as ex:
                    raise HogQLError(str(ex))
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                us = int(round(v * 1000000))
            else:
                raise HogQLError("Illegal argument of %s: %r" % (fname, v))
            us = truncate_us(us, eff)
            return TE(self.bind(us), t, kind="const", const=True, value=us)
        if k == K_STRING:
            return TE("_parse_dt(%s, %s, %d)" % (x.sql, self.bind(tzr), eff), t.with_(nullable=True),
                      kind="func", children=[x])
        if k in (K_INT, K_INT8, K_UINT64, K_UINT8):
            sql = "(%s * 1000000)" % x.sql
            return TE(sql, t.with_(nullable=x.t.nullable), kind="func", children=[x])
        raise HogQLError("Illegal type %s of the first argument of %s" % (x.t.ch(), fname))

    def fn_to_timezone(self, fname, tes):
        if len(tes) != 2:
            raise HogQLError("Function toTimeZone takes exactly 2 arguments")
        x, z = tes
        tz = self.const_str_arg(z, fname)
        get_tz(tz)
        if x.t.kind != K_DATETIME:
            raise HogQLError("Illegal type %s of the first argument of toTimeZone (a DateTime is needed)"
                             % x.t.ch())
        return TE(x.sql, x.t.with_(tz=tz), kind="func", children=[x], maybe_null=x.maybe_null)

    def fn_to_uuid(self, fname, tes):
        if len(tes) != 1:
            raise HogQLError("Function toUUID takes exactly 1 argument")
        x = tes[0]
        if x.t.kind == K_UUID:
            return x
        if x.const:
            if x.value is None:
                return TE("NULL", T(K_UUID, nullable=True), kind="const", const=True, value=None)
            if not isinstance(x.value, str):
                raise HogQLError("Illegal argument of toUUID: %r" % (x.value,))
            try:
                key = self.uuid.to_key(canonical_uuid(x.value))
            except ValueError as ex:
                raise HogQLError(str(ex))
            return TE(self.bind(key), T(K_UUID), kind="const", const=True, value=x.value)
        if x.t.kind == K_STRING:
            return TE("_to_uuid(%s)" % x.sql, T(K_UUID, nullable=x.t.nullable), kind="func", children=[x])
        raise HogQLError("Illegal type %s of the argument of toUUID" % x.t.ch())

    def fn_to_string(self, fname, tes):
        if len(tes) != 1:
            raise HogQLError("Function toString takes exactly 1 argument")
        x = tes[0]
        k = x.t.kind
        t = T(K_STRING, nullable=x.t.nullable)
        if k in (K_STRING, K_JSON):
            return TE(x.sql, t, kind="func", children=[x])
        if k == K_UUID:
            return TE(self.uuid.from_key_sql(x.sql), t, kind="func", children=[x])
        if k in (K_INT, K_INT8, K_UINT8, K_UINT64):
            return TE("CAST(%s AS TEXT)" % x.sql, t, kind="func", children=[x])
        if k == K_FLOAT:
            return TE("_float_str(%s)" % x.sql, t, kind="func", children=[x])
        if k == K_BOOL:
            return TE("(CASE WHEN %s IS NULL THEN NULL WHEN %s THEN 'true' ELSE 'false' END)" % (x.sql, x.sql),
                      t, kind="func", children=[x])
        if k == K_DATETIME:
            return TE("_dt_str(%s, %s, %d)" % (x.sql, self.bind(x.t.tz), x.t.prec or 0), t, kind="func",
                      children=[x])
        if k == K_ENUM8:
            return TE("_enum8_name(%s)" % x.sql, t, kind="func", children=[x])
        if k == K_NOTHING:
            return x
        raise HogQLError("toString of %s is not supported by the emulator" % x.t.ch())


FUNCTIONS = {
    "toDateTime64": "fn_to_datetime64",
    "toDateTime": "fn_to_datetime",
    "toTimeZone": "fn_to_timezone",
    "toUUID": "fn_to_uuid",
    "toString": "fn_to_string",
    # posthog/hogql/functions/clickhouse/strings.py: lowerUTF8, upperUTF8, lengthUTF8 (case-sensitive names)
    "lowerUTF8": "fn_case",
    "upperUTF8": "fn_case",
    "lengthUTF8": "fn_case",
    "isNull": "fn_is_null",
    "isNotNull": "fn_is_null",
}
FUNCTIONS.update(COND_JSON_FUNCTIONS)
# case_sensitive=False in PostHog's mapping: lower, upper, length, coalesce, ifNull
CI_FUNCTIONS = {"coalesce": "fn_coalesce", "ifnull": "fn_coalesce", "lower": "fn_case", "upper": "fn_case",
                "length": "fn_case"}
CI_FUNCTIONS.update(COND_JSON_CI_FUNCTIONS)
