# The network policy and the response limits under attack:
#  * allow_loopback 'false' against every spelling of this host's addresses:
#    IPv4-mapped and IPv4-compatible IPv6 (::ffff:0.0.0.0 reaches local
#    listeners), the unspecified ranges, NAT64, the interfaces' own addresses;
#    for a proxy, for a URL sent through a proxy, and on a reused connection;
#  * a gzip bomb and a lying Content-Length against max_response_size, with
#    the backend's peak memory read from /proc;
#  * control characters in option values (raw headers through api_key), at
#    DDL time and, for a value that got into the catalog some other way, at
#    request time.
use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use PhxTest;

# every emulator and proxy started here is stopped at the end, even when the test dies
my @started;
END
{
	local $?;
	eval { $_->kill_kill } for @started;
}

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 200, seed => 7,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my $emu = start_emulator(data => $data);
push @started, $emu->{handle};
my $port = $emu->{port};
my $node = new_node('netpolicy');
my ($start, $end) = ('2026-11-20 00:00+00', '2026-11-20 01:00+00');
my $key = $PhxTest::API_KEY;

my $n = 0;
# Creates server sN with the given options (allow_loopback 'false' unless
# given), its user mapping and an export; returns its number.
sub make_server
{
	my (%options) = (project_id => 1, allow_http => 'true', allow_loopback => 'false',
		max_retries => 0, retry_base_delay => 10, connect_timeout => 2, requests_per_hour => 1000000, @_);
	$n++;
	my $opts = join ', ', map { "$_ '$options{$_}'" } sort keys %options;
	$node->safe_psql('postgres', qq{
		CREATE SERVER s$n FOREIGN DATA WRAPPER posthog_export OPTIONS ($opts);
		CREATE USER MAPPING FOR CURRENT_USER SERVER s$n OPTIONS (api_key '$key');
		SELECT posthog_export.create_export('e$n', 's$n', table_name => 't$n', check_server => false);});
	return $n;
}

sub run_sql { my ($sql) = @_; my ($ret, $out, $err) = $node->psql('postgres', $sql); return ($ret, $err, $out); }
sub call { my ($i) = @_; return "CALL posthog_export.run_export('e$i', '$start', '$end');"; }

# Runs an export on a new server; returns (ret, stderr, requests the
# emulator $e saw; $e undef: not counted).
sub try_server
{
	my ($e, %options) = @_;
	emu_reset($e) if $e;
	my $i = make_server(%options);
	my ($ret, $err) = run_sql(call($i));
	return ($ret, $err, $e ? scalar @{ emu_requests($e) } : undef);
}

# --- SSRF: every spelling of "this host" -------------------------------------------------
my ($ret, $err, $seen) = try_server($emu, url => "http://[::ffff:0.0.0.0]:$port", allow_loopback => 'true');
is($ret, 0, '[::ffff:0.0.0.0] (IPv4-mapped unspecified) reaches the emulator listening on 127.0.0.1') or diag $err;
cmp_ok($seen, '>', 0, '... the emulator saw the requests');

($ret, $err, $seen) = try_server($emu, url => "http://[::ffff:0.0.0.0]:$port");
like($err, qr/refusing to connect PostHog server "s\d+" to local address ::ffff:0\.0\.0\.0/,
	'with allow_loopback false, [::ffff:0.0.0.0] is refused');
is($seen, 0, '... before any request reaches the emulator');

# [host in the URL] => the address the error names
my @local = (
	'[::ffff:127.0.0.1]' => '::ffff:127\.0\.0\.1',
	'[::ffff:7f00:2]' => '::ffff:127\.0\.0\.2',
	'[::127.0.0.1]' => '::127\.0\.0\.1',                   # IPv4-compatible
	'[::]' => '::',
	'0.0.0.0' => '0\.0\.0\.0',
	'0.1.2.3' => '0\.1\.2\.3',                             # all of 0.0.0.0/8
	'127.1.2.3' => '127\.1\.2\.3',
	'[::1]' => '::1',
	'[::ffff:169.254.169.254]' => '::ffff:169\.254\.169\.254',
	'[64:ff9b::a9fe:a9fe]' => '64:ff9b::a9fe:a9fe',        # NAT64 of 169.254.169.254
	'[64:ff9b::7f00:1]' => '64:ff9b::7f00:1',              # NAT64 of 127.0.0.1
	'[fe80::1]' => 'fe80::1',
);
while (my ($host, $shown) = splice(@local, 0, 2))
{
	($ret, $err, $seen) = try_server($emu, url => "http://$host:$port");
	like($err, qr/refusing to connect PostHog server "s\d+" to local address $shown\n/, "$host is refused")
	  or diag $err;
}
like($err, qr/DETAIL:  .*loopback.*unspecified.*link-local.*own/si, 'the error says what the policy refuses');
like($err, qr/HINT:  .*allow_loopback/, '... and how to allow it');

# the host's own non-loopback addresses reach its listeners just as well
my @own4 = my @own6 = ();
my $ipout = '';
IPC::Run::run([ 'ip', '-o', 'addr', 'show' ], '>', \$ipout, '2>', \my $iperr);
for (split /\n/, $ipout)
{
	next if /\blo\b/ || /scope link/;
	push @own4, $1 if /\binet (\d+\.\d+\.\d+\.\d+)\//;
	push @own6, $1 if /\binet6 ([0-9a-f:]+)\//;
}
SKIP:
{
	skip 'this host has no non-loopback IPv4 address', 5 unless @own4;
	my $addr = $own4[0];
	my $any = start_emulator(data => $data, name => 'any', extra => [ '--host', '0.0.0.0' ], host => $addr);
	push @started, $any->{handle};
	($ret, $err, $seen) = try_server($any, url => $any->{url}, allow_loopback => 'true');
	is($ret, 0, "this host's own address $addr reaches a listener on 0.0.0.0") or diag $err;
	cmp_ok($seen, '>', 0, '... the emulator saw the requests');
	($ret, $err, $seen) = try_server($any, url => $any->{url});
	like($err, qr/refusing to connect PostHog server "s\d+" to local address \Q$addr\E\n/,
		"with allow_loopback false, the host's own address $addr is refused");
	is($seen, 0, '... before any request reaches the emulator');
	($ret, $err, $seen) = try_server($any, url => "http://[::ffff:$addr]:$any->{port}");
	like($err, qr/refusing to connect .* to local address ::ffff:\Q$addr\E\n/, '... and so is its IPv4-mapped form');
	$any->{handle}->kill_kill;
}
SKIP:
{
	skip 'this host has no global IPv6 address', 1 unless @own6;
	($ret, $err) = try_server($emu, url => "http://[$own6[0]]:$port");
	like($err, qr/refusing to connect .* to local address \Q$own6[0]\E\n/, "the host's own IPv6 address $own6[0] is refused");
}

# --- a reused connection is checked as well --------------------------------------------
# server A may use loopback, server B with the same URL may not; in one
# backend, B's request would otherwise go out on A's kept-alive connection
emu_reset($emu);
my $sa = make_server(url => "http://127.0.0.1:$port", allow_loopback => 'true');
my $sb = make_server(url => "http://127.0.0.1:$port");
($ret, $err) = run_sql(call($sa) . "\n" . call($sb));
like($err, qr/refusing to connect PostHog server "s$sb" to local address 127\.0\.0\.1/,
	'a server without allow_loopback is refused on a connection kept alive by one with it');
is($node->safe_psql('postgres', "SELECT count(*) FROM posthog_exports.t$sb"), 0, '... and wrote nothing');
is(scalar(grep { $_->{status} } @{ emu_requests($emu) }), 1, '... and sent no request (only server A did)');

# --- a proxy, and a URL sent through a proxy --------------------------------------------
my $pki = tempdir(CLEANUP => 1);
chmod 0755, $pki;
IPC::Run::run([ 'openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=localhost',
		'-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1', '-keyout', "$pki/server.key", '-out', "$pki/server.pem" ],
	'>', '/dev/null', '2>', '/dev/null') or die 'openssl failed';
chmod 0644, glob("$pki/*");
my $tls = start_emulator(data => $data, name => 'tls', tls_cert => "$pki/server.pem", tls_key => "$pki/server.key");
push @started, $tls->{handle};
my $proxy_log = "$PostgreSQL::Test::Utils::tmp_check/netpolicy_proxy.log";
my $proxy_port_file = "$PostgreSQL::Test::Utils::tmp_check/netpolicy_proxy.port";
my $proxy = IPC::Run::start([ 'python3', "$ENV{TESTDIR}/test/connect_proxy.py", '--port-file', $proxy_port_file,
		'--log', $proxy_log ]);
push @started, $proxy;
ok(wait_for(sub { -s $proxy_port_file }, 30), 'the CONNECT proxy is up');
my $pport = slurp_file($proxy_port_file);
$pport =~ s/\s+//g;
my $tunnels = sub { return -e $proxy_log ? scalar(() = slurp_file($proxy_log) =~ /^CONNECT /mg) : 0 };

($ret, $err) = try_server(undef, url => "https://localhost:$tls->{port}", ca_file => "$pki/server.pem",
	proxy => "http://[::ffff:0.0.0.0]:$pport", allow_loopback => 'true');
is($ret, 0, 'a proxy at [::ffff:0.0.0.0] reaches the proxy listening on 127.0.0.1') or diag $err;
my $before = $tunnels->();
cmp_ok($before, '>', 0, '... which tunnelled the export');
($ret, $err) = try_server(undef, url => "https://localhost:$tls->{port}", ca_file => "$pki/server.pem",
	proxy => "http://[::ffff:0.0.0.0]:$pport");
like($err, qr/refusing to connect PostHog server "s\d+" to local address ::ffff:0\.0\.0\.0/,
	'with allow_loopback false, a proxy at [::ffff:0.0.0.0] is refused');
is($tunnels->(), $before, '... and never contacted');
($ret, $err) = try_server(undef, url => 'https://169.254.169.254', proxy => "http://127.0.0.1:$pport");
like($err, qr/refusing to connect PostHog server "s\d+" to local address 169\.254\.169\.254/,
	'a link-local URL is refused even when a proxy would make the connection');
$proxy->kill_kill;
$tls->{handle}->kill_kill;

# --- a gzip bomb: decompression stops at max_response_size ---------------------------------
# The backend's peak resident size (VmHWM) before and after the run, in the
# same session.  The bomb is ~100 KB on the wire, 96 MiB decompressed, sent
# chunked; the limit is 65 MiB.  Growing the buffer by allocate-and-copy
# held the old and the new buffer at once: ~2x the limit.
my $limit = 65 * 1024 * 1024;
sub measured_run
{
	my ($i, $field) = @_;
	my $probe = "SELECT substring(pg_read_file('/proc/self/status') from '$field:\\s*(\\d+)');";
	my ($r, $out, $e) = $node->psql('postgres', "\\set VERBOSITY verbose\n$probe\n" . call($i) . "\n$probe",
		on_error_stop => 0);
	my ($kb0, $kb1) = split /\n/, $out;
	return ($kb1 - $kb0, $e, $kb0, $kb1);
}
emu_reset($emu);
emu_faults($emu, { every => JSON::PP::true, gzip_bomb => 96 });
my $i = make_server(url => "http://127.0.0.1:$port", allow_loopback => 'true', max_response_size => $limit);
my ($grew, $e, $kb0, $kb1) = measured_run($i, 'VmHWM');
like($e, qr/ERROR:  54000: PostHog response exceeds max_response_size \($limit bytes\)/,
	'a gzip bomb is refused with program_limit_exceeded');
like($e, qr/DETAIL:  .*decompressed/, '... saying the decompressed body passed the limit');
unlike($e, qr/\Q$key\E/, '... without the key');
diag(sprintf('gzip bomb, max_response_size %d MiB: peak RSS of the backend %d -> %d kB (+%.1f MiB)',
		$limit >> 20, $kb0, $kb1, $grew / 1024));
cmp_ok($grew, '<=', 1.25 * $limit / 1024, 'the backend\'s peak memory grows by about max_response_size, not twice that');
cmp_ok($grew, '>=', 0.5 * $limit / 1024, '... (it did receive the body up to the limit)');

# --- Content-Length: no allocation on trust, refusal at once above the limit ---------------
emu_reset($emu);
emu_faults($emu, { every => JSON::PP::true, content_length => 500 * 1024 * 1024 });
$i = make_server(url => "http://127.0.0.1:$port", allow_loopback => 'true');
($grew, $e, $kb0, $kb1) = measured_run($i, 'VmPeak');
like($e, qr/ERROR: /, 'a response that announces 500 MB and ends after 13 bytes fails');
diag(sprintf('Content-Length 500 MiB, 13 bytes sent: peak virtual size of the backend %d -> %d kB (+%.1f MiB)',
		$kb0, $kb1, $grew / 1024));
cmp_ok($grew, '<', 64 * 1024, '... without allocating what Content-Length announced');

emu_reset($emu);
emu_faults($emu, { every => JSON::PP::true, content_length => 500 * 1024 * 1024, hold => 30 });
$i = make_server(url => "http://127.0.0.1:$port", allow_loopback => 'true', max_response_size => 1048576, timeout => 60);
my $t0 = time;
($ret, $err) = run_sql("\\set VERBOSITY verbose\n" . call($i));
my $took = time - $t0;
like($err, qr/ERROR:  54000: PostHog response exceeds max_response_size \(1048576 bytes\)/,
	'a Content-Length above max_response_size is refused');
like($err, qr/DETAIL:  .*Content-Length of 524288000 bytes/, '... naming the announced size');
cmp_ok($took, '<', 15, sprintf('... at once, not when the body stalls or ends (%.1f s)', $took));
emu_reset($emu);

# --- control characters: raw headers through api_key ----------------------------------------
$node->safe_psql('postgres', q{CREATE SERVER cc FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://x', project_id '1')});
($ret, $err) = run_sql(qq{\\set VERBOSITY verbose
CREATE USER MAPPING FOR CURRENT_USER SERVER cc OPTIONS (api_key E'phx_sneaky_secret\\r\\nX-Injected: yes');});
like($err, qr/ERROR:  HV024: invalid value for option "api_key"/, 'an api_key with CR/LF is refused by the validator');
like($err, qr/DETAIL:  .*control character/, '... because of its control characters');
unlike($err, qr/sneaky|Injected/, '... without printing the key');
($ret, $err) = run_sql(q{ALTER SERVER cc OPTIONS (ADD ca_file E'/etc/ssl/ca.pem\nX: y')});
like($err, qr/invalid value for option "ca_file"/, 'every option value is checked for control characters');

# a key that got into the catalog without the validator is caught before it becomes a header
emu_reset($emu);
$i = make_server(url => "http://127.0.0.1:$port", allow_loopback => 'true');
$node->safe_psql('postgres', qq{UPDATE pg_user_mapping SET umoptions = ARRAY[E'api_key=$key\\r\\nX-Injected: yes']
	WHERE umserver = (SELECT oid FROM pg_foreign_server WHERE srvname = 's$i')});
($ret, $err) = run_sql("\\set VERBOSITY verbose\n" . call($i));
like($err, qr/ERROR:  22023: .*api_key.*control character/, 'a CR/LF in a stored api_key is refused at request time');
unlike($err, qr/\Q$key\E|Injected/, '... without printing the key');
is(scalar @{ emu_requests($emu) }, 0, '... and no request is sent');

# the test's own SQL is logged (log_statement = all, and the statement of an
# error); every other line must be free of the keys
my @log = grep { !/\b(statement|STATEMENT):\s/ } split /\n/, slurp_file($node->logfile);
is(scalar(grep { /\Q$key\E|sneaky_secret/ } @log), 0, 'no API key in the server log, apart from the test\'s own statements');
$node->stop;
$emu->{handle}->kill_kill;
done_testing();
