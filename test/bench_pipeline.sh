#!/usr/bin/env bash
# What a user would otherwise write: page PostHog's query API with a keyset
# cursor using curl, turn each page into CSV with jq (deriving set/set_once/
# ip from properties and dropping what jsonb rejects), and load it with
# psql \copy.  jq and psql run side by side on each page.
#
#   bench_pipeline.sh URL API_KEY "PSQL COMMAND" TABLE
set -euo pipefail
url=$1 key=$2 psql=$3 table=$4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cursor_ts="" cursor_uuid=""
while :; do
  query="SELECT uuid, event, properties, elements_chain, distinct_id, team_id, toTimeZone(timestamp, 'UTC') AS timestamp_utc FROM events WHERE created_at >= toDateTime64({start}, 6, 'UTC') AND created_at < toDateTime64({end}, 6, 'UTC') AND timestamp >= toDateTime64({min_timestamp}, 6, 'UTC')"
  values='"start": "2026-11-01 00:00:00.000000", "end": "2026-11-02 00:00:00.000000", "min_timestamp": "2026-10-25 00:00:00.000000"'
  if [ -n "$cursor_uuid" ]; then
    query="$query AND (timestamp, uuid) > (toDateTime64({cursor_timestamp}, 6, 'UTC'), {cursor_uuid})"
    values="$values, \"cursor_timestamp\": \"$cursor_ts\", \"cursor_uuid\": \"$cursor_uuid\""
  fi
  query="$query ORDER BY timestamp, uuid LIMIT 50000"
  jq -n --arg q "$query" "{query: {kind: \"HogQLQuery\", query: \$q, values: {$values}}, refresh: \"force_blocking\"}" > "$work/req.json"
  curl -sS --fail -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
       --data-binary @"$work/req.json" "$url/api/projects/1/query/" -o "$work/page.json"
  jq -r 'def clean: if type == "string" then gsub("\u0000"; "")
                   elif type == "object" then with_entries(.key |= gsub("\u0000"; "") | .value |= clean)
                   elif type == "array" then map(clean) else . end;
      # jq refuses lone UTF-16 surrogates: cut their escapes out first
      def unsurrogate: gsub("(?<!\\\\)\\\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\\\u[dD][c-fC-F])"; "")
                     | gsub("(?<!\\\\)(?<![0-9a-fA-F]{2})\\\\u[dD][c-fC-F][0-9a-fA-F]{2}"; "");
      # only text holding a \u escape can hold a NUL or a surrogate
      def props: if test("\\\\u") then unsurrogate | fromjson | clean else fromjson end;
      .results[] | (.[2] | props) as $p |
      [.[0], .[1], ($p | tojson), (.[3] | tojson), ($p["$set"] | if . == null then null else tojson end),
       ($p["$set_once"] | if . == null then null else tojson end), .[4], .[5], $p["$ip"], null, .[6]] | @csv' \
     "$work/page.json" | $psql -c "\\copy $table (uuid, event, properties, elements, set, set_once, distinct_id, team_id, ip, site_url, timestamp) FROM STDIN WITH (FORMAT csv)"
  n=$(jq '.results | length' "$work/page.json")
  [ "$n" -lt 50000 ] && break
  cursor_ts=$(jq -r '.results[-1][6] | sub("T"; " ") | sub("Z"; "") ' "$work/page.json")
  cursor_uuid=$(jq -r '.results[-1][0]' "$work/page.json")
done
