"""Self-test: the emulator is as strict as the real PostHog (../shared/posthog-source-facts.md): reserved
aliases, unknown tables and fields in PostHog's error shape, the 256 KiB query size limit with values
substituted, the fault kinds with PostHog's exact bodies, Int8 columns as 0/1, the team filter, hasMore."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import GENERATOR, N_OTHER_TEAM, PROJECT, Base, Emulator

SYNTAX = ("validation_error", "hogql_syntax_error")
QUERY_ERR = ("validation_error", "hogql_query_error")


def printed(v):
    """A value as clickhouse_driver prints it into the SQL (written apart from the emulator's own code)."""
    if isinstance(v, list):
        return "[" + ", ".join(printed(x) for x in v) + "]"
    if isinstance(v, str):
        return "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return str(v)


class TestStrict(Base):
    def body_is(self, b, type_code, detail):
        self.assertEqual(b, {"type": type_code[0], "code": type_code[1], "detail": detail, "attr": None})

    def test_reserved_aliases(self):
        for alias in ("true", "false", "null", "team_id", "TEAM_ID", "True", "NULL", "Team_Id", "`team_id`"):
            with self.subTest(alias=alias):
                b = self.err(400, "SELECT event AS %s FROM events LIMIT 1" % alias)
                self.body_is(b, SYNTAX, '"%s" cannot be an alias or identifier, as it\'s a reserved keyword'
                             % alias.strip("`"))
        # the sessions query as the extension sent it
        b = self.err(400, "SELECT session_id, team_id AS team_id FROM sessions LIMIT 1")
        self.body_is(b, SYNTAX, '"team_id" cannot be an alias or identifier, as it\'s a reserved keyword')
        # a table alias, and an alias inside a subquery
        self.body_is(self.err(400, "SELECT 1 FROM events AS null LIMIT 1"), SYNTAX,
                     '"null" cannot be an alias or identifier, as it\'s a reserved keyword')
        self.body_is(self.err(400, "SELECT x FROM (SELECT team_id AS team_id, uuid AS x FROM events) LIMIT 1"),
                     SYNTAX, '"team_id" cannot be an alias or identifier, as it\'s a reserved keyword')
        # team_id without an alias, and aliases that merely contain a reserved word, are fine
        b = self.ok("SELECT team_id, event AS team_ids, uuid AS is_true FROM events LIMIT 1")
        self.assertEqual(b["columns"], ["team_id", "team_ids", "is_true"])
        self.assertEqual(b["results"][0][0], PROJECT)
        st, log = self.emu.control("GET", "requests")
        self.assertEqual([e["status"] for e in log], [400] * 12 + [200])

    def test_unknown_tables_and_fields(self):
        self.body_is(self.err(400, "SELECT 1 FROM persons_v9 LIMIT 1"), QUERY_ERR, 'Unknown table "persons_v9".')
        self.body_is(self.err(400, "SELECT inserted_at FROM events LIMIT 1"), QUERY_ERR,
                     "Unable to resolve field: inserted_at")
        self.body_is(self.err(400, "SELECT _timestamp FROM raw_persons LIMIT 1"), QUERY_ERR,
                     "Unable to resolve field: _timestamp")
        self.body_is(self.err(400, "SELECT e.nope FROM events AS e LIMIT 1"), QUERY_ERR, "Field not found: nope")
        b = self.err(400, "SELECT uuid FROM events WHERE")
        self.assertEqual((b["type"], b["code"]), SYNTAX)

    def test_query_size_limit(self):
        text = "SELECT count() FROM events WHERE event IN {names}"
        base = len(text) - len("{names}")
        names = ["n%04d-%s" % (i, "x" * 40) for i in range(6000)]
        size = base + len(printed(names))
        self.assertGreater(size, 262144)
        # cut the list, then pad the last name, until the text with the list is exactly 262144 bytes
        while base + len(printed(names)) > 262144:
            names.pop()
        names[-1] += "y" * (262144 - base - len(printed(names)))
        self.assertEqual(base + len(printed(names)), 262144)
        b = self.ok(text, {"names": names})
        self.assertEqual(b["results"], [[0]])
        names[-1] += "y"
        st, b, _ = self.emu.query(text, {"names": names})
        self.assertEqual(st, 500)
        self.assertEqual(b, {"type": "server_error", "code": "error", "detail": "Query size exceeded.", "attr": None})
        # quotes and backslashes count escaped; non-ASCII counts in UTF-8 bytes
        odd = ["it's", "a\\b", "日本"]
        self.ok(text, {"names": odd})
        # a list of 10,000 UUIDs (the persons IN-list of a default page) is far over the limit
        uuids = [e["uuid"] for e in self.events[:10000]]
        st, b, _ = self.emu.query("SELECT count() FROM events WHERE uuid IN {ids}", {"ids": uuids})
        self.assertEqual((st, b["detail"]), (500, "Query size exceeded."))
        # a HogQL error is found first (PostHog resolves the query before ClickHouse parses it)
        st, b, _ = self.emu.query("SELECT count() FROM nowhere WHERE event IN {ids}", {"ids": uuids})
        self.assertEqual((st, b["code"]), (400, "hogql_query_error"))
        st, log = self.emu.control("GET", "requests")
        self.assertEqual([e["query_bytes"] for e in log[:2]], [262144, 262145])
        self.assertEqual(log[2]["query_bytes"],
                         len(text.replace("{names}", "['it\\'s', 'a\\\\b', '日本']").encode("utf-8")))
        self.assertEqual(log[3]["query_bytes"], len("SELECT count() FROM events WHERE uuid IN ") + len(printed(uuids)))
        self.assertGreater(log[3]["query_bytes"], 400000)
        self.assertEqual([e["status"] for e in log], [200, 500, 200, 500, 400])

    def test_fault_kinds(self):
        kinds = [
            ("memory_limit_512", 512, "server_error", "clickhouse_memory_limit_exceeded",
             "This query ran out of memory"),
            ("memory_limit_400", 400, "validation_error", "memory_limit_exceeded", "Memory limit (for query)"),
            ("estimated_time_512", 512, "server_error", "error", "Estimated query execution time"),
            ("timeout_504", 504, "server_error", "error", "Query has hit the max execution time"),
            ("timeout_500", 500, "server_error", "error", "Query has hit the max execution time"),
            ("capacity_503", 503, "server_error", "error", "Queries are a little too busy right now"),
            ("capacity_500", 500, "server_error", "error", "Queries are a little too busy right now"),
            ("query_size_500", 500, "server_error", "error", "Query size exceeded."),
        ]
        st, _ = self.emu.control("POST", "faults", {"faults": [{"on_request": i + 1, "kind": k[0]}
                                                              for i, k in enumerate(kinds)]})
        self.assertEqual(st, 200)
        for kind, status, type_, code, detail in kinds:
            with self.subTest(kind=kind):
                st, b, _ = self.emu.query("SELECT uuid FROM events LIMIT 1")
                self.assertEqual(st, status)
                self.assertEqual(set(b), {"type", "code", "detail", "attr"})
                self.assertEqual((b["type"], b["code"], b["attr"]), (type_, code, None))
                self.assertTrue(b["detail"].startswith(detail), b["detail"])
        self.assertEqual(self.emu.query("SELECT uuid FROM events LIMIT 1")[0], 200)
        # a kind repeats like any rule; "times" and "every" work with it
        st, _ = self.emu.control("POST", "reset")
        self.emu.control("POST", "faults", {"faults": [{"from_request": 1, "times": 2, "kind": "timeout_504"}]})
        self.assertEqual([self.emu.query("SELECT 1")[0] for _ in range(3)], [504, 504, 200])
        # a bad kind, or a kind with a status, is refused
        for bad in ({"every": True, "kind": "nope"}, {"every": True, "kind": "timeout_504", "status": 500}):
            st, b = self.emu.control("POST", "faults", {"faults": [bad]})
            self.assertEqual(st, 400, bad)
        # plain status rules keep their bodies
        self.emu.control("POST", "faults", {"faults": [{"on_request": 4, "status": 512}]})
        st, b, _ = self.emu.query("SELECT 1")
        self.assertEqual((st, b["type"]), (512, "server_error"))

    def test_int8_and_boolean_columns(self):
        b = self.ok("SELECT id, is_identified, is_deleted FROM raw_persons ORDER BY id, version LIMIT 50000")
        self.assertEqual(b["types"][1:], [["is_identified", "Int8"], ["is_deleted", "Int8"]])
        vals = {(r[1], r[2]) for r in b["results"]}
        self.assertTrue(all(type(x) is int and x in (0, 1) for v in vals for x in v), vals)
        self.assertIn(1, {v[0] for v in vals})
        self.assertIn(1, {v[1] for v in vals})
        b = self.ok("SELECT distinct_id, is_deleted FROM raw_person_distinct_ids WHERE is_deleted = 1 "
                    "ORDER BY distinct_id LIMIT 50000")
        self.assertEqual(b["types"][1], ["is_deleted", "Int8"])
        want = sorted(d["distinct_id"] for d in self.pdis if d["is_deleted"])
        self.assertEqual([r[0] for r in b["results"]], want)
        self.assertTrue(want)
        self.assertTrue(all(r[1] == 1 and type(r[1]) is int for r in b["results"]))
        # Boolean columns stay true/false, and may be null
        path = os.path.join(self.data, "sessions.ndjson")
        with open(path, encoding="utf-8") as fh:
            saved = fh.read()
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"session_id": "null-bounce", "team_id": PROJECT, "distinct_id": "x",
                                     "$start_timestamp": "2026-11-01T00:00:00Z", "$is_bounce": None,
                                     "$end_timestamp": "2026-11-01T00:00:01Z"}) + "\n")
            self.assertEqual(self.emu.control("POST", "reload")[0], 200)
            b = self.ok("SELECT session_id, $is_bounce FROM sessions ORDER BY session_id LIMIT 50000")
            self.assertEqual(b["types"][1], ["$is_bounce", "Nullable(Bool)"])
            got = {r[0]: r[1] for r in b["results"]}
            self.assertIsNone(got.pop("null-bounce"))
            # the generated sessions have every form: true, false, and some null
            self.assertEqual(set(got.values()) - {None}, {True, False})
        finally:
            with open(path, "w", encoding="utf-8") as fh:
                fh.write(saved)
            self.emu.control("POST", "reload")

    def test_team_filter(self):
        other = PROJECT + 1
        for name in ("events", "persons", "pdis", "sessions"):
            self.assertEqual(sum(1 for r in self.all_rows[name] if r["team_id"] == other), N_OTHER_TEAM, name)
        st, h = self.emu.control("GET", "health")
        self.assertEqual(h["team_id"], PROJECT)
        self.assertEqual(h["other_team_rows"], {"events": N_OTHER_TEAM, "raw_persons": N_OTHER_TEAM,
                                                "raw_person_distinct_ids": N_OTHER_TEAM,
                                                "sessions": N_OTHER_TEAM, "raw_groups": 2})
        # whatever the WHERE says, no row of another team comes back
        for table, n in (("events", len(self.events)), ("raw_persons", len(self.persons)),
                         ("raw_person_distinct_ids", len(self.pdis)), ("sessions", len(self.sessions))):
            with self.subTest(table=table):
                b = self.ok("SELECT count(), min(team_id), max(team_id) FROM %s" % table)
                self.assertEqual(b["results"], [[n, PROJECT, PROJECT]])
                b = self.ok("SELECT count() FROM %s WHERE team_id = {t} OR team_id != {t}" % table, {"t": other})
                self.assertEqual(b["results"], [[n]])
                b = self.ok("SELECT count() FROM %s WHERE team_id = {t}" % table, {"t": other})
                self.assertEqual(b["results"], [[0]])
        # the other team's mappings reuse the team's distinct ids: still one row per distinct id here
        shared = {d["distinct_id"] for d in self.all_rows["pdis"] if d["team_id"] == other}
        self.assertTrue(shared & {d["distinct_id"] for d in self.pdis})
        b = self.ok("SELECT distinct_id, person_id FROM raw_person_distinct_ids WHERE distinct_id IN {d} "
                    "ORDER BY distinct_id LIMIT 50000", {"d": sorted(shared)})
        mine = {d["person_id"] for d in self.pdis}
        self.assertTrue(b["results"])
        self.assertTrue(all(r[1] in mine for r in b["results"]))
        other_uuids = [e["uuid"] for e in self.all_rows["events"] if e["team_id"] == other]
        b = self.ok("SELECT count() FROM events WHERE uuid IN {u}", {"u": other_uuids})
        self.assertEqual(b["results"], [[0]])


class TestStrictOptions(unittest.TestCase):
    """--team-id, --max-query-size and --legacy-error-codes on a small data set."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="emu-selftest3-")
        cls.data = os.path.join(cls.tmp, "data")
        subprocess.run([sys.executable, GENERATOR, "--out", cls.data, "--events", "200", "--seed", "4",
                        "--other-team-rows", "30"], check=True, stderr=subprocess.DEVNULL)
        # project 1 whose team is 2: the generator's "other" team
        cls.emu = Emulator(cls.data, ["--project-id", "1", "--team-id", "2", "--max-query-size", "1000",
                                      "--legacy-error-codes"])

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_team_id_option(self):
        st, b, _ = self.emu.query("SELECT count(), min(team_id), max(team_id) FROM events", project=1)
        self.assertEqual((st, b["results"]), (200, [[30, 2, 2]]))
        st, h = self.emu.control("GET", "health")
        self.assertEqual(h["other_team_rows"]["events"], 200)

    def test_max_query_size_option(self):
        text = "SELECT count() FROM events WHERE event IN {e}"
        pad = 1000 - (len(text) - 3) - 4  # ['...'] around the string
        st, _, _ = self.emu.query(text, {"e": ["x" * pad]}, project=1)
        self.assertEqual(st, 200)
        st, b, _ = self.emu.query(text, {"e": ["x" * (pad + 1)]}, project=1)
        self.assertEqual((st, b["detail"]), (500, "Query size exceeded."))

    def test_legacy_error_codes(self):
        for q in ("SELECT team_id AS team_id FROM events", "SELECT 1 FROM nowhere", "SELECT nope FROM events"):
            st, b, _ = self.emu.query(q, project=1)
            self.assertEqual((st, b["type"], b["code"]), (400, "validation_error", "invalid_input"), q)
