"""Shared harness of the emulator self-test: the data it generates, an Emulator subprocess and its HTTP client,
and the Base test case (one emulator on a large data set per test class)."""

import gzip
import http.client
import json
import os
import random
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
import unittest
from datetime import datetime, timedelta, timezone

TEST_DIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMULATOR = os.path.join(TEST_DIR, "emulator", "server.py")
GENERATOR = os.path.join(TEST_DIR, "generate_data.py")
KEY = "phx_selftest_key"
FORBIDDEN = "phx_readonly_without_query_scope"
PROJECT = 7
TZ = "America/New_York"
N_GENERATED = 3000
N_BULK = 48000
N_OTHER_TEAM = 40  # rows of another team in each data file

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
        # the project's team is the project id; the generator adds rows of team PROJECT + 1 to every file
        subprocess.run([sys.executable, GENERATOR, "--out", cls.data, "--events", str(N_GENERATED), "--seed", "11",
                        "--start", "2026-11-01T00:00:00Z", "--end", "2026-12-01T00:00:00Z",
                        "--team-id", str(PROJECT), "--other-team-rows", str(N_OTHER_TEAM)], check=True,
                       stderr=subprocess.DEVNULL)
        write_bulk_events(os.path.join(cls.data, "events.ndjson"), N_BULK, 5, team=PROJECT)
        cls.all_rows = {}
        for name, f in (("events", "events"), ("persons", "persons"), ("pdis", "person_distinct_ids"),
                        ("sessions", "sessions")):
            rows = read_ndjson(os.path.join(cls.data, f + ".ndjson"))
            cls.all_rows[name] = rows
            # what a query can see: the rows of the project's team only
            setattr(cls, name, [r for r in rows if r.get("team_id") == PROJECT])
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
