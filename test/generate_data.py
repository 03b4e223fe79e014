#!/usr/bin/python3
"""Write realistic sample data for the PostHog emulator (NDJSON, one JSON object a line).

    python3 test/generate_data.py --out DIR --events N [--persons N] [--sessions N] [--seed S]
        [--start RFC3339] [--end RFC3339] [--team-id 1] [--other-team-rows 25] [--other-team-id T]

Files: events.ndjson, persons.ndjson (raw_persons: every version of every person),
person_distinct_ids.ndjson (raw_person_distinct_ids: every version of every mapping),
sessions.ndjson, groups.ndjson (raw_groups: every version of a few groups; written last from a random
generator of its own, so the other files are what they were before groups existed).  Deterministic for a
given seed.  Events are streamed to the file, so
millions of them need little memory.

What the events contain, on purpose:
  * ~10 event names incl. $pageview, $autocapture, $feature_flag_called, $identify, signed_up and
    a unicode one; 20-60 properties each (~1 KB) with strings, ints, floats, large ints (beyond
    int64 too), booleans, nulls, nested objects and arrays, CJK/emoji/RTL text; $set / $set_once
    on some; $ip on most; $current_url and $session_id on all.
  * about 1 in 200 events: a real NUL (written as the escape \\u0000) inside a property value or key;
    about 1 in 300: a lone UTF-16 surrogate (written as the escape \\ud83d); about 1 in 100: the
    literal text backslash-u-0-0-0-0 (written as \\\\u0000) which must be kept as text.
  * about 1 in 100 events share the exact timestamp of the previous event (to exercise the uuid
    tie-breaker of a (timestamp, uuid) keyset cursor); a few timestamps are written with a
    non-UTC offset or millisecond precision.
  * created_at = timestamp + 0.05..30 s; about 2 % are late: created_at is 1..72 hours later.
  * rows of another team (--other-team-rows, default 25 a file; 0 for none): copies of rows of the team,
    changed to team --other-team-id (default: the team + 1) with new uuids / person ids / session ids and
    "other_team" marks, appended to each file.  Their times fall in the same windows, and their mappings
    reuse the team's distinct ids, so only a team filter keeps them out of an export.  PostHog scopes
    every query to the project's team: the emulator never returns them, and the oracle leaves them out.

Sessions have every field of PostHog's v2 sessions table (see v2_fields): max_inserted_at is the
session's end plus an ingestion delay, some sessions arrive hours late, some have no $is_bounce.
"""

import argparse
import bisect
import json
import os
import random
import re
import sys
import time
from datetime import datetime, timedelta, timezone

EPOCH = datetime(1970, 1, 1)
_SURR = re.compile("[\ud800-\udfff]")


def parse_ts(s):
    d = datetime.fromisoformat(s.replace("Z", "+00:00"))
    if d.tzinfo is None:
        d = d.replace(tzinfo=timezone.utc)
    return (d - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def fmt_us(us, _e=EPOCH, _td=timedelta):
    """RFC 3339 UTC with microseconds (fraction omitted when zero)."""
    s = (_e + _td(microseconds=us)).isoformat()
    return s + "Z"


def fmt_us_offset(us, minutes):
    tz = timezone(timedelta(minutes=minutes))
    d = datetime.fromtimestamp(us // 1000000, tz).replace(microsecond=us % 1000000)
    return d.isoformat()


def fmt_us_ms(us):
    d = EPOCH + timedelta(microseconds=us)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (d.microsecond // 1000)


class Ids:
    def __init__(self, rng):
        self.bits = rng.getrandbits

    def uuid4(self):
        u = self.bits(128)
        u = (u & ~(0xF << 76)) | (4 << 76)
        u = (u & ~(0x3 << 62)) | (0x2 << 62)
        h = "%032x" % u
        return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])

    def uuid7(self, ms):
        rand = self.bits(74)
        u = (ms & ((1 << 48) - 1)) << 80 | (7 << 76) | ((rand >> 62) & 0xFFF) << 64 | (0x2 << 62) | (rand & ((1 << 62) - 1))
        h = "%032x" % u
        return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


HOSTS = ["app.example.com", "www.example.com", "shop.example.co.jp", "docs.example.org", "例え.テスト"]
PATHS = ["/", "/pricing", "/signup", "/login", "/dashboard", "/settings/profile", "/blog/hello-world",
         "/products/42", "/checkout", "/search", "/カート", "/docs/api/query", "/features/🚀-launch"]
BROWSERS = ["Chrome", "Firefox", "Safari", "Edge", "Mobile Safari", "Samsung Internet", "Opera"]
OSES = ["Mac OS X", "Windows", "Linux", "iOS", "Android", "Chrome OS"]
DEVICES = ["Desktop", "Mobile", "Tablet"]
REFERRERS = ["$direct", "https://www.google.com/", "https://news.ycombinator.com/", "https://t.co/abc",
             "https://www.bing.com/search?q=posthog", "https://duckduckgo.com/", "https://www.facebook.com/"]
UTM_SOURCES = ["google", "newsletter", "twitter", "linkedin", "reddit", None]
CHANNELS = ["Direct", "Organic Search", "Paid Search", "Referral", "Email", "Organic Social", "Paid Social"]
TEXTS = [
    "hello world", "Lorem ipsum dolor sit amet, consectetur adipiscing elit",
    "日本語のテキスト、カタカナとひらがな", "中文字符测试：你好，世界", "한국어 텍스트입니다",
    "emoji 😀🎉🚀👍🏽 family 👨‍👩‍👧‍👦", "עברית מימין לשמאל", "العربية من اليمين إلى اليسار",
    "Ünïcödé àçcéñts ßtraße", "quotes \"double\" and 'single' and `back`", "tab\tand\nnewline",
    "backslash \\ slash / percent % amp & lt < gt >", "Ελληνικά κείμενο", "кириллица текст",
    "ZWJ\u200dand\u200bzero-width", "math ∑∫√∞ ≠ ≤ ≥", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 astral 𠜎𠜱𠝹", "",
]
WORDS = ["alpha", "beta", "gamma", "delta", "plan", "team", "pro", "free", "enterprise", "trial", "blue",
         "green", "red", "north", "south", "onboarding", "checkout", "export", "import", "billing"]
FLAGS = ["new-onboarding", "beta-dashboard", "pricing-experiment", "dark-mode", "query-v2"]
EVENT_NAMES = ["$pageview"] * 30 + ["$autocapture"] * 20 + ["$pageleave"] * 8 + ["$feature_flag_called"] * 8 + \
    ["$identify"] * 3 + ["signed_up"] * 2 + ["purchase_completed"] * 3 + ["$screen"] * 4 + \
    ["注文完了 ✅"] * 2 + ["user logged in"] * 3 + ["$web_vitals"] * 3
ELEMENT_TAGS = ["button", "a", "div", "span", "input", "svg"]


def build_extra_kinds():
    """(key, kind) pairs for the variable part of the properties."""
    # heavy kinds (objects, arrays, long texts) are rarer so that an event is ~1 KB on average
    kinds = ["int", "float", "word", "bool", "null", "int", "obj", "str", "bigint", "word", "text",
             "float", "bool", "int", "word", "neg", "int", "bool", "word", "float", "null", "url",
             "int", "word", "bool", "arr", "int", "float", "word", "date", "int", "bool", "null", "nested"]
    out = []
    for i in range(160):
        k = kinds[i % len(kinds)]
        if i % 7 == 0:
            key = "$%s_%d" % (WORDS[i % len(WORDS)], i)
        elif i % 11 == 0:
            key = "プロパ_%d" % i
        elif i % 13 == 0:
            key = "with space %d" % i
        else:
            key = "%s_%d" % (WORDS[(i * 7) % len(WORDS)], i)
        out.append((key, k))
    return out


EXTRAS = build_extra_kinds()


CLICK_IDS = ["gclsrc", "dclid", "gbraid", "wbraid", "msclkid", "twclid", "li_fat_id", "mc_cid", "igshid",
             "ttclid", "_kx", "irclid"]
SESSION_REFERRERS = {"$direct": None, "www.google.com": "https://www.google.com/",
             "news.ycombinator.com": "https://news.ycombinator.com/item?id=4242",
             "t.co": "https://t.co/AbC123xyz"}


def v2_fields(row, sid, s_start, dur, host, utm, g):
    """The rest of the v2 sessions table's fields (posthog/hogql/database/schema/sessions_v2.py),
    drawn from g.  max_inserted_at is when the session last received data: its end plus an
    ingestion delay of a second to a few minutes; about 3 % arrive late (1 to 30 hours after
    they ended); about 1 % are from before PostHog stamped it (the epoch).  About 5 % have no
    $is_bounce (null), as the real PostHog can answer."""
    end_us = parse_ts(row["$end_timestamp"])
    x = g.random()
    if x < 0.03:
        delay = int((1 + g.random() * 29) * 3600 * 1000000)
    else:
        delay = int((1 + g.random() * 300) * 1000000)
    row["max_inserted_at"] = fmt_us(0) if 0.03 <= x < 0.04 else fmt_us(end_us + delay)
    # toUInt128(toUUID(session_id)): the UUID's 128 bits, as decimal text
    row["session_id_v7"] = str(int(sid.replace("-", ""), 16))
    row["$entry_referrer"] = SESSION_REFERRERS.get(row["$entry_referring_domain"])
    for name in CLICK_IDS:
        row["$entry_" + name] = ("%s-%08x" % (name.strip("_"), g.getrandbits(32))
                                 if g.random() < (0.15 if utm else 0.02) else None)
    row["duration"] = dur
    row["$page_screen_autocapture_count_up_to"] = (
        1 if row["$pageview_count"] + row["$autocapture_count"] + row["$screen_count"] > 0 else 0)
    row["$exit_current_url"] = row["$end_current_url"]
    row["$exit_pathname"] = row["$end_pathname"]
    if g.random() < 0.05:
        row["$is_bounce"] = None
    if g.random() < 0.02:  # a key absent from the line reads as NULL
        row.pop("$entry_referrer")
def _sample_lines(path, n, rng):
    """n lines of the file's first 20 * n (whole JSON objects), chosen with rng; fewer if the file is short."""
    head = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    head.append(line)
                if len(head) >= 20 * n:
                    break
    except FileNotFoundError:
        return []
    return [head[i] for i in sorted(rng.sample(range(len(head)), min(n, len(head))))]


def add_other_team_rows(out, other_team, n, seed):
    """Append to each data file up to n copies of its rows, moved to team other_team (see the docstring).

    Works on the rows as written (whatever columns they have), with an RNG of its own, so the team's rows
    are the same with or without them."""
    rng = random.Random(seed * 7919 + 17)
    ids = Ids(rng)

    def append(name, rows):
        with open(os.path.join(out, name), "a", encoding="utf-8", newline="\n") as fh:
            for row in rows:
                line = json.dumps(row, ensure_ascii=False)
                fh.write(_SURR.sub(lambda m: "\\u%04x" % ord(m.group()), line) + "\n")

    new_pid = {}
    persons = []
    for line in _sample_lines(os.path.join(out, "persons.ndjson"), n, rng):
        row = json.loads(line)
        new_pid.setdefault(row.get("id"), ids.uuid4())
        row.update(id=new_pid[row.get("id")], team_id=other_team)
        if isinstance(row.get("properties"), dict):
            row["properties"] = dict(row["properties"], other_team=True)
        persons.append(row)
    append("persons.ndjson", persons)
    maps = []
    targets = list(new_pid.values()) or [ids.uuid4()]
    for line in _sample_lines(os.path.join(out, "person_distinct_ids.ndjson"), n, rng):
        row = json.loads(line)  # the same distinct id in another team: a different person
        row.update(team_id=other_team, person_id=targets[int(rng.random() * len(targets))])
        maps.append(row)
    append("person_distinct_ids.ndjson", maps)
    sessions = []
    for line in _sample_lines(os.path.join(out, "sessions.ndjson"), n, rng):
        row = json.loads(line)
        sid = row.get("session_id")
        if isinstance(sid, str) and len(sid) == 36:  # keep the UUIDv7 time prefix, new random bits
            row["session_id"] = sid[:14] + ids.uuid4()[14:]
        else:
            row["session_id"] = ids.uuid4()
        if "session_id_v7" in row:
            row["session_id_v7"] = row["session_id"]
        row["team_id"] = other_team
        row["distinct_id"] = "other-team-%s" % row.get("distinct_id")
        sessions.append(row)
    append("sessions.ndjson", sessions)
    events = []
    for line in _sample_lines(os.path.join(out, "events.ndjson"), n, rng):
        row = json.loads(line)
        row.update(uuid=ids.uuid4(), team_id=other_team)
        if isinstance(row.get("properties"), dict):
            row["properties"] = dict(row["properties"], other_team=True)
        events.append(row)
    append("events.ndjson", events)


def write_groups(out, team, other_team, start, seed):
    """groups.ndjson: 12 groups of types 0 (companies) and 1 (projects), 1-3 versions each (updated_at a
    whole second, as the ClickHouse _timestamp column), properties with strings, numbers, booleans, nulls,
    a nested object and unicode; plus two groups of the other team."""
    rng = random.Random(seed * 7919 + 17)
    rows = []
    names = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Ünïcødé GmbH", "株式会社テスト", "O'Reilly \"Q\"",
             "Stark", "Wayne", "Tyrell", "Cyberdyne"]
    for i, name in enumerate(names):
        index = i % 2
        key = ("company_%d" % i) if index == 0 else ("proj-%d" % i)
        created = start - int(rng.random() * 60 * 86400) * 1000000 - int(rng.random() * 1000000)
        updated = (created // 1000000 + 1) * 1000000
        for v in range(1 + int(rng.random() * 3)):
            props = {"name": name, "employees": int(rng.random() * 5000), "arr": round(rng.random() * 1e6, 2),
                     "paying": rng.random() < 0.5, "industry": None if rng.random() < 0.3 else
                     rng.choice(["saas", "retail", "Finance", "finance", "édu"]),
                     "address": {"city": rng.choice(["Berlin", "Zürich", "東京"]), "zip": "%05d" % i},
                     "version": v}
            if rng.random() < 0.3:
                del props["employees"]
            rows.append({"index": index, "key": key, "team_id": team, "created_at": fmt_us(created),
                         "updated_at": fmt_us(updated), "properties": props})
            updated += int(1 + rng.random() * 86400) * 1000000
    if other_team is not None:
        for i in range(2):
            rows.append({"index": 0, "key": "company_%d" % i, "team_id": other_team, "created_at": fmt_us(start),
                         "updated_at": fmt_us(start + 86400 * 10 ** 6), "properties": {"name": "other_team"}})
    with open(os.path.join(out, "groups.ndjson"), "w", encoding="utf-8", newline="\n") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--persons", type=int, help="default: sessions / 3")
    ap.add_argument("--sessions", type=int, help="default: events / 15")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--start", default="2026-11-01T00:00:00Z", help="RFC 3339 (default %(default)s)")
    ap.add_argument("--end", help="RFC 3339, exclusive (default: start + 30 days)")
    ap.add_argument("--team-id", type=int, default=1)
    ap.add_argument("--other-team-rows", type=int, default=25,
                    help="rows of another team added to each file (default %(default)s; 0: none)")
    ap.add_argument("--other-team-id", type=int, help="that team (default: --team-id + 1)")
    args = ap.parse_args(argv)
    if args.other_team_rows < 0:
        ap.error("--other-team-rows must be >= 0")
    other_team = args.other_team_id if args.other_team_id is not None else args.team_id + 1
    if args.other_team_rows and other_team == args.team_id:
        ap.error("--other-team-id must differ from --team-id")

    start = parse_ts(args.start)
    end = parse_ts(args.end) if args.end else start + 30 * 86400 * 1000000
    if end <= start:
        ap.error("--end must be after --start")
    n_events = args.events
    n_sessions = args.sessions if args.sessions is not None else max(5, n_events // 15)
    n_persons = args.persons if args.persons is not None else max(5, n_sessions // 3)
    if n_persons < 1:
        ap.error("--persons must be at least 1")
    os.makedirs(args.out, exist_ok=True)
    team = args.team_id
    t0 = time.monotonic()

    rng = random.Random(args.seed)
    ids = Ids(rng)
    r = rng.random

    # ---- persons and distinct ids
    persons = []  # (person_id, [distinct ids], created_us)
    did_owner = {}
    with open(os.path.join(args.out, "persons.ndjson"), "w", encoding="utf-8", newline="\n") as fp, \
            open(os.path.join(args.out, "person_distinct_ids.ndjson"), "w", encoding="utf-8",
                 newline="\n") as fd:
        for i in range(n_persons):
            pid = ids.uuid4()
            created = start - int(r() * 90 * 86400 * 1000000)
            created -= created % 1000  # ClickHouse keeps milliseconds for persons
            dids = []
            for j in range(1 + int(r() * 3)):
                x = r()
                if x < 0.4:
                    d = ids.uuid4()
                elif x < 0.7:
                    d = "user%d_%d@example.com" % (i, j)
                elif x < 0.9:
                    d = "%d" % (100000 + i * 3 + j)
                else:
                    d = "ユーザー-%d-%d" % (i, j)
                dids.append(d)
                did_owner[d] = pid
            persons.append((pid, dids, created))
            n_versions = 1 + int(r() * 4)
            props = {"email": "user%d@example.com" % i, "name": "Person %d" % i,
                     "$initial_browser": BROWSERS[i % len(BROWSERS)],
                     "$initial_os": OSES[i % len(OSES)], "plan": "free"}
            identified = r() < 0.6
            deleted_at = n_versions if r() < 0.02 else None
            version = 0
            for v in range(1, n_versions + 1):
                version += 1 + int(r() * 3)
                if v > 1:
                    props = dict(props)
                    props["plan"] = rng.choice(["free", "pro", "enterprise", "trial"])
                    props["visits"] = v * 3
                    if r() < 0.3:
                        props["nickname"] = rng.choice(TEXTS[:10])
                    if r() < 0.2:
                        props.pop("name", None)
                is_del = deleted_at is not None and v == deleted_at
                if is_del:
                    version += 100
                row = {"id": pid, "team_id": team, "properties": props,
                       "created_at": fmt_us(created), "is_identified": identified and (v > 1 or n_versions == 1),
                       "is_deleted": is_del, "version": version}
                fp.write(json.dumps(row, ensure_ascii=False) + "\n")
            for d in dids:
                dv = 0
                fd.write(json.dumps({"team_id": team, "distinct_id": d, "person_id": pid, "is_deleted": False,
                                     "version": dv}, ensure_ascii=False) + "\n")
                x = r()
                if x < 0.05:  # version bump, same person (re-identify)
                    dv += 1
                    fd.write(json.dumps({"team_id": team, "distinct_id": d, "person_id": pid,
                                         "is_deleted": False, "version": dv}, ensure_ascii=False) + "\n")
                elif x < 0.08 and persons:  # merged into another person
                    dv += 1
                    other = persons[int(r() * len(persons))][0]
                    did_owner[d] = other
                    fd.write(json.dumps({"team_id": team, "distinct_id": d, "person_id": other,
                                         "is_deleted": False, "version": dv}, ensure_ascii=False) + "\n")
                elif x < 0.09:  # deleted mapping
                    dv += 1
                    fd.write(json.dumps({"team_id": team, "distinct_id": d, "person_id": pid,
                                         "is_deleted": True, "version": dv}, ensure_ascii=False) + "\n")

    # ---- sessions
    span = end - start
    sess = []  # (start_us, session_id, distinct_id)
    for i in range(n_sessions):
        s_start = start + int(r() * span)
        p = persons[int(r() * len(persons))]
        d = p[1][int(r() * len(p[1]))]
        sid = ids.uuid7(s_start // 1000)
        sess.append((s_start, sid, d))
    sess.sort()
    sess_starts = [s[0] for s in sess]
    # the v2 fields draw from their own generator, so the rest of the data (events
    # above all) is the same as before they were added
    v2 = random.Random(args.seed * 7919 + 17)
    with open(os.path.join(args.out, "sessions.ndjson"), "w", encoding="utf-8", newline="\n") as fs:
        for s_start, sid, d in sess:
            dur = int(r() * 3 * 3600) if r() < 0.8 else 0
            host = HOSTS[int(r() * len(HOSTS))]
            entry_path = PATHS[int(r() * len(PATHS))]
            exit_path = PATHS[int(r() * len(PATHS))]
            n_urls = 1 + int(r() * 6)
            urls = ["https://%s%s" % (host, PATHS[int(r() * len(PATHS))]) for _ in range(n_urls)]
            pv = int(r() * 20)
            utm = UTM_SOURCES[int(r() * len(UTM_SOURCES))]
            row = {
                "session_id": sid, "team_id": team, "distinct_id": d,
                "$start_timestamp": fmt_us(s_start), "$end_timestamp": fmt_us(s_start + dur * 1000000 + int(r() * 1000000)),
                "$urls": urls, "$num_uniq_urls": len(set(urls)),
                "$entry_current_url": "https://%s%s" % (host, entry_path), "$entry_pathname": entry_path,
                "$entry_hostname": host,
                "$end_current_url": "https://%s%s" % (host, exit_path), "$end_pathname": exit_path,
                "$end_hostname": host,
                "$entry_referring_domain": rng.choice(["$direct", "www.google.com", "news.ycombinator.com", "t.co"]),
                "$entry_utm_source": utm,
                "$entry_utm_campaign": ("spring_sale" if utm else None),
                "$entry_utm_medium": ("cpc" if utm == "google" else ("email" if utm == "newsletter" else None)),
                "$entry_utm_term": ("analytics 分析" if utm == "google" and r() < 0.5 else None),
                "$entry_utm_content": ("banner-a" if utm and r() < 0.3 else None),
                "$entry_gclid": ("Cj0KCQ%08x" % rng.getrandbits(32) if utm == "google" else None),
                "$entry_gad_source": ("1" if utm == "google" and r() < 0.5 else None),
                "$entry_fbclid": ("IwAR%08x" % rng.getrandbits(32) if r() < 0.05 else None),
                "$pageview_count": pv, "$autocapture_count": int(r() * 30), "$screen_count": int(r() * 3),
                "$channel_type": CHANNELS[int(r() * len(CHANNELS))],
                "$session_duration": dur, "$is_bounce": pv <= 1 and dur < 10,
                "$last_external_click_url": ("https://partner.example.net/x?ref=%d" % int(r() * 1000)
                                             if r() < 0.1 else None),
                "$vitals_lcp": (round(r() * 4000, 3) if r() < 0.7 else None),
            }
            if r() < 0.05:  # a key absent from the line must read as NULL
                row.pop("$entry_utm_term")
            v2_fields(row, sid, s_start, dur, host, utm, v2)
            fs.write(json.dumps(row, ensure_ascii=False) + "\n")

    # ---- events (streamed)
    n_pv = len(EVENT_NAMES)
    n_ex = len(EXTRAS)
    n_txt = len(TEXTS)
    n_words = len(WORDS)
    ips = ["%d.%d.%d.%d" % (rng.randint(1, 223), rng.randint(0, 255), rng.randint(0, 255), rng.randint(1, 254))
           for _ in range(500)] + ["2001:db8::%x" % i for i in range(1, 60)]
    n_ips = len(ips)
    urls = ["https://%s%s" % (h, p) for h in HOSTS for p in PATHS]
    n_urls = len(urls)
    chains = []
    for i in range(200):
        parts = []
        for depth in range(1 + i % 5):
            tag = ELEMENT_TAGS[(i + depth) % len(ELEMENT_TAGS)]
            cls = ".btn.btn-%s" % WORDS[(i + depth) % n_words] if depth == 0 else ""
            text = 'text="%s"' % ["Sign up", "購入する", "Next →", "Delete", "OK"][i % 5] if depth == 0 else ""
            parts.append('%s%s:attr__class="btn"nth-child="%d"nth-of-type="%d"%s'
                         % (tag, cls, 1 + (i + depth) % 4, 1 + depth, text))
        chains.append(";".join(parts))
    lib_versions = ["1.%d.%d" % (100 + i, i % 7) for i in range(30)]

    def value(kind):
        if kind == "str":
            return WORDS[int(r() * n_words)] + "-%d" % int(r() * 100)
        if kind == "int":
            return int(r() * 100000)
        if kind == "float":
            return round(r() * 1000, 4)
        if kind == "bigint":
            x = r()
            if x < 0.5:
                return 9007199254740993 + int(r() * 1000)
            if x < 0.9:
                return 9223372036854775807 - int(r() * 1000)
            return 18446744073709551615 + int(r() * 1000)  # beyond int64
        if kind == "bool":
            return r() < 0.5
        if kind == "null":
            return None
        if kind == "obj":
            return {"id": int(r() * 1000), "name": WORDS[int(r() * n_words)], "ok": r() < 0.5,
                    "score": round(r(), 3), "tags": [WORDS[int(r() * n_words)], TEXTS[int(r() * n_txt)]]}
        if kind == "nested":
            return {"level1": {"level2": {"level3": [1, 2.5, None, True, "深い"], "x": None}}, "n": int(r() * 10)}
        if kind == "arr":
            return [int(r() * 10), WORDS[int(r() * n_words)], None, r() < 0.5, {"k": "v"}, [1, [2, [3]]]]
        if kind == "text":
            return TEXTS[int(r() * n_txt)]
        if kind == "word":
            return WORDS[int(r() * n_words)]
        if kind == "url":
            return urls[int(r() * n_urls)] + "?q=%d&utm_source=x" % int(r() * 100)
        if kind == "date":
            return fmt_us(start + int(r() * span))
        if kind == "neg":
            return -int(r() * 1e9) - r()
        return None

    path = os.path.join(args.out, "events.ndjson")
    stats = {"nul": 0, "surrogate": 0, "escaped": 0, "late": 0, "dup_ts": 0}
    prev_ts = None
    prev_dup = None
    with open(path, "w", encoding="utf-8", newline="\n", buffering=1 << 20) as fe:
        out = []
        for i in range(n_events):
            if prev_ts is not None and r() < 0.01:
                ts = prev_ts
                prev_dup = ts
                stats["dup_ts"] += 1
            else:
                ts = start + int(r() * span)
            prev_ts = ts
            k = bisect.bisect_right(sess_starts, ts) - 1 - int(r() * 3)
            if k < 0:
                k = 0
            s_start, sid, did = sess[k] if sess else (ts, ids.uuid7(ts // 1000), "anonymous")
            ev = EVENT_NAMES[int(r() * n_pv)]
            host_url = urls[int(r() * n_urls)]
            p = {
                "$session_id": sid,
                "$current_url": host_url,
                "$host": host_url.split("/")[2],
                "$pathname": "/" + host_url.split("/", 3)[3] if host_url.count("/") >= 3 else "/",
                "$browser": BROWSERS[int(r() * 7)],
                "$browser_version": 90 + int(r() * 40),
                "$os": OSES[int(r() * 6)],
                "$device_type": DEVICES[int(r() * 3)],
                "$lib": "web",
                "$lib_version": lib_versions[int(r() * 30)],
                "$screen_height": 600 + int(r() * 1000),
                "$screen_width": 800 + int(r() * 2000),
                "$referrer": REFERRERS[int(r() * 7)],
                "$insert_id": "%016x" % rng.getrandbits(64),
                "$time": ts / 1000000.0,
                "token": "phc_emulatorTestToken",
            }
            if r() < 0.9:
                p["$ip"] = ips[int(r() * n_ips)]
            if ev == "$feature_flag_called":
                p["$feature_flag"] = FLAGS[int(r() * 5)]
                p["$feature_flag_response"] = r() < 0.5 or "variant-%d" % int(r() * 3)
            if ev == "$identify" or r() < 0.1:
                p["$set"] = {"email": "user%d@example.com" % int(r() * 10000), "plan": WORDS[int(r() * n_words)],
                             "名前": TEXTS[int(r() * n_txt)], "seen": int(r() * 100)}
            if ev == "$identify" or r() < 0.05:
                p["$set_once"] = {"$initial_referrer": REFERRERS[int(r() * 7)], "first_seen": fmt_us(ts)}
            if ev == "$web_vitals":
                p["$web_vitals_LCP_value"] = round(r() * 4000, 2)
            x = r()
            total = 20 + int(x * x * 41)  # 20..60 properties, most events have fewer than 40
            j = int(r() * n_ex)
            while len(p) < total:
                key, kind = EXTRAS[j]
                p[key] = value(kind)
                j += 1
                if j == n_ex:
                    j = 0
            has_surrogate = False
            x = r()
            if x < 1 / 200:
                stats["nul"] += 1
                if r() < 0.5:
                    p["note"] = "before\u0000after"
                else:
                    p["key\u0000with_nul"] = "value"
            elif x < 1 / 200 + 1 / 300:
                stats["surrogate"] += 1
                has_surrogate = True
                if r() < 0.7:
                    p["broken_emoji"] = "smile \ud83d here"
                else:
                    p["lone\udc00key"] = "x"
            elif x < 1 / 200 + 1 / 300 + 1 / 100:
                stats["escaped"] += 1
                p["escaped_text"] = "literal \\u0000 and \\ud83d stay as text"
            created = ts + 50000 + int(r() * 30000000)
            if r() < 0.02:
                created = ts + 3600000000 + int(r() * 71 * 3600000000)
                stats["late"] += 1
            x = r()
            if ts == prev_dup:
                ts_text = fmt_us(ts)
            elif x < 0.02:
                ts_text = fmt_us_offset(ts, rng.choice([-300, -240, 60, 330, 540]))
            elif x < 0.04:
                ts_text = fmt_us_ms(ts)
            else:
                ts_text = fmt_us(ts)
            row = {"uuid": ids.uuid4(), "event": ev, "properties": p, "timestamp": ts_text,
                   "created_at": fmt_us(created), "team_id": team, "distinct_id": did,
                   "elements_chain": chains[int(r() * 200)] if ev == "$autocapture" else "",
                   "person_id": did_owner.get(did)}
            line = json.dumps(row, ensure_ascii=False)
            if has_surrogate:
                line = _SURR.sub(lambda m: "\\u%04x" % ord(m.group()), line)
            out.append(line)
            if len(out) >= 2000:
                out.append("")
                fe.write("\n".join(out))
                out = []
        if out:
            out.append("")
            fe.write("\n".join(out))
    # note: fmt_us_ms truncates to ms in the text; the emulator reads that as the timestamp.
    if args.other_team_rows:
        add_other_team_rows(args.out, other_team, args.other_team_rows, args.seed)
    write_groups(args.out, team, other_team if args.other_team_rows else None, start, args.seed)
    sys.stderr.write("generate_data: %d events, %d persons, %d sessions in %s (%.1f s); special events: %s\n"
                     % (n_events, n_persons, n_sessions, args.out, time.monotonic() - t0,
                        json.dumps(stats)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
