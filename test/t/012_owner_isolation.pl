# An export runs as its owner, whoever starts it: an ordinary role's code
# (deferred constraint triggers firing at commit, row triggers, defaults)
# never runs with more privilege than hers, through the scheduler's worker,
# a superuser's run_export or run_due; nothing it sets reaches the caller's
# session; one export's failure never stops run_due.  A run whose backend
# keeps dying pauses its export instead of crashing the cluster in a loop.
# progress_info() shows a role only the runs it may see.
use strict;
use warnings;

use File::Temp qw(tempdir);
use POSIX qw(floor strftime);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $hour = 3600;
my $top = floor(time / $hour) * $hour;    # the current hour's start
my $iso = sub { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0])) };
my $ts = sub { strftime("'%Y-%m-%d %H:%M:%S+00'", gmtime($_[0])) };
my ($h2, $h1) = ($top - 2 * $hour, $top - $hour);

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 600, seed => 12, start => $iso->($h2), end => $iso->($top));
my $emu = start_emulator(data => $data);
my $node = new_node('isolation', conf => <<'EOC');
shared_preload_libraries = 'posthog_export'
posthog_export.scheduler = off
posthog_export.launcher_naptime = 1
posthog_export.retry_interval = 0
restart_after_crash = on
EOC
setup_server($node, $emu, options => { page_size => 100 });
my $key = $PhxTest::API_KEY;
$node->safe_psql('postgres', qq{
	CREATE ROLE mallory LOGIN;
	CREATE ROLE bob LOGIN;
	CREATE ROLE nolog NOLOGIN;
	GRANT USAGE ON FOREIGN SERVER posthog TO mallory, bob, nolog;
	CREATE USER MAPPING FOR mallory SERVER posthog OPTIONS (api_key '$key');
	CREATE USER MAPPING FOR bob SERVER posthog OPTIONS (api_key '$key');
	CREATE USER MAPPING FOR nolog SERVER posthog OPTIONS (api_key '$key');
	CREATE SCHEMA mallory AUTHORIZATION mallory;
	CREATE SCHEMA bob AUTHORIZATION bob;
	CREATE SCHEMA nolog AUTHORIZATION nolog;});

sub as_role { my ($role, $sql) = @_; return $node->safe_psql('postgres', "SET ROLE $role; $sql"); }
sub is_super { return $node->safe_psql('postgres', "SELECT rolsuper FROM pg_roles WHERE rolname = 'mallory'"); }

# --- mallory's table escalates when its deferred trigger runs as a superuser -------
# (it also tries RESET ROLE, which leads to a superuser when one started the session)
$node->safe_psql('postgres', q{
	SET ROLE mallory;
	CREATE TABLE mallory.seen (what text, cur text, sess text, super boolean);
	CREATE FUNCTION mallory.escalate() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	  BEGIN EXECUTE 'RESET ROLE'; EXCEPTION WHEN OTHERS THEN NULL; END;
	  IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
	    EXECUTE 'ALTER ROLE mallory SUPERUSER';
	  END IF;
	  INSERT INTO mallory.seen SELECT TG_ARGV[0], current_user, session_user,
	         (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user);
	  RETURN NULL;
	END $$;
	SELECT posthog_export.create_export('m_deferred', 'posthog', schema_name => 'mallory',
	       table_name => 'deferred_ev', every => '1 hour', delay => '0', check_server => false);
	CREATE CONSTRAINT TRIGGER escalate AFTER INSERT ON mallory.deferred_ev
	  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION mallory.escalate('deferred');});

$node->safe_psql('postgres', "CALL posthog_export.run_export('m_deferred', ${\ $ts->($h2)}, ${\ $ts->($h1)})");
is(is_super(), 'f', "a superuser's run_export of mallory's export does not make her a superuser");
is($node->safe_psql('postgres', q{SELECT count(*) > 0, bool_and(cur = 'mallory' AND sess = 'mallory' AND NOT super)
	FROM mallory.seen WHERE what = 'deferred'}), 't|t',
	'the deferred trigger fired, at commit, as mallory in a session of mallory');
my ($e, $m, $x) = compare_with_source($node, $emu, table => 'mallory.deferred_ev', start => $iso->($h2), end => $iso->($h1));
is("$m/$x", '0/0', "the interval was exported in full ($e rows)");

# run_due, as pg_cron calls it
$node->safe_psql('postgres', "DELETE FROM mallory.seen; UPDATE posthog_export.exports SET next_interval_start = ${\ $ts->($h1)} WHERE name = 'm_deferred'");
psql_ok($node, 'CALL posthog_export.run_due()', "a superuser's run_due runs mallory's export");
is(is_super(), 'f', "a superuser's run_due does not make her a superuser");
is($node->safe_psql('postgres', q{SELECT count(*) > 0, bool_and(cur = 'mallory' AND sess = 'mallory' AND NOT super)
	FROM mallory.seen WHERE what = 'deferred'}), 't|t', 'through run_due the deferred trigger ran as mallory too');

# inside a transaction block another role's export cannot run (its worker commits on its own)
my $err = psql_fails($node, "BEGIN; CALL posthog_export.run_export('m_deferred', ${\ $ts->($h2)}, ${\ $ts->($h1)}, force => true); COMMIT;",
	"run_export of another role's export inside a transaction block");
like($err, qr/ERROR:  run_export cannot run export "m_deferred" of role "mallory" inside a transaction block/, 'and says why');
is(is_super(), 'f', 'still not a superuser');

# --- code in mallory's table changes the state of the session that ran it ----------
$node->safe_psql('postgres', q{
	SET ROLE mallory;
	CREATE FUNCTION mallory.taint() RETURNS trigger LANGUAGE plpgsql AS $$
	BEGIN
	  PERFORM pg_catalog.set_config('search_path', 'mallory, pg_catalog, public', false);
	  PERFORM pg_catalog.set_config('default_transaction_read_only', 'on', false);
	  PERFORM pg_catalog.pg_advisory_lock(4242);
	  EXECUTE 'LISTEN mallory_channel';
	  EXECUTE 'CREATE OR REPLACE TEMP VIEW pg_roles AS SELECT 1 AS x';
	  RETURN NEW;
	END $$;
	SELECT posthog_export.create_export('m_state', 'posthog', schema_name => 'mallory',
	       table_name => 'state_ev', every => '1 hour', delay => '0', check_server => false);
	CREATE TRIGGER taint BEFORE INSERT ON mallory.state_ev FOR EACH ROW EXECUTE FUNCTION mallory.taint();
	RESET ROLE;
	SET ROLE bob;
	SELECT posthog_export.create_export('zz_bob', 'posthog', schema_name => 'bob',
	       table_name => 'ev', every => '1 hour', delay => '0', check_server => false);
	RESET ROLE;
	UPDATE posthog_export.exports SET next_interval_start = } . $ts->($h2) . q{ WHERE name IN ('m_state', 'zz_bob');});
my $state = $node->safe_psql('postgres', q{
	CALL posthog_export.run_due();
	SELECT pg_catalog.current_setting('search_path') || '|' ||
	       pg_catalog.current_setting('default_transaction_read_only') || '|' ||
	       (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) || '|' ||
	       (SELECT count(*) FROM pg_catalog.pg_listening_channels()) || '|' ||
	       (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema());});
is($state, '"$user", public|off|0|0|0', "nothing mallory's trigger set (GUCs, advisory lock, LISTEN, temp view) survives in the caller's session");
is($node->safe_psql('postgres', q{SELECT count(*) FROM bob.ev}) > 0 ? 'rows' : 'none', 'rows',
	"run_due ran bob's export after mallory's");
($e, $m, $x) = compare_with_source($node, $emu, table => 'bob.ev', start => $iso->($h2), end => $iso->($top));
is("$m/$x", '0/0', "bob's export is complete ($e rows)");
is(is_super(), 'f', 'mallory is still no superuser');

# --- an owner that cannot log in --------------------------------------------------
$node->safe_psql('postgres', q{SET ROLE nolog; SELECT posthog_export.create_export('n_export', 'posthog', schema_name => 'nolog', table_name => 'ev', every => '1 hour', delay => '0', check_server => false);});
$err = psql_fails($node, "CALL posthog_export.run_export('n_export', ${\ $ts->($h2)}, ${\ $ts->($h1)})", 'a NOLOGIN owner\'s export started by a superuser');
like($err, qr/cannot run export "n_export": its owner "nolog" cannot log in/, 'is refused with the reason');

# --- a quote in an export's name is quoted in the suggested SQL -------------------
$node->safe_psql('postgres', q{
	ALTER USER MAPPING FOR bob SERVER posthog OPTIONS (SET api_key 'wrong-key');
	SET ROLE bob;
	SELECT posthog_export.create_export('o''brien', 'posthog', schema_name => 'bob', table_name => 'ob', every => '1 hour', delay => '0', check_server => false);
	RESET ROLE;
	UPDATE posthog_export.exports SET next_interval_start = } . $ts->($h2) . q{ WHERE name = 'o''brien';});
my ($ret, $out);
($ret, $out, $err) = $node->psql('postgres', q{CALL posthog_export.run_due()});
like($err, qr/HINT:  Fix the cause, then: SELECT posthog_export.unpause\('o''brien'\);/,
	'the HINT quotes the name as a literal');
$node->safe_psql('postgres', qq{ALTER USER MAPPING FOR bob SERVER posthog OPTIONS (SET api_key '$key')});

# --- the scheduler's worker: the deferred trigger again, and progress_info() ------
$node->safe_psql('postgres', q{DELETE FROM mallory.seen; SELECT posthog_export.pause(name) FROM posthog_export.exports WHERE name <> 'm_deferred'});
$node->safe_psql('postgres', "SET ROLE mallory; SELECT posthog_export.backfill('m_deferred', ${\ $ts->($h2)}, ${\ $ts->($h1)})");
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = ${\ $ts->($top)} WHERE name = 'm_deferred'");
$node->safe_psql('postgres', q{TRUNCATE mallory.deferred_ev; DELETE FROM posthog_export.runs WHERE export_name = 'm_deferred'});
$node->append_conf('postgresql.conf', "posthog_export.scheduler = on\n");
$node->reload;
ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.backfills b JOIN posthog_export.exports e USING (export_id)
	WHERE e.name = 'm_deferred' AND b.status = 'completed'}) == 1 }, 90), 'the scheduler ran the backfill');
is(is_super(), 'f', "the scheduler's worker does not make mallory a superuser");
is($node->safe_psql('postgres', q{SELECT count(*) > 0, bool_and(cur = 'mallory' AND sess = 'mallory' AND NOT super)
	FROM mallory.seen WHERE what = 'deferred'}), 't|t', "in the scheduler's worker the deferred trigger ran as mallory");

# a run held in flight by a slow source: only those who may see it see it
emu_faults($emu, { every => JSON::PP::true, delay => 30 });
$node->safe_psql('postgres', qq{SELECT posthog_export.create_export('crashy', 'posthog', table_name => 'crashy', every => '1 hour', delay => '0', check_server => false);
	UPDATE posthog_export.exports SET next_interval_start = ${\ $ts->($h1)} WHERE name = 'crashy'});
$node->reload;    # wakes the scheduler
my $worker_pid = sub { $node->safe_psql('postgres', q{SELECT pid FROM posthog_export.progress WHERE export_name = 'crashy'}) };
ok(wait_for(sub { $worker_pid->() ne '' }, 60), 'the run of "crashy" is in flight');
is($node->safe_psql('postgres', q{SET ROLE bob; SELECT count(*) FROM posthog_export.progress_info()}), '0',
	"progress_info() does not show bob a superuser's run");
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.progress_info() p JOIN posthog_export.exports e USING (export_id) WHERE e.name = 'crashy'}),
	'1', 'the superuser sees it');

# --- a run whose backend keeps dying pauses its export ----------------------------
my $starts = 0;
for my $round (1 .. 2)
{
	my $pid;
	ok(wait_for(sub { my ($r, $o) = $node->psql('postgres', q{SELECT pid FROM posthog_export.progress WHERE export_name = 'crashy'}); $pid = $o; $r == 0 && $o ne '' }, 90),
		"round $round: the run is in flight");
	kill 'KILL', $pid;
	ok(wait_for(sub { my ($r) = $node->psql('postgres', 'SELECT 1'); $r == 0 }, 60), "round $round: the server is back after the kill");
}
ok(wait_for(sub { my ($r, $o) = $node->psql('postgres', q{SELECT paused FROM posthog_export.exports WHERE name = 'crashy'}); $r == 0 && $o eq 't' }, 90),
	'after its backend died twice in a row the export is paused');
like($node->safe_psql('postgres', q{SELECT paused_reason FROM posthog_export.exports WHERE name = 'crashy'}),
	qr/died 2 times in a row/, 'paused_reason says why');
like($node->safe_psql('postgres', q{SELECT error FROM posthog_export.runs WHERE export_name = 'crashy'}),
	qr/died 2 times in a row/, 'the run records it');
sleep 3;
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.progress WHERE export_name = 'crashy'}), '0', 'and it is not started again');
emu_reset($emu);

$node->stop;
$emu->{handle}->kill_kill;
done_testing();
