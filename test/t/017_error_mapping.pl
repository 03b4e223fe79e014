# PostHog's error answers in every form its versions send (posthog/errors.py,
# posthog/exceptions.py, posthog/api/query.py), each injected with PostHog's
# exact body: a query out of memory (513 or 512 "clickhouse_memory_limit_exceeded",
# 400 "memory_limit_exceeded"), too slow (512, PostHog's 504), too large (500
# "Query size exceeded.") and repeated 500s shrink the page, down to the floor,
# then fail naming the page and what was tried; 503 and a gateway's 504 back off;
# other 400s fail at once.  Then values as PostHog's export writes them (an
# empty $ip is NULL, site_url NULL) and tables of PostHog's self-managed shapes
# (BIGINT team_id and versions, timestamp without time zone, updated_at),
# compared with the oracle, column by column.
use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 1200, persons => 300, seed => 17,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
# $ip missing, empty, set, and not a string
append_events($data,
	map {
		my ($i, $ip) = @$_;
		my %p = (n => $i);
		$p{'$ip'} = $ip if defined $ip;
		{ uuid => sprintf('0189e5b0-0000-7000-8000-%012d', 900 + $i), event => 'ip_case',
		  distinct_id => "ip-$i", team_id => 1, properties => \%p, elements_chain => '',
		  timestamp => "2026-11-20T00:30:0${i}Z", created_at => "2026-11-20T00:30:0${i}Z" }
	} ([ 1, undef ], [ 2, '' ], [ 3, '10.1.2.3' ], [ 4, 42 ]));
my $emu = start_emulator(data => $data);
# a session TimeZone far from UTC: a timestamp without time zone must still get the UTC wall time
my $node = new_node('errmap', conf => "timezone = 'America/New_York'\n");
setup_server($node, $emu, options => { page_size => 200, max_retries => 4 });

my ($start, $end) = ('2026-11-20 00:00+00', '2026-11-20 01:00+00');
my %range = (start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my $n = 0;

sub limit_of { my ($q) = @_; return $q =~ /LIMIT (\d+)\s*$/ ? $1 : -1; }

# Runs a fresh export with the given faults; returns (ret, stderr, requests).
sub run_with_faults
{
	my (@f) = @_;
	$n++;
	emu_reset($emu);
	emu_faults($emu, @f) if @f;
	$node->safe_psql('postgres', "SELECT posthog_export.create_export('f$n', 'posthog', table_name => 't$n', check_server => false)");
	my ($ret, $out, $err) = $node->psql('postgres', "CALL posthog_export.run_export('f$n', '$start', '$end')");
	return ($ret, $err, emu_requests($emu));
}

sub check_equal
{
	my ($name, $table) = @_;
	my ($expected, $missing, $extra) = compare_with_source($node, $emu, table => $table // "posthog_exports.t$n", %range);
	is("$missing/$extra", '0/0', "$name: destination equals the source ($expected rows)");
	return;
}

sub run_error { $node->safe_psql('postgres', "SELECT status || ': ' || coalesce(error, '') FROM posthog_export.runs WHERE export_name = 'f$n'"); }

my (undef, undef, $clean) = run_with_faults();
my $baseline = scalar @$clean;
cmp_ok($baseline, '>=', 6, "a clean run pages through the interval ($baseline requests)");
check_equal('clean run');

# PostHog's bodies, as its exception classes render them (drf-exceptions-hog: type, code, detail, attr)
my $mem_detail = "This query ran out of memory before it could finish, usually because it's scanning too much data.";
my %shrinking = (
	'513 clickhouse_memory_limit_exceeded (current)' =>
	  { status => 513, type => 'server_error', code => 'clickhouse_memory_limit_exceeded', detail => $mem_detail },
	'512 clickhouse_memory_limit_exceeded' =>
	  { status => 512, type => 'server_error', code => 'clickhouse_memory_limit_exceeded', detail => $mem_detail },
	'400 memory_limit_exceeded (older versions)' =>
	  { status => 400, type => 'validation_error', code => 'memory_limit_exceeded',
		detail => 'Memory limit (for query) exceeded: would use 9.31 GiB (attempt to allocate chunk of 4194304 bytes), maximum: 9.31 GiB.' },
	'512 estimated execution time too long' =>
	  { status => 512, type => 'server_error', code => 'error',
		detail => 'Estimated query execution time (34.5 seconds) is too long. Try reducing its scope by changing the time range.' },
	'504 ClickHouseQueryTimeOut' =>
	  { status => 504, type => 'server_error', code => 'error',
		detail => 'Query has hit the max execution time before completing. See our docs for how to improve your query performance. You may need to materialize.' },
	'500 Query size exceeded' =>
	  { status => 500, type => 'server_error', code => 'error', detail => 'Query size exceeded.' });

# --- each form that asks for a smaller page: the retry is at half the size, at once ----
for my $name (sort keys %shrinking)
{
	my $at = 2 + int(rand($baseline - 2));
	my ($ret, $err, $reqs) = run_with_faults({ on_request => $at, %{ $shrinking{$name} } });
	is($ret, 0, "$name: the run succeeds") or diag $err;
	my ($bad) = grep { $_->{n} == $at } @$reqs;
	my ($next) = grep { $_->{n} == $at + 1 } @$reqs;
	is($bad->{status}, $shrinking{$name}{status}, "$name: injected on request $at");
	is(limit_of($next->{query}), int(limit_of($bad->{query}) / 2),
		"$name: the retry asks for half the page (" . limit_of($bad->{query}) . ' -> ' . limit_of($next->{query}) . ')');
	check_equal($name);
}

# --- a shrunk page grows back after two good pages; failing again right after growing doubles the wait
{
	my %mem = %{ $shrinking{'512 clickhouse_memory_limit_exceeded'} };
	my ($ret, $err, $reqs) = run_with_faults({ on_request => 2, %mem });
	is($ret, 0, 'grow back: the run succeeds') or diag $err;
	my @l = map { limit_of($_->{query}) } grep { $_->{n} <= 5 } @$reqs;
	is("@l", '200 200 100 100 200', 'grow back: halved on the error, doubled after two good pages (@l)');
	check_equal('grow back');
	($ret, $err, $reqs) = run_with_faults({ on_request => 2, %mem }, { on_request => 5, %mem });
	is($ret, 0, 'failing again after growing: the run succeeds') or diag $err;
	@l = map { limit_of($_->{query}) } grep { $_->{n} <= 10 } @$reqs;
	is("@l", '200 200 100 100 200 100 100 100 100 200',
		'failing again right after growing: four good pages before the next try (@l)');
	check_equal('failing again after growing');
}

# --- a body past max_response_size: a smaller page, not a failure
$node->safe_psql('postgres', q{ALTER SERVER posthog OPTIONS (ADD max_response_size '200000')});
{
	my ($ret, $err, $reqs) = run_with_faults();
	is($ret, 0, 'a page past max_response_size: the run succeeds at smaller pages') or diag $err;
	my @l = map { limit_of($_->{query}) } @$reqs;
	is("@l[0, 1]", '200 100', "the page too large for max_response_size is asked again at half the size (@l)");
	check_equal('max_response_size');
}
$node->safe_psql('postgres', q{ALTER SERVER posthog OPTIONS (DROP max_response_size)});

# --- two 500s in a row for one page: the first is retried at the same size, the second shrinks
{
	my ($ret, $err, $reqs) = run_with_faults({ on_request => 3, times => 2, status => 500 });
	is($ret, 0, 'two 500s: the run succeeds') or diag $err;
	my @l = map { limit_of($_->{query}) } grep { $_->{n} >= 3 && $_->{n} <= 5 } @$reqs;
	is("@l", "$l[0] $l[0] " . int($l[0] / 2), "two 500s: same size after the first, half after the second (@l)");
	check_equal('two 500s');
}
{
	my ($ret, $err, $reqs) = run_with_faults({ on_request => 3, status => 500 });
	my @l = map { limit_of($_->{query}) } grep { $_->{n} >= 3 && $_->{n} <= 4 } @$reqs;
	is("@l", "$l[0] $l[0]", 'one 500: retried at the same size');
	is(scalar(@$reqs), $baseline + 1, 'one 500: one request more than a clean run');
}

# --- 503 (ClickHouseAtCapacity) and a gateway's 504 without PostHog's body: backed off, same size
for my $case (
	[ '503 at capacity', { status => 503, type => 'server_error', code => 'error',
		detail => "Queries are a little too busy right now. We're working to free up resources. Please try again later." } ],
	[ "a gateway's 504", { status => 504, type => undef, code => undef, detail => undef } ])
{
	my ($name, $f) = @$case;
	my $logpos = -s $node->logfile;
	my ($ret, $err, $reqs) = run_with_faults({ on_request => 3, times => 2, %$f });
	is($ret, 0, "$name: the run succeeds") or diag $err;
	is(scalar(@$reqs), $baseline + 2, "$name: exactly the faulted requests were repeated");
	my @l = map { limit_of($_->{query}) } grep { $_->{n} >= 3 && $_->{n} <= 5 } @$reqs;
	is("@l", "$l[0] $l[0] $l[0]", "$name: retried at the same page size (@l)");
	my $log = substr(slurp_file($node->logfile), $logpos);
	like($log, qr/retry 1 of 4 in \d+ ms.*retry 2 of 4 in \d+ ms/s, "$name: backed off before each retry");
	check_equal($name);
}

# --- a 400 validation error: fails at once, one request -----------------------------
{
	my ($ret, $err, $reqs) = run_with_faults({ on_request => 1, status => 400, type => 'validation_error',
		code => 'syntax_error', detail => 'Syntax error at line 1, column 7: mismatched input' });
	isnt($ret, 0, 'a 400 validation error fails the run');
	is(scalar(@$reqs), 1, 'a 400 validation error: one request, not retried');
	like($err, qr/rejected the query \(HTTP 400\)/, 'a 400: the primary message is ours');
	like($err, qr/DETAIL:.*syntax_error.*Syntax error at line 1/, "a 400: PostHog's code and detail in the DETAIL");
	unlike((split /\n/, $err)[0], qr/Syntax error/, 'a 400: no remote text in the primary message');
	like($err, qr/CONTEXT:\s+HogQL query: SELECT/, 'a 400: CONTEXT names the HogQL');
	like(run_error(), qr/^failed: .*HTTP 400/, 'a 400: runs.error says why');
}

# --- shrinking to the floor, then a clear error naming the page and what was tried -------
for my $case ([ '512 on every request', { status => 512, %{ $shrinking{'512 clickhouse_memory_limit_exceeded'} } }, '200 100 50 25 12 10' ],
	[ '500 on every request', { status => 500 }, '200 200 100 50 25 12 10' ])
{
	my ($name, $f, $sizes) = @$case;
	my ($ret, $err, $reqs) = run_with_faults({ every => JSON::PP::true, %$f });
	isnt($ret, 0, "$name: the run fails");
	my @l = map { limit_of($_->{query}) } @$reqs;
	is("@l", $sizes, "$name: each request at the size the policy gives (@l)");
	like($err, qr/could not run "posthog_export f$n page 1" at any page size, down to 10 rows/,
		"$name: the error names the page and the floor");
	my $st = $f->{status};
	like($err, qr/DETAIL:\s+Answers, in order: HTTP $st at 200 rows, .*HTTP $st at 10 rows\. The last: PostHog answered HTTP $st/s,
		"$name: the DETAIL lists the statuses and page sizes tried");
	like(run_error(), qr/^failed: PostHog server "posthog" could not run .* at any page size.*HTTP $st at 100 rows/,
		"$name: runs.error keeps the message and what was tried");
}

# --- values: $ip missing, empty, set, a number; site_url ------------------------------
{
	my ($ret, $err) = run_with_faults();
	is($ret, 0, 'values: the run succeeds') or diag $err;
	is($node->safe_psql('postgres', qq{SELECT string_agg(coalesce(ip, 'NULL'), ',' ORDER BY distinct_id)
		FROM posthog_exports.t$n WHERE event = 'ip_case'}), 'NULL,NULL,10.1.2.3,42',
		'ip: missing -> NULL, empty -> NULL, set -> as is, a number -> its text');
	is($node->safe_psql('postgres', "SELECT count(*) FROM posthog_exports.t$n WHERE site_url IS NOT NULL OR ip = ''"), '0',
		'site_url is always NULL and no ip is an empty string');
	check_equal('values');
}

# --- events into a table of PostHog's self-managed shape -----------------------------
# BIGINT team_id, timestamp without time zone, extra columns with and without a default;
# both write paths: the bulk writer (append) and the staged INSERT (merge).
for my $mode ('append', 'merge')
{
	my $t = "ev_$mode";
	$node->safe_psql('postgres', qq{
		CREATE TABLE posthog_exports.$t (
			"uuid" varchar(200) PRIMARY KEY, event varchar(200), properties jsonb, elements jsonb,
			"set" jsonb, set_once jsonb, distinct_id varchar(200), team_id bigint, ip varchar(200),
			site_url varchar(200), "timestamp" timestamp, updated_at timestamp DEFAULT now(), note text);
		CREATE VIEW posthog_exports.${t}_utc AS SELECT uuid, event, properties, elements, "set", set_once,
			distinct_id, team_id, ip, site_url, "timestamp" AT TIME ZONE 'UTC' AS "timestamp" FROM posthog_exports.$t;
		SELECT posthog_export.create_export('$t', 'posthog', table_name => '$t', mode => '$mode', check_server => false);});
	my ($ret, $out, $err) = $node->psql('postgres', "CALL posthog_export.run_export('$t', '$start', '$end')");
	is($ret, 0, "events $mode into BIGINT/timestamp/updated_at table") or diag $err;
	check_equal("events $mode, self-managed shape", "posthog_exports.${t}_utc");
	is($node->safe_psql('postgres', "SELECT \"timestamp\" FROM posthog_exports.$t WHERE distinct_id = 'ip-3'"),
		'2026-11-20 00:30:03', "events $mode: the timestamp is the UTC wall time, whatever the session's TimeZone");
	is($node->safe_psql('postgres', "SELECT count(*) FROM posthog_exports.$t WHERE updated_at IS NULL OR note IS NOT NULL"), '0',
		"events $mode: updated_at gets its default, note stays NULL");
}

# --- persons into a table of PostHog's self-managed shape -----------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE posthog_exports.persons_sm (
		team_id bigint NOT NULL, distinct_id varchar(200) NOT NULL, person_id varchar(200),
		properties jsonb, person_distinct_id_version bigint, person_version bigint,
		created_at timestamp, is_deleted boolean, updated_at timestamptz DEFAULT now(), synced_by text,
		PRIMARY KEY (team_id, distinct_id));
	CREATE VIEW posthog_exports.persons_sm_utc AS SELECT team_id, distinct_id, person_id, properties,
		person_distinct_id_version, person_version, created_at AT TIME ZONE 'UTC' AS created_at, is_deleted
		FROM posthog_exports.persons_sm;
	SELECT posthog_export.create_export('persons_sm', 'posthog', 'persons', table_name => 'persons_sm', check_server => false);});
{
	my ($ret, $out, $err) = $node->psql('postgres', "CALL posthog_export.run_export('persons_sm', '$start', '$end')");
	is($ret, 0, 'persons into BIGINT/timestamp/updated_at table') or diag $err;
	my ($expected, $missing, $extra) = compare_with_source($node, $emu, model => 'persons', table => 'posthog_exports.persons_sm_utc');
	is("$missing/$extra", '0/0', "persons, self-managed shape: equal to the source ($expected rows)");
	cmp_ok($expected, '>', 0, 'persons: rows were compared');
	is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.persons_sm WHERE updated_at IS NULL OR synced_by IS NOT NULL'), '0',
		'persons: updated_at gets its default, the other extra column stays NULL');
}

$node->stop;
done_testing();
