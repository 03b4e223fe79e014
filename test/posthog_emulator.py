#!/usr/bin/python3
"""PostHog HTTP Query API emulator (test tool).  Standard library only (Python 3.11).

    python3 test/posthog_emulator.py --data DIR --port PORT --api-key KEY [--project-id 1]
        [--project-timezone UTC] [--host 127.0.0.1] [--port-file F] [--tls-cert F --tls-key F]
        [--forbidden-key K ...] [--fault JSON ...] [--bool-as-int] [--uuid-order clickhouse|text]
        [--max-limit 50000] [--default-limit 100] [--gzip-level 1] [--cache-dir DIR] [--render-cache]

POST /api/projects/{id}/query/ (trailing slash optional), Authorization: Bearer KEY, body
{"query": {"kind": "HogQLQuery", "query": "...", "values": {...}}, "refresh": ..., "name": ...}.
A subset of HogQL is tokenized, parsed, translated to SQLite SQL (every value bound as a parameter)
and run on an in-memory SQLite database loaded from DIR/events.ndjson, persons.ndjson
(raw_persons), person_distinct_ids.ndjson (raw_person_distinct_ids) and sessions.ndjson.
Anything outside the subset is a 400 {"type": "validation_error", "code": "hogql_error", ...}.

Control endpoints (no auth):
  GET  /_emulator/health    -> {"ok": true, "tables": {name: rows}, "data": DIR}
  GET  /_emulator/requests  -> [{n, path, status, query, values, refresh, name, auth_scheme,
                                 accept_encoding, force_blocking, kind, rows, has_more, fault, error,
                                 ms, time}, ...] since the last reset
  POST /_emulator/reset     -> clears the request log, the request counter and all faults
  POST /_emulator/faults    {"faults": [rule, ...]} adds rules;  GET /_emulator/faults lists them
  POST /_emulator/reload    [{"data": DIR}] re-reads the NDJSON files
Fault rule: one selector {"on_request": N} | {"from_request": N} | {"every": true}, optional
"times": K (default 1; unlimited for "every"), and actions: "status": 400|401|403|429|500|503|504|512
(429: "retry_after": S, "retry_after_header": true adds Retry-After; "type"/"code"/"detail" override
the body), "delay": seconds, "truncate": true, "drop": true, "malformed": true, "wrong_columns": true,
"body_b64": "<base64>" (a canned 200 body, byte for byte), "gzip_bomb": MiB (a 200 whose body is that
many MiB of JSON white space, sent gzip-compressed with Content-Encoding: gzip whatever the client asked
for, chunked, without Content-Length: a decompression bomb of about 1/1000 of its size), "content_length": N (a 200 that announces
Content-Length N but sends only its first bytes, then holds the connection for "hold" seconds, default
0, and closes it).

Internals worth knowing: datetimes are stored as integer microseconds (UTC); UUIDs are stored so that
SQLite's text order is ClickHouse's UUID order (second half first); JSON columns are stored as the
JSON string literal of their text, so result rows are rendered to JSON inside SQLite.
"""

import argparse
import base64
import gzip
import hashlib
import json
import os
import re
import signal
import socket
import sqlite3
import ssl
import sys
import threading
import time
import traceback
import uuid as uuidlib
import zlib
import zoneinfo
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCH_NAIVE = datetime(1970, 1, 1)
ONE_US = timedelta(microseconds=1)

_SURROGATE_RE = re.compile('[\ud800-\udfff]')


def escape_lone_surrogates(text):
    """Replace each lone surrogate code point by the 6-character text \\udXXX."""
    return _SURROGATE_RE.sub(lambda m: '\\u%04x' % ord(m.group()), text)


def has_surrogates(text):
    return _SURROGATE_RE.search(text) is not None


def dumps_inner(obj):
    """Serialize a JSON column value the way the emulator returns it inside the string."""
    s = json.dumps(obj, ensure_ascii=False, separators=(', ', ': '))
    if _SURROGATE_RE.search(s):
        s = escape_lone_surrogates(s)
    return s


# ---------------------------------------------------------------------------
# Errors


class ApiError(Exception):
    def __init__(self, status, type_, code, detail, attr=None, headers=None):
        super().__init__(detail)
        self.status = status
        self.type = type_
        self.code = code
        self.detail = detail
        self.attr = attr
        self.headers = headers or {}

    def body(self):
        return {"type": self.type, "code": self.code, "detail": self.detail, "attr": self.attr}


class HogQLError(ApiError):
    def __init__(self, detail):
        super().__init__(400, "validation_error", "hogql_error", detail)


# ---------------------------------------------------------------------------
# Types


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


K_STRING, K_JSON, K_INT, K_UINT8, K_UINT64, K_FLOAT, K_BOOL, K_DATETIME, K_UUID, K_ARRAY, K_NOTHING, K_TUPLE = range(12)
CH_NAMES = {K_STRING: "String", K_JSON: "String", K_INT: "Int64", K_UINT8: "UInt8", K_UINT64: "UInt64",
            K_FLOAT: "Float64", K_BOOL: "Bool", K_UUID: "UUID", K_ARRAY: "Array(String)"}
NUMERIC = (K_INT, K_UINT8, K_UINT64, K_FLOAT, K_BOOL)

# ---------------------------------------------------------------------------
# Time handling

_TZ_CACHE = {}


def get_tz(name):
    z = _TZ_CACHE.get(name)
    if z is None:
        if not isinstance(name, str) or not name:
            raise HogQLError("Invalid time zone: %r" % (name,))
        if name.upper() in ("UTC", "ETC/UTC", "GMT", "Z", "UCT"):
            z = timezone.utc
        else:
            try:
                z = zoneinfo.ZoneInfo(name)
            except Exception:
                raise HogQLError("Unknown time zone: %s" % name)
        _TZ_CACHE[name] = z
    return z


_DT_RE = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[Tt ]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?\s*$")


def parse_datetime_us(s, tzname):
    """Parse a date/time string into integer microseconds since the epoch (UTC).

    A string without an offset is read in time zone ``tzname``."""
    m = _DT_RE.match(s)
    if not m:
        raise ValueError("Cannot parse DateTime from string %r" % (s,))
    y, mo, d, hh, mi, ss, frac, off = m.groups()
    naive = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0))
    us = 0
    if frac:
        us = int((frac + "000000")[:6])
    if off:
        if off in ("Z", "z", "UTC"):
            offset = timedelta(0)
        else:
            sign = -1 if off[0] == "-" else 1
            digits = off[1:].replace(":", "")
            offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        return (naive - EPOCH_NAIVE - offset) // ONE_US + us
    z = get_tz(tzname)
    aware = naive.replace(tzinfo=z)
    return (aware - EPOCH) // ONE_US + us


def parse_rfc3339_us(s):
    """Parse a timestamp from the data files (RFC 3339; a naive one is UTC)."""
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return parse_datetime_us(s, "UTC")
    if dt.tzinfo is None:
        return (dt - EPOCH_NAIVE) // ONE_US
    return (dt - EPOCH) // ONE_US


_FMT_CACHE = {}


def dt_formatter(tzname):
    """Return f(us) -> RFC 3339 text in the zone (Z for UTC; fraction only when non-zero)."""
    f = _FMT_CACHE.get(tzname)
    if f is not None:
        return f
    z = get_tz(tzname)
    if z is timezone.utc:
        def f(us, _e=EPOCH_NAIVE, _td=timedelta):
            s, frac = divmod(us, 1000000)
            base = (_e + _td(seconds=s)).isoformat()
            return base + (".%06dZ" % frac if frac else "Z")
    else:
        def f(us, _z=z):
            s, frac = divmod(us, 1000000)
            text = datetime.fromtimestamp(s, _z).isoformat()
            if frac:
                return text[:19] + (".%06d" % frac) + text[19:]
            return text
    _FMT_CACHE[tzname] = f
    return f


def dt_to_ch_string(us, tzname, prec):
    """toString(DateTime): 'YYYY-MM-DD HH:MM:SS[.fff...]' in the zone."""
    s, frac = divmod(us, 1000000)
    d = datetime.fromtimestamp(s, get_tz(tzname))
    text = d.strftime("%Y-%m-%d %H:%M:%S")
    if prec:
        text += "." + ("%06d" % frac + "000")[:prec]
    return text


def truncate_us(us, prec):
    if prec is None:
        prec = 0
    if prec >= 6:
        return us
    unit = 10 ** (6 - prec)
    return us - us % unit


# ---------------------------------------------------------------------------
# UUIDs.  ClickHouse sorts UUIDs by their second half first (the low 64 bits),
# then the first half.  In "clickhouse" order mode the emulator stores every
# UUID as "<second half>-<first half>" so that SQLite's text order is ClickHouse's
# order; the top-level SELECT turns it back into the canonical form.

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def canonical_uuid(s):
    if isinstance(s, str) and _UUID_RE.match(s):
        return s
    try:
        return str(uuidlib.UUID(str(s)))
    except Exception:
        raise ValueError("Cannot parse UUID from String %r" % (s,))


class UuidMode:
    def __init__(self, clickhouse_order):
        self.ch = clickhouse_order

    def to_key(self, canon):
        if self.ch:
            return canon[19:] + "-" + canon[:18]
        return canon

    def from_key_sql(self, sql):
        if self.ch:
            return "(substr(%s, 19) || '-' || substr(%s, 1, 17))" % (sql, sql)
        return sql


# ---------------------------------------------------------------------------
# Tokenizer

_TOKEN_RE = re.compile(r"""
 (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
|(?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![A-Za-z_$0-9]))
|(?P<str>'(?:[^'\\]|\\.|'')*')
|(?P<bq>`(?:[^`\\]|\\.|``)*`)
|(?P<dq>"(?:[^"\\]|\\.|"")*")
|(?P<ph>\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\})
|(?P<id>[A-Za-z_$][A-Za-z0-9_$]*)
|(?P<op>==|!=|<>|<=|>=|\|\||::|->|[=<>(),.*+\-/%\[\]:?{};])
""", re.S | re.X)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "b": "\b", "f": "\f", "a": "\a", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "`": "`"}


def unescape_quoted(body, quote):
    out = []
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c == "\\" and i + 1 < n:
            e = body[i + 1]
            if e == "x" and i + 3 < n + 0 and re.match(r"[0-9A-Fa-f]{2}", body[i + 2:i + 4]):
                out.append(chr(int(body[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES.get(e, e))
            i += 2
            continue
        if c == quote and i + 1 < n and body[i + 1] == quote:
            out.append(quote)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


class Tok:
    __slots__ = ("kind", "value", "pos", "upper")

    def __init__(self, kind, value, pos):
        self.kind = kind      # 'num' 'str' 'id' 'qid' 'ph' 'op' 'eof'
        self.value = value
        self.pos = pos
        self.upper = value.upper() if kind == "id" else None

    def __repr__(self):
        return "%s %r" % (self.kind, self.value)


def tokenize(text):
    toks = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if not m:
            c = text[pos]
            if c in "'`\"":
                raise HogQLError("Syntax error at position %d: unterminated quoted text" % pos)
            raise HogQLError("Syntax error at position %d: unexpected character %r" % (pos, c))
        kind = m.lastgroup
        v = m.group()
        if kind == "ws":
            pass
        elif kind == "str":
            toks.append(Tok("str", unescape_quoted(v[1:-1], "'"), pos))
        elif kind in ("bq", "dq"):
            toks.append(Tok("qid", unescape_quoted(v[1:-1], v[0]), pos))
        elif kind == "ph":
            toks.append(Tok("ph", v[1:-1].strip(), pos))
        else:
            toks.append(Tok(kind, v, pos))
        pos = m.end()
    toks.append(Tok("eof", "", n))
    return toks


# ---------------------------------------------------------------------------
# Parser -> AST (tuples)
#
# Expressions:
#   ('const', value)  ('ph', name)  ('field', [names])  ('call', name, args, distinct)
#   ('star',)  ('cmp', op, l, r)  ('and', [..])  ('or', [..])  ('not', e)
#   ('in', lhs, rhs, negated)  rhs: ('tuple', [..]) | ('ph', name) | ('subquery', sel)
#   ('isnull', e, negated)  ('tuple', [..])  ('neg', e)
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
        raise HogQLError("Syntax error at position %d (near %s): %s" % (t.pos, got, msg))

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
                self.unsupported("SELECT *")
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
        if t.kind == "qid":
            return t.value
        if t.kind == "id" and t.upper not in CLAUSE_WORDS:
            return t.value
        self.error("expected an alias name", t)

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
                src[2] = t.value
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
        left = self.parse_unary()
        t = self.peek()
        if t.kind == "op" and t.value in CMP_OPS:
            self.next()
            right = self.parse_unary()
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
        if t.kind == "id" and t.upper in ("LIKE", "ILIKE", "BETWEEN", "REGEXP"):
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

    def parse_unary(self):
        if self.accept_op("-"):
            e = self.parse_unary()
            if e[0] == "const" and isinstance(e[1], (int, float)) and not isinstance(e[1], bool):
                return ("const", -e[1])
            return ("neg", e)
        e = self.parse_primary()
        t = self.peek()
        if t.kind == "op" and t.value in ("+", "-", "*", "/", "%", "||"):
            self.unsupported("The operator '%s'" % t.value)
        if t.kind == "op" and t.value in ("::", "[", "->", "?", ":"):
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
    if k == "in":
        rhs = e[2]
        r = "(subquery)" if rhs[0] == "subquery" else print_expr(rhs)
        return "%s %sIN %s" % (print_expr(e[1]), "NOT " if e[3] else "", r)
    return k


# ---------------------------------------------------------------------------
# Translator: AST -> SQLite SQL with named parameters


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


class Column:
    __slots__ = ("name", "sql", "t", "maybe_null", "qsql")

    def __init__(self, name, sql, t, maybe_null, qsql=None):
        self.name = name
        self.sql = sql
        self.t = t
        self.maybe_null = maybe_null
        self.qsql = qsql  # SQL of the stored JSON-string-literal form (JSON columns of base tables)


class Source:
    def __init__(self, alias, sql_alias, columns):
        self.alias = alias
        self.sql_alias = sql_alias
        self.columns = columns  # name -> Column


class Scope:
    def __init__(self):
        self.sources = {}   # alias -> Source
        self.order = []
        self.aliases = {}   # select alias -> TE


AGGREGATES = {"argMax", "max", "min", "count"}


class TopPlan:
    """The top-level SELECT, kept in parts so that it can be run in one or two steps."""

    def __init__(self, cols, from_sql, where_sql, tail, limit, single, table):
        self.cols = cols
        self.from_sql = from_sql
        self.where_sql = where_sql
        self.tail = tail          # GROUP BY / HAVING / ORDER BY / LIMIT
        self.limit = limit
        self.single = single      # the Source when the query reads one table, unaggregated, ordered
        self.table = table


class Translator:
    def __init__(self, schema, values, project_tz, uuid_mode):
        self.schema = schema          # table name -> list of Column (sql = column name)
        self.values = values or {}
        self.project_tz = project_tz
        self.uuid = uuid_mode
        self.params = {}
        self.n_alias = 0

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

    def new_alias(self):
        self.n_alias += 1
        return "t%d" % self.n_alias

    # -- select
    def translate_select(self, sel, top=False, limit_cap=None, default_limit=None):
        scope = Scope()
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
        for expr, alias in sel["select"]:
            te = self.tr(expr, scope, "select")
            if te.kind == "tuple":
                raise HogQLError("Selecting a tuple is not supported by the emulator")
            if alias is not None:
                if alias in scope.aliases:
                    raise HogQLError("Cannot redefine an alias with the name: %s" % alias)
                scope.aliases[alias] = te
                name = alias
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
                    and not is_agg and orders:
                single = scope.order[0]
            return TopPlan(cols, from_sql, where_sql, tail, effective, single,
                           sel["from_"][1] if single is not None else None)
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
        if k in (K_INT, K_UINT8, K_UINT64, K_FLOAT):
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
        return "'null'"

    def check_boolean(self, te, where):
        if te.kind == "tuple":
            raise HogQLError("%s condition cannot be a tuple" % where)
        if te.t.kind in (K_STRING, K_JSON, K_DATETIME, K_UUID, K_ARRAY):
            raise HogQLError("Illegal type %s of %s condition" % (te.t.ch(), where))

    def check_grouped(self, te, keys):
        if te.const or te.agg or te.sql in keys:
            return
        if te.kind == "field":
            raise HogQLError("Column `%s` is not under an aggregate function and not in GROUP BY keys"
                             % (te.name or te.sql))
        for c in te.children:
            self.check_grouped(c, keys)

    def make_source(self, src, scope, nullable):
        kind, what, alias = src
        sql_alias = self.new_alias()
        if kind == "table":
            cols = self.schema.get(what)
            if cols is None:
                raise HogQLError("Unknown table `%s`. The emulator knows: %s"
                                 % (what, ", ".join(sorted(self.schema))))
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
        s = Source(name, sql_alias, columns)
        scope.sources[name] = s
        scope.order.append(s)
        return s, sql

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
                raise HogQLError("Unable to resolve field: %s (table `%s` has no column `%s`)"
                                 % (".".join(chain), name, chain[1]))
            te = TE(col.sql, col.t, kind="field", maybe_null=col.maybe_null, name=".".join(chain[:2]),
                    qsql=col.qsql)
            rest = chain[2:]
        elif clause != "on" and name in scope.aliases:
            te = scope.aliases[name]
        else:
            found = [s for s in scope.order if name in s.columns]
            if not found:
                raise HogQLError("Unable to resolve field: %s" % name)
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
            if tk in (K_INT, K_UINT8, K_UINT64, K_BOOL) and isinstance(v, str):
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
        groups = [(K_INT, K_UINT8, K_UINT64, K_FLOAT, K_BOOL), (K_STRING, K_JSON), (K_DATETIME,), (K_UUID,),
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
            raise HogQLError("Unsupported function call '%s(...)'. The emulator supports: %s"
                             % (fname, ", ".join(sorted(list(FUNCTIONS) + ["argMax", "count", "max", "min",
                                                                            "coalesce", "ifNull"]))))
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
        if k in (K_INT, K_UINT64, K_UINT8):
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
        if k in (K_INT, K_UINT8, K_UINT64):
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


# ---------------------------------------------------------------------------
# SQLite functions


class ArgMax:
    def __init__(self):
        self.best = None
        self.val = None
        self.have = False

    def step(self, x, v):
        if v is None:
            return
        if not self.have or v > self.best:
            self.best = v
            self.val = x
            self.have = True

    def finalize(self):
        return self.val


def _json_get(text, *keys):
    if text is None:
        return None
    try:
        v = json.loads(text)
    except ValueError:
        return None
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k)
        elif isinstance(v, list) and re.fullmatch(r"\d+", k):
            i = int(k)
            v = v[i - 1] if 1 <= i <= len(v) else None
        else:
            return None
        if v is None:
            return None
    if isinstance(v, str):
        s = v
    else:
        s = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    if _SURROGATE_RE.search(s):
        s = _SURROGATE_RE.sub("\ufffd", s)
    return s


def _parse_dt_udf(text, tz, prec):
    if text is None:
        return None
    try:
        return truncate_us(parse_datetime_us(str(text), tz), prec)
    except (ValueError, OverflowError, HogQLError):
        return None


def _to_uuid_udf_factory(mode):
    def f(text):
        if text is None:
            return None
        try:
            return mode.to_key(canonical_uuid(text))
        except ValueError:
            return None
    return f


def _dt_str_udf(us, tz, prec):
    if us is None:
        return None
    return dt_to_ch_string(us, tz, prec)


def _dt_json_udf(us, tz):
    if us is None:
        return "null"
    return '"' + dt_formatter(tz)(us) + '"'


def _float_str_udf(x):
    if x is None:
        return None
    x = float(x)
    if x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def register_functions(conn, uuid_mode):
    conn.create_aggregate("_argmax", 2, ArgMax)
    conn.create_function("_json_get", -1, _json_get, deterministic=True)
    conn.create_function("_parse_dt", 3, _parse_dt_udf, deterministic=True)
    conn.create_function("_to_uuid", 1, _to_uuid_udf_factory(uuid_mode), deterministic=True)
    conn.create_function("_dt_str", 3, _dt_str_udf, deterministic=True)
    conn.create_function("_float_str", 1, _float_str_udf, deterministic=True)
    conn.create_function("_dt_json", 2, _dt_json_udf, deterministic=True)


# ---------------------------------------------------------------------------
# Data store


def _col(name, kind, nullable=False, prec=6):
    return (name, kind, nullable, prec)


TABLES = {
    "events": {
        "file": "events.ndjson",
        "cols": [
            # wide columns last: SQLite must walk past earlier columns (and their overflow pages)
            # to read a later one
            _col("uuid", K_UUID), _col("event", K_STRING), _col("timestamp", K_DATETIME),
            _col("created_at", K_DATETIME), _col("team_id", K_INT), _col("distinct_id", K_STRING),
            _col("person_id", K_UUID, True), _col("$session_id", K_STRING, True),
            _col("elements_chain", K_STRING), _col("properties", K_JSON),
        ],
        "derived": {"$session_id": ("properties", "$session_id")},
        # (timestamp, uuid, created_at) covers the keyset query: read in order, stop after LIMIT rows
        "indexes": [("timestamp", "uuid", "created_at"), ("uuid",)],
    },
    "raw_persons": {
        "file": "persons.ndjson",
        "cols": [
            _col("id", K_UUID), _col("team_id", K_INT), _col("created_at", K_DATETIME, prec=3),
            _col("is_identified", K_BOOL), _col("is_deleted", K_BOOL), _col("version", K_INT),
            _col("properties", K_JSON),
        ],
        "indexes": [("id", "version"), ("created_at",)],
    },
    "raw_person_distinct_ids": {
        "file": "person_distinct_ids.ndjson",
        "cols": [
            _col("team_id", K_INT), _col("distinct_id", K_STRING), _col("person_id", K_UUID),
            _col("is_deleted", K_BOOL), _col("version", K_INT),
        ],
        "indexes": [("distinct_id", "version"), ("person_id",)],
    },
    "sessions": {
        "file": "sessions.ndjson",
        "cols": [
            _col("session_id", K_STRING), _col("team_id", K_INT), _col("distinct_id", K_STRING),
            _col("$start_timestamp", K_DATETIME), _col("$end_timestamp", K_DATETIME),
            _col("$num_uniq_urls", K_INT),
            _col("$entry_current_url", K_STRING, True), _col("$entry_pathname", K_STRING, True),
            _col("$entry_hostname", K_STRING, True), _col("$end_current_url", K_STRING, True),
            _col("$end_pathname", K_STRING, True), _col("$end_hostname", K_STRING, True),
            _col("$entry_referring_domain", K_STRING, True), _col("$entry_utm_source", K_STRING, True),
            _col("$entry_utm_campaign", K_STRING, True), _col("$entry_utm_medium", K_STRING, True),
            _col("$entry_utm_term", K_STRING, True), _col("$entry_utm_content", K_STRING, True),
            _col("$entry_gclid", K_STRING, True), _col("$entry_gad_source", K_STRING, True),
            _col("$entry_fbclid", K_STRING, True), _col("$pageview_count", K_INT),
            _col("$autocapture_count", K_INT), _col("$screen_count", K_INT), _col("$channel_type", K_STRING),
            _col("$session_duration", K_INT), _col("$is_bounce", K_BOOL),
            _col("$last_external_click_url", K_STRING, True), _col("$vitals_lcp", K_FLOAT, True),
            _col("$urls", K_ARRAY),
        ],
        "indexes": [("$end_timestamp", "session_id"), ("session_id",), ("$start_timestamp",)],
    },
}

SQL_TYPES = {K_STRING: "TEXT", K_JSON: "TEXT", K_INT: "INTEGER", K_FLOAT: "REAL", K_BOOL: "INTEGER",
             K_DATETIME: "INTEGER", K_UUID: "TEXT", K_ARRAY: "TEXT"}


CACHE_FORMAT = 2  # bump when the stored layout changes


class LoadError(Exception):
    pass


def _clean_str(s):
    if _SURROGATE_RE.search(s):
        return _SURROGATE_RE.sub("\ufffd", s)
    return s


_ENC_INNER = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "), check_circular=False)


def make_converter(kind, uuid_mode, fast):
    """Value from a data file -> the SQLite value.

    fast=True: the line held no \\u escape, so no string in it can hold a lone surrogate."""
    if kind == K_UUID:
        to_key = uuid_mode.to_key
        match = _UUID_RE.match

        def f(v):
            if isinstance(v, str) and match(v):
                return to_key(v)
            return to_key(canonical_uuid(v))
    elif kind == K_DATETIME:
        def f(v):
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return int(round(v * 1000000))
            return parse_rfc3339_us(v)
    elif kind == K_JSON:
        enc = _ENC_INNER.encode
        if fast:
            def f(v):
                if isinstance(v, str):
                    v = json.loads(v)
                return enc(v)
        else:
            def f(v):
                if isinstance(v, str):
                    v = json.loads(v)
                return dumps_inner(v)
    elif kind == K_ARRAY:
        def f(v):
            if isinstance(v, str):
                v = json.loads(v)
            if not isinstance(v, list):
                raise ValueError("expected an array")
            return dumps_inner(v)
    elif kind == K_BOOL:
        def f(v):
            if isinstance(v, str):
                lv = v.lower()
                if lv in ("true", "1"):
                    return 1
                if lv in ("false", "0"):
                    return 0
                raise ValueError("expected a boolean")
            return 1 if v else 0
    elif kind == K_INT:
        def f(v):
            if isinstance(v, float) and v != int(v):
                raise ValueError("expected an integer")
            return int(v)
    elif kind == K_FLOAT:
        def f(v):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                return float(v)
            return v
    else:
        if fast:
            def f(v):
                if type(v) is str:
                    return v
                return json.dumps(v, ensure_ascii=False)
        else:
            def f(v):
                if isinstance(v, str):
                    if _SURROGATE_RE.search(v):
                        return _clean_str(v)
                    return v
                return _clean_str(json.dumps(v, ensure_ascii=False))
    return f


def _derived_getter(src_col, key):
    def d(obj):
        src = obj.get(src_col)
        if isinstance(src, str):
            try:
                src = json.loads(src)
            except ValueError:
                return None
        if not isinstance(src, dict):
            return None
        v = src.get(key)
        if v is None:
            return None
        if not isinstance(v, str):
            v = json.dumps(v, ensure_ascii=False)
        return _clean_str(v)
    return d


def build_row_function(plan, fast):
    """Compile obj -> tuple of SQLite values for one table (no per-column Python loop)."""
    env = {}
    parts = []
    for i, (name, kind, der, uuid_mode) in enumerate(plan):
        if der is not None:
            env["d%d" % i] = _derived_getter(*der)
            parts.append("d%d(obj)" % i)
        else:
            env["c%d" % i] = make_converter(kind, uuid_mode, fast)
            parts.append("(c%d(v) if (v := g(%r)) is not None else None)" % (i, name))
    code = "def row(obj):\n    g = obj.get\n    return (%s,)\n" % ", ".join(parts)
    exec(code, env)
    return env["row"]


def describe_load_error(path, lineno, line, plan, ex):
    where = "%s:%d" % (path, lineno)
    try:
        obj = json.loads(line)
    except ValueError as e2:
        return "%s: invalid JSON: %s" % (where, e2)
    if not isinstance(obj, dict):
        return "%s: each line must be a JSON object" % where
    for name, kind, der, uuid_mode in plan:
        if der is not None:
            continue
        v = obj.get(name)
        if v is None:
            continue
        try:
            make_converter(kind, uuid_mode, False)(v)
        except Exception as e3:
            return "%s: column %s: %s" % (where, name, e3)
    return "%s: %s" % (where, ex)


class Snapshot:
    """One loaded data set: a single in-memory SQLite connection used under a lock.

    (Several connections to a shared-cache in-memory database deadlock when one of them is closed,
    or garbage-collected, while another runs a query that calls back into Python.)"""

    def __init__(self, gen, conn, schema, counts, load_ms):
        self.gen = gen
        self.conn = conn
        self.lock = threading.Lock()
        self.schema = schema
        self.counts = counts
        self.load_ms = load_ms
        self.closed = False
        self.rendered = {}  # --render-cache: (row SQL, its parameters) -> {rowid: JSON text}

    def close(self):
        with self.lock:
            self.closed = True
            self.conn.close()


class Store:
    def __init__(self, data_dir, project_tz, uuid_mode, log, cache_dir=None):
        self.cache_dir = cache_dir
        self.data_dir = data_dir
        self.project_tz = project_tz
        self.uuid_mode = uuid_mode
        self.log = log
        self.gen = 0
        self.current = None
        self.lock = threading.Lock()

    def load(self, data_dir=None):
        with self.lock:
            if data_dir is not None:
                self.data_dir = data_dir
            self.gen += 1
            gen = self.gen
            t0 = time.monotonic()
            conn = sqlite3.connect(":memory:", check_same_thread=False)
            try:
                cached = self.cache_path()
                if cached and os.path.exists(cached):
                    src = sqlite3.connect(cached)
                    try:
                        src.backup(conn)
                    finally:
                        src.close()
                    how = "from the cache %s" % cached
                else:
                    self._fill(conn)
                    how = "from %s" % self.data_dir
                    if cached:
                        os.makedirs(self.cache_dir, exist_ok=True)
                        tmp = "%s.%d.tmp" % (cached, os.getpid())
                        dst = sqlite3.connect(tmp)
                        try:
                            conn.backup(dst)
                        finally:
                            dst.close()
                        os.replace(tmp, cached)
                        how += " (cached in %s)" % cached
                schema, counts = self._describe(conn)
                conn.execute("PRAGMA query_only=ON")
                register_functions(conn, self.uuid_mode)
            except Exception:
                conn.close()
                raise
            ms = (time.monotonic() - t0) * 1000
            old = self.current
            self.current = Snapshot(gen, conn, schema, counts, ms)
            if old is not None:
                old.close()  # waits for a query still running on it
            self.log("loaded data %s in %.0f ms: %s" % (
                how, ms, ", ".join("%s=%d" % kv for kv in counts.items())))
            return self.current

    def _fill(self, conn):
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute('CREATE TABLE "__emulator_meta" (tname TEXT, col TEXT, has_null INTEGER, n INTEGER)')
        for tname, spec in TABLES.items():
            cols = spec["cols"]
            names = [c[0] for c in cols]
            conn.execute('CREATE TABLE "%s" (%s)' % (
                tname, ", ".join('"%s" %s' % (c[0], SQL_TYPES[c[1]]) for c in cols)))
            path = os.path.join(self.data_dir, spec["file"])
            derived = spec.get("derived", {})
            plan = [(c[0], c[1], derived.get(c[0]), self.uuid_mode) for c in cols]
            ins = 'INSERT INTO "%s" VALUES (%s)' % (tname, ", ".join(
                "nullif(json_quote(?), 'null')" if c[1] == K_JSON else "?" for c in cols))
            n = 0
            if os.path.exists(path):
                n = self._load_file(conn, path, ins, plan)
            for idx in spec.get("indexes", []):
                conn.execute('CREATE INDEX "%s_%s" ON "%s" (%s)' % (
                    tname, "_".join(x.strip("$") for x in idx), tname, ", ".join('"%s"' % x for x in idx)))
            for name in names:
                has_null = conn.execute(
                    'SELECT EXISTS (SELECT 1 FROM "%s" WHERE "%s" IS NULL)' % (tname, name)).fetchone()[0]
                conn.execute('INSERT INTO "__emulator_meta" VALUES (?, ?, ?, ?)', (tname, name, has_null, n))
        conn.execute("ANALYZE")
        conn.commit()

    def _describe(self, conn):
        """Schema (with the per-column 'holds NULLs' flags) and row counts of a loaded database."""
        meta = {(t, c): (hn, n) for t, c, hn, n in conn.execute('SELECT * FROM "__emulator_meta"')}
        schema = {}
        counts = {}
        tz = self.project_tz
        for tname, spec in TABLES.items():
            cols = spec["cols"]
            schema[tname] = [
                Column(c[0], c[0], T(c[1], tz if c[1] == K_DATETIME else None,
                                     c[3] if c[1] == K_DATETIME else None, c[2]), bool(meta[(tname, c[0])][0]))
                for c in cols]
            counts[tname] = meta[(tname, cols[0][0])][1]
        return schema, counts

    def cache_path(self):
        if not self.cache_dir:
            return None
        files = []
        for spec in TABLES.values():
            path = os.path.join(self.data_dir, spec["file"])
            try:
                st = os.stat(path)
                files.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
            except FileNotFoundError:
                files.append([os.path.abspath(path), None, None])
        key = json.dumps([CACHE_FORMAT, self.uuid_mode.ch, files])
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        return os.path.join(self.cache_dir, "posthog-emulator-%s.sqlite" % digest)

    @staticmethod
    def _load_file(conn, path, ins, plan):
        fast_row = build_row_function(plan, fast=True)
        slow_row = build_row_function(plan, fast=False)
        state = {"line": 0}
        loads = json.loads

        def rows():
            # invalid UTF-8 bytes become U+FFFD, so a lone surrogate can only come from a \u escape:
            # lines without any "\u" take the fast path that skips the surrogate checks
            with open(path, "r", encoding="utf-8", errors="replace", buffering=1 << 20) as fh:
                lineno = 0
                for line in fh:
                    lineno += 1
                    try:
                        obj = loads(line)
                        if "\\u" in line:
                            yield slow_row(obj)
                        else:
                            yield fast_row(obj)
                    except Exception as ex:
                        if not line.strip():
                            continue
                        state["line"] = lineno
                        raise LoadError(describe_load_error(path, lineno, line, plan, ex))

        cur = conn.cursor()
        gen = rows()
        n = 0
        while True:
            batch = []
            for r in gen:
                batch.append(r)
                if len(batch) >= 5000:
                    break
            if not batch:
                break
            cur.executemany(ins, batch)
            n += len(batch)
        return n

    def snapshot(self):
        return self.current


# ---------------------------------------------------------------------------
# Query execution and serialization


def run_query(cfg, store, hogql, values, drop_last_cell=False):
    """Parse, translate and run a HogQL query.

    Returns dict(texts=[JSON text of each row], columns, types, has_more, limit, sql).  The JSON text
    of every row is built inside SQLite (json_quote etc.), which is much faster than json.dumps of
    non-ASCII text in Python."""
    ast = Parser(hogql).parse_query()
    snap = store.snapshot()
    tr = Translator(snap.schema, values, cfg.project_tz, store.uuid_mode)
    plan = tr.translate_select(ast, top=True, limit_cap=cfg.max_limit, default_limit=cfg.default_limit)
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
        has_more=has_more,
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
        ', "types": ', _dumps(res["types"]), ', "hasMore": ', "true" if res["has_more"] else "false",
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


# ---------------------------------------------------------------------------
# Faults

FAULT_SELECTORS = ("on_request", "every", "from_request")
FAULT_ACTIONS = ("status", "delay", "truncate", "drop", "malformed", "wrong_columns", "body_b64", "gzip_bomb",
                 "content_length")
FAULT_KEYS = set(FAULT_SELECTORS) | set(FAULT_ACTIONS) | {"times", "retry_after", "detail", "code", "type",
                                                           "retry_after_header", "location", "hold"}

STATUS_BODIES = {
    400: ("validation_error", "hogql_error", "Emulated fault: the query could not be run."),
    401: ("authentication_error", "authentication_failed",
          "Personal API key found in request Authorization header is invalid."),
    403: ("authentication_error", "permission_denied",
          "API key missing required scope 'query:read'"),
    404: ("invalid_request", "not_found", "Not found."),
    429: ("throttled_error", "throttled", None),
    500: ("server_error", "error", "A server error occurred."),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("server_error", "service_unavailable",
          "The query could not be run: ClickHouse is at capacity. Please try again later."),
    504: ("server_error", "timeout",
          "Query has hit the max execution time before completing. Try a smaller time range or page size."),
    512: ("server_error", "estimated_query_execution_time_too_long",
          "Estimated query execution time is too long. Try reducing its scope by changing the time range."),
}
REASONS = {512: "Estimated Query Execution Time Too Long", 429: "Too Many Requests"}


class FaultRule:
    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise ValueError("a fault rule must be a JSON object")
        unknown = set(spec) - FAULT_KEYS
        if unknown:
            raise ValueError("unknown fault rule keys: %s" % ", ".join(sorted(unknown)))
        sels = [k for k in FAULT_SELECTORS if k in spec]
        if len(sels) != 1:
            raise ValueError("a fault rule needs exactly one of on_request, every, from_request")
        if not any(k in spec for k in FAULT_ACTIONS):
            raise ValueError("a fault rule needs an action: one of %s" % ", ".join(FAULT_ACTIONS))
        self.spec = dict(spec)
        self.selector = sels[0]
        if self.selector == "every":
            if spec["every"] is not True:
                raise ValueError('"every" must be true')
            self.start = 1
        else:
            v = spec[self.selector]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError("%s must be an integer >= 1" % self.selector)
            self.start = v
        times = spec.get("times")
        if times is None:
            times = None if self.selector == "every" else 1
        elif not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ValueError("times must be an integer >= 1")
        self.remaining = times
        st = spec.get("status")
        if st is not None and (not isinstance(st, int) or not (400 <= st <= 599 or 301 <= st <= 308)):
            raise ValueError("status must be a redirect 301..308 or an HTTP error status 400..599")
        for k in ("delay", "hold"):
            d = spec.get(k)
            if d is not None and (not isinstance(d, (int, float)) or isinstance(d, bool) or d < 0):
                raise ValueError("%s must be a non-negative number of seconds" % k)
        for k, hi in (("gzip_bomb", 4096), ("content_length", 1 << 50)):
            v = spec.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi):
                raise ValueError("%s must be an integer from 1 to %d" % (k, hi))
        if spec.get("gzip_bomb") is not None:
            gzip_bomb(spec["gzip_bomb"])  # compress it now, not while a client waits

    def take(self, n):
        if n < self.start or self.remaining == 0:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True

    def describe(self):
        d = dict(self.spec)
        d["remaining"] = self.remaining
        return d


class Faults:
    def __init__(self):
        self.rules = []
        self.lock = threading.Lock()

    def add(self, specs):
        rules = [FaultRule(s) for s in specs]
        with self.lock:
            self.rules.extend(rules)

    def clear(self):
        with self.lock:
            self.rules = []

    def match(self, n):
        """Return the combined action for request number n (or None)."""
        act = None
        with self.lock:
            for r in self.rules:
                if r.take(n):
                    if act is None:
                        act = {"delay": 0.0, "status": None, "flags": set(), "rules": []}
                    s = r.spec
                    act["rules"].append(s)
                    act["delay"] += float(s.get("delay", 0) or 0)
                    if s.get("status") is not None and act["status"] is None:
                        act["status"] = s
                    if s.get("body_b64") is not None and act.get("body") is None:
                        act["body"] = base64.b64decode(s["body_b64"])
                    if s.get("gzip_bomb") is not None and act.get("bomb") is None:
                        act["bomb"] = s["gzip_bomb"]
                    if s.get("content_length") is not None and act.get("content_length") is None:
                        act["content_length"] = s["content_length"]
                        act["hold"] = float(s.get("hold", 0) or 0)
                    for f in ("truncate", "drop", "malformed", "wrong_columns"):
                        if s.get(f):
                            act["flags"].add(f)
            self.rules = [r for r in self.rules if r.remaining != 0]
        return act

    def describe(self):
        with self.lock:
            return [r.describe() for r in self.rules]


_BOMBS = {}
_BOMBS_LOCK = threading.Lock()


def gzip_bomb(mib):
    """A gzip stream of a JSON body padded with `mib` MiB of spaces (about 1 KiB per MiB), cached."""
    with _BOMBS_LOCK:
        if mib not in _BOMBS:
            c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            chunk = b" " * (1 << 20)
            parts = [c.compress(b'{"results": [')]
            parts.extend(c.compress(chunk) for _ in range(mib))
            parts.append(c.compress(b'], "columns": []}'))
            parts.append(c.flush())
            _BOMBS[mib] = b"".join(parts)
        return _BOMBS[mib]


def fault_error(spec):
    st = spec["status"]
    type_, code, detail = STATUS_BODIES.get(st, ("server_error", "error", "Emulated fault (HTTP %d)." % st))
    headers = {}
    if st == 429:
        ra = spec.get("retry_after", 1)
        detail = "Request was throttled. Expected available in %s seconds." % ra
        if spec.get("retry_after_header"):
            headers["Retry-After"] = str(ra)
    if 300 <= st < 400:
        # a redirect elsewhere: a client must not follow it with the key
        headers["Location"] = spec.get("location", "https://elsewhere.invalid/api/projects/1/query/")
    type_ = spec.get("type", type_)
    code = spec.get("code", code)
    detail = spec.get("detail", detail)
    return ApiError(st, type_, code, detail, headers=headers)


# ---------------------------------------------------------------------------
# HTTP

QUERY_PATH_RE = re.compile(r"^/api/projects/([^/]+)/query/?$")


class Config:
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "posthog-emulator/1.0"
    sys_version = ""

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):  # silence the default access log (we log our own lines)
        pass

    def log_request(self, code="-", size="-"):
        pass

    # -- plumbing
    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:
                        l2 = self.rfile.readline(65537)
                        if l2 in (b"\r\n", b"\n", b""):
                            break
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def wants_gzip(self):
        ae = self.headers.get("Accept-Encoding") or ""
        for part in ae.split(","):
            bits = [b.strip() for b in part.split(";")]
            if bits[0].lower() in ("gzip", "x-gzip", "*"):
                q = 1.0
                for b in bits[1:]:
                    if b.lower().startswith("q="):
                        try:
                            q = float(b[2:])
                        except ValueError:
                            q = 0
                if q > 0:
                    return True
        return False

    def send_bytes(self, status, body, headers=None, truncate=False, compress=True):
        if compress and self.wants_gzip() and body:
            body = gzip.compress(body, compresslevel=self.server.cfg.gzip_level)
            enc = True
        else:
            enc = False
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", "application/json")
        if enc:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Vary", "Accept-Encoding")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if truncate:
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.abort_connection()
            return len(body)
        self.wfile.write(body)
        return len(body)

    def send_obj(self, status, obj, headers=None, **kw):
        return self.send_bytes(status, encode_json(obj), headers, **kw)

    def abort_connection(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except Exception:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except Exception:
            pass

    def log_line(self, status, rows="-", ms=0.0, extra=""):
        # the query string is left out: a client could put a key there (PostHog accepts personal_api_key)
        path = self.path.split("?", 1)[0]
        self.server.log("%s %s %s rows=%s ms=%.1f%s" % (self.command, path, status, rows, ms, extra))

    # -- dispatch
    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def dispatch(self):
        t0 = time.monotonic()
        path = self.path.split("?", 1)[0]
        try:
            if path.startswith("/_emulator/"):
                status = self.control(path)
                self.log_line(status, ms=(time.monotonic() - t0) * 1000)
                return
            m = QUERY_PATH_RE.match(path)
            if m and self.command == "POST":
                self.query_endpoint(m.group(1), t0)
                return
            self.read_body()  # keep the connection usable
            if m:
                err = ApiError(405, "invalid_request", "method_not_allowed",
                               'Method "%s" not allowed.' % self.command)
            else:
                err = ApiError(404, "invalid_request", "not_found", "Not found.")
            self.send_obj(err.status, err.body(), compress=False)
            self.log_line(err.status, ms=(time.monotonic() - t0) * 1000)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    # -- control endpoints
    def control(self, path):
        srv = self.server
        body = self.read_body()
        cmd = self.command
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            self.send_obj(400, {"ok": False, "error": "invalid JSON body"}, compress=False)
            return 400
        if path == "/_emulator/health" and cmd == "GET":
            snap = srv.store.current
            self.send_obj(200, {"ok": True, "tables": snap.counts, "data": srv.store.data_dir}, compress=False)
            return 200
        if path == "/_emulator/requests" and cmd == "GET":
            with srv.req_lock:
                log = list(srv.requests)
            self.send_obj(200, log, compress=False)
            return 200
        if path == "/_emulator/reset" and cmd == "POST":
            with srv.req_lock:
                srv.requests = []
                srv.counter = 0
            srv.faults.clear()
            self.send_obj(200, {"ok": True}, compress=False)
            return 200
        if path == "/_emulator/faults" and cmd == "POST":
            specs = data.get("faults") if isinstance(data, dict) else None
            if not isinstance(specs, list):
                self.send_obj(400, {"ok": False, "error": 'body must be {"faults": [...]}'}, compress=False)
                return 400
            try:
                srv.faults.add(specs)
            except ValueError as ex:
                self.send_obj(400, {"ok": False, "error": str(ex)}, compress=False)
                return 400
            self.send_obj(200, {"ok": True, "faults": srv.faults.describe()}, compress=False)
            return 200
        if path == "/_emulator/faults" and cmd == "GET":
            self.send_obj(200, srv.faults.describe(), compress=False)
            return 200
        if path == "/_emulator/reload" and cmd == "POST":
            ddir = data.get("data") if isinstance(data, dict) else None
            try:
                snap = srv.store.load(ddir)
            except (LoadError, OSError, sqlite3.Error) as ex:
                self.send_obj(500, {"ok": False, "error": str(ex)}, compress=False)
                return 500
            self.send_obj(200, {"ok": True, "tables": snap.counts, "ms": round(snap.load_ms, 1)}, compress=False)
            return 200
        self.send_obj(404, {"ok": False, "error": "unknown control endpoint %s %s" % (cmd, path)}, compress=False)
        return 404

    # -- the query endpoint
    def query_endpoint(self, project, t0):
        srv = self.server
        raw = self.read_body()
        auth = self.headers.get("Authorization")
        scheme = auth.split(None, 1)[0] if auth and auth.split() else None
        entry = {"n": None, "path": self.path.split("?", 1)[0], "status": None, "error": None, "query": None, "values": None, "refresh": None,
                 "name": None, "auth_scheme": scheme, "accept_encoding": self.headers.get("Accept-Encoding"),
                 "force_blocking": False, "kind": None, "rows": None, "has_more": None, "fault": None,
                 "ms": None, "time": now_rfc3339()}
        body = None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            q = body.get("query")
            if isinstance(q, dict):
                entry["kind"] = q.get("kind")
                entry["query"] = q.get("query")
                entry["values"] = q.get("values")
            entry["refresh"] = body.get("refresh")
            entry["name"] = body.get("name")
            entry["force_blocking"] = body.get("refresh") == "force_blocking"
        with srv.req_lock:
            srv.counter += 1
            n = srv.counter
            entry["n"] = n
            srv.requests.append(entry)
        act = srv.faults.match(n)
        flags = act["flags"] if act else set()
        if act:
            entry["fault"] = act["rules"]
        truncate = "truncate" in flags
        state = {"status": None, "rows": "-"}

        def mark(st):
            # record the outcome before the response leaves, so a test that reads the request log
            # right after getting its answer sees it
            state["status"] = st
            entry["status"] = st
            entry["ms"] = round((time.monotonic() - t0) * 1000, 1)

        try:
            if act and act["delay"] > 0:
                time.sleep(act["delay"])
            if "drop" in flags:
                mark(None)
                self.abort_connection()
                return
            if act and act["status"] is not None:
                err = fault_error(act["status"])
                entry["error"] = err.body()
                mark(err.status)
                self.send_obj(err.status, err.body(), err.headers, truncate=truncate)
                return
            if act and act.get("bomb") is not None:
                # a decompression bomb: gzip whatever the client asked for
                mark(200)
                bomb = gzip_bomb(act["bomb"])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(bomb), 65536):
                    part = bomb[i:i + 65536]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
                return
            if act and act.get("content_length") is not None:
                # a body announced far larger than what is sent
                mark(200)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(act["content_length"]))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b'{"results": [')
                self.wfile.flush()
                time.sleep(act["hold"])
                self.abort_connection()
                return
            if act and act.get("body") is not None:
                # a canned 200 body, byte for byte (invalid UTF-8 and the like)
                mark(200)
                self.send_bytes(200, act["body"], truncate=truncate)
                return
            if "malformed" in flags:
                mark(200)
                bad = b'{"results": [["0189e5b0-0000-7000-8000-000000000000", "$pageview", "{\\"a\\": 1}"], ' \
                      b'[<html><body>502 Bad Gateway</body></html>'
                self.send_bytes(200, bad, truncate=truncate)
                return
            try:
                res = self.handle_query(project, auth, raw, body, "wrong_columns" in flags)
            except ApiError as err:
                entry["error"] = err.body()
                mark(err.status)
                self.send_obj(err.status, err.body(), err.headers, truncate=truncate)
                return
            state["rows"] = len(res["texts"])
            entry["rows"] = state["rows"]
            entry["has_more"] = res["has_more"]
            override = None
            if "wrong_columns" in flags and not res["texts"]:
                override = [json.dumps([None] * max(len(res["columns"]) - 1, 0)).encode()]
            body_bytes = response_body(res, entry["query"], override)
            mark(200)
            self.send_bytes(200, body_bytes, truncate=truncate)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as ex:  # a bug in the emulator: answer 500 and say so
            traceback.print_exc(file=sys.stderr)
            mark(500)
            try:
                self.send_obj(500, {"type": "server_error", "code": "error",
                                    "detail": "Emulator internal error: %s" % ex, "attr": None})
            except Exception:
                self.close_connection = True
        finally:
            ms = (time.monotonic() - t0) * 1000
            extra = " n=%d force_blocking=%s" % (n, "yes" if entry["force_blocking"] else "no")
            if act:
                extra += " fault=%s" % json.dumps(act["rules"], separators=(",", ":"))
            st = state["status"]
            self.log_line(st if st is not None else "dropped", state["rows"], ms, extra)

    def handle_query(self, project, auth, raw, body, drop_last_cell=False):
        cfg = self.server.cfg
        if not auth:
            raise ApiError(401, "authentication_error", "not_authenticated",
                           "Authentication credentials were not provided.")
        parts = auth.split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise ApiError(401, "authentication_error", "not_authenticated",
                           "Authentication credentials were not provided.")
        key = parts[1]
        if key in cfg.forbidden_keys:
            raise ApiError(403, "authentication_error", "permission_denied",
                           "API key missing required scope 'query:read'")
        if key != cfg.api_key:
            raise ApiError(401, "authentication_error", "authentication_failed",
                           "Personal API key found in request Authorization header is invalid.")
        if project != str(cfg.project_id):
            raise ApiError(404, "invalid_request", "not_found", "Not found.")
        if body is None:
            if raw:
                raise ApiError(400, "invalid_request", "parse_error", "JSON parse error - the body is not valid JSON")
            raise ApiError(400, "validation_error", "invalid_input", "The request body is empty.", "query")
        if not isinstance(body, dict):
            raise ApiError(400, "validation_error", "invalid_input", "The request body must be a JSON object.")
        q = body.get("query")
        if q is None:
            raise ApiError(400, "validation_error", "required", "This field is required.", "query")
        if not isinstance(q, dict):
            raise ApiError(400, "validation_error", "invalid_input", "query must be an object.", "query")
        kind = q.get("kind")
        if kind != "HogQLQuery":
            raise ApiError(400, "validation_error", "invalid_input",
                           "Unsupported query kind %r: the emulator supports HogQLQuery only." % (kind,), "query")
        text = q.get("query")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "validation_error", "invalid_input", "query.query must be a non-empty string.",
                           "query")
        values = q.get("values")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ApiError(400, "validation_error", "invalid_input", "query.values must be an object.", "query")
        refresh = body.get("refresh")
        if refresh is not None and refresh not in ("async", "async_except_on_cache_miss", "blocking",
                                                    "force_async", "force_blocking", "force_cache",
                                                    "lazy_async", True, False):
            raise ApiError(400, "validation_error", "invalid_input", "Invalid refresh value %r" % (refresh,),
                           "refresh")
        return run_query(cfg, self.server.store, text, values, drop_last_cell)


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, cfg, store, faults, ssl_ctx):
        self.cfg = cfg
        self.store = store
        self.faults = faults
        self.ssl_ctx = ssl_ctx
        self.requests = []
        self.counter = 0
        self.req_lock = threading.Lock()
        self.log_lock = threading.Lock()
        super().__init__(addr, Handler)

    def log(self, msg):
        line = "%s posthog-emulator: %s\n" % (time.strftime("%H:%M:%S"), msg)
        with self.log_lock:
            sys.stderr.write(line)
            sys.stderr.flush()

    def finish_request(self, request, client_address):
        if self.ssl_ctx is None:
            self.RequestHandlerClass(request, client_address, self)
            return
        try:
            request.settimeout(30)
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (ssl.SSLError, OSError) as ex:
            self.log("TLS handshake with %s failed: %s" % (client_address[0], ex))
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        ex = sys.exc_info()[1]
        if isinstance(ex, (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description="PostHog Query API emulator (test tool)")
    ap.add_argument("--data", required=True, help="directory holding events.ndjson, persons.ndjson, "
                                                  "person_distinct_ids.ndjson, sessions.ndjson")
    ap.add_argument("--port", type=int, required=True, help="TCP port (0 = pick a free one)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--forbidden-key", action="append", default=[],
                    help="a key that authenticates but lacks the query:read scope (403); repeatable")
    ap.add_argument("--project-id", type=int, default=1)
    ap.add_argument("--project-timezone", default="UTC")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-client-ca", help="require a client certificate signed by this CA (mutual TLS)")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--bool-as-int", action="store_true", help="render booleans as 1/0 instead of true/false")
    ap.add_argument("--uuid-order", choices=("clickhouse", "text"), default="clickhouse",
                    help="UUID comparison/sort order: ClickHouse's (second half first) or plain text order")
    ap.add_argument("--fault", action="append", default=[], help="a fault rule as JSON; repeatable")
    ap.add_argument("--max-limit", type=int, default=50000)
    ap.add_argument("--default-limit", type=int, default=100)
    ap.add_argument("--gzip-level", type=int, default=1)
    ap.add_argument("--cache-dir", help="keep a copy of the loaded database here (keyed by the data files' "
                                        "paths, sizes and mtimes) and start from it next time")
    ap.add_argument("--render-cache", action="store_true",
                    help="keep the JSON text of every row served, and serve it again without rendering "
                         "(for benchmarks: a second pass over the same rows costs only the keyset scan)")
    args = ap.parse_args(argv)

    cfg = Config()
    cfg.api_key = args.api_key
    cfg.forbidden_keys = set(args.forbidden_key)
    cfg.project_id = args.project_id
    cfg.project_tz = args.project_timezone
    cfg.bool_as_int = args.bool_as_int
    cfg.max_limit = args.max_limit
    cfg.default_limit = args.default_limit
    cfg.gzip_level = args.gzip_level
    cfg.render_cache = args.render_cache
    try:
        get_tz(cfg.project_tz)
    except HogQLError as ex:
        ap.error(ex.detail)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")

    def log(msg):
        sys.stderr.write("%s posthog-emulator: %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()

    faults = Faults()
    try:
        faults.add([json.loads(f) for f in args.fault])
    except ValueError as ex:
        ap.error("--fault: %s" % ex)

    store = Store(args.data, cfg.project_tz, UuidMode(args.uuid_order == "clickhouse"), log, args.cache_dir)
    try:
        store.load()
    except (LoadError, OSError, sqlite3.Error) as ex:
        log("cannot load data: %s" % ex)
        return 2

    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.tls_client_ca)

    srv = EmulatorServer((args.host, args.port), cfg, store, faults, ctx)
    port = srv.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    srv.log("listening on %s://%s:%d project %d tz %s" % ("https" if ctx else "http", args.host, port,
                                                         cfg.project_id, cfg.project_tz))

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    import faulthandler
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: dump thread stacks
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
