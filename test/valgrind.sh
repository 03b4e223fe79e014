#!/usr/bin/env bash
# make valgrind: the TAP suites with every server process under valgrind's
# memcheck.  A scratch bin directory holds copies of pg_ctl and initdb (they
# look for postgres next to themselves) and a postgres wrapper that starts
# the real binary under valgrind; initdb's bootstrap runs it natively.
# Prints the memcheck errors found (none expected) and fails if there are any.
#
#   PHX_VALGRIND_TESTS   TAP files (default: all but the timing-bound
#                        002_http_faults and 006_scheduler, whose timeouts a
#                        20x slower server cannot meet)
set -uo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
bash test/install_deps.sh
command -v valgrind >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null; }
make -s >/dev/null && make -s install >/dev/null

bindir=/usr/lib/postgresql/15/bin
pgxs_dir=$(dirname "$($bindir/pg_config --pgxs)")
work=$(mktemp -d /tmp/phx-valgrind.XXXXXX)
mkdir -p "$work/bin" "$work/logs"
for f in "$bindir"/*; do ln -s "$f" "$work/bin/$(basename "$f")"; done
rm "$work/bin/postgres" "$work/bin/pg_ctl" "$work/bin/initdb"
cp "$bindir/pg_ctl" "$bindir/initdb" "$work/bin/"
cp test/valgrind/postgres.supp "$work/postgres.supp"
cat > "$work/bin/postgres" <<EOS
#!/bin/sh
case "\$*" in
  *--boot*|*-V*|*--version*|*--single*|*-C\ *|*--describe-config*) exec $bindir/postgres "\$@";;
esac
exec valgrind --quiet --trace-children=no --leak-check=no --log-file=$work/logs/pg.%p.log \\
  --suppressions=$work/postgres.supp $bindir/postgres "\$@"
EOS
chmod 755 "$work/bin/postgres"
cp -r test "$work/"
run_as=()
if [ "$(id -u)" -eq 0 ]; then chown -R postgres "$work"; run_as=(runuser -u postgres --); fi

tests=${PHX_VALGRIND_TESTS:-"test/t/001_events_export.pl test/t/003_resume_and_privileges.pl test/t/004_tls.pl test/t/005_persons_sessions.pl test/t/007_bad_input.pl test/t/008_faults_security.pl test/t/009_table_shapes.pl"}
(cd "$work" && "${run_as[@]}" env PATH="$work/bin:$PATH" PERL5LIB="$pgxs_dir/../test/perl:$work/test/perl" \
   TESTDIR="$work" PG_REGRESS="$pgxs_dir/../test/regress/pg_regress" PG_TEST_TIMEOUT_DEFAULT=900 \
   prove $tests)
rc=$?
errors=$(grep -h "^==[0-9]*== [A-Z]" "$work"/logs/* 2>/dev/null | sed 's/^==[0-9]*== //' | sort | uniq -c | sort -rn)
echo "valgrind logs: $work/logs ($(ls "$work/logs" | wc -l) processes)"
if [ -n "$errors" ]; then
  echo "memcheck errors:"
  echo "$errors"
  exit 1
fi
echo "memcheck errors: none"
exit $rc
