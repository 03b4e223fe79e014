"""Self-test: JSONType / JSONExtractString / JSONExtractRaw, if / multiIf / nullIf, and the HogQL the FDW sends
for Postgres's properties ->> 'key' (issue 15), on a few hand-written events whose expected values are written
here by hand from ClickHouse's documented behaviour (see test/emulator/sqljson.py), not computed by the emulator.
Also the aggregates, NULL ordering and keyset cursor the FDW sends, and what PostHog refuses (names, arity)."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from harness import GENERATOR, Emulator

TEAM = 1
U = "00000000-0000-4000-8000-00000000000%d"
PERSON = "00000000-0000-4000-8000-0000000000aa"
# properties as the exact text of the data file (a string there, parsed by the emulator as the JSON it holds)
PROPS_A = ('{"s": "plain", "q": "say \\"hi\\"", "bs": "back\\\\slash", "nl": "line1\\nline2", '
           '"u": "caf\\u00e9 \\u65e5\\u672c \\ud83d\\ude00", "sl": "a/b", "ctl": "x\\u001fy", "ls": "a\\u2028b", '
           '"i": 42, "neg": -7, "big": 9223372036854775808, "f": 1.50, "e": 1e3, "t": true, "fl": false, '
           '"n": null, "o": {"a": 1, "b": [1, "x"]}, "arr": [10, "twenty", {"k": "v"}], "empty": "", '
           '"nulltext": "null", "nested": {"a": {"b": "deep"}}}')
PROPS_B = '{"s": "x", "huge": 18446744073709551616}'  # an integer beyond UInt64: simdjson rejects the document
PROPS_C = '{"s": 5, "arr": []}'
PROPS_D = '{}'
EVENTS = [(1, PROPS_A, "2026-11-05T10:00:00Z"), (2, PROPS_B, "2026-11-05T10:00:00Z"),
          (3, PROPS_C, "2026-11-05T10:00:01Z"), (4, PROPS_D, "2026-11-05T10:00:02Z")]
WHERE = "event = 'json_case'"


def pg_text(doc, *keys):
    """The HogQL the FDW sends for doc ->> k1 (->> k2 ...), keys as {placeholders}."""
    ks = ", ".join("{k%d}" % i for i in range(len(keys)))
    return ("if(JSONType({d}, {k}) = 'String', JSONExtractString({d}, {k}), "
            "nullIf(nullIf(JSONExtractRaw({d}, {k}), ''), 'null'))").format(d=doc, k=ks)


def kv(*keys):
    return {"k%d" % i: k for i, k in enumerate(keys)}


class TestJsonFunctions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="emu-selftest-json-")
        cls.data = os.path.join(cls.tmp, "data")
        subprocess.run([sys.executable, GENERATOR, "--out", cls.data, "--events", "40", "--seed", "4",
                        "--other-team-rows", "0"], check=True, stderr=subprocess.DEVNULL)
        with open(os.path.join(cls.data, "events.ndjson"), "a", encoding="utf-8") as fh:
            for n, props, ts in EVENTS:
                fh.write(json.dumps({"uuid": U % n, "event": "json_case", "properties": props, "timestamp": ts,
                                     "created_at": ts, "team_id": TEAM, "distinct_id": "json-case-%d" % n,
                                     "person_id": PERSON, "elements_chain": ""}) + "\n")
        with open(os.path.join(cls.data, "persons.ndjson"), "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"id": PERSON, "team_id": TEAM, "created_at": "2026-10-01T00:00:00Z",
                                 "properties": '{"plan": "pro", "visits": 3, "tags": ["a"], "gone": null}',
                                 "is_identified": True, "is_deleted": False, "version": 1}) + "\n")
        # the row with an integer beyond 64 bits: as ClickHouse before PR #114379 reads it
        cls.emu = Emulator(cls.data, extra_args=["--json-bigint", "unreadable"])

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def ok(self, q, values=None):
        st, b, _ = self.emu.query(q, values, project=TEAM)
        self.assertEqual(st, 200, b)
        return b

    def err(self, q, values=None, code=None):
        st, b, _ = self.emu.query(q, values, project=TEAM)
        self.assertEqual(st, 400, b)
        self.assertEqual(b["type"], "validation_error")
        if code:
            self.assertEqual(b["code"], code, b)
        return b

    def one(self, expr, values=None, n=1):
        """expr evaluated on event n."""
        v = dict(values or {})
        v["u"] = U % n
        b = self.ok("SELECT %s FROM events WHERE uuid = {u}" % expr, v)
        self.assertEqual(len(b["results"]), 1)
        return b["results"][0][0]

    def uuids(self, where, values=None):
        b = self.ok("SELECT uuid FROM events WHERE %s AND %s ORDER BY uuid" % (WHERE, where), values)
        return [int(r[0][-1]) for r in b["results"]]

    # JSONType: ClickHouse's Enum8 names
    def test_json_type(self):
        cases = {"s": "String", "q": "String", "i": "Int64", "neg": "Int64", "big": "UInt64", "f": "Double",
                 "e": "Double", "t": "Bool", "fl": "Bool", "n": "Null", "missing": "Null", "o": "Object",
                 "arr": "Array", "empty": "String", "nulltext": "String"}
        for k, want in cases.items():
            self.assertEqual(self.one("JSONType(properties, {k})", {"k": k}), want, k)
        # 1-based indexes into arrays (negative from the end) and into an object's members; 0 / too far: Null
        self.assertEqual(self.one("JSONType(properties, 'arr', 2)"), "String")
        self.assertEqual(self.one("JSONType(properties, 'arr', -1)"), "Object")
        self.assertEqual(self.one("JSONType(properties, 'arr', 0)"), "Null")
        self.assertEqual(self.one("JSONType(properties, 'arr', 4)"), "Null")
        self.assertEqual(self.one("JSONType(properties, 'o', 2)"), "Array")
        self.assertEqual(self.one("JSONType(properties, 'nested', 'a', 'b')"), "String")
        self.assertEqual(self.one("JSONType(properties, 's', 'x')"), "Null")  # a path through a string
        self.assertEqual(self.one("JSONType(properties)"), "Object")
        self.assertEqual(self.one("JSONType(properties, 's')", n=2), "Null")  # the document does not parse
        self.assertEqual(self.one("JSONType(properties, 's')", n=3), "Int64")
        b = self.ok("SELECT JSONType(properties, 's') FROM events WHERE uuid = {u}", {"u": U % 1})
        self.assertEqual(b["types"][0][1], "Enum8('Array' = 91, 'Object' = 123, 'String' = 34, 'Int64' = 105, "
                                           "'UInt64' = 117, 'Double' = 100, 'Bool' = 98, 'Null' = 0)")
        self.assertEqual(self.one("toString(JSONType(properties, 'i'))"), "Int64")

    def test_json_extract_string(self):
        cases = {"s": "plain", "q": 'say "hi"', "bs": "back\\slash", "nl": "line1\nline2",
                 "u": "caf\u00e9 \u65e5\u672c \U0001F600", "sl": "a/b", "ctl": "x\x1fy", "ls": "a\u2028b",
                 "empty": "", "nulltext": "null", "n": "", "missing": "",
                 # a value that is not a string: its JSONExtractRaw text (ClickHouse >= 21.11)
                 "i": "42", "f": "1.5", "t": "true", "o": '{"a":1,"b":[1,"x"]}'}
        for k, want in cases.items():
            self.assertEqual(self.one("JSONExtractString(properties, {k})", {"k": k}), want, k)
        self.assertEqual(self.one("JSONExtractString(properties, 'nested', 'a', 'b')"), "deep")
        self.assertEqual(self.one("JSONExtractString(properties, 'arr', 2)"), "twenty")
        self.assertEqual(self.one("JSONExtractString(properties, 's')", n=2), "")

    def test_json_extract_raw(self):
        cases = {"s": '"plain"', "q": '"say \\"hi\\""', "bs": '"back\\\\slash"', "nl": '"line1\\nline2"',
                 "u": '"caf\u00e9 \u65e5\u672c \U0001F600"', "sl": '"a/b"', "ctl": '"x\\u001Fy"',
                 "ls": '"a\\u2028b"', "i": "42", "neg": "-7", "big": "9223372036854775808", "f": "1.5",
                 "e": "1000", "t": "true", "fl": "false", "n": "null", "missing": "",
                 "o": '{"a":1,"b":[1,"x"]}', "arr": '[10,"twenty",{"k":"v"}]', "empty": '""'}
        for k, want in cases.items():
            self.assertEqual(self.one("JSONExtractRaw(properties, {k})", {"k": k}), want, k)
        self.assertEqual(self.one("JSONExtractRaw(properties, 'arr', 1)"), "10")
        self.assertEqual(self.one("JSONExtractRaw(properties, 'arr', -1)"), '{"k":"v"}')
        self.assertEqual(self.one("JSONExtractRaw(properties, 'nested')"), '{"a":{"b":"deep"}}')
        self.assertEqual(self.one("JSONExtractRaw(properties, 'arr')", n=3), "[]")
        self.assertEqual(self.one("JSONExtractRaw(properties, 's')", n=2), "")

    # the FDW's translation of ->>
    def test_pg_text_select(self):
        cases = {"s": "plain", "q": 'say "hi"', "bs": "back\\slash", "nl": "line1\nline2",
                 "u": "caf\u00e9 \u65e5\u672c \U0001F600", "ctl": "x\x1fy", "i": "42", "big": "9223372036854775808",
                 "f": "1.5", "e": "1000", "t": "true", "fl": "false", "n": None, "missing": None,
                 "o": '{"a":1,"b":[1,"x"]}', "arr": '[10,"twenty",{"k":"v"}]', "empty": "", "nulltext": "null"}
        for k, want in cases.items():
            self.assertEqual(self.one(pg_text("properties", k), kv(k)), want, k)
        self.assertEqual(self.one(pg_text("properties", "nested", "a", "b"), kv("nested", "a", "b")), "deep")
        self.assertEqual(self.one(pg_text("properties", "nested", "a"), kv("nested", "a")), '{"b":"deep"}')
        self.assertIsNone(self.one(pg_text("properties", "nested", "x", "b"), kv("nested", "x", "b")))
        self.assertIsNone(self.one(pg_text("properties", "s"), kv("s"), n=2))
        self.assertEqual(self.one(pg_text("properties", "s"), kv("s"), n=3), "5")
        b = self.ok("SELECT %s AS v FROM events WHERE uuid = {u}" % pg_text("properties", "s"),
                    dict(kv("s"), u=U % 1))
        self.assertEqual(b["types"][0][1], "Nullable(String)")
        # person.properties on events
        self.assertEqual(self.one(pg_text("person.properties", "plan"), kv("plan")), "pro")
        self.assertEqual(self.one(pg_text("person.properties", "visits"), kv("visits")), "3")
        self.assertEqual(self.one(pg_text("person.properties", "tags"), kv("tags")), '["a"]')
        self.assertIsNone(self.one(pg_text("person.properties", "gone"), kv("gone")))

    def test_pg_text_where(self):
        s = pg_text("properties", "s")
        v = kv("s")
        self.assertEqual(self.uuids("%s = {x}" % s, dict(v, x="plain")), [1])
        self.assertEqual(self.uuids("%s != {x}" % s, dict(v, x="plain")), [2, 3, 4])  # HogQL: NULL != x holds
        self.assertEqual(self.uuids("%s IS NULL" % s, v), [2, 4])
        self.assertEqual(self.uuids("%s IS NOT NULL" % s, v), [1, 3])
        self.assertEqual(self.uuids("%s LIKE {x}" % s, dict(v, x="pl%")), [1])
        self.assertEqual(self.uuids("%s ILIKE {x}" % s, dict(v, x="PL_IN")), [1])
        self.assertEqual(self.uuids("%s NOT LIKE {x}" % s, dict(v, x="pl%")), [2, 3, 4])
        self.assertEqual(self.uuids("%s IN {x}" % s, dict(v, x=["plain", "5"])), [1, 3])
        self.assertEqual(self.uuids("%s > {x}" % s, dict(v, x="5")), [1])
        q = pg_text("properties", "q")
        self.assertEqual(self.uuids("%s = {x}" % q, dict(kv("q"), x='say "hi"')), [1])
        self.assertEqual(self.uuids("JSONType(properties, 's') = 'Int64'"), [3])
        self.assertEqual(self.uuids("JSONType(properties, 's') IN ('String', 'Int64')"), [1, 3])
        self.assertEqual(self.uuids("JSONType(properties, 's') != 'Null'"), [1, 3])
        # Enum8 compares by its numbers: Null 0 < String 34 < Array 91 < Int64 105
        self.assertEqual(self.uuids("JSONType(properties, 's') < 'Array'"), [1, 2, 4])
        self.assertEqual(self.uuids("nullIf(JSONType(properties, 's'), 'Null') IS NULL"), [2, 4])

    def test_pg_text_group_order(self):
        s = pg_text("properties", "s")
        b = self.ok("SELECT %s AS v, count() FROM events WHERE %s GROUP BY v ORDER BY v" % (s, WHERE), kv("s"))
        self.assertEqual(b["results"], [["5", 1], ["plain", 1], [None, 2]])  # NULLs last (ClickHouse)
        b = self.ok("SELECT uuid FROM events WHERE %s ORDER BY isNull(%s) DESC, %s, uuid" % (WHERE, s, s), kv("s"))
        self.assertEqual([int(r[0][-1]) for r in b["results"]], [2, 4, 3, 1])
        b = self.ok("SELECT JSONType(properties, 's') AS t, count() FROM events WHERE %s GROUP BY t ORDER BY t"
                    % WHERE)
        self.assertEqual(b["results"], [["Null", 2], ["String", 1], ["Int64", 1]])
        b = self.ok("SELECT uuid FROM events WHERE %s ORDER BY JSONType(properties, 'arr') DESC, uuid" % WHERE)
        self.assertEqual([int(r[0][-1]) for r in b["results"]], [1, 3, 2, 4])  # Array 91 > Null 0

    def test_conditionals(self):
        self.assertEqual(self.one("if(1 = 1, 'a', 'b')"), "a")
        self.assertEqual(self.one("IF(NULL, 'a', 'b')"), "b")  # a NULL condition takes the else branch
        self.assertEqual(self.one("if(0, 1, 2.5)"), 2.5)
        self.assertEqual(self.one("if(1, 1, 2.5)"), 1.0)
        self.assertIsNone(self.one("if(1, NULL, 'x')"))
        self.assertEqual(self.one("multiIf(0, 'a', 1, 'b', 'c')"), "b")
        self.assertEqual(self.one("multiIf(0, 'a', 0, 'b', 'c')"), "c")
        self.assertIsNone(self.one("nullIf('a', 'a')"))
        self.assertEqual(self.one("NULLIF('a', 'b')"), "a")
        self.assertEqual(self.one("nullif(3, NULL)"), 3)
        b = self.ok("SELECT if(1, 1, 2.5), nullIf('a', 'b'), multiIf(1, 'x', NULL) FROM events WHERE uuid = {u}",
                    {"u": U % 1})
        self.assertEqual([t[1] for t in b["types"]], ["Float64", "Nullable(String)", "Nullable(String)"])

    # aggregates and cursors the FDW sends
    def test_fdw_aggregates(self):
        agg = ("SELECT if(count(team_id) > 0, sum(team_id), NULL), if(count(team_id) > 0, min(team_id), NULL), "
               "if(count(team_id) > 0, max(team_id), NULL), if(count(team_id) > 0, avg(team_id), NULL), "
               "count(DISTINCT distinct_id), count(DISTINCT person_id) FROM events WHERE event = {e}")
        b = self.ok(agg, {"e": "json_case"})
        self.assertEqual(b["results"], [[4 * TEAM, TEAM, TEAM, float(TEAM), 4, 1]])
        b = self.ok(agg, {"e": "no such event"})
        self.assertEqual(b["results"], [[None, None, None, None, 0, 0]])
        b = self.ok("SELECT count(), min(%s) FROM events WHERE %s" % (pg_text("properties", "s"), WHERE), kv("s"))
        self.assertEqual(b["results"], [[4, "5"]])

    def test_keyset_cursor(self):
        q = ("SELECT uuid FROM events WHERE %s AND (timestamp, uuid) > (toDateTime64({c1}, 6, 'UTC'), {c2}) "
             "ORDER BY timestamp, uuid LIMIT 10" % WHERE)
        b = self.ok(q, {"c1": "2026-11-05 10:00:00.000000", "c2": U % 1})
        self.assertEqual([int(r[0][-1]) for r in b["results"]], [2, 3, 4])
        b = self.ok("SELECT count() FROM events WHERE %s AND (timestamp, uuid) > (toDateTime64({c1}, 6, 'UTC'), "
                    "{c2})" % WHERE, {"c1": "2026-11-05 10:00:00.000000", "c2": U % 2})
        self.assertEqual(b["results"], [[2]])

    # what PostHog refuses
    def test_refusals(self):
        q = "hogql_query_error"
        d = self.err("SELECT JSONType() FROM events LIMIT 1", code=q)["detail"]
        self.assertEqual(d, "Function 'JSONType' expects at least 1 argument, found 0")
        self.assertEqual(self.err("SELECT JSONExtractRaw() FROM events LIMIT 1", code=q)["detail"],
                         "Function 'JSONExtractRaw' expects at least 1 argument, found 0")
        self.assertEqual(self.err("SELECT if(1, 2) FROM events LIMIT 1", code=q)["detail"],
                         "Function 'if' expects 3 arguments, found 2")
        self.assertEqual(self.err("SELECT nullIf(1) FROM events LIMIT 1", code=q)["detail"],
                         "Function 'nullIf' expects 2 arguments, found 1")
        self.assertEqual(self.err("SELECT multiIf(1, 2) FROM events LIMIT 1", code=q)["detail"],
                         "Function 'multiIf' expects at least 3 arguments, found 2")
        self.err("SELECT multiIf(1, 2, 0, 3) FROM events LIMIT 1")  # ClickHouse: an even count
        for name in ("jsontype", "JSONTYPE", "jsonExtractString", "JsonExtractRaw", "multiif", "fooBar"):
            d = self.err("SELECT %s(properties, 'a') FROM events LIMIT 1" % name, code=q)["detail"]
            self.assertTrue(d.startswith("Unsupported function call '%s(...)'" % name), d)
        self.err("SELECT JSONType(properties, 's') FROM events WHERE JSONType(properties, 's') = 'bogus'")
        self.err("SELECT JSONExtractRaw(properties, 1.5) FROM events LIMIT 1")
        self.err("SELECT JSONExtractRaw(team_id, 'a') FROM events LIMIT 1")
        self.err("SELECT uuid FROM events WHERE JSONType(properties, 's') LIKE 'S%'")
        self.err("SELECT uuid FROM events WHERE JSONType(properties, 's')")
        self.err("SELECT if('x', 1, 2) FROM events LIMIT 1")
        self.err("SELECT if(1, 'a', 2) FROM events LIMIT 1")


class TestJsonBigintAsFloat(TestJsonFunctions.__base__):
    """The default, as current ClickHouse (PR #114379): an integer beyond 64 bits is a Float64, the document readable."""

    @classmethod
    def setUpClass(cls):
        TestJsonFunctions.setUpClass.__func__(cls)
        cls.emu.stop()
        cls.emu = Emulator(cls.data)

    @classmethod
    def tearDownClass(cls):
        TestJsonFunctions.tearDownClass.__func__(cls)

    ok = TestJsonFunctions.ok
    one = TestJsonFunctions.one

    def test_readable(self):
        self.assertEqual(self.one("JSONType(properties, 's')", n=2), "String")
        self.assertEqual(self.one("JSONExtractString(properties, 's')", n=2), "x")
        self.assertEqual(self.one("JSONType(properties, 'huge')", n=2), "Double")


if __name__ == "__main__":
    unittest.main()
