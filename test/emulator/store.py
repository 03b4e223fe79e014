"""The data: NDJSON data files loaded into an in-memory SQLite database (optionally cached), one snapshot
per load.

Only rows of the project's team are loaded (a row whose team_id is another team's is counted and left out):
like PostHog, which scopes every query to the project's team, no query can see another team's rows,
whatever its WHERE says.  A row without a team_id is taken as the project's.

JSON columns are stored as the JSON string literal of their text, so result rows are rendered to JSON inside
SQLite."""

import hashlib
import json
import os
import sqlite3
import threading
import time

from hogtypes import K_ARRAY, K_BOOL, K_DATETIME, K_FLOAT, K_INT, K_INT8, K_JSON, K_STRING, K_UINT8, K_UUID, \
    Column, T
from sqlfuncs import register_functions
from values import SURROGATE_RE, UUID_RE, canonical_uuid, dumps_inner, parse_rfc3339_us


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
            _col("is_identified", K_INT8), _col("is_deleted", K_INT8), _col("version", K_INT),
            _col("properties", K_JSON),
        ],
        "indexes": [("id", "version"), ("created_at",)],
    },
    "raw_person_distinct_ids": {
        "file": "person_distinct_ids.ndjson",
        "cols": [
            _col("team_id", K_INT), _col("distinct_id", K_STRING), _col("person_id", K_UUID),
            _col("is_deleted", K_INT8), _col("version", K_INT),
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
            _col("$session_duration", K_INT), _col("$is_bounce", K_BOOL, True),
            _col("$last_external_click_url", K_STRING, True), _col("$vitals_lcp", K_FLOAT, True),
            _col("$urls", K_ARRAY),
            # v2 fields (posthog/hogql/database/schema/sessions_v2.py); session_id_v7 is a UInt128 in
            # PostHog, held here as its decimal text (the extension selects toString(session_id_v7))
            _col("session_id_v7", K_STRING), _col("max_inserted_at", K_DATETIME),
            _col("$entry_referrer", K_STRING, True), _col("$entry_gclsrc", K_STRING, True),
            _col("$entry_dclid", K_STRING, True), _col("$entry_gbraid", K_STRING, True),
            _col("$entry_wbraid", K_STRING, True), _col("$entry_msclkid", K_STRING, True),
            _col("$entry_twclid", K_STRING, True), _col("$entry_li_fat_id", K_STRING, True),
            _col("$entry_mc_cid", K_STRING, True), _col("$entry_igshid", K_STRING, True),
            _col("$entry_ttclid", K_STRING, True), _col("$entry__kx", K_STRING, True),
            _col("$entry_irclid", K_STRING, True), _col("duration", K_INT),
            _col("$page_screen_autocapture_count_up_to", K_INT),
            _col("$exit_current_url", K_STRING, True), _col("$exit_pathname", K_STRING, True),
        ],
        "indexes": [("$end_timestamp", "session_id"), ("session_id",), ("$start_timestamp",)],
    },
    # posthog/hogql/database/schema/groups.py (RawGroupsTable, GROUPS_TABLE_FIELDS): index is the ClickHouse
    # column group_type_index (UInt8), key is group_key, properties group_properties, updated_at _timestamp
    # (a DateTime, no fraction): every version of every group
    "raw_groups": {
        "file": "groups.ndjson",
        "cols": [
            _col("index", K_UINT8), _col("key", K_STRING), _col("team_id", K_INT),
            _col("created_at", K_DATETIME), _col("updated_at", K_DATETIME, prec=None),
            _col("properties", K_JSON),
        ],
        "indexes": [("index", "key", "updated_at")],
    },
    # The collapsed views (made from the raw tables at load time; not affected by _visible_at):
    # persons (schema/persons.py PERSONS_FIELDS: id, created_at, team_id, properties, is_identified): the
    # latest version (argMax by version) of each person that is not deleted
    "persons": {
        "derive": 'SELECT id, team_id, created_at, is_identified, properties FROM (SELECT *, row_number() OVER '
                  '(PARTITION BY id ORDER BY version DESC) AS _rn FROM "raw_persons") WHERE _rn = 1 AND is_deleted = 0',
        "cols": [
            _col("id", K_UUID), _col("team_id", K_INT), _col("created_at", K_DATETIME, prec=3),
            _col("is_identified", K_INT8), _col("properties", K_JSON),
        ],
        "indexes": [("id",), ("created_at",)],
    },
    # person_distinct_ids (schema/person_distinct_ids.py: distinct_id, person_id, team_id): the latest mapping
    # of each distinct id that is not deleted
    "person_distinct_ids": {
        "derive": 'SELECT distinct_id, person_id, team_id FROM (SELECT *, row_number() OVER (PARTITION BY '
                  'distinct_id ORDER BY version DESC) AS _rn FROM "raw_person_distinct_ids") WHERE _rn = 1 '
                  'AND is_deleted = 0',
        "cols": [_col("distinct_id", K_STRING), _col("person_id", K_UUID), _col("team_id", K_INT)],
        "indexes": [("distinct_id",), ("person_id",)],
    },
    # groups (GroupsTable: argMax by updated_at per (index, key))
    "groups": {
        "derive": 'SELECT "index", "key", team_id, created_at, updated_at, properties FROM (SELECT *, row_number() '
                  'OVER (PARTITION BY "index", "key" ORDER BY updated_at DESC) AS _rn FROM "raw_groups") WHERE _rn = 1',
        "cols": [
            _col("index", K_UINT8), _col("key", K_STRING), _col("team_id", K_INT),
            _col("created_at", K_DATETIME), _col("updated_at", K_DATETIME, prec=None),
            _col("properties", K_JSON),
        ],
        "indexes": [("index", "key")],
    },
}

SQL_TYPES = {K_STRING: "TEXT", K_JSON: "TEXT", K_INT: "INTEGER", K_FLOAT: "REAL", K_BOOL: "INTEGER", K_INT8: "INTEGER",
             K_UINT8: "INTEGER",
             K_DATETIME: "INTEGER", K_UUID: "TEXT", K_ARRAY: "TEXT"}


CACHE_FORMAT = 5  # bump when the stored layout changes


class LoadError(Exception):
    pass


def _clean_str(s):
    if SURROGATE_RE.search(s):
        return SURROGATE_RE.sub("\ufffd", s)
    return s


_ENC_INNER = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": "), check_circular=False)


def make_converter(kind, uuid_mode, fast):
    """Value from a data file -> the SQLite value.

    fast=True: the line held no \\u escape, so no string in it can hold a lone surrogate."""
    if kind == K_UUID:
        to_key = uuid_mode.to_key
        match = UUID_RE.match

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
    elif kind in (K_BOOL, K_INT8):
        # a data file may write a flag as true/false or 0/1, whatever the column's type
        def f(v):
            if isinstance(v, str):
                lv = v.lower()
                if lv in ("true", "1"):
                    return 1
                if lv in ("false", "0"):
                    return 0
                raise ValueError("expected a boolean")
            return 1 if v else 0
    elif kind in (K_INT, K_UINT8):
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
                    if SURROGATE_RE.search(v):
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

    def __init__(self, gen, conn, schema, counts, load_ms, other_team=None, delayed=None):
        self.gen = gen
        self.conn = conn
        self.lock = threading.Lock()
        self.schema = schema
        self.counts = counts
        self.other_team = other_team or {}  # table -> rows of other teams left out
        self.load_ms = load_ms
        self.closed = False
        self.rendered = {}  # --render-cache: (row SQL, its parameters) -> {rowid: JSON text}
        self.delayed = delayed or {}  # table -> rows with a _visible_at

    def sync_visibility(self, now_us):
        """Called under self.lock: rows whose _visible_at is after now_us wait in "__pending_<table>", the
        others are in the table itself (the clock may go back as well as forward)."""
        if not self.delayed:
            return
        before = self.conn.total_changes
        self.conn.execute("PRAGMA query_only=OFF")
        try:
            for tname in self.delayed:
                for src, dst, cond in (("__pending_" + tname, tname, '"__visible_at" <= ?'),
                                       (tname, "__pending_" + tname, '"__visible_at" > ?')):
                    self.conn.execute('INSERT INTO "%s" SELECT * FROM "%s" WHERE %s' % (dst, src, cond), (now_us,))
                    self.conn.execute('DELETE FROM "%s" WHERE %s' % (src, cond), (now_us,))
            self.conn.commit()
        finally:
            self.conn.execute("PRAGMA query_only=ON")
        if self.conn.total_changes != before:
            self.rendered = {}  # rows moved: their rowids changed

    def close(self):
        with self.lock:
            self.closed = True
            self.conn.close()


class Store:
    def __init__(self, data_dir, project_tz, uuid_mode, log, cache_dir=None, team_id=1):
        self.team_id = team_id
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
                schema, counts, other, delayed = self._describe(conn)
                conn.execute("PRAGMA query_only=ON")
                register_functions(conn, self.uuid_mode)
            except Exception:
                conn.close()
                raise
            ms = (time.monotonic() - t0) * 1000
            old = self.current
            self.current = Snapshot(gen, conn, schema, counts, ms, other, delayed)
            if old is not None:
                old.close()  # waits for a query still running on it
            self.log("loaded data %s in %.0f ms: %s (team %d; rows of other teams left out: %s)" % (
                how, ms, ", ".join("%s=%d" % kv for kv in counts.items()), self.team_id,
                ", ".join("%s=%d" % kv for kv in other.items())))
            return self.current

    def _fill(self, conn):
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute('CREATE TABLE "__emulator_meta" (tname TEXT, col TEXT, has_null INTEGER, n INTEGER)')
        conn.execute('CREATE TABLE "__emulator_other_team" (tname TEXT, n INTEGER)')
        conn.execute('CREATE TABLE "__emulator_delayed" (tname TEXT, n INTEGER)')
        for tname, spec in TABLES.items():
            cols = spec["cols"]
            names = [c[0] for c in cols]
            # "__visible_at" (a data row's "_visible_at", not a column for queries): see sync_visibility
            conn.execute('CREATE TABLE "%s" (%s, "__visible_at" INTEGER)' % (
                tname, ", ".join('"%s" %s' % (c[0], SQL_TYPES[c[1]]) for c in cols)))
            if "derive" in spec:
                conn.execute('INSERT INTO "%s" SELECT *, NULL FROM (%s)' % (tname, spec["derive"]))
                n = conn.execute('SELECT count(*) FROM "%s"' % tname).fetchone()[0]
                self._index_and_describe(conn, tname, spec, names, n)
                continue
            path = os.path.join(self.data_dir, spec["file"])
            derived = spec.get("derived", {})
            plan = [(c[0], c[1], derived.get(c[0]), self.uuid_mode) for c in cols]
            plan.append(("_visible_at", K_DATETIME, None, self.uuid_mode))
            ins = 'INSERT INTO "%s" VALUES (%s, ?)' % (tname, ", ".join(
                "nullif(json_quote(?), 'null')" if c[1] == K_JSON else "?" for c in cols))
            n = skipped = 0
            team_idx = names.index("team_id") if "team_id" in names else None
            if os.path.exists(path):
                n, skipped = self._load_file(conn, path, ins, plan, team_idx, self.team_id)
            conn.execute('INSERT INTO "__emulator_other_team" VALUES (?, ?)', (tname, skipped))
            delayed = conn.execute('SELECT count(*) FROM "%s" WHERE "__visible_at" IS NOT NULL' % tname).fetchone()[0]
            if delayed:
                conn.execute('INSERT INTO "__emulator_delayed" VALUES (?, ?)', (tname, delayed))
                conn.execute('CREATE TABLE "__pending_%s" AS SELECT * FROM "%s" WHERE 0' % (tname, tname))
                conn.execute('CREATE INDEX "%s_visible_at" ON "%s" ("__visible_at") WHERE "__visible_at" IS NOT NULL'
                             % (tname, tname))
                conn.execute('CREATE INDEX "__pending_%s_visible_at" ON "__pending_%s" ("__visible_at")'
                             % (tname, tname))
            self._index_and_describe(conn, tname, spec, names, n)
        conn.execute("ANALYZE")
        conn.commit()

    @staticmethod
    def _index_and_describe(conn, tname, spec, names, n):
        for idx in spec.get("indexes", []):
            conn.execute('CREATE INDEX "%s_%s" ON "%s" (%s)' % (
                tname, "_".join(x.strip("$") for x in idx), tname, ", ".join('"%s"' % x for x in idx)))
        for name in names:
            has_null = conn.execute(
                'SELECT EXISTS (SELECT 1 FROM "%s" WHERE "%s" IS NULL)' % (tname, name)).fetchone()[0]
            conn.execute('INSERT INTO "__emulator_meta" VALUES (?, ?, ?, ?)', (tname, name, has_null, n))

    def _describe(self, conn):
        """Schema (with the per-column 'holds NULLs' flags) and row counts of a loaded database."""
        meta = {(t, c): (hn, n) for t, c, hn, n in conn.execute('SELECT * FROM "__emulator_meta"')}
        other = dict(conn.execute('SELECT tname, n FROM "__emulator_other_team"').fetchall())
        delayed = dict(conn.execute('SELECT tname, n FROM "__emulator_delayed"').fetchall())
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
        return schema, counts, other, delayed

    def cache_path(self):
        if not self.cache_dir:
            return None
        files = []
        for spec in TABLES.values():
            if "file" not in spec:
                continue
            path = os.path.join(self.data_dir, spec["file"])
            try:
                st = os.stat(path)
                files.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
            except FileNotFoundError:
                files.append([os.path.abspath(path), None, None])
        key = json.dumps([CACHE_FORMAT, self.uuid_mode.ch, self.team_id, files])
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:24]
        return os.path.join(self.cache_dir, "posthog-emulator-%s.sqlite" % digest)

    @staticmethod
    def _load_file(conn, path, ins, plan, team_idx, team_id):
        """Insert the rows of one data file; returns (rows loaded, rows of other teams left out)."""
        fast_row = build_row_function(plan, fast=True)
        slow_row = build_row_function(plan, fast=False)
        state = {"line": 0, "skipped": 0}
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
                        row = slow_row(obj) if "\\u" in line else fast_row(obj)
                        if team_idx is not None and row[team_idx] is not None and row[team_idx] != team_id:
                            state["skipped"] += 1
                            continue
                        yield row
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
        return n, state["skipped"]

    def snapshot(self):
        return self.current
