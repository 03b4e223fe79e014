"""Self-test: the request budget per key (sliding hour), the concurrency limit, the emulator's clock and
rows that become visible at their _visible_at (limits.py, store.Snapshot.sync_visibility)."""

import json
import os
import shutil
import tempfile
import threading
import time
import unittest

from harness import KEY, Emulator

T0 = "2026-11-20T12:00:00Z"


def ev(i, **kw):
    row = {"uuid": "00000000-0000-4000-8000-%012d" % i, "event": "e%d" % i, "properties": {"i": i},
           "timestamp": "2026-11-20T10:00:%02dZ" % i, "created_at": "2026-11-20T10:00:%02dZ" % i, "team_id": 1,
           "distinct_id": "d", "elements_chain": ""}
    row.update(kw)
    return row


class TestLimits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="emu-selftest-limits-")
        cls.data = os.path.join(cls.tmp, "data")
        os.makedirs(cls.data)
        with open(os.path.join(cls.data, "events.ndjson"), "w") as fh:
            for r in (ev(1), ev(2, _visible_at="2026-11-20T12:30:00Z"), ev(3), ev(4, _visible_at="2099-01-01T00:00:00Z")):
                fh.write(json.dumps(r) + "\n")
        with open(os.path.join(cls.data, "persons.ndjson"), "w") as fh:
            for i, va in ((1, None), (2, "2026-11-20T14:00:00+01:00")):
                p = {"id": "00000000-0000-4000-9000-%012d" % i, "team_id": 1, "properties": {},
                     "created_at": "2026-11-01T00:00:00Z", "is_identified": True, "is_deleted": 0, "version": 1}
                if va:
                    p["_visible_at"] = va
                fh.write(json.dumps(p) + "\n")
        cls.emu = Emulator(cls.data, [])  # budget and concurrency off by default

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.config(requests_per_hour=None, max_concurrent=None, throttle_wait=True, clock=T0, clock_offset=0)
        self.assertEqual(self.emu.control("POST", "reset")[0], 200)

    def config(self, **kw):
        st, body = self.emu.control("POST", "config", kw)
        self.assertEqual(st, 200, body)
        return body

    def at(self, when):
        self.config(clock=when)

    def q(self, hogql="SELECT 1", key=KEY):
        st, body, r = self.emu.query(hogql, project=1, key=key)
        return st, body, r

    def test_off_by_default(self):
        for _ in range(30):
            self.assertEqual(self.q()[0], 200)
        self.assertEqual(self.emu.control("GET", "config")[1]["requests_per_hour"], None)

    def test_budget_with_wait_and_sliding_window(self):
        self.config(requests_per_hour=3)
        for when in ("2026-11-20T12:00:00Z", "2026-11-20T12:10:00Z", "2026-11-20T12:20:00Z"):
            self.at(when)
            self.assertEqual(self.q()[0], 200)
        self.at("2026-11-20T12:30:00Z")
        st, body, r = self.q()
        self.assertEqual(st, 429)
        self.assertEqual(body, {"type": "throttled_error", "code": "throttled", "attr": None,
                                "detail": "Request was throttled. Expected available in 1800 seconds."})
        self.assertEqual(r.getheader("Retry-After"), "1800")
        # authentication comes first: a bad key is a 401, neither throttled nor counted
        self.assertEqual(self.q(key="phx_wrong")[0], 401)
        # the window slides: one hour after the first request, one more is allowed, then the next wait is
        # until the second request leaves the window
        self.at("2026-11-20T13:00:00Z")
        self.assertEqual(self.q()[0], 200)
        st, body, r = self.q()
        self.assertEqual((st, body["detail"]), (429, "Request was throttled. Expected available in 600 seconds."))
        self.at("2026-11-20T13:09:59.5Z")
        st, body, r = self.q()
        self.assertEqual((st, body["detail"]), (429, "Request was throttled. Expected available in 1 second."))
        self.at("2026-11-20T13:10:00Z")
        self.assertEqual(self.q()[0], 200)
        log = self.emu.control("GET", "requests")[1]
        self.assertEqual([(e["status"], e["throttled"], e["throttle_reason"]) for e in log],
                         [(200, False, None)] * 3 + [(429, True, "budget"), (401, False, None), (200, False, None),
                                                     (429, True, "budget"), (429, True, "budget"), (200, False, None)])

    def test_budget_without_wait(self):
        self.config(requests_per_hour=1, throttle_wait=False)
        self.assertEqual(self.q()[0], 200)
        st, body, r = self.q()
        self.assertEqual((st, body["detail"], body["code"]), (429, "Request was throttled.", "throttled"))
        self.assertIsNone(r.getheader("Retry-After"))
        # reset clears the window (the settings stay)
        self.emu.control("POST", "reset")
        self.assertEqual(self.q()[0], 200)
        self.assertEqual(self.q()[0], 429)

    def test_concurrency(self):
        self.config(max_concurrent=1)
        st, body = self.emu.control("POST", "faults", {"faults": [{"on_request": 1, "delay": 1.5}]})
        self.assertEqual(st, 200, body)
        slow = {}
        t = threading.Thread(target=lambda: slow.update(st=self.q()[0]))
        t.start()
        deadline = time.monotonic() + 10
        while self.emu.control("GET", "config")[1]["in_flight"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        st, body, r = self.q()
        self.assertEqual((st, body["detail"]), (429, "Request was throttled."))
        self.assertIsNone(r.getheader("Retry-After"))
        t.join()
        self.assertEqual(slow["st"], 200)
        self.assertEqual(self.q()[0], 200)  # the slot is free again
        log = self.emu.control("GET", "requests")[1]
        self.assertEqual([(e["n"], e["status"], e["throttle_reason"]) for e in log],
                         [(1, 200, None), (2, 429, "concurrency"), (3, 200, None)])
        self.assertEqual(self.emu.control("GET", "config")[1]["in_flight"], 0)

    def test_command_line_options(self):
        emu = Emulator(self.data, ["--requests-per-hour", "2", "--throttle-without-wait", "--max-concurrent", "3"])
        try:
            cfg = emu.control("GET", "config")[1]
            self.assertEqual((cfg["requests_per_hour"], cfg["throttle_wait"], cfg["max_concurrent"]), (2, False, 3))
            sts = [emu.query("SELECT 1", project=1)[0] for _ in range(3)]
            self.assertEqual(sts, [200, 200, 429])
        finally:
            emu.stop()

    def test_bad_config(self):
        for body in ({"requests_per_hour": 0}, {"nope": 1}, {"clock": "yesterday"}, {"throttle_wait": 1}):
            self.assertEqual(self.emu.control("POST", "config", body)[0], 400, body)

    def uuids(self, table="events", col="uuid"):
        st, body, _ = self.q("SELECT %s FROM %s ORDER BY %s" % (col, table, col))
        self.assertEqual(st, 200, body)
        return [r[0][-1] for r in body["results"]]

    def test_row_visibility(self):
        self.assertEqual(self.uuids(), ["1", "3"])  # 12:00: row 2 visible at 12:30, row 4 in 2099
        self.assertEqual(self.q("SELECT count() FROM events WHERE event = 'e2'")[1]["results"], [[0]])
        self.at("2026-11-20T12:30:00Z")
        self.assertEqual(self.uuids(), ["1", "2", "3"])
        self.assertEqual(self.q("SELECT count() FROM events WHERE event = 'e2'")[1]["results"], [[1]])
        self.at("2026-11-20T12:29:59Z")  # the clock may go back
        self.assertEqual(self.uuids(), ["1", "3"])
        # persons too (any table); the clock offset moves real time
        self.assertEqual(self.uuids("raw_persons", "id"), ["1"])
        self.config(clock=None, clock_offset=200 * 365 * 86400)
        self.assertEqual(self.uuids(), ["1", "2", "3", "4"])
        self.assertEqual(self.uuids("raw_persons", "id"), ["1", "2"])
        self.config(clock_offset=0)
        self.assertEqual(self.uuids(), ["1", "2", "3"])
        # _visible_at is not a column
        st, body, _ = self.q("SELECT uuid, _visible_at FROM events")
        self.assertEqual((st, body["code"]), (400, "hogql_query_error"))
        self.assertEqual(self.emu.control("GET", "health")[1]["delayed_rows"], {"events": 2, "raw_persons": 1})
