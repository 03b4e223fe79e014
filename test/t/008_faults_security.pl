# More faults, each checked against the source afterwards: a destination
# that raises (disk-full-like, classified as PostHog classifies it), a kill
# in the middle of a commit, a server restart mid-run, concurrent write load
# from pgbench; and the extension attacked by a hostile role.
use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 2000, seed => 31, start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my $emu = start_emulator(data => $data);
my $node = new_node('faults2', conf => "restart_after_crash = on\n");
setup_server($node, $emu, options => { page_size => 300 });
my %range = (start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my $call = sub { "CALL posthog_export.run_export('$_[0]', '2026-11-20 00:00+00', '2026-11-20 01:00+00')" };
my ($lost, $dups, $compared) = (0, 0, 0);
# $upto: compare up to the given export's next scheduled interval (run_due()
# goes on through every interval up to now, and late events land there)
sub equal_to_source
{
	my ($table, $name, $upto) = @_;
	my %r = %range;
	$r{end} = $node->safe_psql('postgres', "SELECT to_char(next_interval_start AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM posthog_export.exports WHERE name = '$upto'")
	  if $upto;
	my ($e, $m, $x) = compare_with_source($node, $emu, table => $table, %r);
	($compared, $lost, $dups) = ($compared + $e, $lost + $m, $dups + $x);
	is("$m/$x", '0/0', "$name: the table equals the source ($e rows)");
}

# --- a destination that raises: disk full is not retried, a serialization failure is --
$node->safe_psql('postgres', q{
	SELECT posthog_export.create_export('full', 'posthog', table_name => 'full', every => '1 hour', delay => '0', check_server => false);
	CREATE FUNCTION raise_disk_full() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN IF (SELECT count(*) FROM posthog_exports.full) >= 300 THEN
	       RAISE EXCEPTION 'could not extend file: No space left on device' USING ERRCODE = 'disk_full'; END IF;
	     RETURN NEW; END$$;
	CREATE TRIGGER full_disk BEFORE INSERT ON posthog_exports.full FOR EACH ROW EXECUTE FUNCTION raise_disk_full();
	UPDATE posthog_export.exports SET next_interval_start = '2026-11-20 00:00+00' WHERE name = 'full';});
my ($ret, $out, $err) = $node->psql('postgres', 'CALL posthog_export.run_due()');
is($ret, 0, 'run_due() goes on when an export fails');
like($err, qr/WARNING:  export "full" paused after an error that retrying cannot fix: could not extend file/,
	'a disk-full error from the destination pauses the export at once (not retryable)');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_exports.full}), 300, 'the first page stays committed, the failing one is rolled back');
$node->safe_psql('postgres', q{DROP TRIGGER full_disk ON posthog_exports.full; SELECT posthog_export.unpause('full')});
psql_ok($node, 'CALL posthog_export.run_due()', 'after the disk is "freed" and the export unpaused');
equal_to_source('posthog_exports.full', 'disk full then resumed', 'full');

$node->safe_psql('postgres', q{
	SELECT posthog_export.create_export('serial', 'posthog', table_name => 'serial', every => '1 hour', delay => '0', check_server => false);
	CREATE FUNCTION raise_serialization() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN RAISE EXCEPTION 'could not serialize access' USING ERRCODE = 'serialization_failure'; END$$;
	CREATE TRIGGER ser BEFORE INSERT ON posthog_exports.serial FOR EACH ROW EXECUTE FUNCTION raise_serialization();
	UPDATE posthog_export.exports SET next_interval_start = '2026-11-20 00:00+00' WHERE name = 'serial';});
($ret, $out, $err) = $node->psql('postgres', 'CALL posthog_export.run_due()');
is($node->safe_psql('postgres', q{SELECT paused || ' ' || failures_in_a_row || ' ' || (next_run > now()) FROM posthog_export.status WHERE export_name = 'serial'}),
	'false 1 true', 'a serialization failure is retried later with backoff, not paused');
$node->safe_psql('postgres', q{DROP TRIGGER ser ON posthog_exports.serial; UPDATE posthog_export.exports SET retry_at = NULL WHERE name = 'serial'});
psql_ok($node, 'CALL posthog_export.run_due()', 'the retry');
equal_to_source('posthog_exports.serial', 'after a retried serialization failure', 'serial');
is($node->safe_psql('postgres', q{SELECT failures_in_a_row FROM posthog_export.status WHERE export_name = 'serial'}), 0,
	'success clears the failure count');

# --- kill -9 in the middle of a commit ----------------------------------------------
# a deferred constraint trigger runs at commit time; it sleeps there so the
# backend can be killed inside the commit of page 2
$node->safe_psql('postgres', q{
	SELECT posthog_export.create_export('commit', 'posthog', table_name => 'commit', check_server => false);
	CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN IF (SELECT count(*) FROM posthog_exports."commit") > 300 THEN PERFORM pg_sleep(60); END IF; RETURN NULL; END$$;
	CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON posthog_exports."commit" DEFERRABLE INITIALLY DEFERRED
	  FOR EACH ROW EXECUTE FUNCTION slow_commit();});
my ($in, $o, $e) = ('', '', '');
my $h = IPC::Run::start([ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', $call->('commit') ], '<', \$in, '>', \$o, '2>', \$e);
my $pid;
ok(wait_for(sub { ($pid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE 'CALL%'})) ne '' }, 60),
	'the run is inside the commit of page 2');
kill 'KILL', $pid;
$h->finish;
ok(wait_for(sub { slurp_file($node->logfile) =~ /all server processes terminated; reinitializing/ }, 30), 'the server reinitializes');
ok(wait_for(sub { $node->psql('postgres', 'SELECT 1') == 0 }, 120), 'and is back');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_exports."commit"}), 300, 'the interrupted commit left only page 1');
$node->safe_psql('postgres', q{DROP TRIGGER slow ON posthog_exports."commit"});
psql_ok($node, $call->('commit'), 'the rerun');
equal_to_source('posthog_exports."commit"', 'after kill -9 mid-commit');

# --- a server restart in the middle of a run ------------------------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('restart', 'posthog', table_name => 'restart', check_server => false)});
emu_reset($emu);
emu_faults($emu, { on_request => 3, delay => 60 });
$h = IPC::Run::start([ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', $call->('restart') ], '<', \$in, '>', \$o, '2>', \$e);
ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT pages FROM posthog_export.runs WHERE export_name = 'restart'}) eq '2' }, 60),
	'two pages are committed');
$node->restart;
$h->finish;
emu_reset($emu);
psql_ok($node, $call->('restart'), 'after a restart (fast shutdown) the run resumes');
equal_to_source('posthog_exports.restart', 'after a server restart mid-run');

# --- concurrent write load from pgbench -------------------------------------------
$node->command_ok([ 'pgbench', '-i', '-s', '2', '-q', $node->connstr('postgres') ], 'pgbench initialised');
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('load', 'posthog', table_name => 'load', check_server => false)});
emu_reset($emu);
emu_faults($emu, { every => JSON::PP::true, delay => 0.2 });
my $bench = IPC::Run::start([ 'pgbench', '-c', '4', '-j', '2', '-T', '8', $node->connstr('postgres') ], '>', \my $bout, '2>', \my $berr);
psql_ok($node, $call->('load'), 'an export while pgbench writes with 4 clients');
$bench->finish;
like($bout, qr/number of transactions actually processed: [1-9]/, 'pgbench really ran meanwhile');
emu_reset($emu);
equal_to_source('posthog_exports.load', 'under concurrent write load');

# --- a hostile role --------------------------------------------------------------------------
$node->safe_psql('postgres', qq{
	CREATE ROLE mallory LOGIN;
	CREATE ROLE victim LOGIN;
	GRANT USAGE ON FOREIGN SERVER posthog TO mallory, victim;
	CREATE USER MAPPING FOR victim SERVER posthog OPTIONS (api_key 'phx_victim_secret_key');
	CREATE USER MAPPING FOR mallory SERVER posthog OPTIONS (api_key '$PhxTest::API_KEY');
	CREATE SCHEMA mallory AUTHORIZATION mallory;
	CREATE SCHEMA victim AUTHORIZATION victim;
	SET ROLE victim;
	SELECT posthog_export.create_export('victims', 'posthog', schema_name => 'victim', table_name => 'events', check_server => false);
	RESET ROLE;});
# mallory plants look-alike objects that raise if anything of ours ever calls them
$node->safe_psql('postgres', q{
	SET ROLE mallory;
	CREATE FUNCTION mallory.texteq_evil(text, text) RETURNS boolean LANGUAGE plpgsql AS
	  $$BEGIN RAISE EXCEPTION 'HIJACKED operator'; END$$;
	CREATE OPERATOR mallory.= (LEFTARG = text, RIGHTARG = text, FUNCTION = mallory.texteq_evil);
	CREATE FUNCTION mallory.now() RETURNS timestamptz LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'HIJACKED now'; END$$;
	CREATE FUNCTION mallory.clock_timestamp() RETURNS timestamptz LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'HIJACKED clock'; END$$;
	CREATE FUNCTION mallory.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS $$BEGIN RAISE EXCEPTION 'HIJACKED unnest'; END$$;
	CREATE TABLE mallory.exports (x int);
	RESET ROLE;});
my $as_mallory = sub { my ($sql) = @_;
	my ($r, $out2, $err2) = $node->psql('postgres', "SET ROLE mallory; SET search_path = mallory, pg_catalog, public; $sql");
	return ($r, $err2); };
my ($r, $er) = $as_mallory->(q{SELECT posthog_export.create_export('mine', 'posthog', schema_name => 'mallory', table_name => 'events', check_server => false)});
is($r, 0, 'with search_path pointing at its own operators and functions, mallory still creates an export') or diag $er;
($r, $er) = $as_mallory->($call->('mine'));
is($r, 0, 'and runs it') or diag $er;
unlike($er, qr/HIJACKED/, 'none of the planted operators or functions was ever called');
($r, $er) = $as_mallory->($call->('victims'));
like($er, qr/export "victims" does not exist/, 'mallory cannot run the victim\'s export');
($r, $er) = $as_mallory->(q{SELECT posthog_export.drop_export('victims')});
like($er, qr/export "victims" does not exist/, '... nor drop it');
($r, $er) = $as_mallory->(q{SELECT posthog_export.alter_export('victims', every => '1 day')});
like($er, qr/export "victims" does not exist/, '... nor alter it');
is($node->safe_psql('postgres', q{SET ROLE mallory; SELECT count(*) FROM posthog_export.exports WHERE name = 'victims'}), 0,
	'... nor see its settings');
is($node->safe_psql('postgres', q{SET ROLE mallory; SELECT count(*) FROM pg_user_mappings WHERE usename = 'victim' AND umoptions IS NOT NULL}), 0,
	'the victim\'s API key is not readable by mallory (user mapping options)');
($r, $er) = $as_mallory->(q{UPDATE posthog_export.runs SET status = 'completed'});
like($er, qr/permission denied for table runs/, 'the run history cannot be forged');
($r, $er) = $as_mallory->(q{SELECT posthog_export.create_export('steal', 'posthog', schema_name => 'victim', table_name => 'events', check_server => false)});
like($er, qr/permission denied for schema victim/, 'an export cannot write into a schema its owner may not use');
my $key = 'phx_victim_secret_key';
my $all = $node->safe_psql('postgres', q{SELECT string_agg(coalesce(error, ''), ' ') FROM posthog_export.runs}) .
	$node->safe_psql('postgres', q{SELECT string_agg(query, ' ') FROM pg_stat_activity});
unlike($all, qr/$key|\Q$PhxTest::API_KEY\E/, 'no API key in runs or pg_stat_activity');

diag("rows compared: $compared, rows lost: $lost, duplicates: $dups");
$node->stop;
done_testing();
