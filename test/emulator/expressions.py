"""Translation of HogQL expressions to SQLite SQL: fields, operators, comparisons, coercions, functions.

Every value is bound as a named parameter.  translate.Translator adds the SELECT level on top."""

from errors import HogQLError, HogQLQueryError
from hogtypes import K_ARRAY, K_BOOL, K_DATETIME, K_FLOAT, K_INT, K_JSON, K_NOTHING, K_STRING, K_TUPLE, \
    K_INT8, K_UINT8, K_UINT64, K_UUID, NUMERIC, T
from values import canonical_uuid, get_tz, has_surrogates, parse_datetime_us, truncate_us


class TE:
    """A translated expression."""
    __slots__ = ("sql", "t", "agg", "const", "value", "kind", "children", "maybe_null", "name", "qsql", "prio")

    def __init__(self, sql, t, kind="op", children=(), agg=False, const=False, value=None, maybe_null=None,
                 name=None, qsql=None, prio=0):
        self.qsql = qsql
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


AGGREGATES = {"argMax", "max", "min", "count", "countIf"}


class ExprTranslator:
    """Expression-level translation.  The subclass translate.Translator provides translate_select(), used
    here for IN (SELECT ...)."""

    def __init__(self, values, project_tz, uuid_mode):
        self.values = values or {}
        self.project_tz = project_tz
        self.uuid = uuid_mode
        self.params = {}

    # -- parameters
    def bind(self, value):
        name = "p%d" % len(self.params)
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int) and not (-(1 << 63) <= value < (1 << 63)):
            raise HogQLError("Integer constant out of the supported range: %d" % value)
        self.params[name] = value
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
            keys = [self.bind(k) for k in rest]
            return TE("_json_get(%s, %s)" % (te.sql, ", ".join(keys)), T(K_STRING, nullable=True),
                      kind="func", children=[te], maybe_null=True)
        return te

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
            if i.t.kind in (K_STRING, K_JSON, K_DATETIME, K_UUID, K_ARRAY):
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
                  (K_ARRAY,)]
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
        return TE("(%s %s %s)" % (a2.sql, sqlop, b2.sql), T(K_UINT8), kind="op", children=[a2, b2])

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
            return TE("(%s %s (%s))" % (lhs.sql, neg, sub_sql), T(K_UINT8), kind="op", children=[lhs])
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
        for it in items:
            it2 = self.coerce(it, lhs.t)
            self.check_comparable(lhs, it2, "IN")
            conv.append(it2)
        return TE("(%s %s (%s))" % (lhs.sql, neg, ", ".join(c.sql for c in conv)), T(K_UINT8), kind="op",
                  children=[lhs] + conv)

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
        if fname in AGGREGATES or lname in ("count", "max", "min"):
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
                return TE("%s(%s)" % (lname, tes[0].sql), tes[0].t.with_(), kind="agg", children=[],
                          agg=True, maybe_null=True)
            if fname == "argMax":
                if len(tes) != 2:
                    raise HogQLError("Function argMax takes exactly 2 arguments")
                return TE("_argmax(%s, %s)" % (tes[0].sql, tes[1].sql), tes[0].t.with_(), kind="agg",
                          agg=True, maybe_null=True)
        if clause == "aggarg":
            clause = "select"
        h = FUNCTIONS.get(fname) or CI_FUNCTIONS.get(lname)
        if h is None:
            known = list(FUNCTIONS) + ["argMax", "count", "countIf", "max", "min", "coalesce", "ifNull"]
            raise HogQLError("Unsupported function call '%s(...)'. The emulator supports: %s"
                             % (fname, ", ".join(sorted(known))))
        tes = []
        for a in args:
            if a[0] == "star":
                raise HogQLError("* is only supported inside count(*)")
            te = self.tr(a, scope, clause)
            if te.kind == "tuple":
                raise HogQLError("Tuples are not supported as arguments of %s()" % fname)
            tes.append(te)
        return getattr(self, h)(fname, tes)

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
        if k == K_NOTHING:
            return x
        raise HogQLError("toString of %s is not supported by the emulator" % x.t.ch())


FUNCTIONS = {
    "toDateTime64": "fn_to_datetime64",
    "toDateTime": "fn_to_datetime",
    "toTimeZone": "fn_to_timezone",
    "toUUID": "fn_to_uuid",
    "toString": "fn_to_string",
}
CI_FUNCTIONS = {"coalesce": "fn_coalesce", "ifnull": "fn_coalesce"}
