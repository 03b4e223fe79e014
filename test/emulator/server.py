#!/usr/bin/python3
"""PostHog HTTP Query API emulator (test tool): the server process (command line, TLS, listening socket).
Standard library only (Python 3.11).

    python3 test/emulator/server.py --data DIR --port PORT --api-key KEY [--project-id 1]
        [--project-timezone UTC] [--host 127.0.0.1] [--port-file F] [--tls-cert F --tls-key F]
        [--forbidden-key K ...] [--fault JSON ...] [--bool-as-int] [--uuid-order clickhouse|text]
        [--max-limit 50000] [--default-limit 100] [--gzip-level 1] [--cache-dir DIR] [--render-cache]
        [--team-id T] [--max-query-size 262144] [--legacy-error-codes]
        [--requests-per-hour N [--throttle-without-wait]] [--max-concurrent N]

POST /api/projects/{id}/query/ (trailing slash optional), Authorization: Bearer KEY, body
{"query": {"kind": "HogQLQuery", "query": "...", "values": {...}}, "refresh": ..., "name": ...}.
A subset of HogQL is tokenized, parsed, translated to SQLite SQL (every value bound as a parameter)
and run on an in-memory SQLite database loaded from DIR/events.ndjson, persons.ndjson
(raw_persons), person_distinct_ids.ndjson (raw_person_distinct_ids) and sessions.ndjson.
Anything outside the subset is a 400 {"type": "validation_error", "code": "hogql_error", ...}; as in PostHog,
a syntax error or a reserved alias (AS true|false|null|team_id) has code "hogql_syntax_error", an unknown
table or field "hogql_query_error" (--legacy-error-codes: "invalid_input" for all, as older versions say).
A query whose text with its values printed in (see query.py) is over --max-query-size bytes (default
262144, ClickHouse's max_query_size) is a 500 {"type": "server_error", "code": "error", "detail": "Query
size exceeded."}.  Only rows of the project's team (--team-id, default the project id) exist for queries:
data-file rows of other teams are left out at load.  Int8 columns (is_deleted, is_identified of the
person tables) come back as 0/1, Boolean ones as true/false/null.  hasMore is null when the query has a
LIMIT.  A data row may carry "_visible_at" (RFC 3339, not a column): until the emulator's clock reaches it,
no query sees the row (any table).  --requests-per-hour N: a budget per API key in a sliding hour, past it
a 429 "Request was throttled. Expected available in N seconds." with Retry-After (--throttle-without-wait:
"Request was throttled." only); --max-concurrent N: a query admitted while N are in flight is a 429 without
a wait.  Both are off by default (see limits.py).

Control endpoints (no auth):
  GET  /_emulator/health    -> {"ok": true, "tables": {name: rows}, "data": DIR, "team_id": T,
                                "other_team_rows": {name: rows left out},
                                "delayed_rows": {name: rows with a _visible_at}}
  GET  /_emulator/requests  -> [{n, path, status, query, values, refresh, name, auth_scheme,
                                 accept_encoding, force_blocking, kind, rows, has_more, fault, error,
                                 query_bytes, throttled, throttle_reason, ms, time}, ...] since the last reset (query_bytes: the
                                 size of the text with its values, as checked against --max-query-size)
  POST /_emulator/reset     -> clears the request log, the request counter, all faults and the budget's window
  POST /_emulator/config    {"requests_per_hour": N|null, "throttle_wait": bool, "max_concurrent": N|null,
                             "clock": RFC 3339|null, "clock_offset": seconds} changes the given settings;
  GET  /_emulator/config    -> those settings, "in_flight", "requests_in_window" and the clock's time
  POST /_emulator/faults    {"faults": [rule, ...]} adds rules;  GET /_emulator/faults lists them
  POST /_emulator/reload    [{"data": DIR}] re-reads the NDJSON files
Fault rule: one selector {"on_request": N} | {"from_request": N} | {"every": true}, optional
"times": K (default 1; unlimited for "every"), and actions: "status": 400|401|403|429|500|503|504|512
(429: "retry_after": S, "retry_after_header": true adds Retry-After; "type"/"code"/"detail" override
the body), "delay": seconds, "truncate": true, "drop": true, "malformed": true, "wrong_columns": true,
"body_b64": "<base64>" (a canned 200 body, byte for byte; "body_status": N and "content_type": T
send it as another status and content type, as a proxy's HTML error page), "gzip_bomb": MiB (a 200 whose body is that
many MiB of JSON white space, sent gzip-compressed with Content-Encoding: gzip whatever the client asked
for, chunked, without Content-Length: a decompression bomb of about 1/1000 of its size), "content_length": N (a 200 that announces
Content-Length N but sends only its first bytes, then holds the connection for "hold" seconds, default
0, and closes it), "kind": one of PostHog's ClickHouse failures, with its exact status and body (see
faults.KINDS: memory_limit_512, memory_limit_400, estimated_time_512, timeout_504, timeout_500,
capacity_503, capacity_500, query_size_500).

The modules beside this file, each imported by the ones above it (no cycles):
  server.py       this process               handler.py   one HTTP exchange, routes, control endpoints
  faults.py       fault rules                query.py     run a query, build the response body
  translate.py    SELECT -> SQLite SQL       expressions.py  expressions and functions -> SQLite SQL
  hogql.py        parser (AST)               lexer.py     tokenizer
  limits.py       clock, budget, concurrency store.py     data files -> SQLite
  sqlfuncs.py     SQLite functions the SQL calls
  hogtypes.py     types and columns          values.py    datetimes, UUIDs, JSON text
  errors.py       ApiError, HogQLError
"""

import argparse
import json
import os
import signal
import sqlite3
import ssl
import sys
import threading
import time
from http.server import ThreadingHTTPServer

from errors import LEGACY_CODES, HogQLError
from faults import Faults
from handler import Handler
from limits import Clock, Limits
from store import LoadError, Store
import sqljson
from values import UuidMode, get_tz


class Config:
    pass


class EmulatorServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, cfg, store, faults, ssl_ctx, limits):
        self.cfg = cfg
        self.limits = limits
        self.store = store
        self.faults = faults
        self.ssl_ctx = ssl_ctx
        self.requests = []
        self.counter = 0
        self.req_lock = threading.Lock()
        self.log_lock = threading.Lock()
        super().__init__(addr, Handler)

    def log(self, msg):
        line = "%s posthog-emulator: %s\n" % (time.strftime("%H:%M:%S"), msg)
        with self.log_lock:
            sys.stderr.write(line)
            sys.stderr.flush()

    def finish_request(self, request, client_address):
        if self.ssl_ctx is None:
            self.RequestHandlerClass(request, client_address, self)
            return
        try:
            request.settimeout(30)
            tls = self.ssl_ctx.wrap_socket(request, server_side=True)
            tls.settimeout(None)
        except (ssl.SSLError, OSError) as ex:
            self.log("TLS handshake with %s failed: %s" % (client_address[0], ex))
            return
        try:
            self.RequestHandlerClass(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request, client_address):
        ex = sys.exc_info()[1]
        if isinstance(ex, (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError)):
            return
        super().handle_error(request, client_address)


def main(argv=None):
    ap = argparse.ArgumentParser(description="PostHog Query API emulator (test tool)")
    ap.add_argument("--data", required=True, help="directory holding events.ndjson, persons.ndjson, "
                                                  "person_distinct_ids.ndjson, sessions.ndjson")
    ap.add_argument("--port", type=int, required=True, help="TCP port (0 = pick a free one)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--forbidden-key", action="append", default=[],
                    help="a key that authenticates but lacks the query:read scope (403); repeatable")
    ap.add_argument("--project-id", type=int, default=1)
    ap.add_argument("--project-timezone", default="UTC")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--tls-client-ca", help="require a client certificate signed by this CA (mutual TLS)")
    ap.add_argument("--port-file", help="write the bound port here once listening")
    ap.add_argument("--bool-as-int", action="store_true", help="render booleans as 1/0 instead of true/false")
    ap.add_argument("--uuid-order", choices=("clickhouse", "text"), default="clickhouse",
                    help="UUID comparison/sort order: ClickHouse's (second half first) or plain text order")
    ap.add_argument("--fault", action="append", default=[], help="a fault rule as JSON; repeatable")
    ap.add_argument("--json-bigint", choices=("float", "unreadable"), default="float",
                    help="an integer beyond 64 bits in a JSON document: read as a Float64 (current ClickHouse), or "
                         "the whole document unreadable by the JSON functions (ClickHouse before PR #114379)")
    ap.add_argument("--max-limit", type=int, default=50000)
    ap.add_argument("--default-limit", type=int, default=100)
    ap.add_argument("--gzip-level", type=int, default=1)
    ap.add_argument("--cache-dir", help="keep a copy of the loaded database here (keyed by the data files' "
                                        "paths, sizes and mtimes) and start from it next time")
    ap.add_argument("--team-id", type=int, help="the project's team: the only team whose rows queries see "
                                                "(default: the project id, as for a project's first environment)")
    ap.add_argument("--max-query-size", type=int, default=262144,
                    help="bytes of query text, values substituted, above which a query is a 500 "
                         "QuerySizeExceeded (ClickHouse's max_query_size; default %(default)s)")
    ap.add_argument("--legacy-error-codes", action="store_true",
                    help='HogQL errors with code "invalid_input" (PostHog versions without error code names)')
    ap.add_argument("--render-cache", action="store_true",
                    help="keep the JSON text of every row served, and serve it again without rendering "
                         "(for benchmarks: a second pass over the same rows costs only the keyset scan)")
    ap.add_argument("--requests-per-hour", type=int,
                    help="request budget per API key in a sliding hour; past it a 429 (PostHog: 120; "
                         "default: no budget)")
    ap.add_argument("--throttle-without-wait", action="store_true",
                    help='a 429 past the budget says only "Request was throttled." (no wait, no Retry-After)')
    ap.add_argument("--max-concurrent", type=int,
                    help="queries of the project in flight at once; one more is a 429 without a wait "
                         "(PostHog: 3; default: no limit)")
    args = ap.parse_args(argv)

    cfg = Config()
    cfg.api_key = args.api_key
    cfg.forbidden_keys = set(args.forbidden_key)
    cfg.project_id = args.project_id
    cfg.project_tz = args.project_timezone
    cfg.bool_as_int = args.bool_as_int
    sqljson.BIGINT_UNREADABLE = args.json_bigint == "unreadable"
    cfg.max_limit = args.max_limit
    cfg.default_limit = args.default_limit
    cfg.gzip_level = args.gzip_level
    cfg.render_cache = args.render_cache
    cfg.max_query_size = args.max_query_size
    cfg.team_id = args.team_id if args.team_id is not None else args.project_id
    LEGACY_CODES["on"] = args.legacy_error_codes
    for opt in ("requests_per_hour", "max_concurrent"):
        if getattr(args, opt) is not None and getattr(args, opt) < 1:
            ap.error("--%s must be at least 1" % opt.replace("_", "-"))
    cfg.clock = Clock()
    limits = Limits(cfg.clock, args.requests_per_hour, not args.throttle_without_wait, args.max_concurrent)
    if cfg.max_query_size < 1:
        ap.error("--max-query-size must be at least 1")
    try:
        get_tz(cfg.project_tz)
    except HogQLError as ex:
        ap.error(ex.detail)
    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")

    def log(msg):
        sys.stderr.write("%s posthog-emulator: %s\n" % (time.strftime("%H:%M:%S"), msg))
        sys.stderr.flush()

    faults = Faults()
    try:
        faults.add([json.loads(f) for f in args.fault])
    except ValueError as ex:
        ap.error("--fault: %s" % ex)

    store = Store(args.data, cfg.project_tz, UuidMode(args.uuid_order == "clickhouse"), log, args.cache_dir,
                  cfg.team_id)
    try:
        store.load()
    except (LoadError, OSError, sqlite3.Error) as ex:
        log("cannot load data: %s" % ex)
        return 2

    ctx = None
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        if args.tls_client_ca:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(args.tls_client_ca)

    srv = EmulatorServer((args.host, args.port), cfg, store, faults, ctx, limits)
    port = srv.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as fh:
            fh.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    srv.log("listening on %s://%s:%d project %d tz %s" % ("https" if ctx else "http", args.host, port,
                                                         cfg.project_id, cfg.project_tz))

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()

    import faulthandler
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # kill -USR1 <pid>: dump thread stacks
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
