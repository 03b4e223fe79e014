"""Self-test: query results, types, time zones, paging, JSON columns, functions, persons, sessions,
gzip, concurrency and reload."""

import json
import os
import threading
import time
from datetime import datetime, timezone

from harness import EVENTS_QUERY, KEY, N_BULK, PROJECT, TZ, Base, canonical_inner, ch_uuid_key, parse_instant, \
    us_of


class TestQueries(Base):
    def test_limit_default_and_cap(self):
        total = len(self.events)
        self.assertGreater(total, 50000)
        # hasMore is computed only without a LIMIT; with one it is null (as in PostHog)
        b = self.ok("SELECT uuid FROM events")
        self.assertEqual(len(b["results"]), 100)
        self.assertEqual(b["limit"], 100)
        self.assertIs(b["hasMore"], True)
        n = sum(1 for e in self.events if e["event"] == "signed_up")
        self.assertLess(n, 100)
        b = self.ok("SELECT uuid FROM events WHERE event = 'signed_up'")
        self.assertEqual(len(b["results"]), n)
        self.assertIs(b["hasMore"], False)
        b = self.ok("SELECT uuid, event FROM events ORDER BY timestamp, uuid LIMIT 60000")
        self.assertEqual(len(b["results"]), 50000)
        self.assertEqual(b["limit"], 50000)
        self.assertIsNone(b["hasMore"])
        b = self.ok("SELECT uuid FROM events WHERE event = 'signed_up' LIMIT 50000")
        self.assertEqual(len(b["results"]), n)
        self.assertIsNone(b["hasMore"])
        b = self.ok("SELECT uuid FROM events WHERE event = 'signed_up' LIMIT {n}", {"n": n - 1})
        self.assertEqual(len(b["results"]), n - 1)
        self.assertIsNone(b["hasMore"])
        b = self.ok("SELECT uuid FROM events LIMIT 0")
        self.assertEqual(b["results"], [])
        self.assertIsNone(b["hasMore"])
        st, log = self.emu.control("GET", "requests")
        self.assertEqual([e["has_more"] for e in log], [True, False, None, None, None, None])

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
            self.assertIsNone(b["hasMore"])  # the query has a LIMIT: a short page is the last one
            if len(b["results"]) < page:
                break
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
        self.assertEqual(r, [e["uuid"], e["uuid"], str(PROJECT), e["event"], e["person_id"], 0, 1, ts, 1])
        self.assertEqual(b["types"][1], ["u2", "UUID"])
        b = self.ok("SELECT max(timestamp), min(toTimeZone(timestamp, 'UTC')), count(uuid), count(*) FROM events "
                    "WHERE event = 'signed_up'")
        sel = [x for x in self.events if x["event"] == "signed_up"]
        self.assertEqual(us_of(b["results"][0][0]), max(us_of(x["timestamp"]) for x in sel))
        self.assertEqual(us_of(b["results"][0][1]), min(us_of(x["timestamp"]) for x in sel))
        self.assertEqual(b["results"][0][2:], [len(sel), len(sel)])
        b = self.ok("SELECT `event`, count() AS `n` FROM events AS e WHERE e.team_id = {t} AND true "
                    "GROUP BY event HAVING n >= 1 ORDER BY n DESC, event ASC LIMIT 3", {"t": PROJECT})
        self.assertEqual(b["columns"], ["event", "n"])
        self.assertEqual(b["results"][0], ["bulk_event", N_BULK])

    def test_count_if(self):
        """countIf: the settle pass counts several intervals with one query, one countIf per interval."""
        def n(lo, hi, min_ts, event=None):
            return sum(1 for x in self.events if us_of(lo) <= us_of(x["created_at"]) < us_of(hi)
                       and us_of(x["timestamp"]) >= us_of(min_ts) and (event is None or x["event"] == event))
        cond = ("created_at >= toDateTime64({s%d}, 6, 'UTC') AND created_at < toDateTime64({e%d}, 6, 'UTC') "
                "AND timestamp >= toDateTime64({m%d}, 6, 'UTC')")
        bounds = [("2026-11-10T00:00:00Z", "2026-11-10T06:00:00Z", "2026-11-03T00:00:00Z"),
                  ("2026-11-10T06:00:00Z", "2026-11-11T00:00:00Z", "2026-11-10T05:00:00Z"),
                  ("2030-01-01T00:00:00Z", "2030-01-02T00:00:00Z", "2029-12-25T00:00:00Z")]
        values = {"min_timestamp": "2026-11-03 00:00:00.000000", "a": "2026-11-10 00:00:00", "b": "2026-11-11 00:00:00",
                  "c": "2030-01-01 00:00:00", "d": "2030-01-02 00:00:00", "x": "$pageview"}
        for i, (lo, hi, m) in enumerate(bounds):
            values.update({"s%d" % i: lo[:19].replace("T", " "), "e%d" % i: hi[:19].replace("T", " "),
                           "m%d" % i: m[:19].replace("T", " ")})
        text = ("SELECT " + ", ".join("countIf(%s) AS c%d" % (cond % (i, i, i), i) for i in range(3))
                + " FROM events WHERE timestamp >= toDateTime64({min_timestamp}, 6, 'UTC') "
                "AND ((created_at >= toDateTime64({a}, 6, 'UTC') AND created_at < toDateTime64({b}, 6, 'UTC')) "
                "OR (created_at >= toDateTime64({c}, 6, 'UTC') AND created_at < toDateTime64({d}, 6, 'UTC'))) "
                "AND event IN {x}")
        b = self.ok(text, values)
        want = [n(lo, hi, m, "$pageview") for lo, hi, m in bounds]
        self.assertGreater(want[0], 0)
        self.assertEqual(want[2], 0)
        self.assertEqual(b["columns"], ["c0", "c1", "c2"])
        self.assertEqual(b["types"][0], ["c0", "UInt64"])
        self.assertEqual(b["results"], [want])
        # over no rows at all: 0, not NULL; the two-argument form skips NULL values
        b = self.ok("SELECT countIf(event = 'x') AS z, countIf(person_id, true) AS p, count(person_id) AS q "
                    "FROM events WHERE event = 'no such event'")
        self.assertEqual(b["results"], [[0, 0, 0]])
        b = self.ok("SELECT countIf(person_id, event = 'signed_up') AS p FROM events")
        self.assertEqual(b["results"], [[sum(1 for x in self.events
                                             if x["event"] == "signed_up" and x.get("person_id"))]])
        # case-sensitive, an aggregate, one or two arguments, a condition
        self.err(400, "SELECT countif(event = 'x') FROM events")
        self.err(400, "SELECT uuid FROM events WHERE countIf(event = 'x') > 0")
        self.err(400, "SELECT countIf() FROM events")
        self.err(400, "SELECT countIf(uuid, event = 'x', 1) FROM events")
        self.err(400, "SELECT countIf(event) FROM events")

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
        # is_deleted is Int8 in ClickHouse: 0/1, not true/false (the data file says true/false)
        self.assertEqual(b["types"][3], ["is_deleted", "Int8"])
        for pid, props, ver, deleted, created in b["results"]:
            w = want[pid]
            self.assertEqual(json.loads(props), w["properties"])
            self.assertEqual(ver, w["version"])
            self.assertIs(type(deleted), int)
            self.assertEqual(deleted, int(w["is_deleted"]))
            self.assertEqual(us_of(created), us_of(w["created_at"]))
        self.assertIn(1, [r[3] for r in b["results"]])
        # the persons model shape: collapsed distinct ids LEFT JOIN collapsed persons
        q = """
        SELECT pdi.distinct_id AS distinct_id, pdi.person_id AS person_id, p.properties AS properties,
               pdi.version AS person_distinct_id_version, p.version AS person_version,
               p.created_at AS created_at, pdi.is_deleted AS is_deleted, pdi.team_id
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
        b = self.ok(q, {"team": PROJECT, "cursor": ""})
        want_pdi = {}
        for d in self.pdis:
            cur = want_pdi.get(d["distinct_id"])
            if cur is None or d["version"] > cur["version"]:
                want_pdi[d["distinct_id"]] = d
        self.assertEqual([r[0] for r in b["results"]], sorted(want_pdi))
        for did, pid, props, dv, pv, created, deleted, team in b["results"]:
            w = want_pdi[did]
            self.assertEqual((pid, dv, deleted, team), (w["person_id"], w["version"], int(w["is_deleted"]), PROJECT))
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
                fh.write(json.dumps({"session_id": "reload-test", "team_id": PROJECT, "distinct_id": "x",
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
