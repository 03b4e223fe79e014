"""Self-test: what the foreign data wrapper pushes down (issue 15), evaluated with ClickHouse/HogQL semantics and
checked against answers computed here from the generated data: comparisons of every type, IN / NOT IN, NULL
handling (HogQL's two-valued comparisons), LIKE / ILIKE, property access (quoted keys, nested, properties[{k}],
person.properties), aggregates with GROUP BY / HAVING / ORDER BY and their empty-input values and types,
NULL ordering, the functions the FDW may send, the persons / person_distinct_ids / groups tables, and what
PostHog refuses."""

import json
import os
from datetime import datetime, timezone

from harness import PROJECT, Base, read_ndjson, us_of


def raw_text(v):
    """What a property access returns (ClickHouse JSONExtractRaw, quotes trimmed), written from the spec."""
    if v is None:
        return None
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)[1:-1]
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def latest(rows, key, order):
    best = {}
    for r in rows:
        k = key(r)
        if k not in best or order(r) > order(best[k]):
            best[k] = r
    return best


class TestPushdown(Base):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.groups_all = read_ndjson(os.path.join(cls.data, "groups.ndjson"))
        raw = [g for g in cls.groups_all if g["team_id"] == PROJECT]
        cls.groups = list(latest(raw, lambda g: (g["index"], g["key"]), lambda g: g["updated_at"]).values())
        cls.gen = [e for e in cls.events if e["event"] != "bulk_event"]

    def count(self, where, values=None, table="events"):
        return self.ok("SELECT count() FROM %s WHERE %s" % (table, where), values)["results"][0][0]

    # 1. comparisons
    def test_comparisons_every_type(self):
        ev = self.events
        e0 = self.gen[17]
        self.assertEqual(self.count("event = {e}", {"e": e0["event"]}), sum(1 for e in ev if e["event"] == e0["event"]))
        self.assertEqual(self.count("event != {e}", {"e": e0["event"]}), sum(1 for e in ev if e["event"] != e0["event"]))
        self.assertEqual(self.count("event < {e}", {"e": "$p"}),
                         sum(1 for e in ev if e["event"].encode() < b"$p"))  # bytewise
        self.assertEqual(self.count("team_id >= {t}", {"t": PROJECT}), len(ev))
        self.assertEqual(self.count("team_id > {t}", {"t": PROJECT + 0.5}), 0)
        self.assertEqual(self.count("uuid = {u}", {"u": e0["uuid"]}), 1)
        self.assertEqual(self.count("uuid IN {u}", {"u": [e0["uuid"], self.gen[3]["uuid"]]}), 2)
        t = us_of(e0["timestamp"])
        ts = datetime.fromtimestamp(t // 10 ** 6, timezone.utc).strftime("%Y-%m-%d %H:%M:%S") + ".%06d" % (t % 10 ** 6)
        self.assertEqual(self.count("timestamp >= toDateTime64({t}, 6, 'UTC')", {"t": ts}),
                         sum(1 for e in ev if us_of(e["timestamp"]) >= t))
        self.assertEqual(self.count("timestamp < toDateTime64({t}, 6, 'UTC')", {"t": ts}),
                         sum(1 for e in ev if us_of(e["timestamp"]) < t))
        names = ["$pageview", "signed_up"]
        n_in = sum(1 for e in ev if e["event"] in names)
        self.assertEqual(self.count("event IN {l}", {"l": names}), n_in)
        self.assertEqual(self.count("event IN ({a}, {b})", {"a": names[0], "b": names[1]}), n_in)
        self.assertEqual(self.count("event IN tuple({a}, {b})", {"a": names[0], "b": names[1]}), n_in)
        self.assertEqual(self.count("event NOT IN {l}", {"l": names}), len(ev) - n_in)
        self.assertEqual(self.count("NOT (event IN {l}) AND team_id = {t}", {"l": names, "t": PROJECT}), len(ev) - n_in)
        self.assertEqual(self.count("event = {a} OR event = {b}", {"a": names[0], "b": names[1]}), n_in)
        # Bool and Float columns (sessions), nullable
        s = self.sessions
        self.assertEqual(self.count("$is_bounce = {b}", {"b": True}, "sessions"),
                         sum(1 for x in s if x.get("$is_bounce") is True))
        self.assertEqual(self.count("$is_bounce", None, "sessions"), sum(1 for x in s if x.get("$is_bounce") is True))
        self.assertEqual(self.count("$is_bounce IS NULL", None, "sessions"),
                         sum(1 for x in s if x.get("$is_bounce") is None))
        self.assertEqual(self.count("isNull($vitals_lcp)", None, "sessions"),
                         sum(1 for x in s if x.get("$vitals_lcp") is None))
        self.assertEqual(self.count("$vitals_lcp > {f}", {"f": 1.5}, "sessions"),
                         sum(1 for x in s if x.get("$vitals_lcp") is not None and x["$vitals_lcp"] > 1.5))

    def test_null_semantics(self):
        """HogQL comparisons never give NULL: with a NULL operand = and < are false, != is true; NOT flips."""
        n = len(self.events)
        self.assertEqual(self.count("properties.nope = {v}", {"v": "x"}), 0)
        self.assertEqual(self.count("properties.nope != {v}", {"v": "x"}), n)
        self.assertEqual(self.count("NOT (properties.nope = {v})", {"v": "x"}), n)
        self.assertEqual(self.count("properties.nope < {v}", {"v": "x"}), 0)
        self.assertEqual(self.count("NOT (properties.nope < {v})", {"v": "x"}), n)
        self.assertEqual(self.count("properties.nope = NULL"), n)  # isNull()
        self.assertEqual(self.count("properties.nope != NULL"), 0)  # isNotNull()
        self.assertEqual(self.count("properties.nope = {v}", {"v": None}), n)
        self.assertEqual(self.count("properties.nope IN {l}", {"l": ["a"]}), 0)
        self.assertEqual(self.count("properties.nope NOT IN {l}", {"l": ["a"]}), n)
        # NULL in the list is left out of the set (transform_null_in = 0)
        self.assertEqual(self.count("event NOT IN ({a}, NULL)", {"a": "$pageview"}),
                         sum(1 for e in self.events if e["event"] != "$pageview"))
        s = self.sessions
        self.assertEqual(self.count("$vitals_lcp > 0 OR NOT ($vitals_lcp > 0)", None, "sessions"), len(s))
        # two nullable columns: NULL = NULL is true
        self.assertEqual(self.count("$entry_utm_source = $entry_utm_term", None, "sessions"),
                         sum(1 for x in s if x.get("$entry_utm_source") == x.get("$entry_utm_term")))

    # 2. LIKE
    def test_like(self):
        cases = [  # (text, op, pattern, result) -- ClickHouse's like()/ilike()
            ("Hello", "LIKE", "H%", 1), ("Hello", "LIKE", "h%", 0), ("Hello", "ILIKE", "h%", 1),
            ("Hello", "LIKE", "H_llo", 1), ("Hello", "LIKE", "H_lo", 0), ("50%", "LIKE", "50\\%", 1),
            ("505", "LIKE", "50\\%", 0), ("a_c", "LIKE", "a\\_c", 1), ("abc", "LIKE", "a\\_c", 0),
            ("a\\b", "LIKE", "a\\\\b", 1), ("a\\b", "LIKE", "a\\b", 1), ("a\nb", "LIKE", "a%b", 1),
            ("École", "ILIKE", "école", 1), ("École", "LIKE", "école", 0), ("ÉCOLE", "ILIKE", "%cole", 1),
            ("é", "LIKE", "_", 1), ("", "LIKE", "%", 1), ("x", "LIKE", "", 0), ("abc", "NOT LIKE", "a%", 0),
            ("abc", "NOT ILIKE", "A%", 0), ("abc", "NOT ILIKE", "b%", 1), ("注文完了 ✅", "LIKE", "%✅", 1),
        ]
        for text, op, pattern, want in cases:
            with self.subTest(text=text, op=op, pattern=pattern):
                b = self.ok("SELECT {s} %s {p}" % op, {"s": text, "p": pattern})
                self.assertEqual(b["results"], [[want]])
        ev = self.events
        self.assertEqual(self.count("event LIKE {p}", {"p": "$page%"}), sum(1 for e in ev if e["event"].startswith("$page")))
        self.assertEqual(self.count("event ILIKE {p}", {"p": "%PAGEVIEW"}),
                         sum(1 for e in ev if e["event"].lower().endswith("pageview")))
        self.assertEqual(self.count("event NOT LIKE {p}", {"p": "$page%"}),
                         sum(1 for e in ev if not e["event"].startswith("$page")))
        # on a NULL property: LIKE false, NOT LIKE true
        self.assertEqual(self.count("properties.nope LIKE {p}", {"p": "%"}), 0)
        self.assertEqual(self.count("properties.nope NOT ILIKE {p}", {"p": "%"}), len(ev))

    # 3. property access
    def test_property_access(self):
        e = next(x for x in self.gen if isinstance(x["properties"].get("$browser"), str))
        b = self.ok("SELECT properties.$browser, properties.`$browser`, properties.\"$browser\", properties[{k}], "
                    "properties.nope FROM events WHERE uuid = {u}", {"k": "$browser", "u": e["uuid"]})
        self.assertEqual(b["results"], [[e["properties"]["$browser"]] * 4 + [None]])
        self.assertEqual(b["types"][0], ["$browser", "Nullable(String)"])
        # every kind of value, through properties[{k}] and nested access
        for g in self.groups:
            with self.subTest(key=g["key"]):
                p = g["properties"]
                b = self.ok("SELECT properties.name, properties[{k}], properties.paying, properties.industry, "
                            "properties.address, properties.address.city, properties[{a}][{c}], properties.arr, "
                            "properties.name.x FROM groups WHERE index = {i} AND key = {key}",
                            {"k": "employees", "a": "address", "c": "city", "i": g["index"], "key": g["key"]})
                self.assertEqual(b["results"], [[raw_text(p["name"]), raw_text(p.get("employees")),
                                                 raw_text(p["paying"]), raw_text(p["industry"]),
                                                 raw_text(p["address"]), raw_text(p["address"]["city"]),
                                                 raw_text(p["address"]["city"]), raw_text(p["arr"]), None]])
                self.assertEqual(b["columns"][5], "address__city")
        # a string with quotes keeps its JSON escapes
        b = self.ok("SELECT properties.name FROM groups WHERE key = 'company_7' OR key = 'proj-7'")
        self.assertEqual(b["results"], [["O'Reilly \\\"Q\\\""]])
        # person.properties on events
        owner = {p["id"]: p for p in latest([p for p in self.persons], lambda p: p["id"], lambda p: p["version"]).values()
                 if not p.get("is_deleted")}
        e = next(x for x in self.gen if x.get("person_id") in owner)
        b = self.ok("SELECT person.properties.email, person.id FROM events WHERE uuid = {u}", {"u": e["uuid"]})
        want = owner[e["person_id"]]["properties"]
        self.assertEqual(b["results"], [[raw_text(want.get("email")), e["person_id"]]])
        # a key that is not a constant, and [0]
        self.assertEqual(self.err(400, "SELECT properties[event] FROM events LIMIT 1")["code"], "hogql_error")
        self.assertEqual(self.err(400, "SELECT properties[0] FROM events LIMIT 1")["detail"],
                         "SQL indexes start from one, not from zero. E.g: array[1]")

    # 4. aggregates
    def test_aggregates(self):
        ev = self.events
        by = {}
        for e in ev:
            by.setdefault(e["event"], []).append(e)
        b = self.ok("SELECT event AS e, count() AS n, count(DISTINCT distinct_id), sum(team_id), avg(team_id), "
                    "min(timestamp), max(uuid) FROM events GROUP BY e HAVING n > {m} ORDER BY n DESC, e LIMIT 5",
                    {"m": 10})
        self.assertEqual([t[1] for t in b["types"]], ["String", "UInt64", "UInt64", "Int64", "Float64",
                                                      "DateTime64(6, 'America/New_York')", "UUID"])
        want = sorted(((k, len(v)) for k, v in by.items() if len(v) > 10), key=lambda kv: (-kv[1], kv[0]))[:5]
        self.assertEqual([r[:2] for r in b["results"]], [list(w) for w in want])
        for r in b["results"]:
            rows = by[r[0]]
            self.assertEqual(r[2], len({x["distinct_id"] for x in rows}))
            self.assertEqual(r[3], PROJECT * len(rows))
            self.assertEqual(r[4], float(PROJECT))
            self.assertIsInstance(r[1], int)  # UInt64 as a JSON number
        # GROUP BY a property access, ORDER BY an aggregate
        b = self.ok("SELECT properties.$browser AS br, count() FROM events GROUP BY br ORDER BY count() DESC, br LIMIT 100")
        cnt = {}
        for e in ev:
            cnt[raw_text(e["properties"].get("$browser"))] = cnt.get(raw_text(e["properties"].get("$browser")), 0) + 1
        self.assertEqual(sum(r[1] for r in b["results"]), len(ev))
        self.assertEqual({r[0]: r[1] for r in b["results"]}, cnt)
        # empty input: count 0, sum 0, avg nan (null), min/max the type's default; NULL for Nullable arguments
        b = self.ok("SELECT count(), count(properties.x), sum(team_id), avg(team_id), min(timestamp), max(event), "
                    "min(uuid), max(team_id) FROM events WHERE event = {e}", {"e": "no such event"})
        self.assertEqual(b["results"], [[0, 0, 0, None, "1969-12-31T19:00:00-05:00", "", "00000000-0000-0000-0000-000000000000", 0]])
        b = self.ok("SELECT sum($vitals_lcp), avg($vitals_lcp), min($vitals_lcp) FROM sessions WHERE session_id = {s}",
                    {"s": "none"})
        self.assertEqual(b["results"], [[None, None, None]])
        self.assertEqual([t[1] for t in b["types"]], ["Nullable(Float64)", "Nullable(Float64)", "Nullable(Float64)"])
        b = self.ok("SELECT event, count() FROM events WHERE event = {e} GROUP BY event", {"e": "no such event"})
        self.assertEqual(b["results"], [])
        # sum over a String, an aggregate in WHERE: refused
        self.err(400, "SELECT sum(event) FROM events")
        self.err(400, "SELECT event FROM events WHERE count() > 1 GROUP BY event")

    # 5. ordering
    def test_null_ordering_and_collation(self):
        s = self.sessions
        vals = [x.get("$entry_utm_source") for x in s]
        self.assertIn(None, vals)
        for clause in ("ASC", "DESC", "ASC NULLS FIRST", "DESC NULLS FIRST", "DESC NULLS LAST"):
            with self.subTest(clause=clause):
                b = self.ok("SELECT $entry_utm_source AS u FROM sessions ORDER BY u %s, session_id LIMIT 50000" % clause)
                got = [r[0] for r in b["results"]]
                non_null = sorted((v for v in vals if v is not None), key=lambda v: v.encode("utf-8"),
                                  reverse=clause.startswith("DESC"))
                # NULLS FIRST/LAST is accepted but dropped by PostHog's parser: NULLs always last
                self.assertEqual(got, non_null + [None] * vals.count(None))

    # 6. functions
    def test_functions(self):
        b = self.ok("SELECT lower({s}), upper({s}), lowerUTF8({s}), upperUTF8({s}), length({s}), lengthUTF8({s}), "
                    "coalesce(NULL, {s}), ifNull(NULL, 1), toString(7), 7 / 2, 7 - 2 * 3, 7 % 3, -2 + 1.5, 1 / 0",
                    {"s": "ÀbC é"})
        self.assertEqual(b["results"], [["Àbc é", "ÀBC é", "àbc é", "ÀBC É", 7, 5, "ÀbC é", 1, "7", 3.5, 1, 1, -0.5, None]])
        self.assertEqual([t[1] for t in b["types"]][4:6], ["UInt64", "UInt64"])
        self.assertEqual(self.count("lower(event) = {e}", {"e": "$pageview"}),
                         sum(1 for e in self.events if e["event"].lower() == "$pageview"))
        self.err(400, "SELECT now64() FROM events LIMIT 1")

    # 7. tables
    def test_tables(self):
        b = self.ok("SELECT index, key, team_id, created_at, updated_at, properties FROM groups ORDER BY index, key")
        self.assertEqual([t[1] for t in b["types"]], ["UInt8", "String", "Int64", "DateTime64(6, 'America/New_York')",
                                                      "DateTime('America/New_York')", "String"])
        want = sorted(self.groups, key=lambda g: (g["index"], g["key"]))
        self.assertEqual([(r[0], r[1], json.loads(r[5])) for r in b["results"]],
                         [(g["index"], g["key"], g["properties"]) for g in want])
        self.assertEqual(self.ok("SELECT count() FROM raw_groups")["results"],
                         [[sum(1 for g in self.groups_all if g["team_id"] == PROJECT)]])
        persons = [p for p in latest(self.persons, lambda p: p["id"], lambda p: p["version"]).values()
                   if not p.get("is_deleted")]
        b = self.ok("SELECT id, is_identified, properties, created_at, team_id FROM persons ORDER BY id LIMIT 50000")
        self.assertEqual(len(b["results"]), len(persons))
        self.assertEqual([t[1] for t in b["types"]][:2], ["UUID", "Int8"])
        pm = {p["id"]: p for p in persons}
        for r in b["results"]:
            self.assertEqual(json.loads(r[2]), pm[r[0]]["properties"])
            self.assertEqual(r[1], 1 if pm[r[0]].get("is_identified") else 0)
        pdis = [m for m in latest(self.pdis, lambda m: m["distinct_id"], lambda m: m["version"]).values()
                if not m.get("is_deleted")]
        b = self.ok("SELECT distinct_id, person_id FROM person_distinct_ids ORDER BY distinct_id LIMIT 50000")
        self.assertEqual(sorted(map(tuple, b["results"])), sorted((m["distinct_id"], m["person_id"]) for m in pdis))

    # what PostHog refuses
    def test_refused(self):
        for q in ("SELECT event FROM events WHERE team_id LIKE '1'",       # like() of a number
                  "SELECT event FROM events WHERE event + 1 = 2",           # plus() of a string
                  "SELECT event FROM events WHERE timestamp LIKE '2026%'",
                  "SELECT avg(event) FROM events",
                  "SELECT event FROM events WHERE event = 1 2",
                  "SELECT event FROM events WHERE event LIKE"):
            with self.subTest(q=q):
                b = self.err(400, q)
                self.assertEqual(b["type"], "validation_error")
