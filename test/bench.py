#!/usr/bin/env python3
"""make bench: the export against COPY and against a hand-written pipeline.

For each size (BENCH_SIZES, default "100000 1000000 3000000" events of about
1.3 KB), on one machine and the same generated data:

  emulator   the PostHog emulator alone, paged with a keyset cursor, twice:
             the first pass renders each row's JSON, which the emulator keeps
             (--render-cache), so the second pass -- and the export -- are
             served at the rate of its keyset scan; the source must be at
             least 3x faster than the export
  export     CALL posthog_export.run_export(...) pulling the rows
  copy       COPY events FROM a file holding exactly the rows the export
             wrote, into a table of the same definition and indexes
  pipeline   curl | jq | psql \\copy paging the same query API

The export's requests (runs.pages, at PostHog's 50,000-row page) give the
requests per million events and how long PostHog's default budget (120 requests
an hour, paced as src/posthog/request_budget.c does) makes a backfill of 10
million such events take.

and persons: a first load of BENCH_PERSONS persons, then a run after 10%
of them changed (rows written must be about 10%).  Each is measured in
rows/s and peak private memory (RssAnon) of the backend that does the work.  The table
is printed and written to bench-results.md in the repository.

Environment: BENCH_SIZES, BENCH_PERSONS (default 1000000; 0 skips),
BENCH_DIR (default /tmp/phx-bench: generated data is kept there and
reused), BENCH_PIPELINE=0 to skip the pipeline.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = "/usr/lib/postgresql/15/bin"
SIZES = [int(x) for x in os.environ.get("BENCH_SIZES", "100000 1000000 3000000").split()]
PERSONS = int(os.environ.get("BENCH_PERSONS", "1000000"))
BENCH_DIR = os.environ.get("BENCH_DIR", "/tmp/phx-bench")
PIPELINE = os.environ.get("BENCH_PIPELINE", "1") != "0"
KEY = "phx_bench_key"
START, END = "2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"
AS_PG = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Cluster:
    def __init__(self, root):
        self.dir = os.path.join(root, "pg")
        self.port = free_port()
        subprocess.run(AS_PG + [f"{BIN}/initdb", "-D", self.dir, "-A", "trust", "-U", "postgres"],
                       check=True, stdout=subprocess.DEVNULL)
        # wal_init_zero = off: whichever load runs first would otherwise pay for
        # zero-filling the new cluster's WAL segments and the next reuse them
        # (a long-running server recycles its segments; only a new one fills them)
        with open(os.path.join(self.dir, "postgresql.conf"), "a") as f:
            f.write(f"port = {self.port}\nunix_socket_directories = '{root}'\nlisten_addresses = ''\n"
                    "shared_buffers = '1GB'\nmax_wal_size = '16GB'\ncheckpoint_timeout = '30min'\nwal_init_zero = off\n"
                    "shared_preload_libraries = 'posthog_export'\nposthog_export.scheduler = off\n")
        self.root = root
        subprocess.run(AS_PG + [f"{BIN}/pg_ctl", "-D", self.dir, "-l", os.path.join(root, "pg.log"),
                                "-w", "start"], check=True, stdout=subprocess.DEVNULL)

    def psql_args(self):
        return AS_PG + [f"{BIN}/psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1",
                        "-h", self.root, "-p", str(self.port), "-U", "postgres", "-d", "postgres"]

    def sql(self, text):
        return subprocess.run(self.psql_args() + ["-c", text], check=True, capture_output=True,
                              text=True).stdout.strip()

    def timed(self, text):
        """Runs text in its own session; returns (seconds, peak private memory of its
        backend in MB).  Private (RssAnon, sampled), not VmHWM: VmHWM also counts
        every shared buffer the backend touched, which grows with the data written
        up to shared_buffers and says nothing of the backend's own memory."""
        pidfile = os.path.join(self.root, "backend.pid")
        if os.path.exists(pidfile):
            os.unlink(pidfile)
        script = f"\\o {pidfile}\nSELECT pg_backend_pid();\n\\o\n{text};\n"
        t0 = time.time()
        p = subprocess.Popen(self.psql_args(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        p.stdin.write(script)
        p.stdin.close()
        peak = 0
        pid = None
        while p.poll() is None:
            if pid is None and os.path.exists(pidfile):
                with open(pidfile) as f:
                    txt = f.read().strip()
                pid = int(txt) if txt.isdigit() else None
            if pid:
                try:
                    with open(f"/proc/{pid}/status") as f:
                        for line in f:
                            if line.startswith("RssAnon:"):
                                peak = max(peak, int(line.split()[1]))
                except OSError:
                    pass
            time.sleep(0.02)
        secs = time.time() - t0
        if p.returncode != 0:
            raise RuntimeError(p.stderr.read())
        return secs, peak / 1024.0

    def stop(self):
        subprocess.run(AS_PG + [f"{BIN}/pg_ctl", "-D", self.dir, "-m", "fast", "stop"],
                       stdout=subprocess.DEVNULL)


def ensure_data(n, persons=0):
    d = os.path.join(BENCH_DIR, f"data-{n}-{persons}")
    if not os.path.exists(os.path.join(d, "events.ndjson")):
        os.makedirs(d, exist_ok=True)
        cmd = [sys.executable, f"{REPO}/test/generate_data.py", "--out", d, "--events", str(n),
               "--seed", "2026", "--start", START, "--end", END, "--sessions", "1"]
        if persons:
            cmd += ["--persons", str(persons)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return d


def start_emulator(data, root):
    portfile = os.path.join(root, "emu.port")
    if os.path.exists(portfile):
        os.unlink(portfile)
    p = subprocess.Popen([sys.executable, f"{REPO}/test/emulator/server.py", "--data", data, "--port", "0",
                          "--port-file", portfile, "--api-key", KEY, "--render-cache",
                          "--cache-dir", os.path.join(BENCH_DIR, "cache")],
                         stderr=open(os.path.join(root, "emulator.log"), "a"))
    while not (os.path.exists(portfile) and open(portfile).read().strip()):
        if p.poll() is not None:
            raise RuntimeError("emulator died")
        time.sleep(0.2)
    return p, int(open(portfile).read())


QUERY = ("SELECT uuid, event, properties, elements_chain, distinct_id, team_id, "
         "toTimeZone(timestamp, 'UTC') AS timestamp_utc FROM events "
         "WHERE created_at >= toDateTime64({start}, 6, 'UTC') AND created_at < toDateTime64({end}, 6, 'UTC') "
         "AND timestamp >= toDateTime64({min_timestamp}, 6, 'UTC')")


def server_sql(port, page_size):
    """(Re)creates server s and its user mapping for the emulator on port."""
    return (f"DROP SERVER IF EXISTS s CASCADE; "
            f"CREATE SERVER s FOREIGN DATA WRAPPER posthog_export OPTIONS "
            f"(url 'http://127.0.0.1:{port}', project_id '1', allow_http 'true', allow_loopback 'true', "
            f"page_size '{page_size}', compression 'false', timeout '3600', requests_per_hour '1000000'); "
            f"CREATE USER MAPPING FOR CURRENT_USER SERVER s OPTIONS (api_key '{KEY}'); ")


def emulator_alone(port):
    """Pages through the source like the export does; returns (seconds, rows).
    Only the time to receive each page counts, not this script's JSON parsing."""
    values = {"start": "2026-11-01 00:00:00.000000", "end": "2026-11-02 00:00:00.000000",
              "min_timestamp": "2026-10-25 00:00:00.000000"}
    rows, spent, cursor = 0, 0.0, None
    while True:
        q = QUERY
        v = dict(values)
        if cursor:
            q += " AND (timestamp, uuid) > (toDateTime64({cursor_timestamp}, 6, 'UTC'), {cursor_uuid})"
            v["cursor_timestamp"], v["cursor_uuid"] = cursor
        q += " ORDER BY timestamp, uuid LIMIT 50000"
        body = json.dumps({"query": {"kind": "HogQLQuery", "query": q, "values": v},
                           "refresh": "force_blocking"}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/projects/1/query/", data=body,
                                     headers={"Authorization": f"Bearer {KEY}",
                                              "Content-Type": "application/json"})
        t0 = time.time()
        raw = urllib.request.urlopen(req, timeout=600).read()
        spent += time.time() - t0
        page = json.loads(raw)["results"]
        rows += len(page)
        if len(page) < 50000:
            break
        last = page[-1]
        cursor = (last[6].replace("T", " ").replace("Z", "").ljust(26, "0")[:26], last[0])
    return spent, rows


def main():
    os.makedirs(BENCH_DIR, exist_ok=True)
    root = tempfile.mkdtemp(prefix="phx-bench.")
    os.chmod(root, 0o777)
    if AS_PG:
        shutil.chown(root, "postgres")
    pg = Cluster(root)
    results = []
    try:
        pg.sql("CREATE EXTENSION posthog_export")
        for n in SIZES:
            print(f"== {n} events", flush=True)
            data = ensure_data(n)
            emu, port = start_emulator(data, root)
            try:
                pg.sql("DROP SCHEMA IF EXISTS b CASCADE; CREATE SCHEMA b; " + server_sql(port, 50000) +
                       f"SELECT posthog_export.drop_export('e', true); "
                       f"SELECT posthog_export.create_export('e', 's', schema_name => 'b', table_name => 'events', "
                       f"every => '1 day'); SELECT posthog_export.pause('e');")
                # the first pass renders every row's JSON (the emulator keeps it); the second,
                # what the export is served, is the source's rate that must be 3x the export's
                cold_secs, _ = emulator_alone(port)
                src_secs, src_rows = emulator_alone(port)
                pg.sql("CHECKPOINT")
                os.sync()  # nor the writeback of what came before (the emulator's cache file, say)
                secs, rss = pg.timed("CALL posthog_export.run_export('e', '2026-11-01 00:00+00', '2026-11-02 00:00+00')")
                rows = int(pg.sql("SELECT count(*) FROM b.events"))
                requests = int(pg.sql("SELECT sum(pages) FROM posthog_export.runs WHERE export_name = 'e'"))
                copyfile = os.path.join(root, "events.copy")
                pg.sql(f"COPY b.events TO '{copyfile}'; CREATE TABLE b.copy_target (LIKE b.events INCLUDING ALL)")
                pg.sql("CHECKPOINT")
                os.sync()
                csecs, crss = pg.timed(f"COPY b.copy_target FROM '{copyfile}'")
                os.unlink(copyfile)
                psecs = None
                if PIPELINE:
                    pg.sql("CREATE TABLE b.piped (LIKE b.events INCLUDING ALL)")
                    t0 = time.time()
                    subprocess.run(["bash", f"{REPO}/test/bench_pipeline.sh", f"http://127.0.0.1:{port}", KEY,
                                    " ".join(pg.psql_args()), "b.piped"], check=True)
                    psecs = time.time() - t0
                    prows = int(pg.sql("SELECT count(*) FROM b.piped"))
                    assert prows == rows, f"pipeline wrote {prows} rows, export {rows}"
                results.append(dict(n=n, rows=rows, src=src_rows / src_secs, src_cold=src_rows / cold_secs,
                                    export=rows / secs, export_rss=rss,
                                    copy=rows / csecs, copy_rss=crss,
                                    pipeline=(rows / psecs) if psecs else None, export_secs=secs,
                                    requests=requests))
                print(json.dumps(results[-1]), flush=True)
            finally:
                emu.terminate()
                emu.wait()

        persons = None
        if PERSONS > 0:
            print(f"== {PERSONS} persons", flush=True)
            data = ensure_data(1000, PERSONS)
            emu, port = start_emulator(data, root)
            try:
                pg.sql(server_sql(port, 20000) +
                       f"SELECT posthog_export.drop_export('p', true); "
                       f"SELECT posthog_export.create_export('p', 's', 'persons', schema_name => 'b', "
                       f"table_name => 'persons', every => '1 day'); SELECT posthog_export.pause('p');")
                s1, r1 = pg.timed("CALL posthog_export.run_export('p', '2026-11-01 00:00+00', '2026-11-02 00:00+00')")
                w1 = int(pg.sql("SELECT rows_written FROM posthog_export.runs WHERE export_name = 'p'"))
                m = int(pg.sql("SELECT rows FROM posthog_export.runs WHERE export_name = 'p'"))
                # 10% of the persons get a new version
                changed = os.path.join(data, "persons.ndjson")
                with open(changed) as f:
                    latest = {}
                    for line in f:
                        r = json.loads(line)
                        if r["id"] not in latest or r["version"] > latest[r["id"]]["version"]:
                            latest[r["id"]] = r
                # 10% of the persons that some distinct_id points to
                maps = {}
                with open(os.path.join(data, "person_distinct_ids.ndjson")) as f:
                    for line in f:
                        mp = json.loads(line)
                        k = (mp["team_id"], mp["distinct_id"])
                        if k not in maps or mp["version"] > maps[k]["version"]:
                            maps[k] = mp
                referenced = sorted({mp["person_id"] for mp in maps.values()} & set(latest))
                ids = referenced[:: 10]
                backup = changed + ".orig"
                shutil.copy(changed, backup)
                with open(changed, "a") as f:
                    for pid in ids:
                        r = dict(latest[pid])
                        r["version"] += 1
                        r["properties"] = dict(r["properties"], bench_changed=True)
                        f.write(json.dumps(r) + "\n")
                urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/_emulator/reload",
                                                              data=b"{}"), timeout=3600)
                s2, r2 = pg.timed("CALL posthog_export.run_export('p', '2026-11-02 00:00+00', '2026-11-03 00:00+00')")
                w2 = int(pg.sql("SELECT rows_written FROM posthog_export.runs WHERE export_name = 'p' "
                                "AND interval_start = '2026-11-02 00:00+00'"))
                expect = int(pg.sql("SELECT count(*) FROM b.persons WHERE properties ? 'bench_changed'"))
                shutil.move(backup, changed)
                persons = dict(changed_persons=len(ids), persons=len(referenced), mappings=m, first_secs=s1, first_written=w1, first_rss=r1,
                               second_secs=s2, second_written=w2, changed_rows=expect, second_rss=r2)
                print(json.dumps(persons), flush=True)
            finally:
                emu.terminate()
                emu.wait()
    finally:
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)
    report(results, persons)


def budget_hours(requests, per_hour):
    """Hours the request budget's pacing spreads this many requests over (a burst, then a steady rate)."""
    burst = max(1, min(per_hour // 20, 10))
    return max(0, requests - burst) / max(per_hour - burst, 1)


def report(results, persons):
    lines = ["| events | source rows/s (first pass) | export rows/s | COPY rows/s | pipeline rows/s | export/COPY | export/pipeline | source/export | export peak private MB | COPY peak private MB |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        pipe = f"{r['pipeline']:.0f}" if r["pipeline"] else "-"
        ratio_pipe = f"{r['export'] / r['pipeline']:.2f}x" if r["pipeline"] else "-"
        lines.append(f"| {r['rows']} | {r['src']:.0f} ({r['src_cold']:.0f}) | {r['export']:.0f} | {r['copy']:.0f} | {pipe} | "
                     f"{r['export'] / r['copy']:.2f}x | {ratio_pipe} | {r['src'] / r['export']:.1f}x | "
                     f"{r['export_rss']:.0f} | {r['copy_rss']:.0f} |")
    if len(results) > 1:
        lines.append("")
        for a, b in zip(results, results[1:]):
            lines.append(f"Scaling: {b['rows']} rows took {b['export_secs'] / a['export_secs']:.2f}x the time of "
                         f"{a['rows']} rows ({b['rows'] / a['rows']:.1f}x the rows).")
        a, b = results[0], results[-1]
        lines.append(f"Peak private memory of the export grew by {round(b['export_rss'] - a['export_rss']) + 0} MB "
                     f"from {a['rows']} to {b['rows']} rows.")
    for r in results:
        per_million = r["requests"] * 1e6 / r["rows"]
        ten_million = per_million * 10
        lines.append("")
        lines.append(f"Requests: {r['requests']} for {r['rows']} events in one interval at page_size 50000 "
                     f"({per_million:.1f} per million events); a backfill of 10 million such events, "
                     f"{ten_million:.0f} requests, takes {budget_hours(ten_million, 120):.2f} h at 120 requests/hour "
                     f"and {budget_hours(ten_million, 2400) * 60:.0f} min at 2,400.")
    if persons:
        lines.append("")
        lines.append(f"Persons ({persons['mappings']} distinct ids): first load {persons['first_secs']:.1f} s, "
                     f"{persons['first_written']} rows written, peak private memory {persons['first_rss']:.0f} MB; "
                     f"after {persons['changed_persons']} of {persons['persons']} persons changed: {persons['second_secs']:.1f} s, "
                     f"{persons['second_written']} rows written ({persons['changed_rows']} rows hold a changed person).")
    text = "\n".join(lines)
    print(text)
    with open(os.path.join(REPO, "bench-results.md"), "w") as f:
        f.write(f"# make bench, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n\n{text}\n")


if __name__ == "__main__":
    main()
