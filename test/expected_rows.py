#!/usr/bin/env python3
"""Test oracle: the rows an export must have written, computed straight from
the emulator's NDJSON source files, independently of the extension's code.

Writes CSV (header first, \\N for NULL) that a test COPYs into a table and compares with
the destination, column by column, with EXCEPT ALL both ways.

  expected_rows.py --data DIR --model events --start RFC3339 --end RFC3339
                   [--lookback-hours H] [--include E ...] [--exclude E ...]
                   [--dedupe] [--team-id 1] [--visible-at RFC3339]

Only rows of the project's team (--team-id, default 1) count: PostHog never returns another team's
rows, and the data files may hold some (generate_data.py --other-team-rows).  A row without a team_id is
taken as the team's, as the emulator does.

Events: --visible-at leaves out the rows whose "_visible_at" is after that time, as the emulator
does while its clock is before it (default: every row counts).

Sessions: see sessions().

Events: selected by ingestion time (created_at) in [start, end) and event
time (timestamp) >= start - lookback, as PostHog's batch export does; NUL
characters and lone UTF-16 surrogates are removed from properties, as
PostHog strips them before writing jsonb.
"""
import argparse
import csv
import json
import sys
from datetime import datetime, timedelta, timezone


TEAM = {"id": 1}  # --team-id


def own_team(row):
    """Whether a data file row belongs to the project's team."""
    t = row.get("team_id")
    return t is None or t == TEAM["id"]


def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(timezone.utc)


def clean(v):
    """Drop what jsonb cannot hold: NUL and lone surrogates, in keys and values."""
    if isinstance(v, str):
        return "".join(ch for ch in v if ch != "\x00" and not (0xD800 <= ord(ch) <= 0xDFFF))
    if isinstance(v, list):
        return [clean(x) for x in v]
    if isinstance(v, dict):
        return {clean(k): clean(x) for k, x in v.items()}
    return v


def jtext(v):
    return None if v is None else json.dumps(v, ensure_ascii=False)


def events(a, out):
    start, end = ts(a.start), ts(a.end)
    min_ts = start - timedelta(hours=24 * 7 if a.lookback_hours is None else a.lookback_hours)
    w = csv.writer(out)
    w.writerow(["uuid", "event", "properties", "elements", "set", "set_once",
                "distinct_id", "team_id", "ip", "site_url", "timestamp"])
    rows = {}
    order = []
    with open(f"{a.data}/events.ndjson", encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            e = json.loads(line)
            if not own_team(e):
                continue
            if a.visible_at and e.get("_visible_at") and ts(e["_visible_at"]) > ts(a.visible_at):
                continue
            created, t = ts(e["created_at"]), ts(e["timestamp"])
            if not (start <= created < end and t >= min_ts):
                continue
            if a.include and e.get("event") not in a.include:
                continue
            if a.exclude and e.get("event") in a.exclude:
                continue
            props = clean(e.get("properties"))
            ip = props.get("$ip") if isinstance(props, dict) else None
            if ip is not None and not isinstance(ip, str):
                ip = json.dumps(ip)
            if ip == "":
                ip = None  # PostHog's export writes an empty $ip as NULL
            get = (lambda k: props.get(k) if isinstance(props, dict) else None)
            chain = e.get("elements_chain")
            row = [clean(e["uuid"]), clean(e.get("event")), jtext(props),
                   None if chain is None else json.dumps(clean(chain), ensure_ascii=False),
                   jtext(get("$set")), jtext(get("$set_once")),
                   clean(e.get("distinct_id")), e.get("team_id"), ip, None,
                   t.isoformat()]
            if a.dedupe:
                if row[0] not in rows:
                    order.append(row[0])
                rows[row[0]] = row
            else:
                order.append(row)
    for r in order:
        # \N marks NULL (COPY ... NULL '\N'); an empty field is an empty string
        w.writerow(["\\N" if v is None else v for v in (rows[r] if a.dedupe else r)])


def read_ndjson(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [r for r in (json.loads(line) for line in f if line.strip()) if own_team(r)]
    except FileNotFoundError:
        return []


def latest(rows, key):
    """argMax by version: the row with the highest version of each key."""
    best = {}
    for r in rows:
        k = key(r)
        if k not in best or r["version"] >= best[k]["version"]:
            best[k] = r
    return best


def persons(a, out):
    """One row per (team_id, distinct_id): its latest mapping, joined to the
    latest version of the person it points to."""
    w = csv.writer(out)
    w.writerow(["team_id", "distinct_id", "person_id", "properties", "person_distinct_id_version",
                "person_version", "created_at", "is_deleted"])
    people = latest(read_ndjson(f"{a.data}/persons.ndjson"), lambda r: r["id"])
    maps = latest(read_ndjson(f"{a.data}/person_distinct_ids.ndjson"), lambda r: (r["team_id"], r["distinct_id"]))
    for (team, did), m in sorted(maps.items()):
        p = people.get(m["person_id"])
        row = [team, clean(did), m["person_id"],
               jtext(clean(p["properties"])) if p else None, m["version"],
               p["version"] if p else None, ts(p["created_at"]).isoformat() if p else None,
               "t" if (bool(m.get("is_deleted")) or bool(p and p.get("is_deleted"))) else "f"]
        w.writerow(["\\N" if v is None else v for v in row])


# every field PostHog's sessions export writes, plus max_inserted_at and entry_referrer (the
# destination's columns, in order); the rest are "$" + the column's name in the data file
SESSION_COLUMNS = ["team_id", "session_id", "distinct_id", "start_timestamp", "end_timestamp", "urls",
                   "num_uniq_urls", "entry_current_url", "entry_pathname", "entry_hostname",
                   "end_current_url", "end_pathname", "end_hostname", "entry_referring_domain",
                   "entry_utm_source", "entry_utm_campaign", "entry_utm_medium", "entry_utm_term",
                   "entry_utm_content", "entry_gclid", "entry_gad_source", "entry_fbclid",
                   "pageview_count", "autocapture_count", "screen_count", "channel_type",
                   "session_duration", "is_bounce", "last_external_click_url", "vitals_lcp",
                   "session_id_v7", "max_inserted_at", "entry_referrer", "entry_gclsrc", "entry_dclid",
                   "entry_gbraid", "entry_wbraid", "entry_msclkid", "entry_twclid", "entry_li_fat_id",
                   "entry_mc_cid", "entry_igshid", "entry_ttclid", "entry__kx", "entry_irclid", "duration",
                   "page_screen_autocapture_count_up_to", "exit_current_url", "exit_pathname"]
SESSION_PLAIN = ("team_id", "session_id", "distinct_id", "session_id_v7", "max_inserted_at", "duration")
SESSION_TIMES = ("start_timestamp", "end_timestamp", "max_inserted_at")


def pg_text_array(v):
    if v is None:
        return None
    return "{" + ",".join('"' + x.replace("\\", "\\\\").replace('"', '\\"') + '"' for x in v) + "}"


def sessions(a, out):
    """The sessions whose data arrived in [start, end), as PostHog's sessions export selects them:
    greatest(max_inserted_at, $end_timestamp) in [start, end), among those with
    $end_timestamp >= start - lookback (the bound on the scan).  A line without max_inserted_at
    (PostHog always has one) is never selected."""
    start, end = ts(a.start), ts(a.end)
    min_end = start - timedelta(hours=72 if a.lookback_hours is None else a.lookback_hours)
    w = csv.writer(out)
    w.writerow(SESSION_COLUMNS)
    for s in read_ndjson(f"{a.data}/sessions.ndjson"):
        s_end = ts(s["$end_timestamp"])
        if s.get("max_inserted_at") is None:
            continue
        arrived = max(ts(s["max_inserted_at"]), s_end)
        if not (min_end <= s_end and start <= arrived < end):
            continue
        row = []
        for c in SESSION_COLUMNS:
            v = s.get(c if c in SESSION_PLAIN else "$" + c)
            if c in SESSION_TIMES and v is not None:
                v = ts(v).isoformat()
            elif c == "urls":
                v = pg_text_array(v)
            elif c == "is_bounce" and v is not None:
                v = "t" if v else "f"
            row.append(v)
        w.writerow(["\\N" if v is None else v for v in row])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="events", choices=["events", "persons", "sessions"])
    p.add_argument("--start", default="1970-01-01T00:00:00Z")
    p.add_argument("--end", default="2100-01-01T00:00:00Z")
    p.add_argument("--lookback-hours", type=float, default=None,
                   help="default: 168 (7 days) for events, 72 (3 days) for sessions")
    p.add_argument("--include", nargs="*", default=[])
    p.add_argument("--exclude", nargs="*", default=[])
    p.add_argument("--dedupe", action="store_true", help="one row per uuid (merge mode): the last copy")
    p.add_argument("--team-id", type=int, default=1, help="the project's team (default %(default)s)")
    p.add_argument("--visible-at", default=None,
                   help="events: leave out rows whose _visible_at is after this time")
    a = p.parse_args()
    TEAM["id"] = a.team_id
    {"events": events, "persons": persons, "sessions": sessions}[a.model](a, sys.stdout)


if __name__ == "__main__":
    main()
