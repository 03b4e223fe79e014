#!/usr/bin/env python3
"""Test oracle: the rows an export must have written, computed straight from
the emulator's NDJSON source files, independently of the extension's code.

Writes CSV (header first, \\N for NULL) that a test COPYs into a table and compares with
the destination, column by column, with EXCEPT ALL both ways.

  expected_rows.py --data DIR --model events --start RFC3339 --end RFC3339
                   [--lookback-hours H] [--include E ...] [--exclude E ...]
                   [--dedupe]

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
    min_ts = start - timedelta(hours=a.lookback_hours)
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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--model", default="events", choices=["events"])
    p.add_argument("--start", required=True)
    p.add_argument("--end", required=True)
    p.add_argument("--lookback-hours", type=float, default=24 * 7)
    p.add_argument("--include", nargs="*", default=[])
    p.add_argument("--exclude", nargs="*", default=[])
    p.add_argument("--dedupe", action="store_true", help="one row per uuid (merge mode): the last copy")
    a = p.parse_args()
    events(a, sys.stdout)


if __name__ == "__main__":
    main()
