# Events export end to end: the exported rows equal the source rows of each
# interval, column by column; late events, include/exclude, append vs merge,
# reruns, what travels in the HTTP request, and secrets kept out of sight.
use strict;
use warnings;

use Encode;
use File::Temp qw(tempdir);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 3000, seed => 7,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T03:00:00Z');

# Hand-made events for the edge cases the generator does not pin down.
my $u = sub { sprintf '00000000-0000-4000-8000-%012d', $_[0] };
append_events($data,
	# arrived 3 hours late: belongs to the interval of its created_at
	{ uuid => $u->(1), event => 'late_one', properties => { '$ip' => '10.0.0.1' },
	  timestamp => '2026-11-20T00:10:00Z', created_at => '2026-11-20T02:30:00.5Z',
	  team_id => 1, distinct_id => 'late-user', elements_chain => '' },
	# event time older than the 7-day lookback: never exported, as in PostHog
	{ uuid => $u->(2), event => 'ancient', properties => {},
	  timestamp => '2026-11-01T00:00:00Z', created_at => '2026-11-20T01:00:00Z',
	  team_id => 1, distinct_id => 'old-user', elements_chain => '' },
	# excluded event name
	{ uuid => $u->(3), event => '$feature_flag_called', properties => { flag => 'x' },
	  timestamp => '2026-11-20T01:00:00Z', created_at => '2026-11-20T01:00:01Z',
	  team_id => 1, distinct_id => 'u3', elements_chain => '' },
	# NUL, lone surrogate, an escaped \\u0000 that must stay, a valid pair,
	# $set / $set_once / non-string $ip
	'{"uuid": "' . $u->(4) . '", "event": "weird \u00e9v\u00e9nement", "properties": {"a\u0000b": "x\u0000y", "lone": "\ud83d!", "keep": "\\\\u0000 stays", "pair": "\ud83d\ude00", "$set": {"plan": "pro"}, "$set_once": {"first": 1}, "$ip": 12345}, "timestamp": "2026-11-20T01:30:00.000001+01:00", "created_at": "2026-11-20T01:30:00Z", "team_id": 1, "distinct_id": "\u0645\u0631\u062d\u0628\u0627", "elements_chain": "a.b:attr__x=\"1\""}',
	# the same event twice in the source (ClickHouse before its merge)
	({ uuid => $u->(5), event => 'dup', properties => { n => 1 },
	   timestamp => '2026-11-20T00:20:00Z', created_at => '2026-11-20T00:20:01Z',
	   team_id => 1, distinct_id => 'd', elements_chain => '' }) x 2,
);

my $emu = start_emulator(data => $data, timezone => 'America/New_York');
my $node = new_node('events');
setup_server($node, $emu, options => { page_size => 500 });

# --- append, with an excluded event ------------------------------------------
psql_ok($node, q{SELECT posthog_export.create_export(
  name => 'events', server => 'posthog', model => 'events',
  schema_name => 'posthog_exports', table_name => 'events',
  every => '1 hour', exclude_events => ARRAY['$feature_flag_called'], check_server => false)},
	'create_export with the documented arguments');
psql_ok($node, q{CALL posthog_export.run_export('events', '2026-11-20 00:00+00', '2026-11-20 02:00+00')},
	'run_export over two hours');

is($node->safe_psql('postgres',
	q{SELECT string_agg(status || ':' || (rows > 0)::text, ',' ORDER BY interval_start) FROM posthog_export.runs}),
	'completed:true,completed:true', 'one completed runs row per interval, with rows');

my ($expected, $missing, $extra) = compare_with_source($node, $emu,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T02:00:00Z', exclude => ['$feature_flag_called']);
cmp_ok($expected, '>', 1500, "the interval holds many source rows ($expected)");
is($missing, 0, 'no source row is missing');
is($extra, 0, 'no row beyond the source (and no duplicate)');
is($node->safe_psql('postgres', q{SELECT sum(rows) FROM posthog_export.runs}), $expected,
	'runs.rows counts what was written');

# the late event is not in the first two hours ...
is($node->safe_psql('postgres', qq{SELECT count(*) FROM posthog_exports.events WHERE uuid = '@{[$u->(1)]}'}),
	0, 'late event not exported before it arrived');
# ... and lands in the interval in which it arrived
psql_ok($node, q{CALL posthog_export.run_export('events', '2026-11-20 02:00+00', '2026-11-20 03:00+00')},
	'run the third hour');
is($node->safe_psql('postgres', qq{SELECT to_char(timestamp AT TIME ZONE 'UTC', 'HH24:MI') FROM posthog_exports.events WHERE uuid = '@{[$u->(1)]}'}),
	'00:10', 'late event exported in the interval of its ingestion, with its event time');
($expected, $missing, $extra) = compare_with_source($node, $emu,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T03:00:00Z', exclude => ['$feature_flag_called']);
is("$missing/$extra", '0/0', "all three hours equal the source ($expected rows)");
is($node->safe_psql('postgres', qq{SELECT count(*) FROM posthog_exports.events WHERE uuid IN ('@{[$u->(2)]}', '@{[$u->(3)]}')}),
	0, 'events before the lookback and excluded events are not exported');
is($node->safe_psql('postgres', qq{SELECT count(*) FROM posthog_exports.events WHERE uuid = '@{[$u->(5)]}'}),
	2, 'append keeps what the source holds, duplicates included');

# --- values: cleaning and derived columns -----------------------------------
my $row = Encode::decode_utf8($node->safe_psql('postgres', qq{
	SELECT event, properties->>'ab', properties->>'lone', properties->>'keep',
	       properties->>'pair' = U&'\\+01F600', set, set_once, ip, distinct_id,
	       elements #>> '{}', timestamp = '2026-11-20 00:30:00.000001+00', site_url IS NULL
	  FROM posthog_exports.events WHERE uuid = '@{[$u->(4)]}'}));
is($row, "weird \x{e9}v\x{e9}nement|xy|!|\\u0000 stays|t|{\"plan\": \"pro\"}|{\"first\": 1}|12345|\x{645}\x{631}\x{62d}\x{628}\x{627}|a.b:attr__x=\"1\"|t|t",
	'NUL and lone surrogates stripped, escaped text and pairs kept, $set/$set_once/$ip derived');

# --- reruns never duplicate --------------------------------------------------
my $before = $node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.events');
my ($ret, $out, $err) = $node->psql('postgres',
	q{CALL posthog_export.run_export('events', '2026-11-20 00:00+00', '2026-11-20 03:00+00')});
is($ret, 0, 'rerunning completed intervals succeeds');
like($err, qr/3 intervals of export "events" were already exported, skipped them/, 'and says it skipped them');
is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.events'), $before, 'rerun wrote nothing');
like(psql_fails($node, q{CALL posthog_export.run_export('events', '2026-11-20 00:00+00', '2026-11-20 01:00+00', force => true)},
	'force on an append export is refused'), qr/would duplicate rows/, 'with the reason');

# --- what went over the wire -------------------------------------------------
my $reqs = emu_requests($emu);
ok(scalar(@$reqs) >= 6, 'several pages were requested (page_size 500)');
ok(!(grep { $_->{query} =~ /OFFSET/i } @$reqs), 'no OFFSET is ever sent');
ok(!(grep { ($_->{refresh} // '') ne 'force_blocking' } @$reqs), 'every request uses refresh force_blocking');
ok(!(grep { ($_->{auth_scheme} // '') ne 'Bearer' } @$reqs), 'every request authenticates with a bearer key');
ok(!(grep { $_->{query} =~ /feature_flag_called|2026-11-20/ } @$reqs), 'user values never appear in the HogQL text');
ok((grep { ref $_->{values}{exclude_events} eq 'ARRAY' && $_->{values}{exclude_events}[0] eq '$feature_flag_called' } @$reqs),
	'the excluded event travels as a value');
ok((grep { defined $_->{values}{cursor_uuid} } @$reqs), 'later pages carry a keyset cursor');

# --- include list into another table ----------------------------------------
psql_ok($node, q{SELECT posthog_export.create_export('pageviews', 'posthog', table_name => 'pageviews',
	include_events => ARRAY['$pageview', 'late_one'], check_server => false)}, 'create an include-list export');
psql_ok($node, q{CALL posthog_export.run_export('pageviews', '2026-11-20 00:00+00', '2026-11-20 03:00+00')}, 'run it');
($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.pageviews',
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T03:00:00Z', include => ['$pageview', 'late_one']);
cmp_ok($expected, '>', 100, "include list selects $expected rows");
is("$missing/$extra", '0/0', 'include-list table equals the source');
is($node->safe_psql('postgres', q{SELECT count(DISTINCT event) FROM posthog_exports.pageviews}), 2,
	'only the included events');

# --- merge: dedupe on uuid, overlapping backfills ----------------------------
psql_ok($node, q{SELECT posthog_export.create_export('merged', 'posthog', table_name => 'merged', mode => 'merge', check_server => false)},
	'create a merge export');
psql_ok($node, q{CALL posthog_export.run_export('merged', '2026-11-20 00:00+00', '2026-11-20 03:00+00')}, 'run it');
psql_ok($node, q{CALL posthog_export.run_export('merged', '2026-11-20 00:00+00', '2026-11-20 03:00+00', force => true)},
	'export the same range again with force');
($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.merged', dedupe => 1,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T03:00:00Z');
is("$missing/$extra", '0/0', "merge table equals the source with one row per uuid ($expected rows)");
is($node->safe_psql('postgres', qq{SELECT count(*) FROM posthog_exports.merged WHERE uuid = '@{[$u->(5)]}'}), 1,
	'a uuid the source holds twice is merged into one row');
is($node->safe_psql('postgres', q{SELECT max(attempts) FROM posthog_export.runs WHERE export_name = 'merged'}), 2,
	'the forced run counts as a second attempt');

# --- an existing table: only its model columns are written; a column added later is filled
$node->safe_psql('postgres', q{
	CREATE TABLE posthog_exports.slim ("uuid" text PRIMARY KEY, "timestamp" timestamptz, note text DEFAULT 'mine');
	SELECT posthog_export.create_export('slim', 'posthog', table_name => 'slim', mode => 'merge', check_server => false);
	CALL posthog_export.run_export('slim', '2026-11-20 00:00+00', '2026-11-20 01:00+00');});
is($node->safe_psql('postgres', q{SELECT count(*) > 0 AND bool_and(note = 'mine') FROM posthog_exports.slim}), 't',
	'a table with only some model columns is written without touching the others');
$node->safe_psql('postgres', q{ALTER TABLE posthog_exports.slim ADD COLUMN event text;
	CALL posthog_export.run_export('slim', '2026-11-20 01:00+00', '2026-11-20 02:00+00');});
is($node->safe_psql('postgres', q{SELECT count(*) FILTER (WHERE event IS NULL) = 0 FROM posthog_exports.slim
	WHERE "timestamp" >= '2026-11-20 01:00+00' AND "timestamp" < '2026-11-20 01:59+00'}), 't',
	'a model column added later is filled from then on');

# --- status: running is seen without the preloaded library --------------------
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('busy', 'posthog', table_name => 'busy')});
is($node->safe_psql('postgres', q{SELECT running FROM posthog_export.status WHERE export_name = 'busy'}), 'f',
	'status: not running before a run');
emu_reset($emu);
emu_faults($emu, { on_request => 1, delay => 3 });
{
	my ($o, $e) = ('', '');
	my $h = IPC::Run::start([ 'psql', '-X', '-d', $node->connstr('postgres'), '-c',
		q{CALL posthog_export.run_export('busy', '2026-11-20 00:00+00', '2026-11-20 01:00+00')} ], '<', \undef, '>', \$o, '2>', \$e);
	ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT running FROM posthog_export.status WHERE export_name = 'busy'}) eq 't' }, 20),
		'status: running while a run holds the export, without shared_preload_libraries');
	$h->finish;
	is($e, '', 'that run finished');
}

# --- the API key is nowhere to be seen ---------------------------------------
my $key = $PhxTest::API_KEY;
is($node->safe_psql('postgres', qq{SELECT count(*) FROM posthog_export.runs r WHERE r::text LIKE '%$key%'}), 0,
	'the key is not in runs');
# (log_statement = all logs the test's own SQL, CREATE USER MAPPING included; those lines aside)
my $log = join '', grep { !/ statement: / } split /^/, slurp_file($node->logfile);
unlike($log, qr/\Q$key\E/, 'the key is not in the server log');
like($log, qr/export "events" finished interval/, 'runs are logged');

$node->stop;
done_testing();
