"""Fault injection: fault rules (selectors, counts, actions), matching them to request numbers, canned error
bodies and the gzip bomb.

A rule's "kind" answers with one of PostHog's ClickHouse failures, status and body as PostHog sends them
(posthog/errors.py maps ClickHouse errors to the exceptions of posthog/exceptions.py; drf-exceptions-hog
renders an APIException as type "server_error" when it is not a DRF validation/auth/throttle error, code
its default_code or "error", detail its default_detail).  The 500 forms of timeout and capacity are the
same exceptions in PostHog versions where they had no status_code of their own (APIException's 500); the
400 memory-limit form is versions that exposed ClickHouse's MEMORY_LIMIT_EXCEEDED as a ValidationError
with code_name "memory_limit_exceeded"."""

import base64
import threading
import zlib

from errors import ApiError


FAULT_SELECTORS = ("on_request", "every", "from_request")
FAULT_ACTIONS = ("status", "kind", "delay", "truncate", "drop", "malformed", "wrong_columns", "body_b64",
                 "gzip_bomb", "content_length")
FAULT_KEYS = set(FAULT_SELECTORS) | set(FAULT_ACTIONS) | {"times", "retry_after", "detail", "code", "type",
                                                           "retry_after_header", "location", "hold",
                                                           "body_status", "content_type"}

STATUS_BODIES = {
    400: ("validation_error", "hogql_error", "Emulated fault: the query could not be run."),
    401: ("authentication_error", "authentication_failed",
          "Personal API key found in request Authorization header is invalid."),
    403: ("authentication_error", "permission_denied",
          "API key missing required scope 'query:read'"),
    404: ("invalid_request", "not_found", "Not found."),
    429: ("throttled_error", "throttled", None),
    500: ("server_error", "error", "A server error occurred."),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("server_error", "service_unavailable",
          "The query could not be run: ClickHouse is at capacity. Please try again later."),
    504: ("server_error", "timeout",
          "Query has hit the max execution time before completing. Try a smaller time range or page size."),
    512: ("server_error", "estimated_query_execution_time_too_long",
          "Estimated query execution time is too long. Try reducing its scope by changing the time range."),
}
REASONS = {512: "Estimated Query Execution Time Too Long", 429: "Too Many Requests"}

_TIMEOUT = ("Query has hit the max execution time before completing. See our docs for how to improve your query "
            "performance. You may need to materialize.")
_CAPACITY = ("Queries are a little too busy right now. We're working to free up resources. Please try again "
             "later.")
# kind -> (status, type, code, detail)
KINDS = {
    "memory_limit_512": (512, "server_error", "clickhouse_memory_limit_exceeded",
                         "This query ran out of memory before it could finish, usually because it's scanning too "
                         "much data. Try a shorter date range or narrower filters, or see our docs for more ways "
                         "to speed it up: https://posthog.com/docs/product-analytics/troubleshooting"
                         "#how-do-i-speed-up-my-insights-and-queries"),
    "memory_limit_400": (400, "validation_error", "memory_limit_exceeded",
                         "Memory limit (for query) exceeded: would use 9.32 GiB (attempt to allocate chunk of "
                         "4194304 bytes), maximum: 9.31 GiB.: While executing AggregatingTransform. "
                         "(MEMORY_LIMIT_EXCEEDED)"),
    "estimated_time_512": (512, "server_error", "error",
                           "Estimated query execution time (34.5 seconds) is too long. Try reducing its scope by "
                           "changing the time range."),
    "timeout_504": (504, "server_error", "error", _TIMEOUT),
    "timeout_500": (500, "server_error", "error", _TIMEOUT),
    "capacity_503": (503, "server_error", "error", _CAPACITY),
    "capacity_500": (500, "server_error", "error", _CAPACITY),
    "query_size_500": (500, "server_error", "error", "Query size exceeded."),
}


class FaultRule:
    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise ValueError("a fault rule must be a JSON object")
        unknown = set(spec) - FAULT_KEYS
        if unknown:
            raise ValueError("unknown fault rule keys: %s" % ", ".join(sorted(unknown)))
        sels = [k for k in FAULT_SELECTORS if k in spec]
        if len(sels) != 1:
            raise ValueError("a fault rule needs exactly one of on_request, every, from_request")
        if not any(k in spec for k in FAULT_ACTIONS):
            raise ValueError("a fault rule needs an action: one of %s" % ", ".join(FAULT_ACTIONS))
        self.spec = dict(spec)
        self.selector = sels[0]
        if self.selector == "every":
            if spec["every"] is not True:
                raise ValueError('"every" must be true')
            self.start = 1
        else:
            v = spec[self.selector]
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError("%s must be an integer >= 1" % self.selector)
            self.start = v
        times = spec.get("times")
        if times is None:
            times = None if self.selector == "every" else 1
        elif not isinstance(times, int) or isinstance(times, bool) or times < 1:
            raise ValueError("times must be an integer >= 1")
        self.remaining = times
        kind = spec.get("kind")
        if kind is not None:
            if kind not in KINDS:
                raise ValueError("kind must be one of %s" % ", ".join(sorted(KINDS)))
            if spec.get("status") is not None:
                raise ValueError('"kind" sets the status: give one of "kind", "status"')
        st = spec.get("status")
        if st is not None and (not isinstance(st, int) or not (400 <= st <= 599 or 301 <= st <= 308)):
            raise ValueError("status must be a redirect 301..308 or an HTTP error status 400..599")
        for k in ("delay", "hold"):
            d = spec.get(k)
            if d is not None and (not isinstance(d, (int, float)) or isinstance(d, bool) or d < 0):
                raise ValueError("%s must be a non-negative number of seconds" % k)
        for k, hi in (("gzip_bomb", 4096), ("content_length", 1 << 50)):
            v = spec.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= hi):
                raise ValueError("%s must be an integer from 1 to %d" % (k, hi))
        if spec.get("gzip_bomb") is not None:
            gzip_bomb(spec["gzip_bomb"])  # compress it now, not while a client waits

    def take(self, n):
        if n < self.start or self.remaining == 0:
            return False
        if self.remaining is not None:
            self.remaining -= 1
        return True

    def describe(self):
        d = dict(self.spec)
        d["remaining"] = self.remaining
        return d


class Faults:
    def __init__(self):
        self.rules = []
        self.lock = threading.Lock()

    def add(self, specs):
        rules = [FaultRule(s) for s in specs]
        with self.lock:
            self.rules.extend(rules)

    def clear(self):
        with self.lock:
            self.rules = []

    def match(self, n):
        """Return the combined action for request number n (or None)."""
        act = None
        with self.lock:
            for r in self.rules:
                if r.take(n):
                    if act is None:
                        act = {"delay": 0.0, "status": None, "flags": set(), "rules": []}
                    s = r.spec
                    act["rules"].append(s)
                    act["delay"] += float(s.get("delay", 0) or 0)
                    if (s.get("status") is not None or s.get("kind") is not None) and act["status"] is None:
                        act["status"] = s
                    if s.get("body_b64") is not None and act.get("body") is None:
                        act["body"] = base64.b64decode(s["body_b64"])
                        # what a proxy or a web site sends: any status, any content type
                        act["body_status"] = int(s.get("body_status", 200))
                        act["content_type"] = s.get("content_type", "application/json")
                    if s.get("gzip_bomb") is not None and act.get("bomb") is None:
                        act["bomb"] = s["gzip_bomb"]
                    if s.get("content_length") is not None and act.get("content_length") is None:
                        act["content_length"] = s["content_length"]
                        act["hold"] = float(s.get("hold", 0) or 0)
                    for f in ("truncate", "drop", "malformed", "wrong_columns"):
                        if s.get(f):
                            act["flags"].add(f)
            self.rules = [r for r in self.rules if r.remaining != 0]
        return act

    def describe(self):
        with self.lock:
            return [r.describe() for r in self.rules]


_BOMBS = {}
_BOMBS_LOCK = threading.Lock()


def gzip_bomb(mib):
    """A gzip stream of a JSON body padded with `mib` MiB of spaces (about 1 KiB per MiB), cached."""
    with _BOMBS_LOCK:
        if mib not in _BOMBS:
            c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
            chunk = b" " * (1 << 20)
            parts = [c.compress(b'{"results": [')]
            parts.extend(c.compress(chunk) for _ in range(mib))
            parts.append(c.compress(b'], "columns": []}'))
            parts.append(c.flush())
            _BOMBS[mib] = b"".join(parts)
        return _BOMBS[mib]


def fault_error(spec):
    if spec.get("kind") is not None:
        st, type_, code, detail = KINDS[spec["kind"]]
    else:
        st = spec["status"]
        type_, code, detail = STATUS_BODIES.get(st, ("server_error", "error", "Emulated fault (HTTP %d)." % st))
    headers = {}
    if st == 429:
        ra = spec.get("retry_after", 1)
        detail = "Request was throttled. Expected available in %s seconds." % ra
        if spec.get("retry_after_header"):
            headers["Retry-After"] = str(ra)
    if 300 <= st < 400:
        # a redirect elsewhere: a client must not follow it with the key
        headers["Location"] = spec.get("location", "https://elsewhere.invalid/api/projects/1/query/")
    type_ = spec.get("type", type_)
    code = spec.get("code", code)
    detail = spec.get("detail", detail)
    return ApiError(st, type_, code, detail, headers=headers)
