# Against a source as strict as the real PostHog (reserved aliases, unknown
# tables and fields, 256 KiB of query text with values substituted, Int8
# flags as 0/1, hasMore null with a LIMIT, rows of another team in the data
# that PostHog never returns): every model's export at the default page size
# equals the oracle column by column, and every query the extension sends is
# accepted (the emulator's request log says which were sent and what each
# was answered).
use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
# 8,000 persons: a page of 10,000 mappings names thousands of persons, enough
# to show a query whose values make it larger than ClickHouse's limit.
# generate_data adds rows of another team (team 2) to every file.
generate_data($data, events => 4000, persons => 8000, sessions => 400, seed => 14,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T03:00:00Z');

my $emu = start_emulator(data => $data, timezone => 'America/New_York');
my $health = emu_call($emu, 'GET', 'health');
is($health->{team_id}, 1, 'the emulator serves team 1 (the project id)');
for my $t (qw(events raw_persons raw_person_distinct_ids sessions))
{
	cmp_ok($health->{other_team_rows}{$t} // 0, '>', 0,
		"the source holds rows of another team in $t, which the emulator never returns");
}

my $node = new_node('strict');
# the default page size (no page_size option); few quick retries, so that a
# query the source refuses fails the run soon
setup_server($node, $emu, options => { max_retries => 2, retry_base_delay => 20 });
my $day = q{'2026-11-20 00:00+00', '2026-11-21 00:00+00'};

# --- events ---------------------------------------------------------------------
psql_ok($node, q{SELECT posthog_export.create_export(name => 'strict_events', server => 'posthog',
	model => 'events', schema_name => 'posthog_exports', table_name => 'events', every => '1 day', check_server => false)},
	'create an events export');
psql_ok($node, "CALL posthog_export.run_export('strict_events', $day)", 'events: run a day');
my ($expected, $missing, $extra) = compare_with_source($node, $emu, model => 'events',
	start => '2026-11-20T00:00:00Z', end => '2026-11-21T00:00:00Z');
cmp_ok($expected, '>', 3500, "events: the oracle expects the team's rows ($expected)");
is("$missing/$extra", '0/0', 'events equal the source column by column, without rows of another team');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_exports.events WHERE team_id <> 1}), 0,
	'events: no row of another team');

# --- persons --------------------------------------------------------------------
psql_ok($node, q{SELECT posthog_export.create_export(name => 'strict_persons', server => 'posthog',
	model => 'persons', schema_name => 'posthog_exports', table_name => 'persons', check_server => false)},
	'create a persons export');
psql_ok($node, "CALL posthog_export.run_export('strict_persons', $day)",
	'persons: a full pass at the default page size completes');
($expected, $missing, $extra) = compare_with_source($node, $emu, model => 'persons');
cmp_ok($expected, '>', 10000, "persons: the oracle expects the team's mappings ($expected)");
is("$missing/$extra", '0/0', 'persons equal the source column by column, without rows of another team');

# --- sessions -------------------------------------------------------------------
psql_ok($node, q{SELECT posthog_export.create_export(name => 'strict_sessions', server => 'posthog',
	model => 'sessions', schema_name => 'posthog_exports', table_name => 'sessions', every => '1 day', check_server => false)},
	'create a sessions export');
psql_ok($node, "CALL posthog_export.run_export('strict_sessions', $day)", 'sessions: run a day');
($expected, $missing, $extra) = compare_with_source($node, $emu, model => 'sessions',
	start => '2026-11-20T00:00:00Z', end => '2026-11-21T00:00:00Z');
cmp_ok($expected, '>', 300, "sessions: the oracle expects the team's sessions ($expected)");
is("$missing/$extra", '0/0', 'sessions equal the source column by column, without rows of another team');

# --- every query the extension sent was valid for the real PostHog -----------------
my $log = emu_requests($emu);
for my $model (qw(events persons sessions))
{
	my @sent = grep { ($_->{name} // '') =~ /^posthog_export strict_$model / } @$log;
	cmp_ok(scalar(@sent), '>', 0, "$model: the extension sent queries");
	my @refused = grep { ($_->{status} // 0) != 200 } @sent;
	is(scalar(@refused), 0, "$model: no query was refused (400: invalid HogQL, 500: too large ...)")
	  or diag(join "\n", map {
		"status " . ($_->{status} // 'none') . ": " . ($_->{error} ? $_->{error}{detail} : '')
		  . " (query of " . ($_->{query_bytes} // '?') . " bytes: " . substr($_->{query} // '', 0, 200) . ")" }
		@refused[0 .. ($#refused < 2 ? $#refused : 2)]);
	my ($largest) = sort { $b <=> $a } map { $_->{query_bytes} // 0 } @sent;
	cmp_ok($largest // 0, '<=', 262144, "$model: no query text, values substituted, over 256 KiB");
	note(sprintf "%s: %d requests, largest query with values %d bytes", $model, scalar(@sent), $largest // 0);
}

$node->stop;
done_testing();
