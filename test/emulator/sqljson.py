"""The SQLite functions behind ClickHouse's JSONType / JSONExtractString / JSONExtractRaw (ClickHouse semantics).

ClickHouse (src/Functions/FunctionsJSON.cpp, simdjson parser):
- a path argument is an object key (a string, matched exactly after unescaping; the first member of that name)
  or a 1-based index (negative: from the end) into an array or among an object's members; a path that does
  not exist, or a document that does not parse, gives the function's default;
- an integer literal outside [-2^63, 2^64-1] is read as a Float64 (ClickHouse PR #114379); older versions'
  simdjson rejected the whole document (BIGINT_ERROR), so every function on such a row gave its default
  (ClickHouse issues #9209, #88621, #102930): --json-bigint unreadable emulates those (BIGINT_UNREADABLE);
- JSONType: Enum8 'Null' (missing key, JSON null, unparsable document), 'String', 'Int64' (an integer within
  Int64), 'UInt64' (an integer above Int64's maximum), 'Double' (a number with a fraction or an exponent),
  'Bool', 'Array', 'Object';
- JSONExtractRaw: '' when missing, else the value re-serialized compactly: numbers from their parsed value
  (writeIntText / writeFloatText: 1.50 -> 1.5, 1e3 -> 1000), strings with writeJSONString's escapes
  (\\" \\\\ \\b \\f \\n \\r \\t, other bytes below 0x20 as \\u00XX in upper-case hex, U+2028/U+2029 as \\u2028/
  \\u2029, '/' left alone), null as null;
- JSONExtractString: '' when missing or JSON null; a string decoded; any other value as JSONExtractRaw writes
  it (ClickHouse >= 21.11, PR #30426; older versions gave '').
A NULL document gives NULL (ClickHouse's default NULL handling of the Nullable argument)."""

import functools
import json

from hogtypes import ENUM_NAME, ENUM_VALUE

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1
_MISSING = object()


class _Obj(list):
    """A JSON object as its members in document order: [(key, value), ...] (duplicates kept)."""


BIGINT_UNREADABLE = False  # server.py --json-bigint unreadable


def _parse_int(s):
    n = int(s)
    if n < _INT64_MIN or n > _UINT64_MAX:
        if BIGINT_UNREADABLE:
            raise ValueError("integer out of simdjson's range")
        return float(n)
    return n


def _no_constant(s):
    raise ValueError("not JSON: %s" % s)


@functools.lru_cache(maxsize=64)
def _parse(text):
    try:
        return json.loads(text, object_pairs_hook=_Obj, parse_int=_parse_int, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return _MISSING


def _find(text, keys):
    v = _parse(text)
    for k in keys:
        if v is _MISSING:
            return v
        if isinstance(k, str):
            if not isinstance(v, _Obj):
                return _MISSING
            for kk, vv in v:
                if kk == k:
                    v = vv
                    break
            else:
                return _MISSING
        elif isinstance(k, int):
            if isinstance(v, _Obj):
                seq = [vv for _, vv in v]
            elif isinstance(v, list):
                seq = v
            else:
                return _MISSING
            if k == 0 or abs(k) > len(seq):
                return _MISSING
            v = seq[k - 1] if k > 0 else seq[k]
        else:
            return _MISSING
    return v


_ESC = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
        "\u2028": "\\u2028", "\u2029": "\\u2029"}
for _c in range(0x20):
    _ESC.setdefault(chr(_c), "\\u00%02X" % _c)
for _c in range(0xD800, 0xE000):
    _ESC[chr(_c)] = "\ufffd"  # a lone surrogate (from a \\u escape) cannot be UTF-8; the emulator writes U+FFFD
_ESC_TABLE = str.maketrans(_ESC)
_CLEAN_TABLE = str.maketrans({chr(c): "\ufffd" for c in range(0xD800, 0xE000)})


def ch_json_string(s):
    """ClickHouse writeJSONString (escape_forward_slashes off, as JSONExtractRaw sets it)."""
    return '"' + s.translate(_ESC_TABLE) + '"'


def ch_float(x):
    """writeFloatText: an integral value in Int64's range as an integer, else the shortest round-trip text."""
    if x == x and abs(x) < 9.2e18 and x == int(x):
        return str(int(x))
    return repr(x)


def ch_raw(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return ch_float(v)
    if isinstance(v, str):
        return ch_json_string(v)
    if isinstance(v, _Obj):
        return "{" + ",".join(ch_json_string(k) + ":" + ch_raw(x) for k, x in v) + "}"
    return "[" + ",".join(ch_raw(x) for x in v) + "]"


def json_type(text, *keys):
    if text is None or any(k is None for k in keys):
        return None
    v = _find(str(text), keys)
    if v is _MISSING or v is None:
        return ENUM_VALUE["Null"]
    if isinstance(v, bool):
        return ENUM_VALUE["Bool"]
    if isinstance(v, int):
        return ENUM_VALUE["Int64" if v <= _INT64_MAX else "UInt64"]
    if isinstance(v, float):
        return ENUM_VALUE["Double"]
    if isinstance(v, str):
        return ENUM_VALUE["String"]
    if isinstance(v, _Obj):
        return ENUM_VALUE["Object"]
    return ENUM_VALUE["Array"]


def json_extract_raw(text, *keys):
    if text is None or any(k is None for k in keys):
        return None
    v = _find(str(text), keys)
    return "" if v is _MISSING else ch_raw(v)


def json_extract_string(text, *keys):
    if text is None or any(k is None for k in keys):
        return None
    v = _find(str(text), keys)
    if v is _MISSING or v is None:
        return ""
    if isinstance(v, str):
        return v.translate(_CLEAN_TABLE)
    return ch_raw(v)


def register(conn):
    conn.create_function("_json_type", -1, json_type, deterministic=True)
    conn.create_function("_json_extract_raw", -1, json_extract_raw, deterministic=True)
    conn.create_function("_json_extract_string", -1, json_extract_string, deterministic=True)
    conn.create_function("_enum8_name", 1, lambda v: None if v is None else ENUM_NAME.get(v), deterministic=True)
