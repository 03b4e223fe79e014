# The scheduler: exports run by themselves once the library is preloaded,
# catch up in order after downtime, backfill, pause, survive a kill -9 of
# their worker with exact rows, never run twice at once, run as their owner,
# pause themselves after repeated failures; pg_cron can drive run_due(); the
# progress view shows a run in flight; a standby does nothing.
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

my $now = time;
my $floor = floor($now / 300) * 300;           # current 5-minute boundary
my $iso = sub { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0])) };
my $sql_ts = sub { strftime("'%Y-%m-%d %H:%M:%S+00'", gmtime($_[0])) };

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 3000, seed => 21, start => $iso->($floor - 3 * 3600), end => $iso->($now));
my $emu = start_emulator(data => $data);

my $conf = <<'EOC';
shared_preload_libraries = 'posthog_export'
posthog_export.launcher_naptime = 1
posthog_export.retry_interval = 0
posthog_export.max_failures = 3
restart_after_crash = on
EOC
my $node = new_node('scheduler', conf => $conf, allows_streaming => 1);
setup_server($node, $emu, options => { page_size => 200 });

# -1 while the server is unreachable (restarting after a crash)
sub count_runs { my ($name, $extra) = @_;
	my ($ret, $out) = $node->psql('postgres', "SELECT count(*) FROM posthog_export.runs WHERE export_name = '$name' AND status = 'completed' " . ($extra // ''));
	return $ret == 0 ? $out : -1; }
sub reload { $node->safe_psql('postgres', 'SELECT pg_reload_conf()'); }
# next_interval_start of an export, as epoch seconds
sub next_start { my ($n, $name) = @_;
	return $n->safe_psql('postgres', "SELECT extract(epoch FROM next_interval_start)::bigint FROM posthog_export.exports WHERE name = '$name'"); }
# pauses an export and waits until no run of it is in flight, so its state holds still
sub pause_settled { my ($name) = @_;
	$node->safe_psql('postgres', "SELECT posthog_export.pause('$name')");
	wait_for(sub { $node->safe_psql('postgres', "SELECT count(*) FROM posthog_export.progress WHERE export_name = '$name'") == 0 }, 60); }
# the clock keeps moving while the test runs: intervals are counted up to where the export got
sub intervals_between { my ($a, $b) = @_; return ($b - $a) / 300; }

# --- the schedule fires by itself, catching up oldest first ---------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('sched', 'posthog', table_name => 'sched', every => '5 minutes', delay => '0', check_server => false)});
ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'posthog_export scheduler'}) == 1 }, 30),
	'the launcher keeps a scheduler in the database that has the extension');
is($node->safe_psql('postgres', qq{SELECT next_interval_start = ${\ $sql_ts->($floor + 300)} FROM posthog_export.exports WHERE name = 'sched'}),
	't', 'the first scheduled interval is the first full period after creation');
# pretend the export was created 30 minutes ago (six intervals are over)
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = " . $sql_ts->($floor - 1800) . " WHERE name = 'sched'");
reload();
ok(wait_for(sub { next_start($node, 'sched') >= $floor }, 60), 'the missed intervals ran without any call');
# pause while checking, so the clock cannot add an interval in between
pause_settled('sched');
my $sched_end = next_start($node, 'sched');
is(count_runs('sched'), intervals_between($floor - 1800, $sched_end), 'each of them once (' . count_runs('sched') . ' intervals)');
is($node->safe_psql('postgres', q{SELECT string_agg(DISTINCT trigger, ',') FROM posthog_export.runs WHERE export_name = 'sched'}),
	'schedule', 'triggered by the schedule');
is($node->safe_psql('postgres', q{SELECT bool_and(ok) FROM (SELECT interval_start > lag(interval_start) OVER (ORDER BY started_at) OR lag(interval_start) OVER (ORDER BY started_at) IS NULL AS ok FROM posthog_export.runs WHERE export_name = 'sched') s}),
	't', 'oldest first');
is($node->safe_psql('postgres', q{SELECT next_interval_start <= to_timestamp(floor(extract(epoch FROM now()) / 300) * 300) FROM posthog_export.exports WHERE name = 'sched'}),
	't', 'and never an interval that is not over');
my ($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.sched',
	start => $iso->($floor - 1800), end => $iso->($sched_end));
is("$missing/$extra", '0/0', "scheduled rows equal the source ($expected rows)");
$node->safe_psql('postgres', q{SELECT posthog_export.unpause('sched')});

# --- catch-up after the server was down ------------------------------------------
$node->stop;
$node->start;
my $runs_before = count_runs('sched');
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = next_interval_start - interval '10 minutes' WHERE name = 'sched'");
reload();
ok(wait_for(sub { next_start($node, 'sched') >= $sched_end }, 60), 'after a restart the schedule catches up again');
pause_settled('sched');
$sched_end = next_start($node, 'sched');
is(count_runs('sched'), intervals_between($floor - 1800, $sched_end), 'intervals exported before are not run twice');

# --- backfill alongside the schedule -----------------------------------------------
$node->safe_psql('postgres', "SELECT posthog_export.unpause('sched'); SELECT posthog_export.backfill('sched', " . $sql_ts->($floor - 3 * 3600) . ", NULL)");
ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.backfills WHERE status = 'completed'}) == 1 }, 90),
	'the backfill completed by itself');
is(count_runs('sched', "AND trigger = 'backfill'"), 30, 'it exported the 30 intervals before the schedule\'s');
pause_settled('sched');
$sched_end = next_start($node, 'sched');
($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.sched',
	start => $iso->($floor - 3 * 3600), end => $iso->($sched_end));
is("$missing/$extra", '0/0', "schedule and backfill together equal the source, no overlap ($expected rows)");

# --- pause / unpause ----------------------------------------------------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('paused', 'posthog', table_name => 'paused', every => '5 minutes', delay => '0', check_server => false);
	SELECT posthog_export.pause('paused');});
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = " . $sql_ts->($floor - 900) . " WHERE name = 'paused'");
reload();
sleep 3;
is(count_runs('paused'), 0, 'a paused export does not run');
$node->safe_psql('postgres', q{SELECT posthog_export.unpause('paused')});
ok(wait_for(sub { next_start($node, 'paused') >= $floor }, 60), 'unpaused, it runs the intervals it missed');
pause_settled('paused');
is(count_runs('paused'), intervals_between($floor - 900, next_start($node, 'paused')), 'each once');

# --- progress, collisions, kill -9 of the run worker ----------------------------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('crash', 'posthog', table_name => 'crash', every => '1 hour', delay => '0', check_server => false)});
emu_reset($emu);
emu_faults($emu, { on_request => 3, delay => 60 });
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = " . $sql_ts->(floor($now / 3600) * 3600 - 3600) . " WHERE name = 'crash'");
reload();
my $pid;
ok(wait_for(sub {
	$pid = $node->safe_psql('postgres', q{SELECT pid FROM posthog_export.progress WHERE export_name = 'crash' AND pages = 2});
	return $pid ne '';
}, 60), 'posthog_export.progress shows the run in flight');
my $prog = $node->safe_psql('postgres', q{SELECT rows, pages, bytes > 0, rows_per_second >= 0, interval_end - interval_start FROM posthog_export.progress WHERE export_name = 'crash'});
is($prog, '400|2|t|t|01:00:00', 'with its rows, pages, bytes and rate, readable while the run is uncommitted elsewhere');
is($node->safe_psql('postgres', qq{SELECT backend_type FROM pg_stat_activity WHERE pid = $pid}), 'posthog_export run',
	'a run worker runs it');
my $err = psql_fails($node, "CALL posthog_export.run_export('crash', " . $sql_ts->(floor($now / 3600) * 3600 - 3600) . ", " . $sql_ts->(floor($now / 3600) * 3600) . ")",
	'a manual run of the same export meanwhile is refused');
like($err, qr/is already running/, 'because the export is locked');
psql_ok($node, 'CALL posthog_export.run_due()', 'run_due() meanwhile skips the locked export');
is(count_runs('crash'), 0, 'and does not run it a second time');
kill 'KILL', $pid;
ok(wait_for(sub { slurp_file($node->logfile) =~ /all server processes terminated; reinitializing/ }, 30),
	'killing the worker makes the postmaster reinitialize');
ok(wait_for(sub { $node->psql('postgres', 'SELECT 1') == 0 }, 120), 'the server is back after the worker was killed');
emu_reset($emu);
ok(wait_for(sub { count_runs('crash') >= 1 }, 90), 'after the crash the run resumed by itself and completed');
pause_settled('crash');
is($node->safe_psql('postgres', q{SELECT attempts >= 2 FROM posthog_export.runs WHERE export_name = 'crash' ORDER BY interval_start LIMIT 1}), 't', 'as a further attempt');
($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.crash',
	start => $iso->(floor($now / 3600) * 3600 - 3600), end => $iso->(next_start($node, 'crash')));
is("$missing/$extra", '0/0', "after kill -9 of the worker the rows are exact ($expected rows)");

# --- SIGTERM stops a run promptly ----------------------------------------------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('term', 'posthog', table_name => 'term', every => '1 hour', delay => '0', check_server => false)});
emu_reset($emu);
emu_faults($emu, { on_request => 2, delay => 60 });
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = " . $sql_ts->(floor($now / 3600) * 3600 - 3600) . " WHERE name = 'term'");
reload();
ok(wait_for(sub { ($pid = $node->safe_psql('postgres', q{SELECT pid FROM posthog_export.progress WHERE export_name = 'term'})) ne '' }, 60), 'a run is in flight');
my $t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(wait_for(sub { $node->safe_psql('postgres', "SELECT count(*) FROM pg_stat_activity WHERE pid = $pid") == 0 }, 10),
	sprintf('pg_terminate_backend stops the worker while it waits on PostHog (%.1f s)', time - $t0));
emu_reset($emu);
$node->safe_psql('postgres', q{SELECT posthog_export.pause('term')});

# --- runs as the owner: a missing privilege pauses at once -----------------------------
$node->safe_psql('postgres', qq{
	CREATE ROLE exporter LOGIN;
	GRANT USAGE ON FOREIGN SERVER posthog TO exporter;
	CREATE USER MAPPING FOR exporter SERVER posthog OPTIONS (api_key '$PhxTest::API_KEY');
	CREATE SCHEMA exp AUTHORIZATION exporter;
	SET ROLE exporter;
	SELECT posthog_export.create_export('owned', 'posthog', schema_name => 'exp', table_name => 'owned', every => '5 minutes', delay => '0', check_server => false);
	REVOKE INSERT ON exp.owned FROM exporter;
	RESET ROLE;
	UPDATE posthog_export.exports SET next_interval_start = ${\ $sql_ts->($floor - 600)} WHERE name = 'owned';});
reload();
ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT paused FROM posthog_export.exports WHERE name = 'owned'}) eq 't' }, 60),
	'a scheduled run writes with the owner\'s privileges: without INSERT it fails');
like($node->safe_psql('postgres', q{SELECT paused_reason FROM posthog_export.status WHERE export_name = 'owned'}),
	qr/retrying cannot fix: permission denied for table exp.owned/, 'and pauses at once, saying why');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE export_name = 'owned'}), 1, 'without retrying');
is($node->safe_psql('postgres', q{SET ROLE exporter; SELECT count(*) FROM posthog_export.status}), 1, 'the owner sees only its own export in status');

# --- auto-pause after repeated failures ---------------------------------------------
$node->safe_psql('postgres', q{
	CREATE SERVER flaky FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'http://127.0.0.1:9', project_id '1', allow_http 'true', allow_loopback 'true', max_retries '0', connect_timeout '1', requests_per_hour '1000000');
	CREATE USER MAPPING FOR CURRENT_USER SERVER flaky OPTIONS (api_key 'phx_x');
	SELECT posthog_export.create_export('flaky', 'flaky', table_name => 'flaky', every => '5 minutes', delay => '0', check_server => false);});
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = " . $sql_ts->($floor - 600) . " WHERE name = 'flaky'");
reload();
ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT paused FROM posthog_export.exports WHERE name = 'flaky'}) eq 't' }, 60),
	'an export that keeps failing pauses itself');
is($node->safe_psql('postgres', q{SELECT failures_in_a_row || ' ' || (paused_reason LIKE 'paused after 3 failures in a row%') FROM posthog_export.status WHERE export_name = 'flaky'}),
	'3 true', 'after max_failures retryable failures in a row, and says so');
is($node->safe_psql('postgres', q{SELECT attempts || ' ' || status FROM posthog_export.runs WHERE export_name = 'flaky'}),
	'3 failed', 'the interval was tried three times');

# --- SIGHUP: a new setting takes effect without a restart ------------------------------
$node->append_conf('postgresql.conf', "posthog_export.scheduler = off\n");
reload();
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('hup', 'posthog', table_name => 'hup', every => '5 minutes', delay => '0', check_server => false)});
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = " . $sql_ts->($floor - 600) . " WHERE name = 'hup'");
sleep 3;
is(count_runs('hup'), 0, 'with posthog_export.scheduler = off (SIGHUP) nothing starts');
$node->append_conf('postgresql.conf', "posthog_export.scheduler = on\n");
reload();
ok(wait_for(sub { next_start($node, 'hup') >= $floor }, 60), 'back on after another SIGHUP, it runs');

# --- an exclude window: no run starts inside it -----------------------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('window', 'posthog', table_name => 'window', every => '5 minutes', delay => '0',
	exclude_window_start => (now() AT TIME ZONE 'UTC' - interval '1 hour')::time,
	exclude_window_end => (now() AT TIME ZONE 'UTC' + interval '1 hour')::time, check_server => false)});
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = " . $sql_ts->($floor - 600) . " WHERE name = 'window'");
reload();
sleep 3;
is(count_runs('window'), 0, 'inside its exclude window an export does not start');
like($node->safe_psql('postgres', q{SELECT next_run > now() + interval '30 minutes' FROM posthog_export.status WHERE export_name = 'window'}),
	qr/^t$/, 'status shows the next run after the window');
$node->safe_psql('postgres', q{SELECT posthog_export.alter_export('window', drop_exclude_window => true)});
ok(wait_for(sub { next_start($node, 'window') >= $floor }, 60), 'without the window it runs at once');

# --- at most max_workers runs at once --------------------------------------------------
$node->append_conf('postgresql.conf', "posthog_export.max_workers = 1\n");
reload();
emu_reset($emu);
emu_faults($emu, { every => JSON::PP::true, delay => 0.3 });
$node->safe_psql('postgres', q{
	SELECT posthog_export.create_export('w1', 'posthog', table_name => 'w1', every => '5 minutes', delay => '0', check_server => false);
	SELECT posthog_export.create_export('w2', 'posthog', table_name => 'w2', every => '5 minutes', delay => '0', check_server => false);});
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = " . $sql_ts->($floor - 1200) . " WHERE name IN ('w1', 'w2')");
reload();
my $most = 0;
wait_for(sub {
	my $n = $node->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'posthog_export run'});
	$most = $n if $n > $most;
	return next_start($node, 'w1') >= $floor && next_start($node, 'w2') >= $floor;
}, 120);
ok(next_start($node, 'w1') >= $floor && next_start($node, 'w2') >= $floor, 'two exports with work both caught up');
is($most, 1, 'with max_workers = 1 never more than one run at a time');
emu_reset($emu);

# --- a backfill from the beginning -------------------------------------------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('fromstart', 'posthog', table_name => 'fromstart', every => '1 hour', delay => '0', check_server => false);
	SELECT posthog_export.pause('fromstart');});
$node->safe_psql('postgres', q{SELECT posthog_export.backfill('fromstart', NULL)});
# the sample data starts at $floor - 3 hours: the backfill starts at that hour
is($node->safe_psql('postgres', "SELECT start_at BETWEEN " . $sql_ts->($floor - 4 * 3600) . " AND " . $sql_ts->($floor - 3 * 3600) .
	" FROM posthog_export.backfills b JOIN posthog_export.exports e USING (export_id) WHERE e.name = 'fromstart'"),
	't', 'a backfill with start NULL starts at the earliest event PostHog has');

my $log = join '', grep { !/ statement: / } split /^/, slurp_file($node->logfile);
unlike($log, qr/\Q$PhxTest::API_KEY\E/, 'the API key never reaches the log');
like($log, qr/export "sched" finished interval/, 'runs are logged with export name and interval');

# --- a standby does nothing ----------------------------------------------------------
$node->backup('bk');
my $standby = PostgreSQL::Test::Cluster->new('standby');
$standby->init_from_backup($node, 'bk', has_streaming => 1);
$standby->start;
sleep 3;
is($standby->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'posthog_export%'}), 0,
	'no posthog_export worker runs on a standby');
$standby->stop;
$node->stop;

# --- pg_cron drives run_due() (no preloaded scheduler) --------------------------------
my $cron = new_node('cron', conf => "shared_preload_libraries = 'pg_cron'\ncron.database_name = 'postgres'\n");
$cron->append_conf('postgresql.conf', "cron.host = '" . $cron->host . "'\n");
$cron->restart;
setup_server($cron, $emu, options => { page_size => 500 });
$cron->safe_psql('postgres', q{CREATE EXTENSION pg_cron;
	SELECT posthog_export.create_export('bycron', 'posthog', table_name => 'bycron', every => '5 minutes', delay => '0', check_server => false);});
$cron->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = " . $sql_ts->($floor - 900) . " WHERE name = 'bycron'");
is($cron->safe_psql('postgres', q{SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'posthog_export%'}), 0,
	'without shared_preload_libraries there is no scheduler');
$cron->safe_psql('postgres', q{SELECT cron.schedule('posthog', '* * * * *', 'CALL posthog_export.run_due()')});
ok(wait_for(sub { next_start($cron, 'bycron') >= $floor }, 150),
	'pg_cron running CALL posthog_export.run_due() exports the due intervals');
$cron->safe_psql('postgres', q{SELECT cron.unschedule('posthog')});
my $cron_end = next_start($cron, 'bycron');
is($cron->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE export_name = 'bycron' AND status = 'completed'}),
	intervals_between($floor - 900, $cron_end), 'each once');
is($cron->safe_psql('postgres', q{SELECT status FROM cron.job_run_details ORDER BY runid LIMIT 1}), 'succeeded', 'the cron job succeeded');
($expected, $missing, $extra) = compare_with_source($cron, $emu, table => 'posthog_exports.bycron',
	start => $iso->($floor - 900), end => $iso->($cron_end));
is("$missing/$extra", '0/0', "rows exported through pg_cron equal the source ($expected rows)");
$cron->stop;

done_testing();
