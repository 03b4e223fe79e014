#!/usr/bin/python3
"""Self-test of the PostHog Query API emulator (stdlib unittest).

    python3 test/emulator_selftest.py [-v] [TestClass.test_name ...]

Generates data with generate_data.py (plus a bulk of small events so that more than 50,000 rows
exist), starts test/emulator/server.py as a subprocess on a free port and talks HTTP to it.
A second small instance checks TLS, --bool-as-int and a UTC project.  Exits non-zero on failure.
"""

import gzip
import http.client
import json
import os
import random
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from datetime import datetime, timedelta, timezone

HERE = os.path.dirname(os.path.abspath(__file__))
EMULATOR = os.path.join(HERE, "emulator", "server.py")
GENERATOR = os.path.join(HERE, "generate_data.py")
KEY = "phx_selftest_key"
FORBIDDEN = "phx_readonly_without_query_scope"
PROJECT = 7
TZ = "America/New_York"
N_GENERATED = 3000
N_BULK = 48000

EVENTS_QUERY = """SELECT uuid, event, properties, elements_chain, distinct_id, team_id, toTimeZone(timestamp, 'UTC') AS timestamp
FROM events
WHERE created_at >= toDateTime64({start}, 6, 'UTC') AND created_at < toDateTime64({end}, 6, 'UTC')
  AND timestamp >= toDateTime64({min_timestamp}, 6, 'UTC')
  %s
ORDER BY timestamp, uuid
LIMIT %d"""


def parse_instant(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def us_of(s):
    d = parse_instant(s)
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return (d - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def ch_uuid_key(u):
    """ClickHouse orders UUIDs by their second half, then their first half."""
    h = u.replace("-", "")
    return (h[16:], h[:16])


def canonical_inner(obj):
    s = json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))
    return "".join("\\u%04x" % ord(c) if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


class Emulator:
    def __init__(self, data_dir, extra_args=(), tls=None):
        self.data_dir = data_dir
        self.tmp = tempfile.mkdtemp(prefix="emu-run-")
        self.port_file = os.path.join(self.tmp, "port")
        self.log_path = os.path.join(self.tmp, "stderr.log")
        self.log = open(self.log_path, "w")
        args = [sys.executable, EMULATOR, "--data", data_dir, "--port", "0", "--port-file", self.port_file,
                "--api-key", KEY] + list(extra_args)
        self.tls = tls
        if tls:
            args += ["--tls-cert", tls[0], "--tls-key", tls[1]]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=self.log)
        deadline = time.monotonic() + 120
        while not os.path.exists(self.port_file):
            if self.proc.poll() is not None:
                raise RuntimeError("emulator exited early:\n" + self.stderr())
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("emulator did not start:\n" + self.stderr())
            time.sleep(0.05)
        with open(self.port_file) as fh:
            self.port = int(fh.read())

    def stderr(self):
        self.log.flush()
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def conn(self, timeout=60):
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.tls[0])
            ctx.check_hostname = False
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=ctx)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None, conn=None):
        c = conn or self.conn()
        h = dict(headers or {})
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, data, h)
        r = c.getresponse()
        raw = r.read()
        if conn is None:
            c.close()
        return r, raw

    def query(self, hogql, values=None, key=KEY, project=PROJECT, refresh="force_blocking", headers=None,
              conn=None, name="selftest", auth_scheme="Bearer"):
        h = dict(headers or {})
        if key is not None:
            h["Authorization"] = "%s %s" % (auth_scheme, key)
        body = {"query": {"kind": "HogQLQuery", "query": hogql}, "refresh": refresh, "name": name}
        if values is not None:
            body["query"]["values"] = values
        r, raw = self.request("POST", "/api/projects/%s/query/" % project, body, h, conn)
        if r.getheader("Content-Encoding") == "gzip":
            raw = gzip.decompress(raw)
        return r.status, json.loads(raw.decode("utf-8")), r

    def control(self, method, name, body=None):
        r, raw = self.request(method, "/_emulator/" + name, body)
        return r.status, json.loads(raw)


def write_bulk_events(path, n, seed, team=1):
    """Small events in groups sharing one timestamp (exercises the uuid tie-breaker)."""
    rng = random.Random(seed)
    base = datetime(2026, 11, 10, tzinfo=timezone.utc)
    with open(path, "a", encoding="utf-8") as fh:
        i = 0
        while i < n:
            ts = base + timedelta(microseconds=rng.randrange(0, 20 * 86400 * 10 ** 6))
            for _ in range(min(1 + rng.randrange(6), n - i)):
                u = "%032x" % rng.getrandbits(128)
                u = "%s-%s-4%s-a%s-%s" % (u[:8], u[8:12], u[13:16], u[17:20], u[20:32])
                created = ts + timedelta(seconds=rng.randrange(1, 60))
                fh.write(json.dumps({
                    "uuid": u, "event": "bulk_event", "properties": {"i": i, "$session_id": "s%d" % (i % 97)},
                    "timestamp": ts.isoformat().replace("+00:00", "Z"),
                    "created_at": created.isoformat().replace("+00:00", "Z"), "team_id": team,
                    "distinct_id": "bulk-%d" % (i % 500), "elements_chain": ""}) + "\n")
                i += 1


def read_ndjson(path):
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
    return out


def make_cert(directory):
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    openssl = shutil.which("openssl")
    if not openssl:
        return None
    r = subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                        "-days", "2", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        return None
    return cert, key


class Base(unittest.TestCase):
    emu = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="emu-selftest-")
        cls.data = os.path.join(cls.tmp, "data")
        subprocess.run([sys.executable, GENERATOR, "--out", cls.data, "--events", str(N_GENERATED), "--seed", "11",
                        "--start", "2026-11-01T00:00:00Z", "--end", "2026-12-01T00:00:00Z"], check=True,
                       stderr=subprocess.DEVNULL)
        write_bulk_events(os.path.join(cls.data, "events.ndjson"), N_BULK, 5)
        cls.events = read_ndjson(os.path.join(cls.data, "events.ndjson"))
        cls.persons = read_ndjson(os.path.join(cls.data, "persons.ndjson"))
        cls.pdis = read_ndjson(os.path.join(cls.data, "person_distinct_ids.ndjson"))
        cls.sessions = read_ndjson(os.path.join(cls.data, "sessions.ndjson"))
        cls.emu = Emulator(cls.data, ["--project-id", str(PROJECT), "--project-timezone", TZ,
                                      "--forbidden-key", FORBIDDEN])

    @classmethod
    def tearDownClass(cls):
        if cls.emu:
            cls.emu.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        st, _ = self.emu.control("POST", "reset")
        self.assertEqual(st, 200)

    def ok(self, hogql, values=None, **kw):
        st, body, r = self.emu.query(hogql, values, **kw)
        self.assertEqual(st, 200, body)
        return body

    def err(self, status, hogql, values=None, **kw):
        if values is None and "{" in hogql:
            values = {"nested": [["a"]], "t": {"x": 1}}
        st, body, r = self.emu.query(hogql, values, **kw)
        self.assertEqual(st, status, body)
        self.assertEqual(set(body), {"type", "code", "detail", "attr"}, body)
        return body


class TestAuthAndErrors(Base):
    def test_health(self):
        st, body = self.emu.control("GET", "health")
        self.assertEqual(st, 200)
        self.assertTrue(body["ok"])

    def test_missing_auth(self):
        b = self.err(401, "SELECT 1", key=None)
        self.assertEqual((b["type"], b["code"], b["detail"], b["attr"]),
                         ("authentication_error", "not_authenticated",
                          "Authentication credentials were not provided.", None))

    def test_malformed_auth(self):
        b = self.err(401, "SELECT 1", auth_scheme="Basic")
        self.assertEqual(b["code"], "not_authenticated")
        b = self.err(401, "SELECT 1", key="")
        self.assertEqual(b["code"], "not_authenticated")

    def test_wrong_key(self):
        b = self.err(401, "SELECT 1", key="phx_wrong")
        self.assertEqual((b["type"], b["code"]), ("authentication_error", "authentication_failed"))

    def test_forbidden_key(self):
        b = self.err(403, "SELECT 1", key=FORBIDDEN)
        self.assertEqual((b["type"], b["code"]), ("authentication_error", "permission_denied"))

    def test_wrong_project(self):
        b = self.err(404, "SELECT 1", project=PROJECT + 1)
        self.assertEqual((b["type"], b["code"]), ("invalid_request", "not_found"))

    def test_no_trailing_slash(self):
        r, raw = self.emu.request("POST", "/api/projects/%d/query" % PROJECT,
                                  {"query": {"kind": "HogQLQuery", "query": "SELECT 1"}},
                                  {"Authorization": "Bearer " + KEY})
        self.assertEqual(r.status, 200, raw)

    def test_missing_query_and_wrong_kind(self):
        r, raw = self.emu.request("POST", "/api/projects/%d/query/" % PROJECT, {"refresh": "force_blocking"},
                                  {"Authorization": "Bearer " + KEY})
        self.assertEqual(r.status, 400)
        self.assertEqual(json.loads(raw)["type"], "validation_error")
        r, raw = self.emu.request("POST", "/api/projects/%d/query/" % PROJECT,
                                  {"query": {"kind": "EventsQuery", "select": ["*"]}},
                                  {"Authorization": "Bearer " + KEY})
        self.assertEqual(r.status, 400)
        self.assertEqual(json.loads(raw)["type"], "validation_error")
        r, raw = self.emu.request("POST", "/api/projects/%d/query/" % PROJECT, b"{not json",
                                  {"Authorization": "Bearer " + KEY})
        self.assertEqual(r.status, 400)

    def test_offset_rejected(self):
        for q in ("SELECT uuid FROM events ORDER BY timestamp LIMIT 10 OFFSET 10",
                  "SELECT uuid FROM events LIMIT 10, 10",
                  "SELECT uuid FROM (SELECT uuid FROM events LIMIT 5 OFFSET 1)",
                  "SELECT uuid FROM events OFFSET 3"):
            b = self.err(400, q)
            self.assertEqual((b["type"], b["code"]), ("validation_error", "hogql_error"))
            self.assertIn("OFFSET", b["detail"])
            self.assertIn("API key", b["detail"])

    def test_unsupported_rejected(self):
        cases = [
            "SELECT fooBar(uuid) FROM events",
            "SELECT uuid FROM no_such_table",
            "SELECT no_such_column FROM events",
            "SELECT uuid FROM events WHERE event LIKE '%a'",
            "SELECT team_id + 1 FROM events",
            "SELECT DISTINCT event FROM events",
            "SELECT * FROM events",
            "SELECT uuid FROM events UNION ALL SELECT uuid FROM events",
            "SELECT uuid FROM events SETTINGS max_threads = 1",
            "SELECT uuid FROM events WHERE",
            "SELECT uuid FROM events WHERE {missing} = 1",
            "SELECT event, count() FROM events",
            "SELECT uuid FROM events WHERE max(timestamp) > now()",
            "SELECT uuid FROM events FINAL",
            "SELECT uuid, FROM events",
            "SELECT 'unterminated FROM events",
            "SELECT uuid FROM events e1 JOIN events e2 ON e1.uuid = e2.uuid",
            "SELECT uuid FROM events WHERE uuid = 'not-a-uuid'",
            "SELECT toDateTime64('yesterday', 6, 'UTC')",
            "SELECT toTimeZone(timestamp, 'Mars/Olympus') FROM events",
            "SELECT uuid FROM events ORDER BY 1",
            "SELECT uuid FROM events WHERE event IN {nested}",
            "SELECT count() FROM events WHERE team_id = {t}",
        ]
        for q in cases:
            with self.subTest(q=q):
                b = self.err(400, q)
                self.assertEqual((b["type"], b["code"]), ("validation_error", "hogql_error"))
                self.assertTrue(b["detail"])


class TestQueries(Base):
    def test_limit_default_and_cap(self):
        total = len(self.events)
        self.assertGreater(total, 50000)
        b = self.ok("SELECT uuid FROM events")
        self.assertEqual(len(b["results"]), 100)
        self.assertEqual(b["limit"], 100)
        self.assertTrue(b["hasMore"])
        b = self.ok("SELECT uuid, event FROM events ORDER BY timestamp, uuid LIMIT 60000")
        self.assertEqual(len(b["results"]), 50000)
        self.assertEqual(b["limit"], 50000)
        self.assertTrue(b["hasMore"])
        b = self.ok("SELECT uuid FROM events WHERE event = 'signed_up' LIMIT 50000")
        n = sum(1 for e in self.events if e["event"] == "signed_up")
        self.assertEqual(len(b["results"]), n)
        self.assertFalse(b["hasMore"])
        b = self.ok("SELECT uuid FROM events WHERE event = 'signed_up' LIMIT {n}", {"n": n})
        self.assertEqual(len(b["results"]), n)
        self.assertFalse(b["hasMore"])
        b = self.ok("SELECT uuid FROM events WHERE event = 'signed_up' LIMIT {n}", {"n": n - 1})
        self.assertTrue(b["hasMore"])
        b = self.ok("SELECT uuid FROM events LIMIT 0")
        self.assertEqual(b["results"], [])
        self.assertTrue(b["hasMore"])

    def test_response_shape(self):
        b = self.ok("SELECT uuid, event, toTimeZone(timestamp, 'UTC') AS timestamp FROM events "
                    "ORDER BY timestamp, uuid LIMIT 2")
        for k in ("results", "columns", "types", "hasMore", "limit", "offset", "hogql", "clickhouse", "timings",
                  "is_cached", "last_refresh", "query_status"):
            self.assertIn(k, b)
        self.assertEqual(b["columns"], ["uuid", "event", "timestamp"])
        self.assertEqual(b["types"], [["uuid", "UUID"], ["event", "String"],
                                      ["timestamp", "DateTime64(6, 'UTC')"]])
        self.assertEqual(b["offset"], 0)
        self.assertIs(b["is_cached"], False)

    def keyset_pull(self, page, extra="", values=None, conn=None):
        base = {"start": "2026-01-01 00:00:00.000000", "end": "2027-06-01 00:00:00.000000",
                "min_timestamp": "2025-01-01 00:00:00.000000"}
        base.update(values or {})
        rows = []
        cursor = None
        pages = 0
        while True:
            vals = dict(base)
            clause = extra
            if cursor:
                clause += "\n  AND (timestamp, uuid) > (toDateTime64({cursor_timestamp}, 6, 'UTC'), {cursor_uuid})"
                vals["cursor_timestamp"], vals["cursor_uuid"] = cursor
            st, b, _ = self.emu.query(EVENTS_QUERY % (clause, page), vals, conn=conn)
            self.assertEqual(st, 200, b)
            pages += 1
            rows.extend(b["results"])
            if not b["hasMore"]:
                break
            self.assertEqual(len(b["results"]), page)
            last = b["results"][-1]
            ts = parse_instant(last[6]).astimezone(timezone.utc)
            cursor = (ts.strftime("%Y-%m-%d %H:%M:%S.%f"), last[0])
            self.assertLess(pages, 1000)
        return rows, pages

    def test_keyset_paging_whole_data(self):
        conn = self.emu.conn()
        rows, pages = self.keyset_pull(10000, conn=conn)
        conn.close()
        uuids = [r[0] for r in rows]
        self.assertEqual(len(uuids), len(set(uuids)), "a row came twice")
        self.assertEqual(set(uuids), {e["uuid"] for e in self.events}, "rows missing")
        self.assertGreaterEqual(pages, 6)
        # order: timestamp, then ClickHouse UUID order
        keys = [(us_of(r[6]), ch_uuid_key(r[0])) for r in rows]
        self.assertEqual(keys, sorted(keys))
        by_uuid = {e["uuid"]: e for e in self.events}
        for r in rows[:2000]:
            self.assertEqual(us_of(r[6]), us_of(by_uuid[r[0]]["timestamp"]))
        dups = len(keys) - len({k[0] for k in keys})
        self.assertGreater(dups, 1000, "the data should hold many equal timestamps")
        # the request log saw force_blocking and the Bearer scheme
        st, log = self.emu.control("GET", "requests")
        self.assertEqual(len(log), pages)
        self.assertEqual([e["n"] for e in log], list(range(1, pages + 1)))
        self.assertTrue(all(e["force_blocking"] and e["refresh"] == "force_blocking" for e in log))
        self.assertTrue(all(e["auth_scheme"] == "Bearer" and e["status"] == 200 for e in log))
        self.assertEqual(log[1]["values"]["cursor_uuid"], rows[9999][0])

    def test_created_at_window_and_lists(self):
        inc = ["$pageview", "$autocapture", "注文完了 ✅", "bulk_event"]
        exc = ["$autocapture"]
        start, end = "2026-11-12 00:00:00.000000", "2026-11-19 12:00:00.000000"
        mts = "2026-11-11 00:00:00.000000"
        rows, _ = self.keyset_pull(
            3000, "AND event IN {include_events} AND event NOT IN {exclude_events}",
            {"start": start, "end": end, "min_timestamp": mts, "include_events": inc, "exclude_events": exc})
        s_us, e_us, m_us = us_of(start.replace(" ", "T") + "Z"), us_of(end.replace(" ", "T") + "Z"), \
            us_of(mts.replace(" ", "T") + "Z")
        want = {e["uuid"] for e in self.events
                if s_us <= us_of(e["created_at"]) < e_us and us_of(e["timestamp"]) >= m_us
                and e["event"] in inc and e["event"] not in exc}
        self.assertEqual(len(rows), len(want))
        self.assertEqual({r[0] for r in rows}, want)
        self.assertIn("注文完了 ✅", {r[1] for r in rows})
        b = self.ok("SELECT count() FROM events WHERE event IN {l}", {"l": []})
        self.assertEqual(b["results"], [[0]])
        b = self.ok("SELECT count() FROM events WHERE event NOT IN {l}", {"l": []})
        self.assertEqual(b["results"], [[len(self.events)]])
        b = self.ok("SELECT count() FROM events WHERE event IN ('signed_up', {x})", {"x": "$identify"})
        self.assertEqual(b["results"][0][0], sum(1 for e in self.events if e["event"] in ("signed_up", "$identify")))

    def test_timezone_rendering(self):
        b = self.ok("SELECT uuid, timestamp, toTimeZone(timestamp, 'UTC') AS ts_utc, created_at FROM events "
                    "WHERE event != 'bulk_event' ORDER BY timestamp, uuid LIMIT 500")
        self.assertEqual(b["types"][1], ["timestamp", "DateTime64(6, '%s')" % TZ])
        self.assertEqual(b["types"][2], ["ts_utc", "DateTime64(6, 'UTC')"])
        by_uuid = {e["uuid"]: e for e in self.events}
        offsets = set()
        for u, ts, ts_utc, created in b["results"]:
            self.assertTrue(ts.endswith("-04:00") or ts.endswith("-05:00"), ts)
            offsets.add(ts[-6:])
            self.assertTrue(ts_utc.endswith("Z"), ts_utc)
            self.assertEqual(parse_instant(ts), parse_instant(ts_utc))
            self.assertEqual(us_of(ts), us_of(by_uuid[u]["timestamp"]))
            self.assertEqual(us_of(created), us_of(by_uuid[u]["created_at"]))
            frac = ts_utc[19:-1]
            if us_of(ts_utc) % 1000000:
                self.assertRegex(frac, r"^\.\d{6}$")
            else:
                self.assertEqual(frac, "")
        self.assertEqual(offsets, {"-04:00", "-05:00"}, "data spans the DST change on 2026-11-01")
        # a string without an offset is read in the given zone, or the project zone
        b = self.ok("SELECT toDateTime64('2026-11-20 00:00:00', 6), toDateTime64('2026-11-20 00:00:00', 6, 'UTC'), "
                    "toDateTime('2026-07-01 12:30:00.999'), toDateTime64('2026-11-20T00:00:00.5+01:00', 6, 'UTC'), "
                    "toTimeZone(toDateTime64({t}, 3, 'UTC'), 'Asia/Kolkata')", {"t": "2026-11-20 00:00:00.123456"})
        self.assertEqual(b["results"], [["2026-11-20T00:00:00-05:00", "2026-11-20T00:00:00Z",
                                         "2026-07-01T12:30:00-04:00", "2026-11-19T23:00:00.500000Z",
                                         "2026-11-20T05:30:00.123000+05:30"]])
        self.assertEqual(b["types"][2][1], "DateTime('%s')" % TZ)
        # comparisons are exact to the microsecond
        e = next(x for x in self.events if x["event"] != "bulk_event")
        us = us_of(e["timestamp"])
        ts_text = datetime.fromtimestamp(us / 1e6, timezone.utc).strftime("%Y-%m-%d %H:%M:%S.") + "%06d" % (us % 10 ** 6)
        b = self.ok("SELECT uuid FROM events WHERE timestamp = toDateTime64({t}, 6, 'UTC') AND uuid = {u}",
                    {"t": ts_text, "u": e["uuid"]})
        self.assertEqual(b["results"], [[e["uuid"]]])

    def test_properties_round_trip(self):
        special = [e for e in self.events if e["event"] != "bulk_event" and (
            "\\u" in json.dumps(e["properties"]))]
        self.assertGreater(len(special), 20)
        want = {e["uuid"]: e for e in special}
        b = self.ok("SELECT uuid, properties, properties.$ip AS ip, $session_id FROM events WHERE uuid IN {ids} "
                    "LIMIT 50000", {"ids": list(want)})
        self.assertEqual(len(b["results"]), len(want))
        self.assertEqual(b["types"][1], ["properties", "String"])
        seen = {"nul": 0, "surrogate": 0, "escaped": 0}
        for u, props, ip, sid in b["results"]:
            self.assertIsInstance(props, str)
            src = want[u]["properties"]
            self.assertEqual(json.loads(props), src)
            self.assertEqual(props, canonical_inner(src))
            props.encode("utf-8")  # no lone surrogate left in the text itself
            self.assertEqual(ip, src.get("$ip"))
            self.assertEqual(sid, src.get("$session_id"))
            if "\\u0000" in props and "\\\\u0000" not in props:
                seen["nul"] += 1
            if "\\ud83d" in props.replace("\\\\ud83d", "") or "\\udc00" in props:
                seen["surrogate"] += 1
            if "\\\\u0000" in props:
                seen["escaped"] += 1
        self.assertTrue(all(seen.values()), seen)

    def test_raw_body_is_utf8_with_escapes(self):
        r, raw = self.emu.request("POST", "/api/projects/%d/query/" % PROJECT, {"query": {
            "kind": "HogQLQuery", "query": "SELECT properties FROM events WHERE event = '注文完了 ✅' LIMIT 5"}},
            {"Authorization": "Bearer " + KEY})
        self.assertEqual(r.status, 200)
        self.assertEqual(r.getheader("Content-Type"), "application/json")
        self.assertEqual(int(r.getheader("Content-Length")), len(raw))
        text = raw.decode("utf-8")  # strict
        self.assertIn("注文完了 ✅", text)  # raw UTF-8, not \\u escapes
        # a lone surrogate inside a property: the response holds the escape, doubly escaped in the string
        u = next(e["uuid"] for e in self.events if "broken_emoji" in e["properties"])
        r, raw = self.emu.request("POST", "/api/projects/%d/query/" % PROJECT, {"query": {
            "kind": "HogQLQuery", "query": "SELECT properties FROM events WHERE uuid = {u}", "values": {"u": u}}},
            {"Authorization": "Bearer " + KEY})
        text = raw.decode("utf-8")
        self.assertIn('smile \\\\ud83d here', text)
        inner = json.loads(text)["results"][0][0]
        self.assertEqual(json.loads(inner)["broken_emoji"], "smile \ud83d here")

    def test_functions(self):
        e = next(x for x in self.events if x["event"] != "bulk_event" and x.get("person_id"))
        b = self.ok("SELECT toString(uuid), toUUID({u}) AS u2, toString(team_id), coalesce(NULL, event), "
                    "ifNull(person_id, toUUID('00000000-0000-0000-0000-000000000000')), person_id IS NULL, "
                    "event IS NOT NULL, toString(toTimeZone(timestamp, 'UTC')), uuid = {u} AND NOT (event = 'x') "
                    "FROM events WHERE uuid = toUUID({U})", {"u": e["uuid"], "U": e["uuid"].upper()})
        r = b["results"][0]
        ts = parse_instant(e["timestamp"]).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")
        self.assertEqual(r, [e["uuid"], e["uuid"], "1", e["event"], e["person_id"], 0, 1, ts, 1])
        self.assertEqual(b["types"][1], ["u2", "UUID"])
        b = self.ok("SELECT max(timestamp), min(toTimeZone(timestamp, 'UTC')), count(uuid), count(*) FROM events "
                    "WHERE event = 'signed_up'")
        sel = [x for x in self.events if x["event"] == "signed_up"]
        self.assertEqual(us_of(b["results"][0][0]), max(us_of(x["timestamp"]) for x in sel))
        self.assertEqual(us_of(b["results"][0][1]), min(us_of(x["timestamp"]) for x in sel))
        self.assertEqual(b["results"][0][2:], [len(sel), len(sel)])
        b = self.ok("SELECT `event`, count() AS `n` FROM events AS e WHERE e.team_id = {t} AND true "
                    "GROUP BY event HAVING n >= 1 ORDER BY n DESC, event ASC LIMIT 3", {"t": 1})
        self.assertEqual(b["columns"], ["event", "n"])
        self.assertEqual(b["results"][0], ["bulk_event", N_BULK])

    def test_uuid_order_is_clickhouse(self):
        a, b_ = "ffffffff-ffff-4fff-8000-000000000000", "00000000-0000-4000-9fff-ffffffffffff"
        b = self.ok("SELECT toUUID({a}) < toUUID({b}), toUUID({a}) > toUUID({b})", {"a": a, "b": b_})
        self.assertEqual(b["results"], [[1, 0]])

    def test_persons_argmax_group_by(self):
        b = self.ok("SELECT id, argMax(properties, version) AS properties, max(version) AS person_version, "
                    "argMax(is_deleted, version) AS is_deleted, min(created_at) AS created_at "
                    "FROM raw_persons GROUP BY id ORDER BY id LIMIT 50000")
        want = {}
        for p in self.persons:
            cur = want.get(p["id"])
            if cur is None or p["version"] > cur["version"]:
                want[p["id"]] = p
        self.assertEqual(len(b["results"]), len(want))
        self.assertEqual(b["types"][3], ["is_deleted", "Bool"])
        for pid, props, ver, deleted, created in b["results"]:
            w = want[pid]
            self.assertEqual(json.loads(props), w["properties"])
            self.assertEqual(ver, w["version"])
            self.assertIs(deleted, w["is_deleted"])
            self.assertEqual(us_of(created), us_of(w["created_at"]))
        self.assertIn(True, [r[3] for r in b["results"]])
        # the persons model shape: collapsed distinct ids LEFT JOIN collapsed persons
        q = """
        SELECT pdi.distinct_id AS distinct_id, pdi.person_id AS person_id, p.properties AS properties,
               pdi.version AS person_distinct_id_version, p.version AS person_version,
               p.created_at AS created_at, pdi.is_deleted AS is_deleted, pdi.team_id AS team_id
        FROM (
            SELECT team_id, distinct_id, argMax(person_id, version) AS person_id,
                   argMax(is_deleted, version) AS is_deleted, max(version) AS version
            FROM raw_person_distinct_ids
            WHERE team_id = {team}
            GROUP BY team_id, distinct_id
        ) AS pdi
        LEFT JOIN (
            SELECT id, argMax(properties, version) AS properties, max(version) AS version,
                   min(created_at) AS created_at
            FROM raw_persons
            WHERE team_id = {team}
            GROUP BY id
        ) AS p ON p.id = pdi.person_id
        WHERE pdi.distinct_id > {cursor}
        ORDER BY pdi.distinct_id
        LIMIT 50000"""
        b = self.ok(q, {"team": 1, "cursor": ""})
        want_pdi = {}
        for d in self.pdis:
            cur = want_pdi.get(d["distinct_id"])
            if cur is None or d["version"] > cur["version"]:
                want_pdi[d["distinct_id"]] = d
        self.assertEqual([r[0] for r in b["results"]], sorted(want_pdi))
        for did, pid, props, dv, pv, created, deleted, team in b["results"]:
            w = want_pdi[did]
            self.assertEqual((pid, dv, deleted, team), (w["person_id"], w["version"], w["is_deleted"], 1))
            self.assertEqual(pv, want[pid]["version"])
            self.assertEqual(json.loads(props), want[pid]["properties"])
        # a bare column that is neither grouped nor aggregated is an error, as in ClickHouse
        self.err(400, "SELECT id, version FROM raw_persons GROUP BY id")

    def test_sessions(self):
        b = self.ok("SELECT session_id, distinct_id, $start_timestamp, toTimeZone($end_timestamp, 'UTC') AS end_ts, "
                    "$urls, $is_bounce, $session_duration, $vitals_lcp, $entry_utm_term, $channel_type "
                    "FROM sessions WHERE $end_timestamp >= toDateTime64({a}, 6, 'UTC') "
                    "AND ($end_timestamp, session_id) > (toDateTime64({a}, 6, 'UTC'), {sid}) "
                    "ORDER BY $end_timestamp, session_id LIMIT 50000", {"a": "2026-11-15 00:00:00", "sid": ""})
        lim = us_of("2026-11-15T00:00:00Z")
        want = sorted(((us_of(s["$end_timestamp"]), s["session_id"]), s) for s in self.sessions
                      if us_of(s["$end_timestamp"]) >= lim)
        self.assertEqual([r[0] for r in b["results"]], [w[1]["session_id"] for w in want])
        for r, (_, s) in zip(b["results"], want):
            self.assertEqual(r[4], s["$urls"])
            self.assertIs(r[5], s["$is_bounce"])
            self.assertEqual(r[6], s["$session_duration"])
            self.assertEqual(r[7], s["$vitals_lcp"])
            self.assertEqual(r[8], s.get("$entry_utm_term"))
            self.assertTrue(r[3].endswith("Z"))
        self.assertEqual(b["types"][4], ["$urls", "Array(String)"])

    def test_gzip_and_keep_alive(self):
        conn = self.emu.conn()
        q = "SELECT uuid, properties FROM events ORDER BY timestamp, uuid LIMIT 300"
        st1, plain, r1 = self.emu.query(q, conn=conn)
        st2, zipped, r2 = self.emu.query(q, conn=conn, headers={"Accept-Encoding": "gzip"})
        self.assertEqual((st1, st2), (200, 200))
        self.assertIsNone(r1.getheader("Content-Encoding"))
        self.assertEqual(r2.getheader("Content-Encoding"), "gzip")
        self.assertEqual(plain["results"], zipped["results"])
        st, log = self.emu.control("GET", "requests")
        self.assertEqual(log[1]["accept_encoding"], "gzip")
        self.assertNotIn("gzip", log[0]["accept_encoding"] or "")
        conn.close()

    def test_concurrent_requests(self):
        self.emu.control("POST", "faults", {"faults": [{"every": True, "delay": 0.5}]})
        results = []

        def one():
            st, b, _ = self.emu.query("SELECT count() FROM events")
            results.append((st, b["results"][0][0]))

        t0 = time.monotonic()
        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(results, [(200, len(self.events))] * 4)
        self.assertLess(time.monotonic() - t0, 1.9, "requests were not served concurrently")

    def test_reload(self):
        path = os.path.join(self.data, "sessions.ndjson")
        with open(path, encoding="utf-8") as fh:
            saved = fh.read()
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"session_id": "reload-test", "team_id": 1, "distinct_id": "x",
                                     "$start_timestamp": "2026-11-01T00:00:00Z",
                                     "$end_timestamp": "2026-11-01T00:00:01Z"}) + "\n")
            st, body = self.emu.control("POST", "reload")
            self.assertEqual(st, 200, body)
            self.assertEqual(body["tables"]["sessions"], len(self.sessions) + 1)
            b = self.ok("SELECT session_id, $urls, $is_bounce, $channel_type FROM sessions "
                        "WHERE session_id = 'reload-test'")
            self.assertEqual(b["results"], [["reload-test", None, None, None]])
        finally:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(saved)
            self.emu.control("POST", "reload")


class TestFaults(Base):
    Q = "SELECT uuid, event, toTimeZone(timestamp, 'UTC') AS timestamp FROM events ORDER BY timestamp, uuid LIMIT 5"

    def faults(self, *rules):
        st, body = self.emu.control("POST", "faults", {"faults": list(rules)})
        self.assertEqual(st, 200, body)

    def test_status_faults(self):
        codes = [429, 500, 503, 504, 512, 400, 401, 403]
        self.faults(*[{"on_request": i + 1, "status": c} for i, c in enumerate(codes)],
                    {"on_request": 1, "retry_after": 37, "status": 429})
        seen = []
        for c in codes:
            st, b, r = self.emu.query(self.Q)
            self.assertEqual(st, c)
            self.assertEqual(set(b), {"type", "code", "detail", "attr"})
            seen.append(b)
            self.assertIsNone(r.getheader("Retry-After"))
        self.assertEqual((seen[0]["type"], seen[0]["code"]), ("throttled_error", "throttled"))
        self.assertEqual(seen[0]["detail"], "Request was throttled. Expected available in 1 seconds.")
        self.assertEqual(seen[1]["type"], "server_error")
        self.assertEqual(seen[5]["code"], "hogql_error")
        self.assertEqual(seen[6]["type"], "authentication_error")
        self.assertEqual(seen[7]["code"], "permission_denied")
        st, b, _ = self.emu.query(self.Q)
        self.assertEqual(st, 200)
        st, log = self.emu.control("GET", "requests")
        self.assertEqual([e["status"] for e in log], codes + [200])
        self.assertEqual([e["n"] for e in log], list(range(1, 10)))

    def test_retry_after(self):
        self.faults({"on_request": 1, "status": 429, "retry_after": 37})
        st, b, _ = self.emu.query(self.Q)
        self.assertEqual(st, 429)
        self.assertEqual(b["detail"], "Request was throttled. Expected available in 37 seconds.")

    def test_times_every_from(self):
        self.faults({"on_request": 2, "times": 2, "status": 503}, {"from_request": 6, "status": 500, "times": 1},
                    {"from_request": 8, "status": 504, "times": 3})
        sts = [self.emu.query(self.Q)[0] for _ in range(10)]
        self.assertEqual(sts, [200, 503, 503, 200, 200, 500, 200, 504, 504, 504])
        self.emu.control("POST", "reset")
        self.faults({"every": True, "status": 429, "times": 2})
        sts = [self.emu.query(self.Q)[0] for _ in range(3)]
        self.assertEqual(sts, [429, 429, 200])
        self.emu.control("POST", "reset")
        self.faults({"from_request": 2, "status": 500})  # times defaults to 1 (unlimited only for every)
        self.assertEqual([self.emu.query(self.Q)[0] for _ in range(3)], [200, 500, 200])
        self.emu.control("POST", "reset")
        self.assertEqual([self.emu.query(self.Q)[0] for _ in range(2)], [200, 200])
        st, body = self.emu.control("POST", "faults", {"faults": [{"on_request": 1}]})
        self.assertEqual(st, 400)

    def test_delay(self):
        self.faults({"on_request": 1, "delay": 0.6}, {"on_request": 2, "delay": 0.6, "status": 500})
        t = time.monotonic()
        self.assertEqual(self.emu.query(self.Q)[0], 200)
        self.assertGreaterEqual(time.monotonic() - t, 0.6)
        t = time.monotonic()
        self.assertEqual(self.emu.query(self.Q)[0], 500)
        self.assertGreaterEqual(time.monotonic() - t, 0.6)

    def raw_exchange(self, headers=None):
        c = self.emu.conn(timeout=10)
        body = json.dumps({"query": {"kind": "HogQLQuery", "query": self.Q}})
        h = {"Authorization": "Bearer " + KEY, "Content-Type": "application/json"}
        h.update(headers or {})
        c.request("POST", "/api/projects/%d/query/" % PROJECT, body, h)
        return c

    def test_truncate(self):
        self.faults({"on_request": 1, "truncate": True}, {"on_request": 2, "truncate": True, "status": 503})
        for want in (200, 503):
            c = self.raw_exchange()
            r = c.getresponse()
            self.assertEqual(r.status, want)
            n = int(r.getheader("Content-Length"))
            with self.assertRaises(http.client.IncompleteRead) as cm:
                r.read()
            self.assertEqual(len(cm.exception.partial), n // 2)
            c.close()
        self.assertEqual(self.emu.query(self.Q)[0], 200)

    def test_drop(self):
        self.faults({"on_request": 1, "drop": True})
        c = self.raw_exchange()
        with self.assertRaises((http.client.RemoteDisconnected, ConnectionError, http.client.BadStatusLine)):
            c.getresponse()
        c.close()
        self.assertEqual(self.emu.query(self.Q)[0], 200)
        st, log = self.emu.control("GET", "requests")
        self.assertEqual([e["status"] for e in log], [None, 200])

    def test_malformed(self):
        self.faults({"on_request": 1, "malformed": True})
        c = self.raw_exchange()
        r = c.getresponse()
        raw = r.read()
        c.close()
        self.assertEqual(r.status, 200)
        with self.assertRaises(ValueError):
            json.loads(raw)

    def test_wrong_columns(self):
        self.faults({"on_request": 1, "wrong_columns": True},
                    {"on_request": 2, "wrong_columns": True})
        st, b, _ = self.emu.query(self.Q)
        self.assertEqual(st, 200)
        self.assertEqual(len(b["columns"]), 3)
        self.assertEqual(len(b["results"]), 5)
        self.assertTrue(all(len(r) == 2 for r in b["results"]))
        st, b, _ = self.emu.query("SELECT uuid, event FROM events WHERE event = 'nothing'")
        self.assertTrue(b["results"] and all(len(r) == 1 for r in b["results"]))

    def test_gzip_bomb(self):
        self.faults({"on_request": 1, "gzip_bomb": 8})
        c = self.raw_exchange()
        r = c.getresponse()
        raw = r.read()
        c.close()
        self.assertEqual((r.status, r.getheader("Content-Encoding")), (200, "gzip"))
        self.assertIsNone(r.getheader("Content-Length"))
        self.assertLess(len(raw), 64 * 1024)
        body = gzip.decompress(raw)
        self.assertGreater(len(body), 8 << 20)
        self.assertEqual(json.loads(body), {"results": [], "columns": []})

    def test_content_length_lie(self):
        self.faults({"on_request": 1, "content_length": 500 << 20, "hold": 0.3})
        c = self.raw_exchange()
        t = time.monotonic()
        r = c.getresponse()
        self.assertEqual((r.status, int(r.getheader("Content-Length"))), (200, 500 << 20))
        with self.assertRaises(http.client.IncompleteRead) as cm:
            r.read()
        self.assertEqual(cm.exception.partial, b'{"results": [')
        self.assertGreaterEqual(time.monotonic() - t, 0.3)
        c.close()
        self.assertEqual(self.emu.query(self.Q)[0], 200)

    def test_fault_with_gzip(self):
        self.faults({"on_request": 1, "status": 429})
        st, b, r = self.emu.query(self.Q, headers={"Accept-Encoding": "gzip"})
        self.assertEqual(st, 429)
        self.assertEqual(b["code"], "throttled")

    def test_request_log(self):
        self.emu.query(self.Q, values={"a": [1, "x"]}, refresh="blocking", name="my label")
        self.emu.query(self.Q, key="wrong")
        st, log = self.emu.control("GET", "requests")
        self.assertEqual(len(log), 2)
        e = log[0]
        self.assertEqual((e["n"], e["status"], e["query"], e["values"], e["refresh"], e["name"], e["auth_scheme"]),
                         (1, 200, self.Q, {"a": [1, "x"]}, "blocking", "my label", "Bearer"))
        self.assertFalse(e["force_blocking"])
        self.assertTrue(e["path"].startswith("/api/projects/%d/query" % PROJECT))
        self.assertEqual(log[1]["status"], 401)
        self.assertNotIn(KEY, self.emu.stderr())
        self.assertNotIn("wrong", json.dumps(log).replace('"wrong_columns"', ""))

    def test_cli_fault(self):
        emu = Emulator(self.data_small(), ["--fault", json.dumps({"on_request": 1, "status": 503}),
                                           "--fault", json.dumps({"on_request": 2, "status": 429,
                                                                  "retry_after": 5})])
        try:
            self.assertEqual(emu.query("SELECT 1", project=1)[0], 503)
            st, b, _ = emu.query("SELECT 1", project=1)
            self.assertEqual((st, b["detail"]), (429, "Request was throttled. Expected available in 5 seconds."))
            self.assertEqual(emu.query("SELECT 1", project=1)[0], 200)
        finally:
            emu.stop()

    @classmethod
    def data_small(cls):
        d = os.path.join(cls.tmp, "small")
        if not os.path.exists(d):
            subprocess.run([sys.executable, GENERATOR, "--out", d, "--events", "200", "--seed", "3"], check=True,
                           stderr=subprocess.DEVNULL)
        return d


class TestSecondInstance(unittest.TestCase):
    """TLS, --bool-as-int and a UTC project on a small data set."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="emu-selftest2-")
        cls.data = os.path.join(cls.tmp, "data")
        subprocess.run([sys.executable, GENERATOR, "--out", cls.data, "--events", "300", "--seed", "9"], check=True,
                       stderr=subprocess.DEVNULL)
        cls.cert = make_cert(cls.tmp)
        cls.emu = Emulator(cls.data, ["--bool-as-int"], tls=cls.cert)

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_tls(self):
        if not self.cert:
            self.skipTest("openssl not available")
        st, b, _ = self.emu.query("SELECT count() FROM events", project=1)
        self.assertEqual((st, b["results"]), (200, [[300]]))
        # a plain-HTTP client gets no answer from the TLS port
        c = http.client.HTTPConnection("127.0.0.1", self.emu.port, timeout=5)
        with self.assertRaises((http.client.HTTPException, ConnectionError, socket.timeout, OSError)):
            c.request("POST", "/api/projects/1/query/", "{}")
            c.getresponse().read()
        c.close()
        # the server still works after that
        self.assertEqual(self.emu.query("SELECT 1", project=1)[0], 200)

    def test_bool_as_int_and_utc(self):
        st, b, _ = self.emu.query("SELECT is_deleted, is_identified, created_at FROM raw_persons LIMIT 20", project=1)
        self.assertEqual(st, 200)
        self.assertTrue(all(r[0] in (0, 1) and r[1] in (0, 1) and not isinstance(r[0], bool) for r in b["results"]))
        self.assertTrue(all(r[2].endswith("Z") for r in b["results"]))
        self.assertEqual(b["types"][2][1], "DateTime64(3, 'UTC')")


if __name__ == "__main__":
    unittest.main()
