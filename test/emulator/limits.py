"""The emulator's clock, PostHog's request budget per API key and its concurrency limit per project.

Budget (posthog/rate_limit.py, a DRF SimpleRateThrottle; off unless --requests-per-hour is given): each key
keeps the times of the requests it was allowed in the last hour (a sliding window).  A request past the
budget is a 429 {"type": "throttled_error", "code": "throttled", "detail": "Request was throttled. Expected
available in N seconds.", "attr": null} with Retry-After: N, N being when the oldest counted request leaves
the window (rounded up, as DRF does); a throttled request is not counted.  throttle_wait False leaves the
wait out ("Request was throttled." only, no Retry-After).  As in DRF, authentication comes first: a 401/403
is neither counted nor throttled.

Concurrency (off unless --max-concurrent is given; PostHog: 3 per project): a request admitted while N
others are in flight is a 429 without a wait ("Request was throttled."); it was counted in the budget,
as PostHog checks the rate before it runs the query.  A request is in flight from its admission until its
answer is ready, before it is sent (an injected "delay" fault makes it a slow query).

The clock is real time unless a test fixes it or offsets it (POST /_emulator/config); the budget's window
and row visibility (_visible_at) read it."""

import math
import threading
import time
from datetime import datetime, timezone

from errors import ApiError

WINDOW = 3600.0


class Clock:
    def __init__(self):
        self.fixed = None   # unix seconds, or None for real time
        self.offset = 0.0   # seconds added to real time

    def now(self):
        fixed = self.fixed
        return fixed if fixed is not None else time.time() + self.offset

    def now_us(self):
        return int(round(self.now() * 1000000))

    def rfc3339(self):
        return datetime.fromtimestamp(self.now(), timezone.utc).isoformat().replace("+00:00", "Z")


def throttled(wait):
    """PostHog's 429 (DRF Throttled through drf-exceptions-hog); wait None: no wait given."""
    detail = "Request was throttled."
    headers = {}
    if wait is not None:
        wait = max(1, int(math.ceil(wait)))
        detail += " Expected available in %d second%s." % (wait, "" if wait == 1 else "s")
        headers["Retry-After"] = "%d" % wait
    return ApiError(429, "throttled_error", "throttled", detail, headers=headers)


class Limits:
    def __init__(self, clock, requests_per_hour=None, throttle_wait=True, max_concurrent=None):
        self.clock = clock
        self.requests_per_hour = requests_per_hour
        self.throttle_wait = throttle_wait
        self.max_concurrent = max_concurrent
        self.lock = threading.Lock()
        self.history = {}   # key -> [times of counted requests]
        self.in_flight = 0

    def admit(self, key):
        """Count the request of this key and take a slot, or return (ApiError 429, "budget"|"concurrency")."""
        with self.lock:
            if self.requests_per_hour is not None:
                now = self.clock.now()
                hist = [t for t in self.history.get(key, []) if t > now - WINDOW]
                self.history[key] = hist
                if len(hist) >= self.requests_per_hour:
                    wait = WINDOW - (now - min(hist)) if self.throttle_wait else None
                    return throttled(wait), "budget"
                hist.append(now)
            if self.max_concurrent is not None and self.in_flight >= self.max_concurrent:
                return throttled(None), "concurrency"
            self.in_flight += 1
            return None, None

    def release(self):
        with self.lock:
            self.in_flight -= 1

    def reset(self):
        with self.lock:
            self.history = {}

    def describe(self):
        with self.lock:
            now = self.clock.now()
            used = sum(1 for h in self.history.values() for t in h if t > now - WINDOW)
            return {"requests_per_hour": self.requests_per_hour, "throttle_wait": self.throttle_wait,
                    "max_concurrent": self.max_concurrent, "in_flight": self.in_flight,
                    "requests_in_window": used, "clock": self.clock.rfc3339(),
                    "clock_fixed": self.clock.fixed is not None, "clock_offset": self.clock.offset}

    def configure(self, data):
        """Apply POST /_emulator/config; raises ValueError on a bad body (nothing is changed then)."""
        if not isinstance(data, dict):
            raise ValueError("body must be a JSON object")
        unknown = set(data) - {"requests_per_hour", "throttle_wait", "max_concurrent", "clock", "clock_offset"}
        if unknown:
            raise ValueError("unknown setting(s): %s" % ", ".join(sorted(unknown)))
        upd = {}
        for k in ("requests_per_hour", "max_concurrent"):
            if k in data:
                v = data[k]
                if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                    raise ValueError("%s must be a positive integer or null" % k)
                upd[k] = v
        if "throttle_wait" in data:
            if not isinstance(data["throttle_wait"], bool):
                raise ValueError("throttle_wait must be true or false")
            upd["throttle_wait"] = data["throttle_wait"]
        fixed = self.clock.fixed
        if "clock" in data:
            v = data["clock"]
            if v is None:
                fixed = None
            else:
                try:
                    d = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
                except ValueError:
                    raise ValueError("clock must be an RFC 3339 timestamp or null")
                if d.tzinfo is None:
                    d = d.replace(tzinfo=timezone.utc)
                fixed = d.timestamp()
        offset = self.clock.offset
        if "clock_offset" in data:
            v = data["clock_offset"]
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError("clock_offset must be a number of seconds")
            offset = float(v)
        with self.lock:
            for k, v in upd.items():
                setattr(self, k, v)
            self.clock.fixed = fixed
            self.clock.offset = offset
