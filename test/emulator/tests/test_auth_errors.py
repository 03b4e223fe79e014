"""Self-test: authentication, routing, request validation and the HogQL the emulator refuses."""

import json

from harness import FORBIDDEN, KEY, PROJECT, Base


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
            "SELECT uuid FROM events WHERE team_id LIKE '%a'",
            "SELECT event + 1 FROM events",
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
                # PostHog's code names: hogql_syntax_error, hogql_query_error (unknown table or field),
                # hogql_error (any other HogQL error)
                self.assertEqual(b["type"], "validation_error")
                self.assertIn(b["code"], ("hogql_error", "hogql_syntax_error", "hogql_query_error"))
                self.assertTrue(b["detail"])
