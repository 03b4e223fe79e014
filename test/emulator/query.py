"""Running one HogQL query on the store's current snapshot, and the 200 response body around its rows.

Besides the HogQL checks (parser and translator), a query whose text with its values substituted is longer
than cfg.max_query_size bytes (ClickHouse's max_query_size, 256 KiB by default) fails as PostHog fails it:
HTTP 500 ClickHouseQuerySizeExceeded.  PostHog prints every value into the SQL it sends to ClickHouse
(clickhouse_driver substitutes the query's parameters on the client), so an IN-list of many values makes
a query too large even when its HogQL text is short."""

import json
import re
import sqlite3
from datetime import datetime, timezone

from errors import ApiError, HogQLError
from hogql import Parser
from translate import Translator
from values import escape_lone_surrogates


_CH_ESCAPES = {"\b": "\\b", "\f": "\\f", "\r": "\\r", "\n": "\\n", "\t": "\\t", "\0": "\\0",
               "\a": "\\a", "\v": "\\v", "\\": "\\\\", "'": "\\'"}


def print_value(v):
    """A value as it is printed into ClickHouse SQL (clickhouse_driver's escape_param): strings quoted with
    backslash escapes, lists as [a, b, ...], NULL, true/false, numbers as they are."""
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return "'%s'" % "".join(_CH_ESCAPES.get(c, c) for c in v)
    if isinstance(v, (list, tuple)):
        return "[%s]" % ", ".join(print_value(x) for x in v)
    if isinstance(v, dict):
        return "{%s}" % ", ".join("%s: %s" % (print_value(k), print_value(x)) for k, x in v.items())
    return print_value(str(v))


def substituted_size(text, toks, values):
    """Bytes (UTF-8) of the HogQL text with each {placeholder} replaced by its printed value."""
    n = len(text.encode("utf-8", "surrogatepass"))
    for t in toks:
        if t.kind == "ph" and t.value in values:
            end = text.index("}", t.pos) + 1
            n += len(print_value(values[t.value]).encode("utf-8", "surrogatepass")) - (end - t.pos)
    return n


def run_query(cfg, store, hogql, values, drop_last_cell=False, info=None):
    """Parse, translate and run a HogQL query.

    Returns dict(texts=[JSON text of each row], columns, types, has_more, limit, sql).  The JSON text
    of every row is built inside SQLite (json_quote etc.), which is much faster than json.dumps of
    non-ASCII text in Python.  has_more is None when the query has a LIMIT (PostHog computes hasMore
    only without one).  info (a dict) receives query_bytes, the size of the text with its values."""
    parser = Parser(hogql)
    size = substituted_size(hogql, parser.toks, values)
    if info is not None:
        info["query_bytes"] = size
    ast = parser.parse_query()
    snap = store.snapshot()
    tr = Translator(snap.schema, values, cfg.project_tz, store.uuid_mode)
    plan = tr.translate_select(ast, top=True, limit_cap=cfg.max_limit, default_limit=cfg.default_limit)
    # ClickHouse parses the query only after PostHog has resolved it: HogQL errors (400) come first
    if size > cfg.max_query_size:
        raise ApiError(500, "server_error", "error", "Query size exceeded.")
    cells = [tr.json_cell(te, cfg.bool_as_int) for _, _, te in plan.cols]
    if drop_last_cell and cells:
        cells = cells[:-1]
    if not cells:
        row_sql = "CAST('[]' AS BLOB)"
    elif len(cells) < 100:  # one printf builds the row in one buffer (SQLite allows 100+ arguments)
        row_sql = "CAST(printf('[%s]', %s) AS BLOB)" % (", ".join(["%s"] * len(cells)), ", ".join(cells))
    else:
        row_sql = "CAST('[' || " + " || ', ' || ".join(cells) + " || ']' AS BLOB)"
    limit = plan.limit
    full_sql = "SELECT " + row_sql + plan.from_sql + plan.where_sql + plan.tail
    while True:
        snap.lock.acquire()
        if not snap.closed:
            break
        snap.lock.release()  # reloaded meanwhile: use the new data
        snap = store.snapshot()
    try:
        if snap.delayed:  # rows with a _visible_at: show those whose time has come, hide the others
            snap.sync_visibility(cfg.clock.now_us())
        conn = snap.conn
        if plan.single is not None:
            # Two steps: sort only (rowid, sort keys), then fetch the rendered rows by rowid.  SQLite's
            # sorter would otherwise carry every wide row (properties) through the sort.
            a = plan.single.sql_alias
            keys_sql = "SELECT %s.rowid" % a + plan.from_sql + plan.where_sql + plan.tail
            ids = [r[0] for r in conn.execute(keys_sql, tr.params)]
            has_more = len(ids) > limit
            del ids[limit:]
            if ids:
                found = {}
                if getattr(cfg, "render_cache", False):
                    key = (row_sql, tuple((n, tr.params[n]) for n in sorted(set(re.findall(r":(p\d+)", row_sql)))))
                    found = snap.rendered.setdefault(key, {})
                want = [i for i in ids if i not in found]
                if want:
                    params = dict(tr.params)
                    params["rowids"] = json.dumps(want)
                    fetch_sql = ('SELECT %s.rowid, %s FROM "%s" AS %s WHERE %s.rowid IN '
                                 '(SELECT value FROM json_each(:rowids))' % (a, row_sql, plan.table, a, a))
                    found.update(conn.execute(fetch_sql, params).fetchall())
                texts = [found[i] for i in ids]
            else:
                texts = []
        else:
            texts = [r[0] for r in conn.execute(full_sql, tr.params).fetchmany(limit + 1)]
            has_more = len(texts) > limit
            del texts[limit:]
    except sqlite3.Error as ex:
        raise HogQLError("Query failed in the emulator's SQL engine: %s" % ex)
    finally:
        snap.lock.release()
    return dict(
        texts=texts,
        columns=[c[0] for c in plan.cols],
        types=[[c[0], c[2].t.ch()] for c in plan.cols],
        has_more=None if plan.explicit_limit else has_more,
        limit=limit,
        sql=full_sql,
    )


def _dumps(obj):
    return json.dumps(obj, ensure_ascii=False)


def response_body(res, hogql, results_override=None):
    """The 200 body (UTF-8 bytes), assembled around the row texts rendered by SQLite (bytes)."""
    rows = res["texts"] if results_override is None else results_override
    tail = "".join((
        '], "columns": ', _dumps(res["columns"]),
        ', "types": ', _dumps(res["types"]),
        ', "hasMore": ', {True: "true", False: "false", None: "null"}[res["has_more"]],
        ', "limit": ', str(res["limit"]), ', "offset": 0, "hogql": ', _dumps(hogql),
        ', "clickhouse": ', _dumps(res["sql"]), ', "timings": [], "is_cached": false, "last_refresh": ',
        _dumps(now_rfc3339()), ', "query_status": null}'))
    return b"".join((b'{"results": [', b", ".join(rows), encode_text(tail)))


def encode_text(text):
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return escape_lone_surrogates(text).encode("utf-8")


def encode_json(obj):
    return encode_text(json.dumps(obj, ensure_ascii=False))


def now_rfc3339():
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
