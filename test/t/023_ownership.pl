# An export's owner is the owner of a type that stands for it, so Postgres's
# own ownership machinery keeps exports consistent in every session, also
# one that never loaded the library, on a cluster without
# shared_preload_libraries: REASSIGN OWNED moves exports, DROP OWNED drops
# them, DROP ROLE is refused while a role owns one, ALTER TYPE ... OWNER TO
# changes the owner with Postgres's checks.  The types cannot be hijacked
# (pre-created, used, renamed) by other roles, survive pg_dump and restore
# (their OIDs change, their names do not) and go with DROP EXTENSION.
# DROP OWNED and DROP SERVER ... CASCADE wait for a run in flight, as
# drop_export does, and leave nothing behind.
use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my ($h0, $h1, $h2) = ('2026-11-20 00:00+00', '2026-11-20 01:00+00', '2026-11-20 02:00+00');
my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 400, seed => 23, start => '2026-11-20T00:00:00Z', end => '2026-11-20T02:00:00Z');
my $emu = start_emulator(data => $data);
# no shared_preload_libraries: a session loads the library only when it calls the extension
my $node = new_node('ownership');
setup_server($node, $emu, options => { page_size => 100 });
my $key = $PhxTest::API_KEY;
my $super = $node->safe_psql('postgres', 'SELECT current_user');

$node->safe_psql('postgres', qq{
	CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN; CREATE ROLE mallory LOGIN;
	GRANT USAGE ON FOREIGN SERVER posthog TO PUBLIC;
	CREATE USER MAPPING FOR PUBLIC SERVER posthog OPTIONS (api_key '$key');
	CREATE SCHEMA dest;
	GRANT USAGE, CREATE ON SCHEMA dest TO PUBLIC;});

sub sql { return $node->safe_psql('postgres', $_[0]); }
sub as_user { my ($user, $sql) = @_; return $node->safe_psql('postgres', $sql, extra_params => [ '-U', $user ]); }
sub fails_as
{
	my ($user, $sql, $name) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', $user ], on_error_stop => 1);
	isnt($ret, 0, $name);
	return $err;
}
sub create_as
{
	my ($user, $name) = @_;
	as_user($user, "SELECT posthog_export.create_export('$name', 'posthog', schema_name => 'dest', table_name => '$name', check_server => false)");
}
sub run_as { my ($user, $name, $s, $e) = @_; as_user($user, "CALL posthog_export.run_export('$name', '$s', '$e')"); }
sub owner_of { return sql("SELECT owner FROM posthog_export.status WHERE export_name = '$_[0]'"); }
# the export's own rows: itself, its runs, its type
sub left_of
{
	my ($name) = @_;
	return sql(qq{SELECT (SELECT count(*) FROM posthog_export.exports WHERE name = '$name') || ' '
		|| (SELECT count(*) FROM posthog_export.runs WHERE export_name = '$name') || ' '
		|| (SELECT count(*) FROM pg_type WHERE typname = 'export $name')});
}
my $no_dangling = q{SELECT count(*) FROM posthog_export.exports e
	WHERE NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_roles r ON r.oid = t.typowner WHERE t.oid = e.owner_type)};

# A psql session kept open, fed one statement at a time, with its backend's pid.
sub open_session
{
	my ($db) = @_;
	my %s = (in => '', out => '', err => '');
	$s{h} = IPC::Run::start([ 'psql', '-X', '-At', '-d', $node->connstr($db // 'postgres') ],
		'<', \$s{in}, '>', \$s{out}, '2>', \$s{err}, IPC::Run::timeout($PostgreSQL::Test::Utils::timeout_default));
	$s{pid} = session_do(\%s, 'SELECT pg_backend_pid()');
	return \%s;
}
sub session_do
{
	my ($s, $sql) = @_;
	my $mark = 'done' . int(rand(1e9));
	$s->{out} = '';
	$s->{in} .= "$sql;\nSELECT '$mark';\n";
	$s->{h}->pump until $s->{out} =~ /^\Q$mark\E$/m;
	my $out = $s->{out};
	$out =~ s/^\Q$mark\E\n//m;
	chomp $out;
	return $out;
}
sub close_session { my ($s) = @_; $s->{in} .= "\\q\n"; $s->{h}->finish; }
# whether the backend has the library mapped (/proc/<pid>/maps lists every shared object it loaded)
sub library_loaded
{
	my ($pid) = @_;
	open my $fh, '<', "/proc/$pid/maps" or die "cannot read /proc/$pid/maps: $!";
	my $loaded = grep { m{/posthog_export\.so} } <$fh>;
	close $fh;
	return $loaded ? 1 : 0;
}

# --- each export has its type, owned by its owner, closed to everyone else ---------------
create_as('alice', 'a1');
create_as('alice', 'a2');
is(sql(q{SELECT string_agg(format('%s %s %s %s', e.name, e.owner_type, t.typowner::regrole, t.typacl), ', ' ORDER BY e.name)
	FROM posthog_export.exports e JOIN pg_type t ON t.oid = e.owner_type}),
	'a1 posthog_export."export a1" alice {alice=U/alice}, a2 posthog_export."export a2" alice {alice=U/alice}',
	'each export has a type named after it, owned by its owner, with no USAGE for PUBLIC');
is(owner_of('a1'), 'alice', 'status shows the owner');
my $err = fails_as('bob', q{CREATE TABLE dest.squat (x posthog_export."export a1")}, 'another role using the type of alice\'s export');
like($err, qr/permission denied for type posthog_export."export a1"/, 'is refused: nothing of his can hold back her DROP OWNED');
$err = fails_as('mallory', q{CREATE TYPE posthog_export."export m1" AS ENUM ()}, 'an ordinary role creating a type in the extension\'s schema');
like($err, qr/permission denied for schema posthog_export/, 'is refused');
# a type of the name that exists already (left over, or made by a role given CREATE there) is never adopted
sql(q{CREATE TYPE posthog_export."export m1" AS ENUM (); ALTER TYPE posthog_export."export m1" OWNER TO mallory;});
$err = fails_as('alice', q{SELECT posthog_export.create_export('m1', 'posthog', schema_name => 'dest', table_name => 'm1', check_server => false)},
	'create_export when a type of its name exists');
like($err, qr/ERROR:  cannot create export "m1" because type posthog_export."export m1" already exists/, 'is refused, naming the type');
is(sql(q{SELECT count(*) FROM posthog_export.exports WHERE name = 'm1'}), '0', 'no export is made');
sql(q{DROP TYPE posthog_export."export m1"});
# long names: the type is named after the id
my $long = 'l' x 60;
create_as('alice', $long);
is(sql(qq{SELECT owner_type::text = 'posthog_export.export_' || export_id FROM posthog_export.exports WHERE name = '$long'}), 't',
	'an export whose name does not fit in a type name has a type named after its id');
as_user('alice', qq{SELECT posthog_export.drop_export('$long')});
is(sql(q{SELECT count(*) FROM pg_type WHERE typnamespace = 'posthog_export'::regnamespace AND typtype = 'e'}), '2',
	'drop_export drops its type');

# --- the type keeps its name and schema; DROP TYPE is refused unless CASCADE ----------------
$err = fails_as('alice', q{ALTER TYPE posthog_export."export a1" RENAME TO "export zz"}, 'the owner renaming the type');
like($err, qr/ERROR:  cannot rename type posthog_export."export a1", or move it to another schema, because export "a1" depends on it/, 'is refused');
sql(q{CREATE SCHEMA alice_s AUTHORIZATION alice});
$err = fails_as('alice', q{ALTER TYPE posthog_export."export a1" SET SCHEMA alice_s}, 'the owner moving the type to her schema');
like($err, qr/because export "a1" depends on it/, 'is refused');
$err = fails_as('alice', q{DROP TYPE posthog_export."export a1"}, 'DROP TYPE of an export\'s type');
like($err, qr/ERROR:  cannot drop type posthog_export."export a1" because export "a1" depends on it\n.*\nHINT:  Drop the export with posthog_export.drop_export\('a1'\), or use DROP \.\.\. CASCADE/,
	'is refused, with what to do');
is(left_of('a1'), '1 0 1', 'and keeps the export');

# --- ALTER TYPE ... OWNER TO: Postgres's checks, then a change of owner ------------------------
$err = fails_as('alice', qq{ALTER TYPE posthog_export."export a2" OWNER TO $super}, 'alice giving her export to a superuser through its type');
like($err, qr/must be member of role "$super"/, 'is refused by Postgres (no escalation)');
$err = fails_as('alice', q{SELECT posthog_export.alter_export('a2', owner => 'bob')}, 'nor through alter_export');
like($err, qr/must be member of role "bob"/, 'is refused');
sql(q{ALTER TYPE posthog_export."export a2" OWNER TO bob; GRANT SELECT, INSERT ON dest.a2 TO bob});
is(owner_of('a2'), 'bob', 'ALTER TYPE ... OWNER TO bob (by a superuser) makes bob the owner');
is(as_user('alice', q{SELECT count(*) FROM posthog_export.exports WHERE name = 'a2'}), '0', 'alice no longer sees it');
run_as('bob', 'a2', $h0, $h1);
my ($e, $m, $x) = compare_with_source($node, $emu, table => 'dest.a2', start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
is("$m/$x", '0/0', "bob runs it ($e rows)");
sql(q{ALTER TYPE posthog_export."export a2" OWNER TO alice});

# --- REASSIGN OWNED in a session that never loaded the library ---------------------------------
run_as('alice', 'a1', $h0, $h1);
my $s = open_session();
is(library_loaded($s->{pid}), 0, 'a new session has not loaded the library');
session_do($s, 'DROP ROLE alice');
like($s->{err}, qr/role "alice" cannot be dropped because some objects depend on it\nDETAIL:  .*owner of type posthog_export."export a1"/s,
	'DROP ROLE of alice is refused there, by Postgres, naming her exports\' types');
close_session($s);
my (undef, undef, $other_err) = do { sql('CREATE DATABASE other'); $node->psql('other', 'DROP ROLE alice') };
like($other_err, qr/role "alice" cannot be dropped because some objects depend on it\nDETAIL:  .*objects? in database postgres/,
	'and from another database');

$s = open_session();
session_do($s, 'REASSIGN OWNED BY alice TO bob');
is($s->{err}, '', 'REASSIGN OWNED BY alice TO bob in a fresh session');
is(library_loaded($s->{pid}), 0, 'which still has not loaded the library');
# the check can fail: a call of the extension loads it
session_do($s, 'SELECT count(*) FROM posthog_export.status');
is(library_loaded($s->{pid}), 1, '(a call of the extension would have loaded it)');
close_session($s);
is(sql(q{SELECT string_agg(export_name || ' ' || owner, ', ' ORDER BY export_name) FROM posthog_export.status}), 'a1 bob, a2 bob',
	'her exports are bob\'s');
run_as('bob', 'a1', $h1, $h2);
($e, $m, $x) = compare_with_source($node, $emu, table => 'dest.a1', start => '2026-11-20T00:00:00Z', end => '2026-11-20T02:00:00Z');
is("$m/$x", '0/0', "bob runs a1, where alice left it ($e rows in both hours)");
psql_ok($node, 'DROP SCHEMA alice_s; DROP ROLE alice', 'alice can be dropped');
is(sql($no_dangling), '0', 'no export is left without its owner');

# --- DROP OWNED in a session that never loaded the library ----------------------------------------
create_as('carol', 'c1');
run_as('carol', 'c1', $h0, $h1);
$s = open_session();
session_do($s, 'DROP OWNED BY carol');
is($s->{err}, '', 'DROP OWNED BY carol in a fresh session');
close_session($s);
is(left_of('c1'), '0 0 0', 'drops her export, its runs and its type');
is(sql(q{SELECT count(*) FROM pg_class WHERE relname = 'c1'}), '0', 'and her table, as DROP OWNED does');
psql_ok($node, 'DROP ROLE carol', 'carol can be dropped');

# --- DROP OWNED while a run is in flight waits for it ------------------------------------------------
sub run_in_flight
{
	my ($user, $name) = @_;
	emu_reset($emu);
	emu_faults($emu, { on_request => 1, delay => 5 });
	my %r = (out => '', err => '');
	$r{h} = IPC::Run::start([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-U', $user, '-c',
		"CALL posthog_export.run_export('$name', '$h0', '$h2')" ], '<', \undef, '>', \$r{out}, '2>', \$r{err});
	ok(wait_for(sub { ($r{pid} = sql(qq{SELECT pid FROM pg_stat_activity WHERE query LIKE 'CALL posthog_export.run_export(''$name''%' AND state = 'active'})) ne ''
			&& sql(qq{SELECT count(*) FROM posthog_export.runs WHERE export_name = '$name' AND status = 'running'}) == 1 }, 30),
		"a run of $name is in flight");
	return \%r;
}
sql('CREATE ROLE dora LOGIN');
create_as('dora', 'd1');
my $run = run_in_flight('dora', 'd1');
my $t0 = time;
my ($ret, $out);
($ret, $out, $err) = $node->psql('postgres', 'DROP OWNED BY dora');
is($ret, 0, 'DROP OWNED BY dora while her run is in flight succeeds');
like($err, qr/NOTICE:  waiting for backend $run->{pid}, which is running export "d1", before dropping it/, 'after waiting for the run, saying so');
$run->{h}->finish;
is($run->{err}, '', 'the run finished both its hours without an error');
cmp_ok(time - $t0, '>=', 2, sprintf('DROP OWNED returned after it (%.0f s)', time - $t0));
is(left_of('d1'), '0 0 0', 'nothing of the export is left: no export, no runs, no type');
is(sql(q{SELECT count(*) FROM pg_class WHERE relname = 'd1'}), '0', 'and her table went with DROP OWNED');
psql_ok($node, 'DROP ROLE dora', 'dora can be dropped');

# --- DROP SERVER ... CASCADE while a run is in flight waits for it --------------------------------------
setup_server($node, $emu, server => 'slow', user => 'PUBLIC', options => { page_size => 100 });
sql(q{GRANT USAGE ON FOREIGN SERVER slow TO bob});
as_user('bob', q{SELECT posthog_export.create_export('s1', 'slow', schema_name => 'dest', table_name => 's1', check_server => false)});
$run = run_in_flight('bob', 's1');
$t0 = time;
($ret, $out, $err) = $node->psql('postgres', 'DROP SERVER slow CASCADE');
is($ret, 0, 'DROP SERVER ... CASCADE while a run of its export is in flight succeeds');
like($err, qr/NOTICE:  drop cascades to export "s1".*NOTICE:  waiting for backend $run->{pid}, which is running export "s1", before dropping it/s,
	'after waiting for the run, saying so');
$run->{h}->finish;
is($run->{err}, '', 'the run finished both its hours without an error');
cmp_ok(time - $t0, '>=', 2, sprintf('DROP SERVER returned after it (%.0f s)', time - $t0));
is(left_of('s1'), '0 0 0', 'nothing of the export is left: no export, no runs, no type');
($e, $m, $x) = compare_with_source($node, $emu, table => 'dest.s1', start => '2026-11-20T00:00:00Z', end => '2026-11-20T02:00:00Z');
is("$m/$x", '0/0', "its table is kept, with the run's rows complete ($e rows)");
emu_reset($emu);

# --- pg_dump and restore: the types come back with their owners, under new OIDs ------------------------
my $dump = "$data/dump.sql";
$node->command_ok([ 'pg_dump', '-d', $node->connstr('postgres'), '-f', $dump ], 'pg_dump of a database with exports');
sql('CREATE DATABASE restored');
$node->command_ok([ 'psql', '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('restored'), '-f', $dump ], 'restored into another database');
my $owners = q{SELECT string_agg(export_name || ' ' || owner, ', ' ORDER BY export_name) FROM posthog_export.status};
is($node->safe_psql('restored', $owners), sql($owners), 'every export has its owner after the restore');
isnt($node->safe_psql('restored', q{SELECT string_agg(owner_type::oid::text, ',' ORDER BY name) FROM posthog_export.exports}),
	sql(q{SELECT string_agg(owner_type::oid::text, ',' ORDER BY name) FROM posthog_export.exports}),
	'though its type has another OID');
$node->safe_psql('restored', q{CALL posthog_export.run_export('a2', '2026-11-20 01:00+00', '2026-11-20 02:00+00')}, extra_params => [ '-U', 'bob' ]);
is($node->safe_psql('restored', q{SELECT string_agg(status, ',' ORDER BY interval_start) FROM posthog_export.runs WHERE export_name = 'a2'}),
	'completed,completed', 'and its owner runs it there');

# --- DROP EXTENSION takes the types with it -----------------------------------------------------------
is(sql($no_dangling), '0', 'no export is left without its owner');
psql_ok($node, 'DROP EXTENSION posthog_export CASCADE', 'DROP EXTENSION');
is(sql(q{SELECT count(*) FROM pg_type WHERE typnamespace = 'posthog_export'::regnamespace}), '0', 'drops the exports\' types too');

$node->stop;
$emu->{handle}->kill_kill;
done_testing();
