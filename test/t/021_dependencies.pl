# What an export depends on stays consistent, as Postgres keeps its own
# objects': a renamed server carries its exports along, DROP SERVER is
# refused while exports use it (CASCADE drops them too), REASSIGN OWNED
# moves a role's exports, DROP OWNED drops them, DROP ROLE is refused while
# the role owns exports (it owns their types), and alter_export(server =>
# ..., owner => ...) checks the new server and owner up front.  Without
# these, each command below leaves an export on a server or owner that no
# longer exists.  (023_ownership.pl: the same without the preloaded library,
# the exports' types, pg_dump, and drops that wait for a run.)
use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my ($h0, $h1, $h2) = ('2026-11-20 00:00+00', '2026-11-20 01:00+00', '2026-11-20 02:00+00');
my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 400, seed => 21, start => '2026-11-20T00:00:00Z', end => '2026-11-20T02:00:00Z');
my $emu = start_emulator(data => $data);
# preloaded, as the scheduler needs it
my $node = new_node('deps', conf => "shared_preload_libraries = 'posthog_export'\nposthog_export.scheduler = off\n");
setup_server($node, $emu, options => { page_size => 100 });
my $key = $PhxTest::API_KEY;

# Every role may use the server through a PUBLIC mapping, and the
# destination tables of dave and erin belong to the superuser: those roles
# own nothing else, so only their exports can hold back DROP ROLE.
$node->safe_psql('postgres', qq{
	CREATE ROLE alice LOGIN; CREATE ROLE bob LOGIN; CREATE ROLE carol LOGIN;
	CREATE ROLE dave LOGIN; CREATE ROLE erin LOGIN;
	GRANT USAGE ON FOREIGN SERVER posthog TO PUBLIC;
	CREATE USER MAPPING FOR PUBLIC SERVER posthog OPTIONS (api_key '$key');
	CREATE SCHEMA alice AUTHORIZATION alice;
	CREATE SCHEMA dest;
	GRANT USAGE ON SCHEMA dest TO PUBLIC;
	SELECT posthog_export.create_export('tmpl_d', 'posthog', schema_name => 'dest', table_name => 'dave_ev');
	SELECT posthog_export.create_export('tmpl_e', 'posthog', schema_name => 'dest', table_name => 'erin_ev');
	SELECT posthog_export.drop_export('tmpl_d'); SELECT posthog_export.drop_export('tmpl_e');
	GRANT SELECT, INSERT ON dest.dave_ev, dest.erin_ev TO PUBLIC;});

sub as_user { my ($user, $sql) = @_; return $node->safe_psql('postgres', $sql, extra_params => [ '-U', $user ]); }
sub fails_as
{
	my ($user, $sql, $name) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', $user ], on_error_stop => 1);
	isnt($ret, 0, $name);
	return $err;
}
my $run = sub { "CALL posthog_export.run_export('$_[0]', '$_[1]', '$_[2]')" };
my $no_dangling = q{SELECT count(*) FROM posthog_export.exports e
	WHERE NOT EXISTS (SELECT 1 FROM pg_type t JOIN pg_roles r ON r.oid = t.typowner WHERE t.oid = e.owner_type)
	   OR NOT EXISTS (SELECT 1 FROM pg_foreign_server s WHERE s.srvname = e.server_name)};

# --- ALTER SERVER ... RENAME: the export goes on ----------------------------------
as_user('alice', q{SELECT posthog_export.create_export('a_ev', 'posthog', schema_name => 'alice', table_name => 'ev')});
$node->safe_psql('postgres', 'ALTER SERVER posthog RENAME TO posthog_us');
is($node->safe_psql('postgres', q{SELECT server_name FROM posthog_export.exports WHERE name = 'a_ev'}), 'posthog_us',
	'the export follows its renamed server');
as_user('alice', $run->('a_ev', $h0, $h1));
my ($e, $m, $x) = compare_with_source($node, $emu, table => 'alice.ev', start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
is("$m/$x", '0/0', "after the rename the export runs, in full ($e rows)");
$node->safe_psql('postgres', 'BEGIN; ALTER SERVER posthog_us RENAME TO gone; ROLLBACK;');
is($node->safe_psql('postgres', q{SELECT server_name FROM posthog_export.exports WHERE name = 'a_ev'}), 'posthog_us',
	'a rename rolled back leaves the export on the server');

# --- DROP SERVER --------------------------------------------------------------------
# (its user mappings hold it back by themselves; without them, only the export does)
setup_server($node, $emu, server => 'other');
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('s_other', 'other', table_name => 's_other');
	DROP USER MAPPING FOR CURRENT_USER SERVER other;});
my $err = psql_fails($node, 'DROP SERVER other', 'DROP SERVER of a server an export uses');
like($err, qr/ERROR:  cannot drop server other because exports depend on it/, 'is refused');
like($err, qr/DETAIL:  export "s_other" of role "\w+" depends on server other/, 'DETAIL names the export and its owner');
like($err, qr/HINT:  Move the exports to another server with posthog_export.alter_export\(name, server => \.\.\.\), drop them with posthog_export.drop_export\(name\), or use DROP \.\.\. CASCADE/,
	'HINT says what to do');
my ($ret, $out);
($ret, $out, $err) = $node->psql('postgres', 'DROP SERVER other CASCADE');
is($ret, 0, 'DROP SERVER ... CASCADE succeeds');
like($err, qr/NOTICE:  drop cascades to export "s_other"/, 'and says it drops the export');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.exports WHERE name = 's_other'}), '0', 'the export is gone');
$err = psql_fails($node, 'BEGIN; DROP SERVER posthog_us CASCADE; SELECT 1/0; COMMIT;', 'a CASCADE rolled back');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.exports WHERE name = 'a_ev'}), '1', 'keeps the exports');

# --- alter_export(server => ...) -----------------------------------------------------
setup_server($node, $emu, server => 'posthog_eu');
$err = fails_as('alice', q{SELECT posthog_export.alter_export('a_ev', server => 'posthog_eu')}, 'a server the owner has no USAGE on');
like($err, qr/permission denied for foreign server posthog_eu/, 'is refused up front');
$node->safe_psql('postgres', 'GRANT USAGE ON FOREIGN SERVER posthog_eu TO alice');
$err = fails_as('alice', q{SELECT posthog_export.alter_export('a_ev', server => 'posthog_eu')}, 'a server the owner has no user mapping on');
like($err, qr/user mapping not found for role "alice" on server "posthog_eu"/, 'is refused up front');
$err = fails_as('alice', q{SELECT posthog_export.alter_export('a_ev', server => 'nowhere')}, 'a server that does not exist');
like($err, qr/server "nowhere" does not exist/, 'is refused');
$node->safe_psql('postgres', qq{CREATE USER MAPPING FOR alice SERVER posthog_eu OPTIONS (api_key '$key')});
as_user('alice', q{SELECT posthog_export.alter_export('a_ev', server => 'posthog_eu')});
is($node->safe_psql('postgres', q{SELECT server_name FROM posthog_export.exports WHERE name = 'a_ev'}), 'posthog_eu',
	'alter_export(server => ...) moves the export');
as_user('alice', $run->('a_ev', $h1, $h2));
($e, $m, $x) = compare_with_source($node, $emu, table => 'alice.ev', start => '2026-11-20T00:00:00Z', end => '2026-11-20T02:00:00Z');
is("$m/$x", '0/0', "it runs on the new server ($e rows in both hours)");

# --- alter_export(owner => ...) ------------------------------------------------------
$err = fails_as('bob', q{SELECT posthog_export.alter_export('a_ev', owner => 'bob')}, 'bob taking alice\'s export');
like($err, qr/export "a_ev" does not exist/, 'is refused: he cannot see it');
$err = fails_as('alice', q{SELECT posthog_export.alter_export('a_ev', owner => 'bob')}, 'alice giving her export to a role she is not a member of');
like($err, qr/must be member of role "bob" to give it export "a_ev"/, 'is refused as ALTER ... OWNER TO would');
$node->safe_psql('postgres', 'GRANT bob TO alice');
$err = fails_as('alice', q{SELECT posthog_export.alter_export('a_ev', owner => 'bob')}, 'a new owner without USAGE on the server');
like($err, qr/permission denied for foreign server posthog_eu.*\n.*Role "bob" needs USAGE on the server/, 'is refused up front');
$node->safe_psql('postgres', qq{GRANT USAGE ON FOREIGN SERVER posthog_eu TO bob; CREATE USER MAPPING FOR bob SERVER posthog_eu OPTIONS (api_key '$key');
	GRANT USAGE ON SCHEMA alice TO bob});
$err = fails_as('alice', q{SELECT posthog_export.alter_export('a_ev', owner => 'bob')}, 'a new owner without privileges on the table');
like($err, qr/permission denied for table alice\.ev\nDETAIL:  Role "bob" needs INSERT on the table/, 'is refused up front');
$node->safe_psql('postgres', 'GRANT SELECT, INSERT ON alice.ev TO bob');
as_user('alice', q{SELECT posthog_export.alter_export('a_ev', owner => 'bob')});
is($node->safe_psql('postgres', q{SELECT owner FROM posthog_export.status WHERE export_name = 'a_ev'}), 'bob', 'alter_export(owner => ...) gives it to bob');
is(as_user('bob', q{SELECT count(*) FROM posthog_export.exports WHERE name = 'a_ev'}), '1', 'bob sees it now');
$node->safe_psql('postgres', 'REVOKE bob FROM alice');
is(as_user('alice', q{SELECT count(*) FROM posthog_export.exports WHERE name = 'a_ev'}), '0', 'and alice no longer does');

# --- DROP ROLE, REASSIGN OWNED ------------------------------------------------------
as_user('dave', q{SELECT posthog_export.create_export('d_ev', 'posthog_us', schema_name => 'dest', table_name => 'dave_ev')});
$err = psql_fails($node, 'DROP ROLE dave', 'DROP ROLE of a role that owns an export');
like($err, qr/ERROR:  role "dave" cannot be dropped because some objects depend on it/, 'is refused');
like($err, qr/DETAIL:  owner of type posthog_export."export d_ev"/, 'DETAIL names the type of the export (Postgres\'s own message)');
psql_ok($node, 'REASSIGN OWNED BY dave TO bob', 'REASSIGN OWNED BY dave TO bob');
is($node->safe_psql('postgres', q{SELECT owner FROM posthog_export.status WHERE export_name = 'd_ev'}), 'bob', 'moves the export to bob');
psql_ok($node, 'DROP OWNED BY dave; DROP ROLE dave', 'then DROP OWNED and DROP ROLE succeed');
is($node->safe_psql('postgres', q{SELECT owner FROM posthog_export.status WHERE export_name = 'd_ev'}), 'bob', 'and the export is still bob\'s');
as_user('bob', $run->('d_ev', $h0, $h1));
($e, $m, $x) = compare_with_source($node, $emu, table => 'dest.dave_ev', start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
is("$m/$x", '0/0', "bob runs it ($e rows)");

# --- DROP OWNED ----------------------------------------------------------------------
as_user('erin', q{SELECT posthog_export.create_export('e_ev', 'posthog_us', schema_name => 'dest', table_name => 'erin_ev')});
as_user('erin', $run->('e_ev', $h0, $h1));
my $erin_rows = $node->safe_psql('postgres', 'SELECT count(*) FROM dest.erin_ev');
# her export's type is a dependency Postgres keeps itself: DROP ROLE is refused from
# another database too, where the export is not seen
$node->safe_psql('postgres', 'CREATE DATABASE other');
my (undef, undef, $other_err) = $node->psql('other', 'DROP ROLE erin');
like($other_err, qr/role "erin" cannot be dropped because some objects depend on it\nDETAIL:  1 object in database postgres/,
	'DROP ROLE from another database is refused by Postgres itself (the type that stands for her export)');
$err = fails_as('bob', 'DROP OWNED BY erin', 'DROP OWNED by a role without her privileges');
like($err, qr/permission denied to drop objects/, 'is refused by Postgres');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.exports WHERE name = 'e_ev'}), '1', 'and keeps her export');
psql_ok($node, 'DROP OWNED BY erin', 'DROP OWNED BY erin');
is($node->safe_psql('postgres', q{SELECT (SELECT count(*) FROM posthog_export.exports WHERE name = 'e_ev') || ' ' ||
	(SELECT count(*) FROM posthog_export.runs WHERE export_name = 'e_ev')}), '0 0', 'drops her export and its runs');
is($node->safe_psql('postgres', 'SELECT count(*) FROM dest.erin_ev'), $erin_rows, 'the table (not hers) keeps its rows');
psql_ok($node, 'DROP ROLE erin', 'and DROP ROLE succeeds');

is($node->safe_psql('postgres', $no_dangling), '0', 'no export is left on a missing server or owner');
psql_ok($node, 'DROP EXTENSION posthog_export CASCADE', 'the extension, its event triggers with it, can be dropped');

$node->stop;
$emu->{handle}->kill_kill;
done_testing();
