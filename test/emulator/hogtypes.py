"""The type model: ClickHouse types of expressions (T, K_*) and the columns of tables and subqueries."""


class T:
    """An expression type. kind is one of the K_* constants."""
    __slots__ = ("kind", "tz", "prec", "nullable")

    def __init__(self, kind, tz=None, prec=None, nullable=False):
        self.kind = kind
        self.tz = tz
        self.prec = prec  # DateTime64 precision; None for DateTime
        self.nullable = nullable

    def with_(self, **kw):
        t = T(self.kind, self.tz, self.prec, self.nullable)
        for k, v in kw.items():
            setattr(t, k, v)
        return t

    def ch(self):
        k = self.kind
        if k == K_DATETIME:
            base = "DateTime('%s')" % self.tz if self.prec is None else "DateTime64(%d, '%s')" % (self.prec, self.tz)
        elif k == K_NOTHING:
            return "Nullable(Nothing)"
        elif k == K_TUPLE:
            base = "Tuple"
        else:
            base = CH_NAMES[k]
        return "Nullable(%s)" % base if self.nullable else base


K_STRING, K_JSON, K_INT, K_UINT8, K_UINT64, K_FLOAT, K_BOOL, K_DATETIME, K_UUID, K_ARRAY, K_NOTHING, K_TUPLE, \
    K_INT8 = range(13)
# K_INT8: ClickHouse Int8 columns such as is_deleted / is_identified of the person tables; PostHog returns
# them as the numbers 0/1, unlike HogQL Boolean columns (true/false)
CH_NAMES = {K_STRING: "String", K_JSON: "String", K_INT: "Int64", K_UINT8: "UInt8", K_UINT64: "UInt64", K_INT8: "Int8",
            K_FLOAT: "Float64", K_BOOL: "Bool", K_UUID: "UUID", K_ARRAY: "Array(String)"}
NUMERIC = (K_INT, K_INT8, K_UINT8, K_UINT64, K_FLOAT, K_BOOL)


class Column:
    __slots__ = ("name", "sql", "t", "maybe_null", "qsql")

    def __init__(self, name, sql, t, maybe_null, qsql=None):
        self.name = name
        self.sql = sql
        self.t = t
        self.maybe_null = maybe_null
        self.qsql = qsql  # SQL of the stored JSON-string-literal form (JSON columns of base tables)
