"""Value conversions shared by the translator and the store: JSON text, date/times, UUIDs.

Datetimes are integer microseconds since the epoch (UTC); UUIDs are stored so that SQLite's text order
is ClickHouse's UUID order (see UuidMode)."""

import json
import re
import uuid as uuidlib
import zoneinfo
from datetime import datetime, timedelta, timezone

from errors import HogQLError


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
EPOCH_NAIVE = datetime(1970, 1, 1)
ONE_US = timedelta(microseconds=1)

SURROGATE_RE = re.compile('[\ud800-\udfff]')


def escape_lone_surrogates(text):
    """Replace each lone surrogate code point by the 6-character text \\udXXX."""
    return SURROGATE_RE.sub(lambda m: '\\u%04x' % ord(m.group()), text)


def has_surrogates(text):
    return SURROGATE_RE.search(text) is not None


def dumps_inner(obj):
    """Serialize a JSON column value the way the emulator returns it inside the string."""
    s = json.dumps(obj, ensure_ascii=False, separators=(', ', ': '))
    if SURROGATE_RE.search(s):
        s = escape_lone_surrogates(s)
    return s


# ---------------------------------------------------------------------------
# Time handling

_TZ_CACHE = {}


def get_tz(name):
    z = _TZ_CACHE.get(name)
    if z is None:
        if not isinstance(name, str) or not name:
            raise HogQLError("Invalid time zone: %r" % (name,))
        if name.upper() in ("UTC", "ETC/UTC", "GMT", "Z", "UCT"):
            z = timezone.utc
        else:
            try:
                z = zoneinfo.ZoneInfo(name)
            except Exception:
                raise HogQLError("Unknown time zone: %s" % name)
        _TZ_CACHE[name] = z
    return z


_DT_RE = re.compile(
    r"^\s*(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[Tt ]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?)?"
    r"\s*(Z|z|UTC|[+-]\d{2}(?::?\d{2})?)?\s*$")


def parse_datetime_us(s, tzname):
    """Parse a date/time string into integer microseconds since the epoch (UTC).

    A string without an offset is read in time zone ``tzname``."""
    m = _DT_RE.match(s)
    if not m:
        raise ValueError("Cannot parse DateTime from string %r" % (s,))
    y, mo, d, hh, mi, ss, frac, off = m.groups()
    naive = datetime(int(y), int(mo), int(d), int(hh or 0), int(mi or 0), int(ss or 0))
    us = 0
    if frac:
        us = int((frac + "000000")[:6])
    if off:
        if off in ("Z", "z", "UTC"):
            offset = timedelta(0)
        else:
            sign = -1 if off[0] == "-" else 1
            digits = off[1:].replace(":", "")
            offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        return (naive - EPOCH_NAIVE - offset) // ONE_US + us
    z = get_tz(tzname)
    aware = naive.replace(tzinfo=z)
    return (aware - EPOCH) // ONE_US + us


def parse_rfc3339_us(s):
    """Parse a timestamp from the data files (RFC 3339; a naive one is UTC)."""
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return parse_datetime_us(s, "UTC")
    if dt.tzinfo is None:
        return (dt - EPOCH_NAIVE) // ONE_US
    return (dt - EPOCH) // ONE_US


_FMT_CACHE = {}


def dt_formatter(tzname):
    """Return f(us) -> RFC 3339 text in the zone (Z for UTC; fraction only when non-zero)."""
    f = _FMT_CACHE.get(tzname)
    if f is not None:
        return f
    z = get_tz(tzname)
    if z is timezone.utc:
        def f(us, _e=EPOCH_NAIVE, _td=timedelta):
            s, frac = divmod(us, 1000000)
            base = (_e + _td(seconds=s)).isoformat()
            return base + (".%06dZ" % frac if frac else "Z")
    else:
        def f(us, _z=z):
            s, frac = divmod(us, 1000000)
            text = datetime.fromtimestamp(s, _z).isoformat()
            if frac:
                return text[:19] + (".%06d" % frac) + text[19:]
            return text
    _FMT_CACHE[tzname] = f
    return f


def dt_to_ch_string(us, tzname, prec):
    """toString(DateTime): 'YYYY-MM-DD HH:MM:SS[.fff...]' in the zone."""
    s, frac = divmod(us, 1000000)
    d = datetime.fromtimestamp(s, get_tz(tzname))
    text = d.strftime("%Y-%m-%d %H:%M:%S")
    if prec:
        text += "." + ("%06d" % frac + "000")[:prec]
    return text


def truncate_us(us, prec):
    if prec is None:
        prec = 0
    if prec >= 6:
        return us
    unit = 10 ** (6 - prec)
    return us - us % unit


# ---------------------------------------------------------------------------
# UUIDs.  ClickHouse sorts UUIDs by their second half first (the low 64 bits),
# then the first half.  In "clickhouse" order mode the emulator stores every
# UUID as "<second half>-<first half>" so that SQLite's text order is ClickHouse's
# order; the top-level SELECT turns it back into the canonical form.

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def canonical_uuid(s):
    if isinstance(s, str) and UUID_RE.match(s):
        return s
    try:
        return str(uuidlib.UUID(str(s)))
    except Exception:
        raise ValueError("Cannot parse UUID from String %r" % (s,))


class UuidMode:
    def __init__(self, clickhouse_order):
        self.ch = clickhouse_order

    def to_key(self, canon):
        if self.ch:
            return canon[19:] + "-" + canon[:18]
        return canon

    def from_key_sql(self, sql):
        if self.ch:
            return "(substr(%s, 19) || '-' || substr(%s, 1, 17))" % (sql, sql)
        return sql
