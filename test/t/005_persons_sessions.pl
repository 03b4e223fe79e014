# Persons and sessions: version-keyed merges, exactly as PostHog's export
# merges them, with the destination compared column by column with what the
# source holds after every step.
use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
my $json = JSON::PP->new->utf8->canonical;
sub write_ndjson
{
	my ($file, @rows) = @_;
	open my $fh, '>', "$data/$file" or die $!;
	print $fh $json->encode($_), "\n" for @rows;
	close $fh;
}
sub add_ndjson
{
	my ($file, @rows) = @_;
	open my $fh, '>>', "$data/$file" or die $!;
	print $fh $json->encode($_), "\n" for @rows;
	close $fh;
}
my ($P1, $P2, $P3) = map { sprintf '0188a000-0000-7000-8000-%012d', $_ } 1 .. 3;
my $t = JSON::PP::true;
my $f = JSON::PP::false;

sub person { my ($id, $v, $props, %o) = @_;
	return { id => $id, team_id => 1, properties => $props, created_at => '2026-10-01T10:00:00.5Z',
		is_identified => $t, is_deleted => $o{deleted} ? 1 : 0, version => $v }; }
sub mapping { my ($did, $pid, $v, %o) = @_;
	return { team_id => 1, distinct_id => $did, person_id => $pid, is_deleted => $o{deleted} ? 1 : 0, version => $v }; }

write_ndjson('persons.ndjson',
	person($P1, 0, { email => 'a@example.com', plan => 'free' }),
	person($P1, 1, { email => 'a@example.com', plan => 'pro', "nul\\u0000" => "x" }),
	person($P2, 0, { email => 'b@example.com', n => 1 }),
	person($P3, 4, { email => 'c@example.com' }));
write_ndjson('person_distinct_ids.ndjson',
	mapping('anon-1', $P1, 0), mapping('a@example.com', $P1, 0),
	mapping('anon-2', $P2, 0), mapping("\x{1F600} emoji id", $P3, 2));
# many mappings to many persons, so the keyset pass spans several pages and a
# page names more persons than PostHog returns without a LIMIT (100)
my @bulk = map { sprintf '0188b000-0000-7000-8000-%012d', $_ } 1 .. 250;
add_ndjson('persons.ndjson', map { person($bulk[$_ - 1], 1, { n => $_ }) } 1 .. 250);
add_ndjson('person_distinct_ids.ndjson', map { mapping(sprintf('bulk-%04d', $_), $bulk[$_ - 1], 0) } 1 .. 250);

my $emu = start_emulator(data => $data, timezone => 'Europe/Berlin');
my $node = new_node('persons', conf => "restart_after_crash = on\n");
setup_server($node, $emu, options => { page_size => 150 });
my $call = sub { "CALL posthog_export.run_export('$_[0]', '$_[1]', '$_[2]')" };

sub persons_equal
{
	my ($name, %o) = @_;
	my ($expected, $missing, $extra) = compare_with_source($node, $emu, model => 'persons', %o);
	is("$missing/$extra", '0/0', "$name: persons equal the source column by column ($expected rows)");
}

# --- first run ------------------------------------------------------------------
psql_ok($node, q{SELECT posthog_export.create_export('persons', 'posthog', 'persons', check_server => false)}, 'create a persons export');
like($node->safe_psql('postgres', q{SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'posthog_exports.persons'::regclass AND contype = 'p'}),
	qr/PRIMARY KEY \(team_id, distinct_id\)/, 'the table is created with primary key (team_id, distinct_id)');
psql_ok($node, $call->('persons', '2026-11-20 00:00+00', '2026-11-20 01:00+00'), 'first run');
persons_equal('first run');
is($node->safe_psql('postgres', q{SELECT rows_written || ' ' || pages FROM posthog_export.runs WHERE export_name = 'persons'}),
	'254 4', 'every mapping written; the pass reads two pages of mappings, then two of persons');
is($node->safe_psql('postgres', q{SELECT properties->>'plan' FROM posthog_exports.persons WHERE distinct_id = 'anon-1'}),
	'pro', 'a person\'s latest properties');

# --- follow-up with newer versions: only changed rows are written ----------------
add_ndjson('persons.ndjson', person($P2, 1, { email => 'b@example.com', n => 2 }));
emu_reload($emu);
psql_ok($node, $call->('persons', '2026-11-20 01:00+00', '2026-11-20 02:00+00'), 'follow-up run');
persons_equal('follow-up');
is($node->safe_psql('postgres', q{SELECT rows || ' ' || rows_written FROM posthog_export.runs WHERE export_name = 'persons' AND interval_start = '2026-11-20 01:00+00'}),
	'507 1', 'a full pass reads every mapping (254) and every person (253) but writes only the changed row');

# --- a late older version never wins ----------------------------------------
add_ndjson('persons.ndjson', person($P1, 0, { email => 'a@example.com', plan => 'stale' }));
add_ndjson('person_distinct_ids.ndjson', mapping('anon-1', $P2, -1));
emu_reload($emu);
psql_ok($node, $call->('persons', '2026-11-20 02:00+00', '2026-11-20 03:00+00'), 'run after older versions arrived');
is($node->safe_psql('postgres', q{SELECT person_id || ' ' || (properties->>'plan') FROM posthog_exports.persons WHERE distinct_id = 'anon-1'}),
	"$P1 pro", 'an older person or mapping version arriving late does not overwrite');
# the destination holds a newer version than PostHog sends: it is kept
$node->safe_psql('postgres', q{UPDATE posthog_exports.persons SET person_version = 99, properties = '{"kept": true}' WHERE distinct_id = 'anon-2'});
psql_ok($node, $call->('persons', '2026-11-20 03:00+00', '2026-11-20 04:00+00'), 'run with an older incoming version');
is($node->safe_psql('postgres', q{SELECT properties->>'kept' FROM posthog_exports.persons WHERE distinct_id = 'anon-2'}),
	'true', 'the merge never replaces a newer version with an older one');
$node->safe_psql('postgres', q{UPDATE posthog_exports.persons SET person_version = 1, properties = '{"email": "b@example.com", "n": 2}' WHERE distinct_id = 'anon-2'});

# --- a distinct_id moved to another person (a merge in PostHog) ---------------
add_ndjson('person_distinct_ids.ndjson', mapping('a@example.com', $P2, 1));
# --- deletions: a person, and a mapping ---------------------------------------
add_ndjson('persons.ndjson', person($P3, 5, {}, deleted => 1));
add_ndjson('person_distinct_ids.ndjson', mapping('anon-1', $P1, 1, deleted => 1));
emu_reload($emu);
psql_ok($node, $call->('persons', '2026-11-20 04:00+00', '2026-11-20 05:00+00'), 'run after a merge and deletions');
persons_equal('after moves and deletions');
is($node->safe_psql('postgres', q{SELECT person_id || ' ' || (properties->>'n') FROM posthog_exports.persons WHERE distinct_id = 'a@example.com'}),
	"$P2 2", 'the moved distinct_id points to its new person, with that person\'s properties');
is($node->safe_psql('postgres', q{SELECT count(*) FILTER (WHERE is_deleted) || ' ' || count(*) FROM posthog_exports.persons}),
	'2 254', 'deleted persons and mappings are marked is_deleted, never dropped');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_exports.persons WHERE person_version IS NULL}), 0,
	'every mapping found its person, even with more than 100 persons on a page');

# --- a backfill from the beginning exports every person -----------------------
psql_ok($node, q{SELECT posthog_export.create_export('persons_copy', 'posthog', 'persons', table_name => 'persons_copy', check_server => false)}, 'second persons export');
psql_ok($node, $call->('persons_copy', '2026-11-20 04:00+00', '2026-11-20 05:00+00'), 'its first run');
persons_equal('a fresh export', table => 'posthog_exports.persons_copy');

# --- a dropped non-key column stays dropped ------------------------------------
$node->safe_psql('postgres', 'ALTER TABLE posthog_exports.persons DROP COLUMN created_at');
add_ndjson('persons.ndjson', person($P2, 2, { email => 'b@example.com', n => 3 }));
emu_reload($emu);
psql_ok($node, $call->('persons', '2026-11-20 05:00+00', '2026-11-20 06:00+00'), 'run after created_at was dropped');
persons_equal('without created_at', columns => [qw(team_id distinct_id person_id properties person_distinct_id_version person_version is_deleted)]);
is($node->safe_psql('postgres', q{SELECT count(*) FROM pg_attribute WHERE attrelid = 'posthog_exports.persons'::regclass AND attname = 'created_at' AND NOT attisdropped}),
	0, 'the dropped column is not re-added');

# --- killed in the middle of a merge: the table is unchanged, the rerun is right
my $before = $node->safe_psql('postgres', 'SELECT md5(string_agg(t::text, \',\' ORDER BY distinct_id)) FROM posthog_exports.persons t');
add_ndjson('persons.ndjson', person($P1, 2, { email => 'a@example.com', plan => 'enterprise' }));
emu_reload($emu);
emu_reset($emu);
emu_faults($emu, { on_request => 4, delay => 60 });
my ($in, $out, $err) = ('', '', '');
my $h = IPC::Run::start([ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', $call->('persons', '2026-11-20 06:00+00', '2026-11-20 07:00+00') ],
	'<', \$in, '>', \$out, '2>', \$err);
my $pid;
ok(wait_for(sub {
	$pid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE query LIKE 'CALL posthog_export.run_export(''persons''%' AND wait_event_type = 'Extension'});
	return $pid ne '' && scalar(@{ emu_requests($emu) }) >= 3;
}, 60), 'the run is two pages into the interval');
kill 'KILL', $pid;
$h->finish;
ok(wait_for(sub { $node->psql('postgres', 'SELECT 1') == 0 }, 120), 'the server is back');
is($node->safe_psql('postgres', 'SELECT md5(string_agg(t::text, \',\' ORDER BY distinct_id)) FROM posthog_exports.persons t'),
	$before, 'the killed run left the table exactly as it was');
emu_reset($emu);
psql_ok($node, $call->('persons', '2026-11-20 06:00+00', '2026-11-20 07:00+00'), 'the rerun');
persons_equal('after kill and rerun', columns => [qw(team_id distinct_id person_id properties person_distinct_id_version person_version is_deleted)]);

# --- a table without the primary key the merge needs ---------------------------
$node->safe_psql('postgres', 'CREATE TABLE posthog_exports.nokey (team_id int, distinct_id text, person_id text)');
$err = psql_fails($node, q{SELECT posthog_export.create_export('nokey', 'posthog', 'persons', table_name => 'nokey', check_server => false)},
	'create_export into a table without the key fails');
like($err, qr/table posthog_exports.nokey has no primary key or unique index on \(team_id, distinct_id\).*\n.*\n.*HINT:  Add it with: ALTER TABLE posthog_exports.nokey ADD PRIMARY KEY \(team_id, distinct_id\);/,
	'naming the table and the key, with the fix');
$node->safe_psql('postgres', 'ALTER TABLE posthog_exports.persons_copy DROP CONSTRAINT persons_copy_pkey');
$err = psql_fails($node, $call->('persons_copy', '2026-11-20 05:00+00', '2026-11-20 06:00+00'), 'a run after the key was dropped fails');
like($err, qr/no primary key or unique index on \(team_id, distinct_id\)/, 'with the same clear error');

# --- sessions -------------------------------------------------------------------
sub session { my ($id, $start, $end, %o) = @_;
	return { session_id => $id, team_id => 1, distinct_id => "user-$id", '$start_timestamp' => $start,
		'$end_timestamp' => $end, max_inserted_at => $o{arrived} // $end, '$urls' => $o{urls} // ['https://example.com/'], '$num_uniq_urls' => scalar(@{ $o{urls} // [1] }),
		'$entry_current_url' => 'https://example.com/?utm_source=news', '$entry_pathname' => '/',
		'$entry_hostname' => 'example.com', '$end_current_url' => 'https://example.com/end',
		'$end_pathname' => '/end', '$end_hostname' => 'example.com', '$entry_referring_domain' => '$direct',
		'$entry_utm_source' => 'news', '$entry_gclid' => undef, '$pageview_count' => $o{pageviews} // 1,
		'$autocapture_count' => 0, '$screen_count' => 0, '$channel_type' => 'Email',
		'$session_duration' => $o{duration} // 60, '$is_bounce' => $o{bounce} ? $t : $f,
		'$last_external_click_url' => undef, '$vitals_lcp' => 1.25 }; }
# a run takes the sessions whose data arrived in its interval (max_inserted_at,
# or end_timestamp if later): s-1 ended before the interval but arrived in it
write_ndjson('sessions.ndjson',
	session('s-1', '2026-11-20T00:10:00Z', '2026-11-20T00:50:00+01:00', arrived => '2026-11-20T00:30:00Z',
		urls => [ 'https://example.com/a "quoted"', 'https://example.com/b' ]),
	session('s-2', '2026-11-20T00:20:00Z', '2026-11-20T00:40:00Z', bounce => 1),
	session('s-3', '2026-11-20T01:05:00Z', '2026-11-20T01:30:00Z'));
emu_reload($emu);
psql_ok($node, q{SELECT posthog_export.create_export('sessions', 'posthog', 'sessions', check_server => false)}, 'create a sessions export');
psql_ok($node, $call->('sessions', '2026-11-20 00:00+00', '2026-11-20 01:00+00'), 'sessions: first interval');
my ($expected, $missing, $extra) = compare_with_source($node, $emu, model => 'sessions',
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z', lookback_hours => 24);
is("$expected $missing/$extra", '2 0/0', 'sessions of the first interval equal the source column by column');
# s-2 grows into the second interval; s-1 arrives again, with an earlier end_timestamp
write_ndjson('sessions.ndjson',
	session('s-1', '2026-11-20T00:10:00Z', '2026-11-19T23:50:00Z', arrived => '2026-11-20T01:10:00Z',
		urls => [ 'https://example.com/a "quoted"', 'https://example.com/b' ]),
	session('s-2', '2026-11-20T00:20:00Z', '2026-11-20T01:20:00Z', pageviews => 5, duration => 3600,
		urls => [ 'https://example.com/', 'https://example.com/more' ]),
	session('s-3', '2026-11-20T01:05:00Z', '2026-11-20T01:30:00Z'));
emu_reload($emu);
psql_ok($node, $call->('sessions', '2026-11-20 01:00+00', '2026-11-20 02:00+00'), 'sessions: second interval');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT session_id) FROM posthog_exports.sessions}),
	'3 3', 'exactly one row per session');
is($node->safe_psql('postgres', q{SELECT to_char(end_timestamp AT TIME ZONE 'UTC', 'HH24:MI') || ' ' || pageview_count || ' ' || array_length(urls, 1) FROM posthog_exports.sessions WHERE session_id = 's-2'}),
	'01:20 5 2', 'a session extended across two intervals has the later end_timestamp and its new values');
($expected, $missing, $extra) = compare_with_source($node, $emu, model => 'sessions',
	start => '2026-11-20T01:00:00Z', end => '2026-11-20T02:00:00Z', lookback_hours => 1, table =>
	"(SELECT * FROM posthog_exports.sessions WHERE session_id <> 's-1') s");
is("$missing/$extra", '0/0', 'sessions of the second interval equal the source');
is($node->safe_psql('postgres', q{SELECT to_char(end_timestamp AT TIME ZONE 'UTC', 'HH24:MI') FROM posthog_exports.sessions WHERE session_id = 's-1'}),
	'23:50', 'a re-pulled session with an earlier end_timestamp does not overwrite the later one');

$node->stop;
done_testing();
