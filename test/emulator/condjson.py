"""Translation of the conditional functions (if, multiIf, nullIf) and the JSON functions (JSONType,
JSONExtractString, JSONExtractRaw) to SQLite; a mixin of expressions.ExprTranslator (it uses its coerce,
check_comparable and func_te).

Names and arities are PostHog's (posthog/hogql/functions/mapping.py): "if" 3..3 and "nullif" 2..2 with
case_sensitive=False, multiIf 3..unbounded; clickhouse/json.py: JSONType, JSONExtractString, JSONExtractRaw
1..unbounded, case-sensitive.  A wrong count is PostHog's QueryError (functions/core.py validate_function_args)."""

from errors import HogQLError, HogQLQueryError
from hogtypes import K_BOOL, K_DATETIME, K_ENUM8, K_FLOAT, K_INT, K_INT8, K_JSON, K_NOTHING, K_STRING, K_UINT8, \
    K_UINT64, K_ARRAY, K_UUID, T

_SIGNED = (K_INT, K_INT8)
_UNSIGNED = (K_UINT8, K_UINT64)
_INTEGER = _SIGNED + _UNSIGNED


def check_arity(fname, n, lo, hi):
    """PostHog's validate_function_args texts (a QueryError: code hogql_query_error)."""
    s = lambda k: "s" if k != 1 else ""  # noqa: E731
    if lo == hi and n != lo:
        raise HogQLQueryError("Function '%s' expects %d argument%s, found %d" % (fname, lo, s(lo), n))
    if n < lo:
        raise HogQLQueryError("Function '%s' expects at least %d argument%s, found %d" % (fname, lo, s(lo), n))
    if hi is not None and n > hi:
        raise HogQLQueryError("Function '%s' expects at most %d argument%s, found %d" % (fname, hi, s(hi), n))


class CondJsonMixin:

    def supertype(self, tes, fname):
        """ClickHouse getLeastSupertype of the branches of if/multiIf: NULL joins anything (Nullable); numbers
        widen (an integer with a Float64 is Float64; signed with UInt64 has none); String with String; one
        DateTime64 precision (the largest); otherwise no supertype."""
        kinds = [x.t for x in tes if x.t.kind != K_NOTHING]
        nullable = any(x.t.nullable or x.t.kind == K_NOTHING for x in tes)
        if not kinds:
            return T(K_NOTHING, nullable=True)
        ks = {t.kind for t in kinds}
        first = kinds[0]
        if len(ks) == 1:
            t = first.with_(nullable=nullable)
            if first.kind == K_DATETIME:
                precs = [x.prec for x in kinds if x.prec is not None]
                t.prec = max(precs) if precs else None
            return t
        if ks <= {K_STRING, K_JSON}:
            return T(K_STRING, nullable=nullable)
        if ks <= set(_INTEGER + (K_FLOAT,)):
            if K_FLOAT in ks:
                return T(K_FLOAT, nullable=nullable)
            if ks <= set(_UNSIGNED):
                return T(K_UINT64, nullable=nullable)
            if K_UINT64 not in ks:
                return T(K_INT, nullable=nullable)
        raise HogQLError("There is no supertype for types %s of the branches of function %s"
                         % (", ".join(t.ch() for t in kinds), fname))

    def branch_sql(self, x, t):
        if t.kind == K_FLOAT and x.t.kind in _INTEGER + (K_BOOL,):
            return "CAST(%s AS REAL)" % x.sql
        return x.sql

    def check_cond(self, c, fname):
        if c.kind == "tuple" or c.t.kind in (K_STRING, K_JSON, K_DATETIME, K_UUID, K_ARRAY, K_ENUM8, K_FLOAT):
            raise HogQLError("Illegal type %s of the condition of function %s (it must be UInt8 or Bool)"
                             % ("Tuple" if c.kind == "tuple" else c.t.ch(), fname))

    def fn_if(self, fname, tes):
        """if(cond, a, b): a where cond holds, b where it is false or NULL."""
        check_arity(fname, len(tes), 3, 3)
        c, a, b = tes
        self.check_cond(c, fname)
        t = self.supertype([a, b], fname)
        sql = "(CASE WHEN %s THEN %s ELSE %s END)" % (c.sql, self.branch_sql(a, t), self.branch_sql(b, t))
        return self.func_te(sql, t, tes, a.maybe_null or b.maybe_null or t.nullable)

    def fn_multi_if(self, fname, tes):
        """multiIf(c1, a1, c2, a2, ..., else): ClickHouse wants an odd count of at least 3."""
        check_arity(fname, len(tes), 3, None)
        if len(tes) % 2 == 0:
            raise HogQLError("Invalid number of arguments for function multiIf")
        conds, vals = tes[0:-1:2], list(tes[1:-1:2]) + [tes[-1]]
        for c in conds:
            self.check_cond(c, fname)
        t = self.supertype(vals, fname)
        parts = " ".join("WHEN %s THEN %s" % (c.sql, self.branch_sql(v, t)) for c, v in zip(conds, vals))
        sql = "(CASE %s ELSE %s END)" % (parts, self.branch_sql(vals[-1], t))
        return self.func_te(sql, t, tes, any(v.maybe_null for v in vals) or t.nullable)

    def fn_null_if(self, fname, tes):
        """nullIf(a, b): NULL where a = b, else a (a Nullable of a's type)."""
        check_arity(fname, len(tes), 2, 2)
        a, b = tes
        b2 = self.coerce(b, a.t)
        a2 = self.coerce(a, b2.t)
        self.check_comparable(a2, b2, fname)
        if a2.t.kind == K_NOTHING:
            return a2
        return self.func_te("NULLIF(%s, %s)" % (a2.sql, b2.sql), a2.t.with_(nullable=True), [a2, b2], True)

    def fn_json(self, fname, tes):
        """JSONType / JSONExtractString / JSONExtractRaw(json, key_or_index, ...): see sqljson.py."""
        check_arity(fname, len(tes), 1, None)
        doc = tes[0]
        if doc.t.kind not in (K_STRING, K_JSON, K_NOTHING):
            raise HogQLError("The first argument of function %s should be a string containing JSON, illegal "
                             "type: %s" % (fname, doc.t.ch()))
        for i, k in enumerate(tes[1:], 2):
            if k.t.kind not in (K_STRING, K_NOTHING) + _INTEGER:
                raise HogQLError("The argument %d of function %s should be a string specifying key or an integer "
                                 "specifying index, illegal type: %s" % (i, fname, k.t.ch()))
        nullable = any(x.t.nullable or x.t.kind == K_NOTHING for x in tes)
        udf = {"JSONType": "_json_type", "JSONExtractString": "_json_extract_string",
               "JSONExtractRaw": "_json_extract_raw"}[fname]
        t = T(K_ENUM8 if fname == "JSONType" else K_STRING, nullable=nullable)
        sql = "%s(%s)" % (udf, ", ".join(x.sql for x in tes))
        return self.func_te(sql, t, tes, any(x.maybe_null for x in tes) or nullable)



COND_JSON_FUNCTIONS = {"JSONType": "fn_json", "JSONExtractString": "fn_json", "JSONExtractRaw": "fn_json",
                       "multiIf": "fn_multi_if"}
COND_JSON_CI_FUNCTIONS = {"if": "fn_if", "nullif": "fn_null_if"}
