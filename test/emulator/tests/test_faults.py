"""Self-test: fault injection (statuses, delays, broken bodies and connections, the request log, --fault)."""

import gzip
import http.client
import json
import os
import subprocess
import sys
import time

from harness import GENERATOR, KEY, PROJECT, Base, Emulator


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
