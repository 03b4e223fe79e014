"""Translation of a parsed HogQL SELECT to SQLite SQL: sources, joins, clauses, and the result cells as JSON."""

from datetime import timezone

from errors import HogQLError, HogQLQueryError
from expressions import ExprTranslator
from hogql import print_expr
from hogtypes import K_ARRAY, K_BOOL, K_DATETIME, K_FLOAT, K_INT, K_JSON, K_STRING, K_INT8, K_UINT8, K_UINT64, K_UUID, \
    K_ENUM8, Column
from values import get_tz


class Source:
    def __init__(self, alias, sql_alias, columns, table=None):
        self.table = table  # the table name of a base table
        self.alias = alias
        self.sql_alias = sql_alias
        self.columns = columns  # name -> Column


class Scope:
    def __init__(self):
        self.sources = {}   # alias -> Source
        self.order = []
        self.aliases = {}   # select alias -> TE
        self.person = None  # the Source of events.person, once a field uses it


class TopPlan:
    """The top-level SELECT, kept in parts so that it can be run in one or two steps."""

    def __init__(self, cols, from_sql, where_sql, tail, limit, single, table, explicit_limit=False):
        self.cols = cols
        self.from_sql = from_sql
        self.where_sql = where_sql
        self.tail = tail          # GROUP BY / HAVING / ORDER BY / LIMIT
        self.limit = limit
        self.single = single      # the Source when the query reads one table, unaggregated, ordered
        self.table = table
        self.explicit_limit = explicit_limit  # the query says LIMIT (then hasMore is null)


class Translator(ExprTranslator):
    """Translates a parsed SELECT (and its subqueries); expressions are left to ExprTranslator."""

    def __init__(self, schema, values, project_tz, uuid_mode):
        self.schema = schema          # table name -> list of Column (sql = column name)
        super().__init__(values, project_tz, uuid_mode)
        self.n_alias = 0

    def new_alias(self):
        self.n_alias += 1
        return "t%d" % self.n_alias

    # -- select
    def translate_select(self, sel, top=False, limit_cap=None, default_limit=None):
        scope = Scope()
        saved_lazy = getattr(self, "pending_lazy", None)
        self.pending_lazy = []
        from_sql = ""
        if sel["from_"] is not None:
            src, sql = self.make_source(sel["from_"], scope, nullable=False)
            from_sql = " FROM " + sql
            for kind, jsrc, on in sel["joins"]:
                src, sql = self.make_source(jsrc, scope, nullable=(kind == "LEFT"))
                on_te = self.tr(on, scope, "on")
                if on_te.agg:
                    raise HogQLError("Aggregate functions are not allowed in JOIN ... ON")
                from_sql += " %s JOIN %s ON %s" % ("LEFT" if kind == "LEFT" else "INNER", sql, on_te.sql)

        out = []  # (name, TE)
        select = sel["select"]
        if sel.get("star") is not None:
            if sel["from_"] is None or sel["from_"][0] != "subquery" or sel["joins"]:
                raise HogQLError("SELECT * is supported by the emulator over one subquery only (position %d)"
                                 % sel["star"])
            select = [(("field", [name_]), None) for name_ in scope.order[0].columns]
        for expr, alias in select:
            te = self.tr(expr, scope, "select")
            if te.kind == "tuple":
                raise HogQLError("Selecting a tuple is not supported by the emulator")
            if alias is not None:
                if alias in scope.aliases:
                    raise HogQLError("Cannot redefine an alias with the name: %s" % alias)
                scope.aliases[alias] = te
                name = alias
            elif te.json_base is not None and expr[0] in ("field", "index"):
                # the resolver's hidden alias of a property access: its keys joined by "__"
                # (properties.address.city -> address__city; properties.$browser -> $browser)
                name = "__".join(str(k) for k in te.json_base[1])
            elif expr[0] == "field":
                name = expr[1][-1]
            else:
                name = print_expr(expr)
            out.append((name, te))

        where_sql = ""
        if sel["where"] is not None:
            w = self.tr(sel["where"], scope, "where")
            if w.agg:
                raise HogQLError("Aggregate function found in WHERE: %s" % print_expr(sel["where"]))
            self.check_boolean(w, "WHERE")
            where_sql = " WHERE " + w.sql

        group = []
        for g in sel["group_by"]:
            te = self.tr(g, scope, "group")
            if te.agg:
                raise HogQLError("Aggregate functions are not allowed in GROUP BY")
            if te.kind == "tuple":
                raise HogQLError("GROUP BY a tuple is not supported by the emulator")
            if te.const:
                raise HogQLError("GROUP BY a constant (or a column position) is not supported by the emulator")
            group.append(te)
        having = None
        if sel["having"] is not None:
            having = self.tr(sel["having"], scope, "having")
            self.check_boolean(having, "HAVING")
        orders = []
        for e, desc, nulls in sel["order_by"]:
            te = self.tr(e, scope, "order")
            if te.kind == "tuple":
                raise HogQLError("ORDER BY a tuple is not supported by the emulator")
            if te.const:
                raise HogQLError("ORDER BY a constant (or a column position) is not supported by the emulator")
            orders.append((te, desc, nulls))

        is_agg = bool(group) or any(te.agg for _, te in out) or (having is not None) or \
            any(te.agg for te, _, _ in orders)
        if is_agg:
            keys = {g.sql for g in group}
            for name, te in out:
                self.check_grouped(te, keys)
            if having is not None:
                self.check_grouped(having, keys)
            for te, _, _ in orders:
                self.check_grouped(te, keys)

        cols = [(name, "c%d" % i, te) for i, (name, te) in enumerate(out)]
        lazy = "".join(self.pending_lazy)
        from_sql += lazy
        self.pending_lazy = saved_lazy
        tail = ""
        if group:
            tail += " GROUP BY " + ", ".join(g.sql for g in group)
        if having is not None:
            tail += " HAVING " + having.sql
        if orders:
            parts = []
            for te, desc, nulls in orders:
                p = te.sql + (" DESC" if desc else " ASC")
                # ClickHouse puts NULLs last by default in both directions; SQLite puts them first
                # for ASC.  Only say so when the expression can be NULL (keeps index use possible).
                want = nulls or "LAST"
                if te.maybe_null:
                    p += " NULLS " + want
                parts.append(p)
            tail += " ORDER BY " + ", ".join(parts)

        limit = None
        if sel["limit"] is not None:
            lt = self.tr(sel["limit"], scope, "limit")
            v = lt.value
            if not lt.const or isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise HogQLError("LIMIT must be a non-negative integer constant")
            limit = v
        if top:
            effective = default_limit if limit is None else limit
            if effective > limit_cap:
                effective = limit_cap
            tail += " LIMIT " + self.bind(effective + 1)
            single = None
            if len(scope.order) == 1 and sel["from_"] is not None and sel["from_"][0] == "table" \
                    and not is_agg and orders and not lazy:
                single = scope.order[0]
            return TopPlan(cols, from_sql, where_sql, tail, effective, single,
                           sel["from_"][1] if single is not None else None, limit is not None)
        if limit is not None:
            tail += " LIMIT " + self.bind(limit)
        sql = "SELECT " + ", ".join("%s AS %s" % (te.sql, c) for _, c, te in cols) + from_sql + where_sql + tail
        return sql, cols, None

    def json_cell(self, te, bool_as_int):
        """SQL producing the JSON text of one result cell (the top-level SELECT renders in SQLite)."""
        x = te.sql
        k = te.t.kind
        if k == K_JSON and te.qsql is not None:
            return "coalesce(%s, 'null')" % te.qsql
        if k in (K_STRING, K_JSON):
            return "json_quote(%s)" % x
        if k == K_UUID:
            return "json_quote(%s)" % self.uuid.from_key_sql(x)
        if k in (K_INT, K_INT8, K_UINT8, K_UINT64, K_FLOAT):
            return "json_quote(%s)" % x
        if k == K_BOOL:
            if bool_as_int:
                return "(CASE WHEN %s IS NULL THEN 'null' WHEN %s THEN '1' ELSE '0' END)" % (x, x)
            return "(CASE WHEN %s IS NULL THEN 'null' WHEN %s THEN 'true' ELSE 'false' END)" % (x, x)
        if k == K_DATETIME:
            if get_tz(te.t.tz) is timezone.utc:
                return ("(CASE WHEN %s IS NULL THEN 'null' WHEN %s < 0 THEN _dt_json(%s, 'UTC') ELSE "
                        "'\"' || strftime('%%Y-%%m-%%dT%%H:%%M:%%S', %s / 1000000, 'unixepoch') || "
                        "(CASE WHEN %s %% 1000000 = 0 THEN '' ELSE printf('.%%06d', %s %% 1000000) END) || "
                        "'Z\"' END)" % (x, x, x, x, x, x))
            return "_dt_json(%s, %s)" % (x, self.bind(te.t.tz))
        if k == K_ARRAY:
            return "coalesce(%s, 'null')" % x
        if k == K_ENUM8:
            return "json_quote(_enum8_name(%s))" % x
        return "'null'"

    def check_boolean(self, te, where):
        if te.kind == "tuple":
            raise HogQLError("%s condition cannot be a tuple" % where)
        if te.t.kind in (K_STRING, K_JSON, K_DATETIME, K_UUID, K_ARRAY, K_ENUM8):
            raise HogQLError("Illegal type %s of %s condition" % (te.t.ch(), where))

    def check_grouped(self, te, keys):
        if te.const or te.agg or te.sql in keys:
            return
        if te.kind == "field":
            raise HogQLError("Column `%s` is not under an aggregate function and not in GROUP BY keys"
                             % (te.name or te.sql))
        for c in te.children:
            self.check_grouped(c, keys)

    def make_lazy_person(self, ev):
        sql_alias = self.new_alias()
        columns = {}
        for c in self.schema["persons"]:
            ref = '%s."%s"' % (sql_alias, c.sql)
            t = c.t.with_(nullable=True)
            if c.t.kind == K_JSON:
                columns[c.name] = Column(c.name, "json_extract(%s, '$')" % ref, t, True, qsql=ref)
            else:
                columns[c.name] = Column(c.name, ref, t, True)
        self.pending_lazy.append(' LEFT JOIN "persons" AS %s ON %s."id" = %s."person_id"'
                                 % (sql_alias, sql_alias, ev.sql_alias))
        return Source("person", sql_alias, columns)

    def make_source(self, src, scope, nullable):
        kind, what, alias = src
        sql_alias = self.new_alias()
        if kind == "table":
            cols = self.schema.get(what)
            if cols is None:
                raise HogQLQueryError('Unknown table "%s".' % what)  # PostHog's text
            columns = {}
            for c in cols:
                t = c.t.with_(nullable=c.t.nullable or nullable)
                ref = '%s."%s"' % (sql_alias, c.sql)
                if c.t.kind == K_JSON:
                    # stored as the JSON string literal of the object text (what the response carries);
                    # json_extract(.., '$') gives the object text back
                    columns[c.name] = Column(c.name, "json_extract(%s, '$')" % ref, t, c.maybe_null or nullable,
                                             qsql=ref)
                else:
                    columns[c.name] = Column(c.name, ref, t, c.maybe_null or nullable)
            name = alias or what
            sql = '"%s" AS %s' % (what, sql_alias)
        else:
            sub_sql, sub_cols, _ = self.translate_select(what, top=False)
            columns = {}
            for name_, csql, te in sub_cols:
                if name_ in columns:
                    raise HogQLError("Duplicate column name `%s` in a subquery" % name_)
                t = te.t.with_(nullable=te.t.nullable or nullable)
                columns[name_] = Column(name_, "%s.%s" % (sql_alias, csql), t, te.maybe_null or nullable)
            name = alias
            if name is None:
                name = "__subquery%d" % self.n_alias
            sql = "(%s) AS %s" % (sub_sql, sql_alias)
        if name in scope.sources:
            raise HogQLError("Duplicate table alias: %s" % name)
        s = Source(name, sql_alias, columns, what if kind == "table" else None)
        scope.sources[name] = s
        scope.order.append(s)
        return s, sql
