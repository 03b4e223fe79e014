#!/usr/bin/env bash
# make demo: on a fresh Debian machine, installs what is missing, builds and
# installs the extension, starts a throwaway cluster and the PostHog emulator
# with generated sample data, creates a server, a user mapping and an export,
# exports a day of events and prints what landed, and why that many.
# Everything lives in a temporary directory that is removed at the end;
# with KEEP=1 the cluster and the emulator keep running, and the commands to
# connect to them and to stop them are printed.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash test/install_deps.sh

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$($PG_CONFIG --bindir)
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
make -s PG_CONFIG="$PG_CONFIG" >/dev/null
$SUDO make -s PG_CONFIG="$PG_CONFIG" install >/dev/null

work=$(mktemp -d /tmp/phx-demo.XXXXXX)
chmod 755 "$work"
run_as=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$work"; run_as=(runuser -u postgres --); fi
emu_pid=""
cleanup() {
  [ -n "$emu_pid" ] && kill "$emu_pid" 2>/dev/null || true
  "${run_as[@]}" "$bindir/pg_ctl" -D "$work/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
[ -z "${KEEP:-}" ] && trap cleanup EXIT

day_end=$(date -u +%Y-%m-%dT00:00:00Z)
day_start=$(date -u -d "$day_end - 1 day" +%Y-%m-%dT00:00:00Z)

echo "== generating 20,000 sample events for $day_start .. $day_end"
python3 test/generate_data.py --out "$work/source" --events 20000 --start "$day_start" --end "$day_end" --seed 2026 \
  --team-id 12345 >/dev/null

echo "== starting the PostHog emulator"
api_key="phx_demo_$(od -An -tx1 -N8 /dev/urandom | tr -d ' \n')"
python3 test/emulator/server.py --data "$work/source" --port 0 --port-file "$work/emu.port" \
  --api-key "$api_key" --project-id 12345 --project-timezone America/New_York 2>"$work/emulator.log" &
emu_pid=$!
for _ in $(seq 100); do [ -s "$work/emu.port" ] && break; sleep 0.1; done
emu_port=$(cat "$work/emu.port")

echo "== starting a throwaway PostgreSQL 15 cluster"
pg_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${run_as[@]}" "$bindir/initdb" -D "$work/data" -A trust -U postgres >/dev/null
"${run_as[@]}" "$bindir/pg_ctl" -D "$work/data" -l "$work/postgres.log" -w \
  -o "-p $pg_port -k $work -c listen_addresses=''" start >/dev/null
psql=("${run_as[@]}" "$bindir/psql" -X -h "$work" -p "$pg_port" -U postgres -d postgres -v ON_ERROR_STOP=1)

echo "== exporting"
"${psql[@]}" <<SQL
\set QUIET on
CREATE EXTENSION posthog_export;
CREATE SERVER posthog_us FOREIGN DATA WRAPPER posthog_export
  OPTIONS (url 'http://127.0.0.1:$emu_port', project_id '12345', allow_http 'true', allow_loopback 'true',
          requests_per_hour '2400');  -- a project with API queries enabled; the default is 120
CREATE USER MAPPING FOR CURRENT_USER SERVER posthog_us OPTIONS (api_key '$api_key');
SELECT posthog_export.create_export(
  name => 'events', server => 'posthog_us', model => 'events',
  schema_name => 'posthog_exports', table_name => 'events',
  every => '1 hour', exclude_events => ARRAY['\$feature_flag_called']) AS export_id;
\timing on
CALL posthog_export.run_export('events', '$day_start', '$day_end');
\timing off
\set QUIET off
\echo
\echo '-- posthog_export.runs: one row per hourly interval'
SELECT interval_start, interval_end, status, rows, pg_size_pretty(bytes) AS received, pages, attempts,
       round(extract(epoch FROM finished_at - started_at)::numeric, 3) AS seconds, error
  FROM posthog_export.runs ORDER BY interval_start;
\echo '-- what landed'
SELECT event, count(*) AS events, count(DISTINCT distinct_id) AS users
  FROM posthog_exports.events GROUP BY event ORDER BY events DESC;
SELECT uuid, event, distinct_id, ip, timestamp, jsonb_path_query_first(properties, '\$."\$current_url"') AS current_url
  FROM posthog_exports.events ORDER BY timestamp LIMIT 5;
\echo '-- running it again exports nothing twice'
CALL posthog_export.run_export('events', '$day_start', '$day_end');
SELECT count(*) AS rows_in_table, (SELECT sum(rows) FROM posthog_export.runs) AS rows_exported
  FROM posthog_exports.events;
-- a demo that exported nothing has shown nothing: fail it
DO \$\$BEGIN
  IF NOT EXISTS (SELECT 1 FROM posthog_exports.events) THEN
    RAISE EXCEPTION 'the demo exported no events';
  END IF;
END\$\$;
SQL

# why that many rows: what was generated, what the export left out and why
read -r generated flags other later < <(python3 - "$work/source/events.ndjson" "$day_start" "$day_end" <<'PY'
import json, sys
from datetime import datetime
rows = [json.loads(line) for line in open(sys.argv[1])]
ours = [r for r in rows if r.get("team_id") == 12345]
flags = [r for r in ours if r["event"] == "$feature_flag_called"]
start, end = (datetime.fromisoformat(t.replace("Z", "+00:00")) for t in sys.argv[2:4])
# an interval holds the events ingested in it (created_at), not those that happened in it
later = [r for r in ours if r not in flags
         and not start <= datetime.fromisoformat(r["created_at"].replace("Z", "+00:00")) < end]
print(len(rows), len(flags), len(rows) - len(ours), len(later))
PY
)
exported=$("${psql[@]}" -Atq -c "SELECT count(*) FROM posthog_exports.events")
expected=$((generated - flags - other - later))
echo
echo "== why $exported rows: $generated events were generated;"
echo "   $flags are \$feature_flag_called events, left out by exclude_events;"
echo "   $other belong to another PostHog team, which PostHog never returns to this project;"
echo "   $later happened that day but were ingested (created_at) after it ended: they belong to the"
echo "   next day's intervals, as an interval holds the events PostHog received in it;"
echo "   $generated - $flags - $other - $later = $expected were exported."
if [ "$exported" -ne "$expected" ]; then
  echo "the demo exported $exported rows, not $expected" >&2
  exit 1
fi
echo
echo "== live SQL over PostHog: IMPORT FOREIGN SCHEMA, then one query aggregated by PostHog"
"${psql[@]}" -q <<'SQL'
CREATE SCHEMA ph;
IMPORT FOREIGN SCHEMA posthog LIMIT TO (events) FROM SERVER posthog_us INTO ph;
EXPLAIN (VERBOSE, COSTS OFF)
SELECT event, count(*) FROM ph.events
 WHERE timestamp >= now() - interval '7 days' AND properties->>'$browser' = 'Chrome'
 GROUP BY event ORDER BY 2 DESC LIMIT 5;
SELECT event, count(*) FROM ph.events
 WHERE timestamp >= now() - interval '7 days' AND properties->>'$browser' = 'Chrome'
 GROUP BY event ORDER BY 2 DESC LIMIT 5;
SQL
cat <<NEXT

== next steps, on your own database
   1. CREATE EXTENSION posthog_export; a SERVER (url, project_id) and a USER MAPPING (api_key), as above
   2. SELECT posthog_export.create_export('events', 'posthog_us');   -- every hour from now on
   3. SELECT posthog_export.backfill('events', now() - interval '30 days');   -- and the past
   4. shared_preload_libraries = 'posthog_export' runs it by itself; or pg_cron: CALL posthog_export.run_due()
   5. watch it: SELECT * FROM posthog_export.status;  SELECT * FROM posthog_export.progress;
   6. query PostHog live: IMPORT FOREIGN SCHEMA posthog FROM SERVER posthog_us INTO ph; SELECT ... FROM ph.events
NEXT
if [ -n "${KEEP:-}" ]; then
  cat <<KEPT

== KEEP=1: the cluster and the emulator keep running
   connect:  ${run_as[*]} $bindir/psql -h $work -p $pg_port -U postgres postgres
   emulator: http://127.0.0.1:$emu_port (API key $api_key, project 12345)
   stop:     kill $emu_pid; ${run_as[*]} $bindir/pg_ctl -D $work/data stop; rm -rf $work
KEPT
else
  echo "== done (the cluster, the emulator and their files are removed now; KEEP=1 keeps them)"
fi
