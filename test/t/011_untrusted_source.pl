# An untrusted source: every key, cursor value and timestamp a page carries
# comes from the network.  A NULL, a value of the wrong type or a page that
# does not move the keyset cursor forward must fail the run with a clear
# error naming the column, the row and the page -- never crash the backend
# (which resets the whole cluster), never write part of the page, never
# loop writing the same rows again.  Every export here belongs to an
# ordinary role, and every response is a canned body.
use strict;
use warnings;

use File::Temp qw(tempdir);
use JSON::PP;
use MIME::Base64;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
my $json = JSON::PP->new->utf8->canonical;
my $uuid = sub { sprintf '0188a000-0000-7000-8000-%012d', $_[0] };

# persons the emulator itself serves to the persons query of the loop test
open my $fh, '>', "$data/persons.ndjson" or die $!;
print $fh $json->encode({ id => $uuid->($_), team_id => 1, properties => { n => $_ },
	created_at => '2026-10-01T10:00:00Z', is_identified => JSON::PP::true, is_deleted => 0, version => 1 }), "\n"
  for 1 .. 3;
close $fh;

my $emu = start_emulator(data => $data);
my $node = new_node('untrusted', conf => "restart_after_crash = on\n");
setup_server($node, $emu, options => { page_size => 3, max_retries => 0 });
$node->safe_psql('postgres', qq{
	CREATE ROLE alice LOGIN;
	ALTER ROLE alice SET statement_timeout = '30s';
	CREATE SCHEMA posthog_exports AUTHORIZATION alice;
	GRANT USAGE ON SCHEMA posthog_export TO alice;
	GRANT USAGE ON FOREIGN SERVER posthog TO alice;
	CREATE USER MAPPING FOR alice SERVER posthog OPTIONS (api_key '$PhxTest::API_KEY');});

# Runs SQL as alice, in a session of its own (so a CALL is non-atomic).
sub as_alice
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, extra_params => [ '-U', 'alice' ]);
	return ($ret, $out, $err);
}

# A session opened before anything runs: if a backend dies, the postmaster
# kills it too while it resets the cluster.
my ($observer, $observer_pid);
sub open_observer
{
	$observer = $node->background_psql('postgres', timeout => 60);
	$observer->set_query_timer_restart;
	$observer_pid = $observer->query_safe('SELECT pg_backend_pid()');
}
open_observer();
my $started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');

# The server is the one from before: no backend died, the observer session
# still answers, from the same backend.
sub server_survived
{
	my ($name, $log_offset) = @_;
	wait_for(sub { $node->psql('postgres', 'SELECT 1') == 0 }, 120);
	my $log = slurp_file($node->logfile, $log_offset);
	unlike($log, qr/terminated by signal|terminating any other active server processes/,
		"$name: no backend crashed");
	my $pid = eval { $observer->query('SELECT pg_backend_pid()') } // '';
	is($pid, $observer_pid, "$name: a session opened before is still usable, on the same backend");
	is($node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()'), $started,
		"$name: the server did not restart");
	if ($pid ne $observer_pid)
	{
		eval { $observer->quit };
		open_observer();
		$started = $node->safe_psql('postgres', 'SELECT pg_postmaster_start_time()');
	}
}

# A 200 body: rows are JSON text, so nulls and wrong types are written as meant.
sub body
{
	my ($columns, $rows, $has_more) = @_;
	return '{"results": [' . join(', ', @$rows) . '], "columns": ' . encode_json($columns)
	  . ', "types": [], "hasMore": ' . ($has_more ? 'true' : 'false') . '}';
}

# Serves canned bodies: [request number => body] pairs, or [every => body].
sub serve
{
	my (@pairs) = @_;
	emu_reset($emu);
	my @faults;
	while (my ($n, $b) = splice @pairs, 0, 2)
	{
		push @faults, $n eq 'every'
		  ? { every => JSON::PP::true, body_b64 => encode_base64($b, '') }
		  : { on_request => $n, body_b64 => encode_base64($b, '') };
	}
	emu_faults($emu, @faults);
}

# Creates export $name (model $model) as alice, serves @serve, runs the
# export's first hour and checks that it failed with $error, wrote
# $rows_left rows, recorded the failure, and that the server survived.
sub fails_cleanly
{
	my (%o) = @_;
	my $name = $o{name};
	my $log_offset = -s $node->logfile;
	my ($ret, $out, $err) = as_alice("SELECT posthog_export.create_export('$name', 'posthog', '$o{model}', table_name => '$name', check_server => false)");
	is($ret, 0, "$name: alice creates the export") or diag $err;
	serve(@{ $o{serve} });
	($ret, $out, $err) = as_alice("CALL posthog_export.run_export('$name', '2026-11-20 00:00+00', '2026-11-20 01:00+00')");
	isnt($ret, 0, "$name: the run fails");
	like($err, $o{error}, "$name: with a clear error") or diag $err;
	unlike($err, qr/\Q$PhxTest::API_KEY\E/, "$name: the error does not show the API key");
	server_survived($name, $log_offset);
	is($node->safe_psql('postgres', "SELECT count(*) FROM posthog_exports.\"$name\""), $o{rows_left} // 0,
		"$name: nothing of the bad page was written");
	like($node->safe_psql('postgres', "SELECT status || ': ' || coalesce(error, '') FROM posthog_export.runs WHERE export_name = '$name'"),
		qr/^failed: \S/, "$name: the run is recorded as failed, with its error");
	return $err;
}

my $at = sub { my ($row, $page, $name) = @_; return qr/in row $row of page $page of export "$name"/; };

# --- events ---------------------------------------------------------------------
my @ev_cols = qw(uuid event properties elements_chain distinct_id team_id timestamp_utc);
my $ev = sub {
	my (%o) = @_;
	my $u = exists $o{uuid} ? $o{uuid} : '"' . $uuid->($o{n}) . '"';
	my $ts = exists $o{ts} ? $o{ts} : sprintf('"2026-11-20T00:10:%02dZ"', $o{n});
	return "[$u, \"e\", \"{}\", \"\", \"d\", 1, $ts]";
};

fails_cleanly(name => 'ev_null_uuid', model => 'events',
	serve => [ 1 => body(\@ev_cols, [ $ev->(n => 1), $ev->(n => 2), $ev->(n => 3, uuid => 'null') ], 0) ],
	error => qr/PostHog returned an event without uuid \(NULL\) ${\ $at->(3, 1, 'ev_null_uuid')}/);

fails_cleanly(name => 'ev_null_ts', model => 'events',
	serve => [ 1 => body(\@ev_cols, [ $ev->(n => 1), $ev->(n => 2), $ev->(n => 3, ts => 'null') ], 0) ],
	error => qr/PostHog returned an event without timestamp \(NULL\) ${\ $at->(3, 1, 'ev_null_ts')}/);

fails_cleanly(name => 'ev_number_uuid', model => 'events',
	serve => [ 1 => body(\@ev_cols, [ $ev->(n => 1), $ev->(n => 2, uuid => '12345') ], 0) ],
	error => qr/PostHog returned a number for column "uuid" ${\ $at->(2, 1, 'ev_number_uuid')}, where a UUID was expected/);

fails_cleanly(name => 'ev_bad_uuid', model => 'events',
	serve => [ 1 => body(\@ev_cols, [ $ev->(n => 1), $ev->(n => 2, uuid => '"x\\", \\"y"') ], 0) ],
	error => qr/PostHog returned an invalid UUID for column "uuid" ${\ $at->(2, 1, 'ev_bad_uuid')}/);

fails_cleanly(name => 'ev_word_ts', model => 'events',
	serve => [ 1 => body(\@ev_cols, [ $ev->(n => 1), $ev->(n => 2, ts => '"now"') ], 0) ],
	error => qr/PostHog returned an invalid datetime for column "timestamp" ${\ $at->(2, 1, 'ev_word_ts')}: invalid input syntax for type timestamp with time zone: "now"/);

fails_cleanly(name => 'ev_bad_ts', model => 'events',
	serve => [ 1 => body(\@ev_cols, [ $ev->(n => 1), $ev->(n => 2, ts => '"2026-11-20T25:10:00Z"') ], 0) ],
	error => qr/PostHog returned an invalid datetime for column "timestamp" ${\ $at->(2, 1, 'ev_bad_ts')}: date\/time field value out of range/);

fails_cleanly(name => 'ev_far_ts', model => 'events',
	serve => [ 1 => body(\@ev_cols, [ $ev->(n => 1), $ev->(n => 2, ts => '"10000-01-01T00:00:00Z"') ], 0) ],
	error => qr/PostHog returned a datetime out of range for column "timestamp" ${\ $at->(2, 1, 'ev_far_ts')}/);

fails_cleanly(name => 'ev_huge_ts', model => 'events',
	serve => [ 1 => body(\@ev_cols, [ $ev->(n => 1), $ev->(n => 2, ts => '"2026-11-20T00:10:00' . ('0' x 100000) . 'Z"') ], 0) ],
	error => qr/PostHog returned a value of 100020 bytes for column "timestamp" ${\ $at->(2, 1, 'ev_huge_ts')}/);

# the same page, with hasMore, whatever the cursor says
my $err = fails_cleanly(name => 'ev_loop', model => 'events', rows_left => 3,
	serve => [ every => body(\@ev_cols, [ map { $ev->(n => $_) } 1 .. 3 ], 1) ],
	error => qr/PostHog returned a page that does not advance the keyset cursor \(page 2 of export "ev_loop"\)/);
my $key = qr/\(2026-11-20 00:10:03\.000000, \Q${\ $uuid->(3)}\E\)/;
like($err, qr/DETAIL:  The page ends at $key; the previous page ended at $key\./,
	'ev_loop: the detail shows the key that did not move');
is($node->safe_psql('postgres', 'SELECT count(*) - count(DISTINCT uuid) FROM posthog_exports.ev_loop'), 0,
	'ev_loop: no duplicates: only the first page is written');
is($node->safe_psql('postgres', q{SELECT rows || ' ' || pages FROM posthog_export.runs WHERE export_name = 'ev_loop'}), '3 1',
	'ev_loop: the run committed one page, then stopped');

# a page that starts before the previous one ended (overlapping pages)
fails_cleanly(name => 'ev_overlap', model => 'events', rows_left => 3,
	serve => [ 1 => body(\@ev_cols, [ map { $ev->(n => $_) } 1 .. 3 ], 1),
		2 => body(\@ev_cols, [ map { $ev->(n => $_) } 3 .. 5 ], 0) ],
	error => qr/PostHog returned a page that starts at or before the keyset cursor \(page 2 of export "ev_overlap"\)/);

# --- sessions -------------------------------------------------------------------
my @s_cols = qw(team_id session_id distinct_id start_timestamp end_timestamp urls num_uniq_urls
	entry_current_url entry_pathname entry_hostname end_current_url end_pathname end_hostname
	entry_referring_domain entry_utm_source entry_utm_campaign entry_utm_medium entry_utm_term
	entry_utm_content entry_gclid entry_gad_source entry_fbclid pageview_count autocapture_count
	screen_count channel_type session_duration is_bounce last_external_click_url vitals_lcp
	session_id_v7 max_inserted_at entry_referrer entry_gclsrc entry_dclid entry_gbraid entry_wbraid
	entry_msclkid entry_twclid entry_li_fat_id entry_mc_cid entry_igshid entry_ttclid entry__kx
	entry_irclid duration page_screen_autocapture_count_up_to exit_current_url exit_pathname);
my $session = sub {
	my (%o) = @_;
	my $sid = exists $o{sid} ? $o{sid} : "\"s-$o{n}\"";
	my $team = exists $o{team} ? $o{team} : 1;
	return "[$team, $sid, \"u\", \"2026-11-20T00:10:00Z\", \"2026-11-20T00:20:00Z\", [\"https://example.com/\"], 1, "
	  . join(', ', ('null') x 15) . ', 1, 0, 0, "Direct", 600, false, null, 1.5, "42", "2026-11-20T00:21:00Z", '
	  . join(', ', ('null') x 13) . ', 600, 1, null, null]';
};

fails_cleanly(name => 's_null_sid', model => 'sessions',
	serve => [ 1 => body(\@s_cols, [ $session->(n => 1), $session->(n => 2), $session->(n => 3, sid => 'null') ], 0) ],
	error => qr/PostHog returned a session without session_id \(NULL\) ${\ $at->(3, 1, 's_null_sid')}/);

fails_cleanly(name => 's_null_team', model => 'sessions',
	serve => [ 1 => body(\@s_cols, [ $session->(n => 1), $session->(n => 2), $session->(n => 3, team => 'null') ], 0) ],
	error => qr/PostHog returned a session without team_id \(NULL\) ${\ $at->(3, 1, 's_null_team')}/);

fails_cleanly(name => 's_string_team', model => 'sessions',
	serve => [ 1 => body(\@s_cols, [ $session->(n => 1), $session->(n => 2, team => '"abc"') ], 0) ],
	error => qr/PostHog returned a string for column "team_id" ${\ $at->(2, 1, 's_string_team')}, where an integer was expected/);

fails_cleanly(name => 's_number_sid', model => 'sessions',
	serve => [ 1 => body(\@s_cols, [ $session->(n => 1), $session->(n => 2, sid => '2') ], 0) ],
	error => qr/PostHog returned a number for column "session_id" ${\ $at->(2, 1, 's_number_sid')}, where a string was expected/);

fails_cleanly(name => 's_huge_sid', model => 'sessions',
	serve => [ 1 => body(\@s_cols, [ $session->(n => 1), $session->(n => 2, sid => '"' . ('s' x 100000) . '"') ], 0) ],
	error => qr/PostHog returned a value of 100000 bytes for column "session_id" ${\ $at->(2, 1, 's_huge_sid')}/);

fails_cleanly(name => 's_loop', model => 'sessions',
	serve => [ every => body(\@s_cols, [ map { $session->(n => $_) } 1 .. 3 ], 1) ],
	error => qr/PostHog returned a page that does not advance the keyset cursor \(page 2 of export "s_loop"\)/);

# --- persons --------------------------------------------------------------------
my @m_cols = qw(team_id distinct_id person_id is_deleted version);
my @p_cols = qw(id properties created_at is_deleted version);
my $mapping = sub {
	my (%o) = @_;
	my $team = exists $o{team} ? $o{team} : 1;
	my $did = exists $o{did} ? $o{did} : "\"d-$o{n}\"";
	my $pid = exists $o{pid} ? $o{pid} : '"' . $uuid->($o{n}) . '"';
	return "[$team, $did, $pid, 0, 1]";
};
my $person = sub {
	my (%o) = @_;
	my $id = exists $o{id} ? $o{id} : '"' . $uuid->($o{n}) . '"';
	return "[$id, \"{}\", \"2026-10-01T10:00:00Z\", 0, 1]";
};
my $persons_page = body(\@p_cols, [ map { $person->(n => $_) } 1 .. 3 ], 0);

fails_cleanly(name => 'p_null_team', model => 'persons',
	serve => [ 1 => body(\@m_cols, [ $mapping->(n => 1), $mapping->(n => 2), $mapping->(n => 3, team => 'null') ], 0),
		2 => $persons_page ],
	error => qr/PostHog returned a person mapping without team_id \(NULL\) ${\ $at->(3, 1, 'p_null_team')}/);

fails_cleanly(name => 'p_null_did', model => 'persons',
	serve => [ 1 => body(\@m_cols, [ $mapping->(n => 1), $mapping->(n => 2), $mapping->(n => 3, did => 'null') ], 0),
		2 => $persons_page ],
	error => qr/PostHog returned a person mapping without distinct_id \(NULL\) ${\ $at->(3, 1, 'p_null_did')}/);

fails_cleanly(name => 'p_null_pid', model => 'persons',
	serve => [ 1 => body(\@m_cols, [ $mapping->(n => 1), $mapping->(n => 2), $mapping->(n => 3, pid => 'null') ], 0),
		2 => $persons_page ],
	error => qr/PostHog returned a person mapping without person_id \(NULL\) ${\ $at->(3, 1, 'p_null_pid')}/);

fails_cleanly(name => 'p_null_id', model => 'persons',
	serve => [ 1 => body(\@m_cols, [ map { $mapping->(n => $_) } 1 .. 3 ], 0),
		# a full page of mappings (page_size 3): request 2 is their empty last page
		3 => body(\@p_cols, [ $person->(n => 1), $person->(n => 2), $person->(id => 'null') ], 0) ],
	error => qr/PostHog returned a person without id \(NULL\) ${\ $at->(3, 3, 'p_null_id')}/);

# a string team id, with text that would change the next request were it
# pasted into its JSON as it came
fails_cleanly(name => 'p_string_team', model => 'persons',
	serve => [ 1 => body(\@m_cols, [ $mapping->(n => 1), $mapping->(n => 2),
			$mapping->(n => 3, team => '"1, \"cursor_distinct_id\": \"injected\""') ], 1),
		2 => $persons_page ],
	error => qr/PostHog returned a string for column "team_id" ${\ $at->(3, 1, 'p_string_team')}, where an integer was expected/);
ok(!(grep { exists $_->{values}{cursor_team_id} } @{ emu_requests($emu) }),
	'p_string_team: no request carried a cursor made of it');

fails_cleanly(name => 'p_fraction_team', model => 'persons',
	serve => [ 1 => body(\@m_cols, [ $mapping->(n => 1), $mapping->(n => 2), $mapping->(n => 3, team => '1.5') ], 1),
		2 => $persons_page ],
	error => qr/PostHog returned an invalid integer for column "team_id" ${\ $at->(3, 1, 'p_fraction_team')}: "1\.5"/);

# the same page of mappings again and again
fails_cleanly(name => 'p_loop', model => 'persons',
	serve => [ every => body(\@m_cols, [ map { $mapping->(n => $_) } 1 .. 3 ], 1) ],
	error => qr/PostHog returned a page that does not advance the keyset cursor \(page 2 of export "p_loop"\)/);

# --- after all that -------------------------------------------------------------
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE status <> 'failed'}), 0,
	'every run failed, none is left running');
is($observer->query_safe('SELECT 1'), 1, 'the session opened at the start still works');
$observer->quit;
$node->stop;
done_testing();
