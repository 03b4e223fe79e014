#!/usr/bin/env bash
# make test: installs what is missing, builds and installs the extension,
# then runs every suite and ends with one line "N passed, N failed, N skipped".
#
#   layering             test/layering.py: no source files call each other
#                        in a circle
#   emulator self-test   python3 unittest, the PostHog emulator on its own
#   fuzz smoke           the two libFuzzer targets (test/fuzz), briefly
#   pg_regress           sql/ + expected/, SQL surface and option validation:
#                        PGXS's "make installcheck" (REGRESS in the Makefile),
#                        in a temporary instance of its own
#   TAP                  test/t/*.pl, real clusters + the emulator end to end:
#                        PGXS's "make installcheck" (prove_installcheck,
#                        TAP_TESTS and PROVE_TESTS in the Makefile)
#
# initdb refuses to run as root, so as root the suites run as the
# unprivileged "postgres" user in a scratch copy of the tree it owns.
#
#   PG_CONFIG         the PostgreSQL to build, install and test against
#   PHX_FUZZ_SECONDS  seconds per fuzzer (20)
#   PHX_TAP_TESTS     TAP files to run (default: all of test/t/*.pl)
#   PHX_KEEP          keep the scratch directory even when everything passed
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

bash test/install_deps.sh || { echo "dependency installation failed"; echo "0 passed, 1 failed, 0 skipped"; exit 1; }

PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
if ! make -s PG_CONFIG="$PG_CONFIG" >/tmp/phx-build.log 2>&1 || ! $SUDO make -s PG_CONFIG="$PG_CONFIG" install >>/tmp/phx-build.log 2>&1; then
  cat /tmp/phx-build.log
  echo "build failed"
  echo "0 passed, 1 failed, 0 skipped"
  exit 1
fi

work=$(mktemp -d /tmp/phx-test.XXXXXX)
cp -r Makefile sql expected test "$work"/
run_as=()
if [ "$(id -u)" -eq 0 ]; then
  chown -R postgres "$work"
  run_as=(runuser -u postgres --)
fi

passed=0
failed=0
skipped=0

echo "=== layering"
if out=$(python3 test/layering.py src 2>&1); then
  echo "ok - no circular calls between source files ($(echo "$out" | tail -n1))"
  passed=$((passed + 1))
else
  echo "$out"
  echo "not ok - source files call each other in a circle"
  failed=$((failed + 1))
fi

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

# PGXS's installcheck, as "postgres" in the scratch copy; each make below
# runs one of its two suites (the other switched off on the command line)
installcheck=(make -s --no-print-directory installcheck PG_CONFIG="$PG_CONFIG")

echo "=== pg_regress"
out=$(cd "$work" && "${run_as[@]}" "${installcheck[@]}" TAP_TESTS= \
        EXTRA_REGRESS_OPTS="--temp-instance=$work/regress-instance" 2>&1)
rc=$?
echo "$out"
ok=$(echo "$out" | grep -cE '\.\.\. ok|^ok ' || true)
bad=$(echo "$out" | grep -cE '\.\.\. FAILED|^not ok ' || true)
if [ "$rc" -ne 0 ] && [ "$bad" -eq 0 ]; then bad=1; fi
[ -f "$work/regression.diffs" ] && [ "$bad" -gt 0 ] && cat "$work/regression.diffs"
passed=$((passed + ok)); failed=$((failed + bad))

echo "=== TAP"
# -v: one line per assertion, counted below
tap=(REGRESS= PROVE_FLAGS=-v)
[ -n "${PHX_TAP_TESTS:-}" ] && tap+=(PROVE_TESTS="$PHX_TAP_TESTS")
out=$(cd "$work" && "${run_as[@]}" "${installcheck[@]}" "${tap[@]}" 2>&1)
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
