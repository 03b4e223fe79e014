# The lifecycle of an export: an interval that has not ended (plus the
# delay) never runs (run_export refuses it, the part of a backfill waits),
# backfill checks its range as run_export does, a change of the grid
# exports every instant once, drop_export waits for a run in flight,
# "already running" names the backend, a paused export runs by hand with a
# NOTICE, and run_due(raise_on_failure => true) fails when an export failed.
use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Run;
use POSIX qw(strftime floor);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use PhxTest;

# the current hour must not end while the test runs
my $now = time;
if (3600 - ($now % 3600) < 300) { sleep(3600 - ($now % 3600) + 2); $now = time; }
my $hour = floor($now / 3600) * 3600;
my $day = floor($now / 86400) * 86400;
my $d0 = $day - 2 * 86400;                   # the sample data starts two days ago
my $iso = sub { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0])) };
my $ts = sub { strftime("'%Y-%m-%d %H:%M:%S+00'", gmtime($_[0])) };
my $tstxt = sub { strftime('%Y-%m-%d %H:%M:%S+00', gmtime($_[0])) };

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 3000, seed => 20, start => $iso->($d0), end => $iso->($now));
my $emu = start_emulator(data => $data);
# no preloaded library: nothing runs unless asked
my $node = new_node('lifecycle', conf => "timezone = 'UTC'\n");
setup_server($node, $emu, options => { page_size => 200 });

sub sql { return $node->safe_psql('postgres', $_[0]); }
# an hourly export without delay, unless told otherwise
sub create { my ($name, %o) = @_;
	my $delay = $o{delay} // '0';
	sql("SELECT posthog_export.create_export('$name', 'posthog', table_name => '$name', every => '1 hour', delay => '$delay', check_server => false)"); }
sub completed { my ($name, $extra) = @_;
	return sql("SELECT count(*) FROM posthog_export.runs WHERE export_name = '$name' AND status = 'completed' " . ($extra // '')); }
sub run_export { my ($name, $s, $e) = @_;
	return "CALL posthog_export.run_export('$name', " . $ts->($s) . ', ' . $ts->($e) . ')'; }

# --- run_export never runs an interval that has not ended --------------------------
create('future');
my $err = psql_fails($node, run_export('future', $hour - 3600, $hour + 3600),
	'run_export of a range reaching into the current hour is refused');
like($err, qr/ERROR:  interval \[\Q${\ $tstxt->($hour)}, ${\ $tstxt->($hour + 3600)}\E\) of export "future" has not ended yet/,
	'the error names the interval that has not ended');
like($err, qr/HINT:  It can run from \Q${\ $tstxt->($hour + 3600)}\E\. Give end_at \Q${\ $tstxt->($hour)}\E to export what is ready now\./,
	'the hint says when it can run, and up to where the range can run now');
is(completed('future'), 0, 'nothing ran, not even the hour that is over');
is(sql(q{SELECT count(*) FROM posthog_export.runs WHERE export_name = 'future'}), 0, 'and no interval is recorded');
$err = psql_fails($node, q{CALL posthog_export.run_export('future', '2030-01-01 00:00+00', '2030-01-01 01:00+00')}, 'an hour in 2030 is refused');
like($err, qr/HINT:  It can run from 2030-01-01 01:00:00\+00\./, 'and the hint says when');
psql_ok($node, run_export('future', $hour - 3600, $hour), 'the hour that is over runs');
is(completed('future'), 1, 'once');

# the delay counts too
create('delayed', delay => '1 day');
$err = psql_fails($node, run_export('delayed', $hour - 3600, $hour), 'an hour that ended less than the delay ago is refused');
like($err, qr/ended less than the export's delay ago.*HINT:  It can run from \Q${\ $tstxt->($hour + 86400)}\E\./s,
	'and the hint adds the delay');

# --- backfill and run_export check a range the same way -----------------------------
create('bf');
for my $case (['a start off the grid', $hour - 3 * 3600 + 1800, $hour - 3600],
	['an end off the grid', $hour - 3 * 3600, $hour - 3600 + 60],
	['a reversed range', $hour - 3600, $hour - 3 * 3600],
	['an empty range', $hour - 3600, $hour - 3600])
{
	my ($what, $s, $e) = @$case;
	my $by_run = psql_fails($node, run_export('bf', $s, $e), "run_export refuses $what");
	my $by_backfill = psql_fails($node, "SELECT posthog_export.backfill('bf', " . $ts->($s) . ', ' . $ts->($e) . ')', "backfill refuses $what");
	s/^psql:<stdin>:\d+: // for $by_run, $by_backfill;
	is($by_backfill, $by_run, "with the same message ($what)");
}

# --- the part of a backfill that has not ended waits --------------------------------
my ($ret, $out);
($ret, $out, $err) = $node->psql('postgres', "SELECT posthog_export.backfill('bf', " . $ts->($hour - 3 * 3600) . ', NULL)');
is($ret, 0, 'a backfill up to where the schedule begins (the next hour) is queued');
like($err, qr/NOTICE:  the backfill of export "bf" from \Q${\ $tstxt->($hour)}\E on has not ended yet; it waits/,
	'with a NOTICE that its current hour waits');
like($err, qr/DETAIL:  .*\Q[${\ $tstxt->($hour)}, ${\ $tstxt->($hour + 3600)})\E runs from \Q${\ $tstxt->($hour + 3600)}\E\./,
	'and when it runs');
psql_ok($node, 'CALL posthog_export.run_due()', 'run_due');
is(completed('bf'), 3, 'exported the three hours of the backfill that are over');
is(sql("SELECT count(*) FROM posthog_export.runs WHERE export_name = 'bf' AND interval_start >= " . $ts->($hour)), 0,
	'and not the current hour');
is(sql("SELECT status || ' ' || (next_start = ${\ $ts->($hour)}) FROM posthog_export.backfills JOIN posthog_export.exports USING (export_id) WHERE name = 'bf'"),
	'running true', 'which stays queued for when it has ended');
my ($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.bf',
	start => $iso->($hour - 3 * 3600), end => $iso->($hour));
is("$missing/$extra", '0/0', "the backfilled hours equal the source ($expected rows)");
($ret, $out, $err) = $node->psql('postgres', "SELECT posthog_export.backfill('bf', " . $ts->($hour - 5 * 3600) . ', ' . $ts->($hour + 5 * 3600) . ')');
is($ret, 0, 'a backfill reaching past where the schedule begins is queued');
like($err, qr/NOTICE:  the backfill of export "bf" ends at \Q${\ $tstxt->($hour + 3600)}\E, where its schedule begins/,
	'clipped there, with a NOTICE');
$err = psql_fails($node, "SELECT posthog_export.backfill('bf', " . $ts->($hour + 3600) . ', ' . $ts->($hour + 3 * 3600) . ')',
	'a backfill wholly in the schedule\'s part');
like($err, qr/ERROR:  nothing to backfill: .* is the schedule's part of export "bf"/, 'is refused, saying why');

# --- from 1 hour to 1 day: every instant once ------------------------------------------
create('grid');
# the schedule exported 08:00 to 10:00 of the first day
sql(run_export('grid', $d0 + 8 * 3600, $d0 + 10 * 3600));
sql("UPDATE posthog_export.exports SET next_interval_start = ${\ $ts->($d0 + 8 * 3600)} WHERE name = 'grid'");
$err = psql_fails($node, q{SELECT posthog_export.alter_export('grid', every => '1 day')},
	'a new grid while intervals ahead of the schedule were exported');
like($err, qr/ERROR:  cannot change the interval, timezone or start_offset of export "grid" now\nDETAIL:  Its interval .* was exported ahead of the schedule/,
	'is refused, saying why');
sql("UPDATE posthog_export.exports SET next_interval_start = ${\ $ts->($d0 + 10 * 3600)} WHERE name = 'grid'");
psql_ok($node, q{SELECT posthog_export.alter_export('grid', every => '1 day')}, 'from 1 hour to 1 day');
is(sql(q{SELECT next_interval_start FROM posthog_export.exports WHERE name = 'grid'}), $tstxt->($d0 + 10 * 3600),
	'the schedule goes on where the old grid stopped');
is(sql(q{SELECT next_run FROM posthog_export.status WHERE export_name = 'grid'}), $tstxt->($d0 + 86400),
	'its next interval ends at the first boundary of the new grid');
psql_ok($node, 'CALL posthog_export.run_due()', 'run_due');
is(sql(q{SELECT string_agg(to_char(interval_start, 'DD HH24') || '-' || to_char(interval_end, 'DD HH24'), ' ' ORDER BY interval_start)
	FROM posthog_export.runs WHERE export_name = 'grid'}),
	join(' ', map { strftime('%d %H', gmtime($_->[0])) . '-' . strftime('%d %H', gmtime($_->[1])) }
		[$d0 + 8 * 3600, $d0 + 9 * 3600], [$d0 + 9 * 3600, $d0 + 10 * 3600], [$d0 + 10 * 3600, $d0 + 86400], [$d0 + 86400, $day]),
	'two hours, the rest of that day, then a whole day');
is(sql(q{SELECT next_interval_start FROM posthog_export.exports WHERE name = 'grid'}), $tstxt->($day), 'up to today');
($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.grid',
	start => $iso->($d0 + 8 * 3600), end => $iso->($day));
is("$missing/$extra", '0/0', "the rows across the change equal the source: none missing, none twice ($expected rows)");
$err = psql_fails($node, run_export('grid', $d0, $d0 + 86400), 'run_export of a day the hourly grid partly exported');
like($err, qr/ERROR:  the range .* of export "grid" overlaps its interval \Q[${\ $tstxt->($d0 + 8 * 3600)}, ${\ $tstxt->($d0 + 9 * 3600)})\E, exported on an earlier grid/,
	'is refused: it would write those rows again');
$err = psql_fails($node, "SELECT posthog_export.backfill('grid', ${\ $ts->($d0)})", 'so is a backfill over them');
like($err, qr/overlaps its interval .* exported on an earlier grid/, 'with the same reason');

# --- drop_export waits for a run in flight; "already running" names its backend ---------
# (dropped under it, the run's second hour failed on the foreign key to the export)
create('slow');
emu_reset($emu);
emu_faults($emu, { on_request => 1, delay => 6 });
my ($rout, $rerr) = ('', '');
my $run = IPC::Run::start([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c',
	run_export('slow', $hour - 3 * 3600, $hour - 3600) ], '<', \undef, '>', \$rout, '2>', \$rerr);
my $pid = '';
ok(wait_for(sub { ($pid = sql(q{SELECT pid FROM pg_stat_activity WHERE query LIKE 'CALL posthog_export.run_export(''slow''%' AND state = 'active'})) ne '' }, 30),
	'a run is in flight');
ok(wait_for(sub { sql(q{SELECT count(*) FROM posthog_export.runs WHERE export_name = 'slow' AND status = 'running'}) == 1 }, 30),
	'and has begun its interval');
$err = psql_fails($node, run_export('slow', $hour - 2 * 3600, $hour - 3600), 'a second run of it meanwhile');
like($err, qr/ERROR:  export "slow" is already running\nDETAIL:  Backend $pid is running it/, 'is refused, naming the backend that runs it');
($ret, $out, $err) = $node->psql('postgres', q{SET lock_timeout = '500ms'; SELECT posthog_export.drop_export('slow')});
isnt($ret, 0, 'drop_export with a lock_timeout shorter than the run fails');
like($err, qr/NOTICE:  waiting for backend $pid, which is running export "slow", before dropping it/, 'it said what it waited for');
like($err, qr/ERROR:  canceling statement due to lock timeout\nCONTEXT:  waiting for backend $pid running export "slow"/, 'and why it stopped');
my $t0 = time;
psql_ok($node, q{SELECT posthog_export.drop_export('slow')}, 'drop_export without a lock_timeout');
$run->finish;
is($rerr, '', 'the run it waited for finished both its hours without an error');
cmp_ok(time - $t0, '>=', 1, sprintf('drop_export returned after it (%.1f s)', time - $t0));
is(sql(q{SELECT count(*) FROM posthog_export.exports WHERE name = 'slow'}), 0, 'and dropped the export');
($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.slow',
	start => $iso->($hour - 3 * 3600), end => $iso->($hour - 3600));
is("$missing/$extra", '0/0', "the run's rows are complete, both its hours ($expected rows)");
emu_reset($emu);

# --- a paused export runs by hand, and says it is paused ---------------------------------
create('paused');
sql(q{SELECT posthog_export.pause('paused')});
($ret, $out, $err) = $node->psql('postgres', run_export('paused', $hour - 3 * 3600, $hour - 2 * 3600));
is($ret, 0, 'run_export of a paused export');
like($err, qr/NOTICE:  export "paused" is paused; running \[.*\) as asked/, 'says it is paused');
is(completed('paused'), 1, 'and runs');
is(sql(q{SELECT paused FROM posthog_export.exports WHERE name = 'paused'}), 't', 'the export stays paused');

# --- run_due(raise_on_failure => true) ------------------------------------------------------
sql(q{SELECT posthog_export.pause(name) FROM posthog_export.exports});
sql(q{CREATE SERVER broken FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'http://127.0.0.1:9', project_id '1', allow_http 'true',
		allow_loopback 'true', max_retries '0', connect_timeout '1', requests_per_hour '1000000');
	CREATE USER MAPPING FOR CURRENT_USER SERVER broken OPTIONS (api_key 'phx_x');
	SELECT posthog_export.create_export('broken', 'broken', table_name => 'broken', every => '1 hour', delay => '0', check_server => false);});
create('good');
sql("UPDATE posthog_export.exports SET next_interval_start = ${\ $ts->($hour - 2 * 3600)} WHERE name IN ('broken', 'good')");
($ret, $out, $err) = $node->psql('postgres', 'CALL posthog_export.run_due(raise_on_failure => true)');
isnt($ret, 0, 'run_due(raise_on_failure => true) fails when an export failed');
like($err, qr/ERROR:  1 export failed in run_due: broken/, 'naming it');
like($err, qr/WARNING:  export "broken" failed \(1 in a row\); it is retried from/, 'after a WARNING that says why');
is(completed('good'), 2, 'the other export ran all the same');
sql(q{UPDATE posthog_export.exports SET retry_at = NULL WHERE name = 'broken'});
($ret, $out, $err) = $node->psql('postgres', 'CALL posthog_export.run_due()');
is($ret, 0, 'by default run_due succeeds all the same');
like($err, qr/WARNING:  export "broken" failed \(2 in a row\)/, 'with the WARNING');

done_testing();
