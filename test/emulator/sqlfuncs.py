"""The Python functions the translated SQL calls in SQLite (_argmax, _json_get, _parse_dt, ...)."""

import json
import re

from errors import HogQLError
from values import SURROGATE_RE, canonical_uuid, dt_formatter, dt_to_ch_string, parse_datetime_us, truncate_us


class ArgMax:
    def __init__(self):
        self.best = None
        self.val = None
        self.have = False

    def step(self, x, v):
        if v is None:
            return
        if not self.have or v > self.best:
            self.best = v
            self.val = x
            self.have = True

    def finalize(self):
        return self.val


def _json_get(text, *keys):
    if text is None:
        return None
    try:
        v = json.loads(text)
    except ValueError:
        return None
    for k in keys:
        if isinstance(v, dict):
            v = v.get(k)
        elif isinstance(v, list) and re.fullmatch(r"\d+", k):
            i = int(k)
            v = v[i - 1] if 1 <= i <= len(v) else None
        else:
            return None
        if v is None:
            return None
    if isinstance(v, str):
        s = v
    else:
        s = json.dumps(v, ensure_ascii=False, separators=(",", ":"))
    if SURROGATE_RE.search(s):
        s = SURROGATE_RE.sub("\ufffd", s)
    return s


def _parse_dt_udf(text, tz, prec):
    if text is None:
        return None
    try:
        return truncate_us(parse_datetime_us(str(text), tz), prec)
    except (ValueError, OverflowError, HogQLError):
        return None


def _to_uuid_udf_factory(mode):
    def f(text):
        if text is None:
            return None
        try:
            return mode.to_key(canonical_uuid(text))
        except ValueError:
            return None
    return f


def _dt_str_udf(us, tz, prec):
    if us is None:
        return None
    return dt_to_ch_string(us, tz, prec)


def _dt_json_udf(us, tz):
    if us is None:
        return "null"
    return '"' + dt_formatter(tz)(us) + '"'


def _float_str_udf(x):
    if x is None:
        return None
    x = float(x)
    if x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


def register_functions(conn, uuid_mode):
    conn.create_aggregate("_argmax", 2, ArgMax)
    conn.create_function("_json_get", -1, _json_get, deterministic=True)
    conn.create_function("_parse_dt", 3, _parse_dt_udf, deterministic=True)
    conn.create_function("_to_uuid", 1, _to_uuid_udf_factory(uuid_mode), deterministic=True)
    conn.create_function("_dt_str", 3, _dt_str_udf, deterministic=True)
    conn.create_function("_float_str", 1, _float_str_udf, deterministic=True)
    conn.create_function("_dt_json", 2, _dt_json_udf, deterministic=True)
