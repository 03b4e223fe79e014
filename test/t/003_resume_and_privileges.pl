# Exactly-once under interruption: a backend killed mid-run, a query
# cancel, a statement_timeout, two runs of one export colliding; and the
# privilege model: an export runs as its owner with the owner's rights.
use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use PhxTest;

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 1500, seed => 3,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my $emu = start_emulator(data => $data);
my $node = new_node('resume', conf => "restart_after_crash = on\n");
setup_server($node, $emu, options => { page_size => 200 });
my %range = (start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my $call = "CALL posthog_export.run_export('%s', '2026-11-20 00:00+00', '2026-11-20 01:00+00')";

# Starts a CALL in the background; returns the harness.
sub start_call
{
	my ($name, $pre) = @_;
	my ($in, $out, $err) = ('', '', '');
	my $h = IPC::Run::start(
		[ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', ($pre // '') . sprintf($call, $name) ],
		'<', \$in, '>', \$out, '2>', \$err);
	return { h => $h, err => \$err };
}

# The pid of the run of export $name once $pages pages are committed and it
# waits on PostHog for the next one.
sub backend_waiting_on_http
{
	my ($name, $pages) = @_;
	my $pid;
	wait_for(sub {
		$node->safe_psql('postgres',
			"SELECT pages FROM posthog_export.runs WHERE export_name = '$name'") eq $pages;
	}, 60);
	wait_for(sub {
		$pid = $node->safe_psql('postgres', qq{SELECT pid FROM pg_stat_activity
			WHERE query LIKE 'CALL posthog_export.run_export(''$name''%' AND wait_event_type = 'Extension'});
		return $pid ne '';
	}, 60);
	return $pid;
}

# --- kill -9 of the backend in the middle of a run ---------------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('killed', 'posthog', table_name => 'killed', check_server => false)});
emu_reset($emu);
emu_faults($emu, { on_request => 4, delay => 60 });
my $bg = start_call('killed');
my $pid = backend_waiting_on_http('killed', 3);
ok($pid, 'the run is waiting for page 4');
is($node->safe_psql('postgres', q{SELECT status || ' ' || pages FROM posthog_export.runs WHERE export_name = 'killed'}),
	'running 3', 'three pages are committed while page 4 is in flight');
my $committed = $node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.killed');
is($committed, 600, 'the committed pages are visible to others (600 rows)');
kill 'KILL', $pid;
$bg->{h}->finish;
ok(wait_for(sub { $node->psql('postgres', 'SELECT 1') == 0 }, 120), 'the server is back after the crash');
is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.killed'), $committed,
	'crash recovery kept exactly the committed pages');
emu_reset($emu);
psql_ok($node, sprintf($call, 'killed'), 'the next run of the interval succeeds');
my $first = emu_requests($emu)->[0];
ok(defined $first->{values}{cursor_uuid}, 'it resumed from the committed cursor, not from the start');
my ($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.killed', %range);
is("$missing/$extra", '0/0', "after kill -9 and resume the table equals the source ($expected rows): no gap, no duplicate");
is($node->safe_psql('postgres', q{SELECT status || ' ' || attempts || ' ' || rows FROM posthog_export.runs WHERE export_name = 'killed'}),
	"completed 2 $expected", 'runs: completed on the second attempt, counting every row once');

# --- query cancel while waiting on PostHog ------------------------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('cancelled', 'posthog', table_name => 'cancelled', check_server => false)});
emu_reset($emu);
emu_faults($emu, { on_request => 2, delay => 60 });
$bg = start_call('cancelled');
$pid = backend_waiting_on_http('cancelled', 1);
# --- ... and a second run of the same export meanwhile -----------------------
my $err = psql_fails($node, sprintf($call, 'cancelled'), 'a second run of a running export is refused');
like($err, qr/export "cancelled" is already running/, 'because the export is locked');
my $t0 = time;
$node->safe_psql('postgres', "SELECT pg_cancel_backend($pid)");
$bg->{h}->finish;
my $took = time - $t0;
cmp_ok($took, '<', 10, sprintf('the cancel interrupted the HTTP wait at once (%.1f s)', $took));
like(${ $bg->{err} }, qr/canceling statement due to user request/, 'the CALL reports the cancel');
is($node->safe_psql('postgres', q{SELECT status || ' ' || (error LIKE '%cancel%') FROM posthog_export.runs WHERE export_name = 'cancelled'}),
	'failed true', 'runs records the cancelled run as failed, with the reason');
emu_reset($emu);
psql_ok($node, sprintf($call, 'cancelled'), 'the rerun completes (the lock was released)');
($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.cancelled', %range);
is("$missing/$extra", '0/0', 'after cancel and rerun the table equals the source');

# --- statement_timeout --------------------------------------------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('timeout', 'posthog', table_name => 'timeout', check_server => false)});
emu_reset($emu);
emu_faults($emu, { on_request => 3, delay => 30 });
$t0 = time;
$err = psql_fails($node, "SET statement_timeout = '2s'; " . sprintf($call, 'timeout'), 'statement_timeout ends the run');
like($err, qr/statement timeout/, 'with the timeout error');
cmp_ok(time - $t0, '<', 15, 'promptly');
emu_reset($emu);
psql_ok($node, sprintf($call, 'timeout'), 'the rerun completes');
($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.timeout', %range);
is("$missing/$extra", '0/0', 'after the timeout and rerun the table equals the source');

# --- inside an explicit transaction the call is atomic ---------------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('atomic', 'posthog', table_name => 'atomic', check_server => false)});
emu_reset($emu);
emu_faults($emu, { on_request => 3, status => 400 });
psql_fails($node, 'BEGIN; ' . sprintf($call, 'atomic') . '; COMMIT;', 'a failing run inside BEGIN fails');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_exports.atomic}) .
	$node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE export_name = 'atomic'}),
	'00', 'and leaves neither rows nor a runs row behind');
emu_reset($emu);
psql_ok($node, 'BEGIN; ' . sprintf($call, 'atomic') . '; COMMIT;', 'a run inside BEGIN ... COMMIT succeeds');
($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.atomic', %range);
is("$missing/$extra", '0/0', 'and commits everything at once');

# --- privileges ---------------------------------------------------------------
$node->safe_psql('postgres', qq{
	CREATE ROLE exporter LOGIN;
	CREATE ROLE outsider LOGIN;
	CREATE SCHEMA exp_schema;
	GRANT USAGE ON SCHEMA posthog_export TO exporter, outsider;
	GRANT USAGE ON FOREIGN SERVER posthog TO exporter;
	CREATE USER MAPPING FOR exporter SERVER posthog OPTIONS (api_key '$PhxTest::API_KEY');
	CREATE TABLE exp_schema.theirs (uuid text, event text);
	GRANT SELECT ON exp_schema.theirs TO exporter;});
my $as = sub {
	my ($role, $sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "SET ROLE $role; $sql");
	return ($ret, $err);
};
my ($r, $e) = $as->('exporter', q{SELECT posthog_export.create_export('mine', 'posthog', schema_name => 'exp_schema', table_name => 'mine', check_server => false)});
isnt($r, 0, 'without USAGE and CREATE on the schema, create_export fails');
like($e, qr/permission denied for schema exp_schema/, 'with a clear error');
$node->safe_psql('postgres', 'GRANT USAGE, CREATE ON SCHEMA exp_schema TO exporter');
($r, $e) = $as->('exporter', q{SELECT posthog_export.create_export('mine', 'posthog', schema_name => 'exp_schema', table_name => 'mine', check_server => false)});
is($r, 0, 'with USAGE and CREATE on its schema, a non-superuser creates an export') or diag $e;
is($node->safe_psql('postgres', q{SELECT tableowner FROM pg_tables WHERE tablename = 'mine'}), 'exporter',
	'the table belongs to the export owner');
($r, $e) = $as->('exporter', sprintf($call, 'mine'));
is($r, 0, 'and runs it') or diag $e;
($r, $e) = $as->('exporter', q{SELECT posthog_export.create_export('theirs', 'posthog', schema_name => 'exp_schema', table_name => 'theirs', check_server => false)});
like($e, qr/permission denied for table exp_schema.theirs.*\n.*needs INSERT/, 'a table it may not insert into is refused clearly');
($r, $e) = $as->('outsider', sprintf($call, 'mine'));
like($e, qr/export "mine" does not exist/, 'another role cannot run the export');
is($node->safe_psql('postgres', q{SET ROLE outsider; SELECT count(*) FROM posthog_export.exports}), 0,
	'nor see it');
is($node->safe_psql('postgres', q{SET ROLE exporter; SELECT string_agg(name, ',') FROM posthog_export.exports}), 'mine',
	'the owner sees its own export only');
# a superuser running the export still writes with the owner's rights
$node->safe_psql('postgres', q{SET ROLE exporter; REVOKE INSERT ON exp_schema.mine FROM exporter;});
$err = psql_fails($node, q{CALL posthog_export.run_export('mine', '2026-11-20 01:00+00', '2026-11-20 02:00+00')},
	'a superuser CALL of the export runs as its owner');
like($err, qr/permission denied for table exp_schema.mine/, 'so the owner\'s missing privilege stops it');

$node->stop;
done_testing();
