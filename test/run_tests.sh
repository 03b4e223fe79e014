#!/usr/bin/env bash
# make test: installs what is missing, builds and installs the extension,
# then runs every suite and ends with one line "N passed, N failed".
#
#   emulator self-test   python3 unittest, the PostHog emulator on its own
#   pg_regress           sql/ + expected/, SQL surface and option validation
#   TAP                  test/t/*.pl, real clusters + the emulator end to end
#
# initdb refuses to run as root, so as root the suites run as the
# unprivileged "postgres" user in a scratch directory it owns.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

bash test/install_deps.sh || { echo "dependency installation failed"; echo "0 passed, 1 failed"; exit 1; }

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}
bindir=$($PG_CONFIG --bindir)
pgxs_dir=$(dirname "$($PG_CONFIG --pgxs)")

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! make -s PG_CONFIG="$PG_CONFIG" >/tmp/phx-build.log 2>&1 || ! $SUDO make -s PG_CONFIG="$PG_CONFIG" install >>/tmp/phx-build.log 2>&1; then
  cat /tmp/phx-build.log
  echo "build failed"
  echo "0 passed, 1 failed"
  exit 1
fi

work=$(mktemp -d /tmp/phx-test.XXXXXX)
cp -r sql expected test "$work"/
run_as=()
if [ "$(id -u)" -eq 0 ]; then
  chown -R postgres "$work"
  run_as=(runuser -u postgres --)
fi

passed=0
failed=0
skipped=0

echo "=== emulator self-test"
out=$(cd "$work" && "${run_as[@]}" python3 test/emulator_selftest.py 2>&1)
rc=$?
echo "$out" | tail -n 15
ran=$(echo "$out" | sed -n 's/^Ran \([0-9]*\) tests\?.*/\1/p' | tail -n1)
ran=${ran:-0}
bad=$(( 0 $(echo "$out" | grep -Eo "(failures|errors)=[0-9]+" | cut -d= -f2 | sed "s/^/+ /" | tr "\n" " ") ))
bad=${bad:-0}
if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
passed=$((passed + ran - bad)); failed=$((failed + bad))

# each fuzzer for PHX_FUZZ_SECONDS (20 s by default), one test line each:
#   json_rows  the response parser
#   jsonb      the jsonb builder, differentially against PostgreSQL's jsonb_in
#              (its first build fetches the server sources from Debian)
fuzz_secs=${PHX_FUZZ_SECONDS:-20}
for target in json-rows jsonb; do
  name=${target/-/_}
  echo "=== fuzz smoke $name (libFuzzer, ASan and UBSan)"
  out=$(make -s -C test/fuzz "run-$target" FUZZ_SECONDS="$fuzz_secs" WORK="$work/fuzz-$name" 2>&1)
  rc=$?
  runs=$(echo "$out" | sed -n 's/^stat::number_of_executed_units: *//p')
  if [ "$rc" -eq 0 ] && [ -n "$runs" ]; then
    if [ "$name" = jsonb ]; then
      echo "ok - fuzz smoke $name: $runs inputs in ${fuzz_secs}s, no crash, no difference from jsonb_in"
    else
      echo "ok - fuzz smoke $name: $runs inputs in ${fuzz_secs}s, no crash"
    fi
    passed=$((passed + 1))
  else
    echo "$out" | grep -a -A 12 '==== jsonb mismatch' | cut -c1-400
    echo "$out" | tail -n 40
    echo "not ok - fuzz smoke $name"
    failed=$((failed + 1))
  fi
done

echo "=== pg_regress"
out=$(cd "$work" && "${run_as[@]}" "$pgxs_dir/../test/regress/pg_regress" \
        --temp-instance="$work/regress-instance" --bindir="$bindir" \
        --inputdir=. --outputdir=. --dbname=contrib_regression \
        $(sed -n 's/^REGRESS *= *//p' "$repo/Makefile") 2>&1)
rc=$?
echo "$out"
ok=$(echo "$out" | grep -cE '\.\.\. ok|^ok ' || true)
bad=$(echo "$out" | grep -cE '\.\.\. FAILED|^not ok ' || true)
if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
[ -f "$work/regression.diffs" ] && [ "$bad" -gt 0 ] && cat "$work/regression.diffs"
passed=$((passed + ok)); failed=$((failed + bad))

echo "=== TAP"
tests=${PHX_TAP_TESTS:-test/t/*.pl}
out=$(cd "$work" && "${run_as[@]}" env PATH="$bindir:$PATH" \
        PERL5LIB="$pgxs_dir/../test/perl:$work/test/perl" TESTDIR="$work" \
        PG_REGRESS="$pgxs_dir/../test/regress/pg_regress" \
        prove -v $tests 2>&1)
rc=$?
echo "$out"
ok=$(echo "$out" | grep -E '^ *ok [0-9]+' | grep -vc '# skip' || true)
skip=$(echo "$out" | grep -E '^ *ok [0-9]+' | grep -c '# skip' || true)
bad=$(echo "$out" | grep -cE '^ *not ok [0-9]+' || true)
dubious=$(echo "$out" | grep -cE 'Dubious, test returned|No subtests run|Bad plan' || true)
bad=$((bad + dubious))
if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
if [ "$bad" -gt 0 ]; then
  for f in "$work"/tmp_check/log/*; do
    case "$f" in *.log) echo "--- $f (tail)"; tail -n 40 "$f";; esac
  done
fi
passed=$((passed + ok)); failed=$((failed + bad)); skipped=$((skipped + skip))

[ "$failed" -eq 0 ] && [ -z "${PHX_KEEP:-}" ] && rm -rf "$work"
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
