# Every injected HTTP fault: retried (429, 5xx, network, malformed bodies,
# timeouts), answered by a smaller page (504, 512), or failed at once
# (400, 401, 403); in every case the destination equals the source
# afterwards, with nothing lost and nothing duplicated.
use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use PhxTest;

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 1200, seed => 11,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my $emu = start_emulator(data => $data, forbidden_key => 'phx_forbidden');
my $node = new_node('faults');
setup_server($node, $emu, options => { page_size => 200, timeout => 2, max_retries => 4 });

my ($start, $end) = ('2026-11-20 00:00+00', '2026-11-20 01:00+00');
my %range = (start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my ($faults, $recovered, $compared, $lost, $dups) = (0, 0, 0, 0, 0);
my $n = 0;

sub limit_of { my ($q) = @_; return $q =~ /LIMIT (\d+)/ ? $1 : -1; }

# Runs a fresh export with the given faults; returns (ret, stderr, requests, seconds).
sub run_with_faults
{
	my (@f) = @_;
	$n++;
	emu_reset($emu);
	emu_faults($emu, @f) if @f;
	$node->safe_psql('postgres', "SELECT posthog_export.create_export('f$n', 'posthog', table_name => 't$n', check_server => false)");
	my $t0 = time;
	my ($ret, $out, $err) = $node->psql('postgres', "CALL posthog_export.run_export('f$n', '$start', '$end')");
	return ($ret, $err, emu_requests($emu), time - $t0);
}

sub check_equal
{
	my ($name) = @_;
	my ($expected, $missing, $extra) = compare_with_source($node, $emu, table => "posthog_exports.t$n", %range);
	$compared += $expected;
	$lost += $missing;
	$dups += $extra;
	is("$missing/$extra", '0/0', "$name: destination equals the source ($expected rows)");
	return;
}

# --- a clean run: how many requests an interval takes -------------------------
my (undef, undef, $clean) = run_with_faults();
my $baseline = scalar @$clean;
cmp_ok($baseline, '>=', 5, "a clean run pages through the interval ($baseline requests)");
check_equal('clean run');

# --- retried faults, each on a random page -------------------------------------------
my $seed = $ENV{PHX_FAULT_SEED} // time;
srand($seed);
diag("fault pages drawn with PHX_FAULT_SEED=$seed");
my $page = sub { 1 + int(rand($baseline)) };
for my $case (
	[ '429 throttled', { on_request => $page->(), status => 429, retry_after => 1 } ],
	[ '500', { on_request => $page->(), status => 500 } ],
	[ '503', { on_request => $page->(), status => 503, times => 2 } ],
	[ 'truncated body', { on_request => $page->(), truncate => JSON::PP::true } ],
	[ 'dropped connection', { on_request => $page->(), drop => JSON::PP::true } ],
	[ 'malformed JSON', { on_request => $page->(), malformed => JSON::PP::true } ],
	[ 'row/column mismatch', { on_request => $page->(), wrong_columns => JSON::PP::true } ],
	[ 'slow response beyond the timeout', { on_request => $page->(), delay => 4 } ])
{
	my ($name, $fault) = @$case;
	my ($ret, $err, $reqs, $secs) = run_with_faults($fault);
	$faults += $fault->{times} // 1;
	is($ret, 0, "$name: the run succeeds") or diag $err;
	$recovered++ if $ret == 0;
	is(scalar(@$reqs), $baseline + ($fault->{times} // 1), "$name: exactly the faulted requests were repeated");
	my $status = $node->safe_psql('postgres',
		"SELECT status || ' ' || attempts FROM posthog_export.runs WHERE export_name = 'f$n'");
	is($status, 'completed 1', "$name: one completed run, retried inside the attempt");
	cmp_ok($secs, '>=', 1, "$name: waited as PostHog asked") if $name =~ /429/;
	check_equal($name);
}

# --- 504 and 512: the page shrinks ------------------------------------------
for my $code (504, 512)
{
	my ($ret, $err, $reqs) = run_with_faults({ on_request => 1 + int(rand($baseline - 1)), status => $code });
	$faults++;
	is($ret, 0, "$code: the run succeeds") or diag $err;
	$recovered++ if $ret == 0;
	my ($bad) = grep { $_->{status} == $code } @$reqs;
	my ($next) = grep { $_->{n} == $bad->{n} + 1 } @$reqs;
	ok($next && limit_of($next->{query}) < limit_of($bad->{query}),
		"$code: the retry asks for a smaller page (" . limit_of($bad->{query}) . ' -> ' . ($next ? limit_of($next->{query}) : '?') . ')');
	check_equal("$code");
}

# --- failing at once: 400, 401, 403 -----------------------------------------
for my $case ([ 400, qr/rejected the query \(HTTP 400/ ], [ 401, qr/rejected the API key \(HTTP 401\)/ ],
	[ 403, qr/rejected the API key \(HTTP 403\)/ ])
{
	my ($code, $re) = @$case;
	my ($ret, $err, $reqs) = run_with_faults({ on_request => 2, status => $code });
	$faults++;
	isnt($ret, 0, "$code: the run fails");
	like($err, $re, "$code: with a clear error");
	is(scalar(@$reqs), 2, "$code: not retried");
	my $row = $node->safe_psql('postgres',
		"SELECT status, rows > 0, pages FROM posthog_export.runs WHERE export_name = 'f$n'");
	is($row, 'failed|t|1', "$code: runs says failed, keeping the first committed page");
	is($node->safe_psql('postgres', "SELECT count(*) FROM posthog_exports.t$n"),
		$node->safe_psql('postgres', "SELECT rows FROM posthog_export.runs WHERE export_name = 'f$n'"),
		"$code: no half-written page past the committed one");
	emu_reset($emu);
	my ($ret2, $out2, $err2) = $node->psql('postgres', "CALL posthog_export.run_export('f$n', '$start', '$end')");
	is($ret2, 0, "$code: the rerun resumes and completes") or diag $err2;
	$recovered++ if $ret2 == 0;
	my $first = emu_requests($emu)->[0];
	ok(defined $first->{values}{cursor_uuid}, "$code: the rerun starts from the committed cursor");
	check_equal("$code rerun");
}

# --- a redirect is never followed (the key would go to another host) ----------
{
	my ($ret, $err, $reqs) = run_with_faults({ on_request => 1, status => 302 });
	$faults++;
	like($err, qr/answered with a redirect \(HTTP 302\).*\n.*Redirects are not followed, so the API key never reaches another host/,
		'a redirect fails at once, without following it');
	is(scalar(@$reqs), 1, 'one request, to the configured host only');
}

# --- retries run out ---------------------------------------------------------
{
	my ($ret, $err, $reqs) = run_with_faults({ every => JSON::PP::true, status => 503 });
	$faults += scalar @$reqs;
	isnt($ret, 0, 'persistent 503: the run fails');
	like($err, qr/failed after 5 requests/, 'persistent 503: after max_retries + 1 requests');
	like($err, qr/HINT:  The error is transient/, 'persistent 503: called transient');
	is($node->safe_psql('postgres', "SELECT attempts FROM posthog_export.runs WHERE export_name = 'f$n'"), 1,
		'persistent 503: runs.attempts counts the one run, not its requests');
	is(scalar(@$reqs), 5, 'persistent 503: exactly 5 requests');
	like($node->safe_psql('postgres', "SELECT error FROM posthog_export.runs WHERE export_name = 'f$n'"),
		qr/HTTP 503/, 'persistent 503: runs.error says why');
}

# --- real authentication failures, from the emulator's own checks ------------
$node->safe_psql('postgres', "ALTER USER MAPPING FOR CURRENT_USER SERVER posthog OPTIONS (SET api_key 'phx_wrong')");
{
	my ($ret, $err, $reqs) = run_with_faults();
	like($err, qr/rejected the API key \(HTTP 401\).*\n.*authentication_failed|Incorrect|invalid/si, 'wrong key: 401 with PostHog detail');
	unlike($err, qr/phx_wrong/, 'the key is not in the error');
}
$node->safe_psql('postgres', "ALTER USER MAPPING FOR CURRENT_USER SERVER posthog OPTIONS (SET api_key 'phx_forbidden')");
{
	my ($ret, $err) = run_with_faults();
	like($err, qr/HTTP 403/, 'key without access: 403');
}
$node->safe_psql('postgres', "ALTER USER MAPPING FOR CURRENT_USER SERVER posthog OPTIONS (SET api_key '$PhxTest::API_KEY')");

# --- unreachable server and wrong project -----------------------------------
$node->safe_psql('postgres', "ALTER SERVER posthog OPTIONS (SET project_id '999')");
{
	my ($ret, $err) = run_with_faults();
	like($err, qr/HTTP 404/, 'wrong project: fails at once with 404');
}
$node->safe_psql('postgres', "ALTER SERVER posthog OPTIONS (SET project_id '1', SET url 'http://127.0.0.1:9', SET max_retries '1')");
{
	my ($ret, $err) = run_with_faults();
	like($err, qr/could not connect to PostHog server "posthog" \(2 requests\)(?s:.*)DETAIL: .*(connect|refused)/i,
		'unreachable server: network error retried, then reported');
	unlike($err, qr/transient/, 'unreachable server: a refused connection is not called transient');
	like($err, qr/HINT:  Check the server option url \(http:\/\/127\.0\.0\.1:9\)/, 'unreachable server: the hint names the url');
}

diag("faults injected: $faults, runs recovered: $recovered, rows compared: $compared, rows lost: $lost, duplicates: $dups");
is($lost, 0, 'rows lost: 0');
is($dups, 0, 'duplicates: 0');

$node->stop;
done_testing();
