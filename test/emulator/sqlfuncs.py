"""The Python functions the translated SQL calls in SQLite (_argmax, _json_get, _like, _parse_dt, ...)."""

import json
import math
import re

import sqljson
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


def _json_raw(v):
    """JSONExtractRaw's text of a parsed JSON value: compact JSON; a string keeps its JSON escapes."""
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def _json_get(text, *keys):
    """A property access as PostHog prints it for ClickHouse:
    replaceRegexpAll(nullIf(nullIf(JSONExtractRaw(text, k1, k2, ...), ''), 'null'), '^"|"$', '').
    So: a missing key (or a path through a non-object) and a JSON null give NULL; a string gives its JSON text
    without the enclosing quotes -- its escapes stay (a value  say "hi"  comes back as  say \\"hi\\" , a
    newline as \\n); numbers and booleans give their JSON text (1.5, true); objects and arrays their compact
    JSON text ({"a":1}).  A string key looks up an object member; an integer key (properties[1]) is a 1-based
    position (negative: from the end) in an array or among an object's members."""
    if text is None:
        return None
    try:
        v = json.loads(text)
    except ValueError:
        return None
    for k in keys:
        if isinstance(k, str):
            if not isinstance(v, dict) or k not in v:
                return None
            v = v[k]
        else:
            seq = list(v.values()) if isinstance(v, dict) else v if isinstance(v, list) else None
            if seq is None or k == 0 or abs(k) > len(seq):
                return None
            v = seq[k - 1] if k > 0 else seq[k]
    if v is None:
        return None
    s = _json_raw(v)
    if s.startswith('"'):
        s = s[1:]
    if s.endswith('"'):
        s = s[:-1]
    if SURROGATE_RE.search(s):
        s = SURROGATE_RE.sub("\ufffd", s)
    return s


_LIKE_CACHE = {}


def like_regex(pattern, ci):
    """ClickHouse LIKE: % is any text (newlines too), _ one character (a code point), a backslash escapes
    %, _ and itself and is a plain backslash before anything else (or at the end).  ILIKE: the same,
    case-insensitive with Unicode simple case folding (re2's, which ClickHouse uses)."""
    key = (pattern, ci)
    r = _LIKE_CACHE.get(key)
    if r is None:
        out = []
        i, n = 0, len(pattern)
        while i < n:
            c = pattern[i]
            if c == "\\" and i + 1 < n and pattern[i + 1] in "%_\\":
                out.append(re.escape(pattern[i + 1]))
                i += 2
                continue
            out.append(".*" if c == "%" else "." if c == "_" else re.escape(c))
            i += 1
        r = re.compile("".join(out), re.S | (re.I if ci else 0))
        if len(_LIKE_CACHE) > 1000:
            _LIKE_CACHE.clear()
        _LIKE_CACHE[key] = r
    return r


def _like(text, pattern, ci):
    if text is None or pattern is None:
        return None
    return 1 if like_regex(str(pattern), bool(ci)).fullmatch(str(text)) else 0


_ASCII_LOWER = {c: c + 32 for c in range(65, 91)}
_ASCII_UPPER = {c: c - 32 for c in range(97, 123)}


def _lower_ascii(s):
    return None if s is None else str(s).translate(_ASCII_LOWER)


def _upper_ascii(s):
    return None if s is None else str(s).translate(_ASCII_UPPER)


def _lower_utf8(s):
    return None if s is None else str(s).lower()


def _upper_utf8(s):
    return None if s is None else str(s).upper()


def _length_bytes(s):
    return None if s is None else len(str(s).encode("utf-8", "surrogatepass"))


def _fmod(a, b):
    if a is None or b is None or b == 0:
        return None
    return math.fmod(a, b)


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
    conn.create_function("_like", 3, _like, deterministic=True)
    for f in (_lower_ascii, _upper_ascii, _lower_utf8, _upper_utf8, _length_bytes):
        conn.create_function(f.__name__, 1, f, deterministic=True)
    conn.create_function("_fmod", 2, _fmod, deterministic=True)
    conn.create_function("_parse_dt", 3, _parse_dt_udf, deterministic=True)
    conn.create_function("_to_uuid", 1, _to_uuid_udf_factory(uuid_mode), deterministic=True)
    conn.create_function("_dt_str", 3, _dt_str_udf, deterministic=True)
    conn.create_function("_float_str", 1, _float_str_udf, deterministic=True)
    conn.create_function("_dt_json", 2, _dt_json_udf, deterministic=True)
    sqljson.register(conn)
