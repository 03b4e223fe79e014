"""One HTTP exchange: routing, the control endpoints, the query endpoint with authentication, validation and
faults applied, and the request log."""

import gzip
import json
import re
import socket
import sqlite3
import ssl
import sys
import time
import traceback
from http.server import BaseHTTPRequestHandler

from errors import ApiError
from faults import REASONS, fault_error, gzip_bomb
from query import encode_json, now_rfc3339, response_body, run_query
from schema_query import answer as schema_answer
from store import LoadError


QUERY_PATH_RE = re.compile(r"^/api/projects/([^/]+)/query/?$")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "posthog-emulator/1.0"
    sys_version = ""

    def version_string(self):
        return self.server_version

    def log_message(self, format, *args):  # silence the default access log (we log our own lines)
        pass

    def log_request(self, code="-", size="-"):
        pass

    # -- plumbing
    def read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            parts = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:
                        l2 = self.rfile.readline(65537)
                        if l2 in (b"\r\n", b"\n", b""):
                            break
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(parts)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def wants_gzip(self):
        ae = self.headers.get("Accept-Encoding") or ""
        for part in ae.split(","):
            bits = [b.strip() for b in part.split(";")]
            if bits[0].lower() in ("gzip", "x-gzip", "*"):
                q = 1.0
                for b in bits[1:]:
                    if b.lower().startswith("q="):
                        try:
                            q = float(b[2:])
                        except ValueError:
                            q = 0
                if q > 0:
                    return True
        return False

    def send_bytes(self, status, body, headers=None, truncate=False, compress=True,
                   content_type="application/json"):
        if compress and self.wants_gzip() and body:
            body = gzip.compress(body, compresslevel=self.server.cfg.gzip_level)
            enc = True
        else:
            enc = False
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", content_type)
        if enc:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Vary", "Accept-Encoding")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if truncate:
            self.send_header("Connection", "close")
        self.end_headers()
        if truncate:
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            self.abort_connection()
            return len(body)
        self.wfile.write(body)
        return len(body)

    def send_obj(self, status, obj, headers=None, **kw):
        return self.send_bytes(status, encode_json(obj), headers, **kw)

    def abort_connection(self):
        self.close_connection = True
        try:
            self.wfile.flush()
        except Exception:
            pass
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except Exception:
            pass

    def log_line(self, status, rows="-", ms=0.0, extra=""):
        # the query string is left out: a client could put a key there (PostHog accepts personal_api_key)
        path = self.path.split("?", 1)[0]
        self.server.log("%s %s %s rows=%s ms=%.1f%s" % (self.command, path, status, rows, ms, extra))

    # -- dispatch
    def do_GET(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def dispatch(self):
        t0 = time.monotonic()
        path = self.path.split("?", 1)[0]
        try:
            if path.startswith("/_emulator/"):
                status = self.control(path)
                self.log_line(status, ms=(time.monotonic() - t0) * 1000)
                return
            m = QUERY_PATH_RE.match(path)
            if m and self.command == "POST":
                self.query_endpoint(m.group(1), t0)
                return
            self.read_body()  # keep the connection usable
            if m:
                err = ApiError(405, "invalid_request", "method_not_allowed",
                               'Method "%s" not allowed.' % self.command)
            else:
                err = ApiError(404, "invalid_request", "not_found", "Not found.")
            self.send_obj(err.status, err.body(), compress=False)
            self.log_line(err.status, ms=(time.monotonic() - t0) * 1000)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True

    # -- control endpoints
    def control(self, path):
        srv = self.server
        body = self.read_body()
        cmd = self.command
        try:
            data = json.loads(body) if body.strip() else {}
        except ValueError:
            self.send_obj(400, {"ok": False, "error": "invalid JSON body"}, compress=False)
            return 400
        if path == "/_emulator/health" and cmd == "GET":
            snap = srv.store.current
            self.send_obj(200, {"ok": True, "tables": snap.counts, "data": srv.store.data_dir,
                                "team_id": srv.store.team_id, "other_team_rows": snap.other_team,
                                "delayed_rows": snap.delayed}, compress=False)
            return 200
        if path == "/_emulator/requests" and cmd == "GET":
            with srv.req_lock:
                log = list(srv.requests)
            self.send_obj(200, log, compress=False)
            return 200
        if path == "/_emulator/reset" and cmd == "POST":
            with srv.req_lock:
                srv.requests = []
                srv.counter = 0
            srv.faults.clear()
            srv.limits.reset()
            self.send_obj(200, {"ok": True}, compress=False)
            return 200
        if path == "/_emulator/faults" and cmd == "POST":
            specs = data.get("faults") if isinstance(data, dict) else None
            if not isinstance(specs, list):
                self.send_obj(400, {"ok": False, "error": 'body must be {"faults": [...]}'}, compress=False)
                return 400
            try:
                srv.faults.add(specs)
            except ValueError as ex:
                self.send_obj(400, {"ok": False, "error": str(ex)}, compress=False)
                return 400
            self.send_obj(200, {"ok": True, "faults": srv.faults.describe()}, compress=False)
            return 200
        if path == "/_emulator/faults" and cmd == "GET":
            self.send_obj(200, srv.faults.describe(), compress=False)
            return 200
        if path == "/_emulator/config" and cmd == "POST":
            try:
                srv.limits.configure(data)
            except ValueError as ex:
                self.send_obj(400, {"ok": False, "error": str(ex)}, compress=False)
                return 400
            self.send_obj(200, dict(srv.limits.describe(), ok=True), compress=False)
            return 200
        if path == "/_emulator/config" and cmd == "GET":
            self.send_obj(200, srv.limits.describe(), compress=False)
            return 200
        if path == "/_emulator/reload" and cmd == "POST":
            ddir = data.get("data") if isinstance(data, dict) else None
            try:
                snap = srv.store.load(ddir)
            except (LoadError, OSError, sqlite3.Error) as ex:
                self.send_obj(500, {"ok": False, "error": str(ex)}, compress=False)
                return 500
            self.send_obj(200, {"ok": True, "tables": snap.counts, "other_team_rows": snap.other_team,
                                "ms": round(snap.load_ms, 1)}, compress=False)
            return 200
        self.send_obj(404, {"ok": False, "error": "unknown control endpoint %s %s" % (cmd, path)}, compress=False)
        return 404

    # -- the query endpoint
    def query_endpoint(self, project, t0):
        srv = self.server
        raw = self.read_body()
        auth = self.headers.get("Authorization")
        scheme = auth.split(None, 1)[0] if auth and auth.split() else None
        entry = {"n": None, "path": self.path.split("?", 1)[0], "status": None, "error": None, "query": None, "values": None, "refresh": None,
                 "name": None, "auth_scheme": scheme, "accept_encoding": self.headers.get("Accept-Encoding"),
                 "force_blocking": False, "kind": None, "rows": None, "has_more": None, "fault": None,
                 "query_bytes": None, "throttled": False, "throttle_reason": None,
                 "ms": None, "time": now_rfc3339()}
        body = None
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            q = body.get("query")
            if isinstance(q, dict):
                entry["kind"] = q.get("kind")
                entry["query"] = q.get("query")
                entry["values"] = q.get("values")
            entry["refresh"] = body.get("refresh")
            entry["name"] = body.get("name")
            entry["force_blocking"] = body.get("refresh") == "force_blocking"
        with srv.req_lock:
            srv.counter += 1
            n = srv.counter
            entry["n"] = n
            srv.requests.append(entry)
        # PostHog's request budget and concurrency limit (limits.py), after authentication as in DRF:
        # only a request with the right key for this project is counted or throttled
        limit_err = None
        admitted = False
        if auth and len(auth.split()) == 2 and auth.split()[0].lower() == "bearer" \
                and auth.split()[1] == srv.cfg.api_key and project == str(srv.cfg.project_id):
            limit_err, reason = srv.limits.admit(auth.split()[1])
            admitted = limit_err is None
            if limit_err is not None:
                entry["throttled"] = True
                entry["throttle_reason"] = reason
        act = srv.faults.match(n) if limit_err is None else None
        flags = act["flags"] if act else set()
        if act:
            entry["fault"] = act["rules"]
        truncate = "truncate" in flags
        state = {"status": None, "rows": "-"}

        def mark(st):
            # record the outcome before the response leaves, so a test that reads the request log
            # right after getting its answer sees it; the query is over then, and so is its place
            # in the concurrency limit (PostHog's ends with the query, before the answer is sent)
            state["status"] = st
            entry["status"] = st
            entry["ms"] = round((time.monotonic() - t0) * 1000, 1)
            if admitted and not state.get("released"):
                state["released"] = True
                srv.limits.release()

        try:
            if limit_err is not None:
                entry["error"] = limit_err.body()
                mark(429)
                self.send_obj(429, limit_err.body(), limit_err.headers)
                return
            if act and act["delay"] > 0:
                time.sleep(act["delay"])
            if "drop" in flags:
                mark(None)
                self.abort_connection()
                return
            if act and act["status"] is not None:
                err = fault_error(act["status"])
                entry["error"] = err.body()
                mark(err.status)
                self.send_obj(err.status, err.body(), err.headers, truncate=truncate)
                return
            if act and act.get("bomb") is not None:
                # a decompression bomb: gzip whatever the client asked for
                mark(200)
                bomb = gzip_bomb(act["bomb"])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(bomb), 65536):
                    part = bomb[i:i + 65536]
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
                self.wfile.write(b"0\r\n\r\n")
                return
            if act and act.get("content_length") is not None:
                # a body announced far larger than what is sent
                mark(200)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(act["content_length"]))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(b'{"results": [')
                self.wfile.flush()
                time.sleep(act["hold"])
                self.abort_connection()
                return
            if act and act.get("body") is not None:
                # a canned body, byte for byte (invalid UTF-8, a proxy's HTML page and the like)
                mark(act["body_status"])
                self.send_bytes(act["body_status"], act["body"], truncate=truncate,
                                content_type=act["content_type"])
                return
            if "malformed" in flags:
                mark(200)
                bad = b'{"results": [["0189e5b0-0000-7000-8000-000000000000", "$pageview", "{\\"a\\": 1}"], ' \
                      b'[<html><body>502 Bad Gateway</body></html>'
                self.send_bytes(200, bad, truncate=truncate)
                return
            try:
                res = self.handle_query(project, auth, raw, body, "wrong_columns" in flags, entry)
            except ApiError as err:
                entry["error"] = err.body()
                mark(err.status)
                self.send_obj(err.status, err.body(), err.headers, truncate=truncate)
                return
            if "body" in res:  # not rows: the schema query's answer (schema_query.py)
                mark(200)
                self.send_bytes(200, res["body"], truncate=truncate)
                return
            state["rows"] = len(res["texts"])
            entry["rows"] = state["rows"]
            entry["has_more"] = res["has_more"]
            override = None
            if "wrong_columns" in flags and not res["texts"]:
                override = [json.dumps([None] * max(len(res["columns"]) - 1, 0)).encode()]
            body_bytes = response_body(res, entry["query"], override)
            mark(200)
            self.send_bytes(200, body_bytes, truncate=truncate)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True
        except Exception as ex:  # a bug in the emulator: answer 500 and say so
            traceback.print_exc(file=sys.stderr)
            mark(500)
            try:
                self.send_obj(500, {"type": "server_error", "code": "error",
                                    "detail": "Emulator internal error: %s" % ex, "attr": None})
            except Exception:
                self.close_connection = True
        finally:
            if admitted and not state.get("released"):
                srv.limits.release()
            ms = (time.monotonic() - t0) * 1000
            extra = " n=%d force_blocking=%s" % (n, "yes" if entry["force_blocking"] else "no")
            if entry["throttled"]:
                extra += " throttled=%s" % entry["throttle_reason"]
            if act:
                extra += " fault=%s" % json.dumps(act["rules"], separators=(",", ":"))
            st = state["status"]
            self.log_line(st if st is not None else "dropped", state["rows"], ms, extra)

    def handle_query(self, project, auth, raw, body, drop_last_cell=False, info=None):
        cfg = self.server.cfg
        if not auth:
            raise ApiError(401, "authentication_error", "not_authenticated",
                           "Authentication credentials were not provided.")
        parts = auth.split()
        if len(parts) != 2 or parts[0].lower() != "bearer":
            raise ApiError(401, "authentication_error", "not_authenticated",
                           "Authentication credentials were not provided.")
        key = parts[1]
        if key in cfg.forbidden_keys:
            raise ApiError(403, "authentication_error", "permission_denied",
                           "API key missing required scope 'query:read'")
        if key != cfg.api_key:
            raise ApiError(401, "authentication_error", "authentication_failed",
                           "Personal API key found in request Authorization header is invalid.")
        if project != str(cfg.project_id):
            raise ApiError(404, "invalid_request", "not_found", "Not found.")
        if body is None:
            if raw:
                raise ApiError(400, "invalid_request", "parse_error", "JSON parse error - the body is not valid JSON")
            raise ApiError(400, "validation_error", "invalid_input", "The request body is empty.", "query")
        if not isinstance(body, dict):
            raise ApiError(400, "validation_error", "invalid_input", "The request body must be a JSON object.")
        q = body.get("query")
        if q is None:
            raise ApiError(400, "validation_error", "required", "This field is required.", "query")
        if not isinstance(q, dict):
            raise ApiError(400, "validation_error", "invalid_input", "query must be an object.", "query")
        kind = q.get("kind")
        if kind == "DatabaseSchemaQuery":
            return schema_answer()
        if kind != "HogQLQuery":
            raise ApiError(400, "validation_error", "invalid_input",
                           "Unsupported query kind %r: the emulator supports HogQLQuery and DatabaseSchemaQuery only."
                           % (kind,), "query")
        text = q.get("query")
        if not isinstance(text, str) or not text.strip():
            raise ApiError(400, "validation_error", "invalid_input", "query.query must be a non-empty string.",
                           "query")
        values = q.get("values")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ApiError(400, "validation_error", "invalid_input", "query.values must be an object.", "query")
        refresh = body.get("refresh")
        if refresh is not None and refresh not in ("async", "async_except_on_cache_miss", "blocking",
                                                    "force_async", "force_blocking", "force_cache",
                                                    "lazy_async", True, False):
            raise ApiError(400, "validation_error", "invalid_input", "Invalid refresh value %r" % (refresh,),
                           "refresh")
        return run_query(cfg, self.server.store, text, values, drop_last_cell, info)
