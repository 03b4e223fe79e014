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
    K_INT8, K_ENUM8 = range(14)
# K_INT8: ClickHouse Int8 columns such as is_deleted / is_identified of the person tables; PostHog returns
# them as the numbers 0/1, unlike HogQL Boolean columns (true/false)
# K_ENUM8: the Enum8 JSONType returns (ClickHouse src/Functions/FunctionsJSON.cpp JSONTypeImpl); SQLite holds its
# numeric value, which is also what ORDER BY and < > compare
JSON_TYPE_ENUM = (("Array", 91), ("Object", 123), ("String", 34), ("Int64", 105), ("UInt64", 117), ("Double", 100),
                  ("Bool", 98), ("Null", 0))
ENUM_VALUE = dict(JSON_TYPE_ENUM)
ENUM_NAME = {v: k for k, v in JSON_TYPE_ENUM}
CH_NAMES = {K_ENUM8: "Enum8(%s)" % ", ".join("'%s' = %d" % nv for nv in JSON_TYPE_ENUM),
            K_STRING: "String", K_JSON: "String", K_INT: "Int64", K_UINT8: "UInt8", K_UINT64: "UInt64", K_INT8: "Int8",
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
