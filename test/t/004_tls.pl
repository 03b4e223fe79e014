# HTTPS and the network policy: certificate and host verification are on by
# default (verify full), with ca and none as weaker modes; ca_file trusts a
# private root certificate; client certificates for mutual TLS; an HTTPS
# proxy; http:// needs allow_http; loopback and link-local addresses need
# allow_loopback (SSRF); a response larger than max_response_size is refused.
use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $pki = tempdir(CLEANUP => 1);
chmod 0755, $pki;
sub openssl { IPC::Run::run([ 'openssl', @_ ], '>', '/dev/null', '2>', '/dev/null') or die "openssl @_ failed"; }
# a private CA, and a server certificate for 127.0.0.1 / localhost signed by it
openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=phx test CA',
	'-keyout', "$pki/ca.key", '-out', "$pki/ca.pem");
openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost',
	'-keyout', "$pki/server.key", '-out', "$pki/server.csr");
open my $ext, '>', "$pki/san.ext" or die $!;
print $ext "subjectAltName = DNS:localhost, IP:127.0.0.1\n";
close $ext;
openssl('x509', '-req', '-in', "$pki/server.csr", '-CA', "$pki/ca.pem", '-CAkey', "$pki/ca.key",
	'-CAcreateserial', '-days', '2', '-extfile', "$pki/san.ext", '-out', "$pki/server.pem");
# a certificate from the same CA for a name that is not the server's
openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=wrong.example',
	'-keyout', "$pki/wrong.key", '-out', "$pki/wrong.csr");
open $ext, '>', "$pki/wrong.ext" or die $!;
print $ext "subjectAltName = DNS:wrong.example\n";
close $ext;
openssl('x509', '-req', '-in', "$pki/wrong.csr", '-CA', "$pki/ca.pem", '-CAkey', "$pki/ca.key",
	'-CAcreateserial', '-days', '2', '-extfile', "$pki/wrong.ext", '-out', "$pki/wrong.pem");
# another CA that signed nothing
openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=other CA',
	'-keyout', "$pki/other.key", '-out', "$pki/other.pem");
chmod 0644, glob("$pki/*");

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 300, seed => 5,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my $emu = start_emulator(data => $data, tls_cert => "$pki/server.pem", tls_key => "$pki/server.key");
my $port = $emu->{port};
my $node = new_node('tls');

my $n = 0;
sub try_server
{
	my (%options) = (allow_loopback => 'true', @_);
	delete $options{allow_loopback} if $options{allow_loopback} eq 'no';
	$n++;
	my $opts = join ', ', map { "$_ '$options{$_}'" } sort keys %options;
	$node->safe_psql('postgres', qq{
		CREATE SERVER s$n FOREIGN DATA WRAPPER posthog_export OPTIONS (project_id '1', requests_per_hour '1000000', max_retries '1', retry_base_delay '10', $opts);
		CREATE USER MAPPING FOR CURRENT_USER SERVER s$n OPTIONS (api_key '$PhxTest::API_KEY');});
	my ($ret, $out, $err) = $node->psql('postgres', qq{
		SELECT posthog_export.create_export('e$n', 's$n', table_name => 't$n', check_server => false);
		CALL posthog_export.run_export('e$n', '2026-11-20 00:00+00', '2026-11-20 01:00+00');});
	return ($ret, $err);
}

my ($ret, $err) = try_server(url => "https://127.0.0.1:$port", ca_file => "$pki/ca.pem");
is($ret, 0, 'https with ca_file naming the private CA works') or diag $err;
my ($expected, $missing, $extra) = compare_with_source($node, $emu, table => "posthog_exports.t$n",
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
is("$missing/$extra", '0/0', "rows exported over TLS equal the source ($expected rows)");

($ret, $err) = try_server(url => "https://localhost:$port", ca_file => "$pki/ca.pem");
is($ret, 0, 'the certificate also matches the host name localhost') or diag $err;

($ret, $err) = try_server(url => "https://127.0.0.1:$port");
isnt($ret, 0, 'without ca_file the system trust store rejects the private CA');
like($err, qr/could not connect to PostHog server "s\d+": .*certificate/i, 'with a certificate error, not retried');

($ret, $err) = try_server(url => "https://127.0.0.1:$port", ca_file => "$pki/other.pem");
like($err, qr/certificate/i, 'a certificate from another CA is rejected');

# a server whose certificate names another host
my $wrong = start_emulator(data => $data, name => 'wrong', tls_cert => "$pki/wrong.pem", tls_key => "$pki/wrong.key");
($ret, $err) = try_server(url => "https://127.0.0.1:$wrong->{port}", ca_file => "$pki/ca.pem");
isnt($ret, 0, 'a host name the certificate does not name is rejected');
like($err, qr/(certificate|subject|name|match)/i, 'with a verification error');

($ret, $err) = try_server(url => "https://127.0.0.1:$port", ca_file => "$pki/missing.pem");
like($err, qr/could not connect .*(CA|cert|file)/i, 'a ca_file that cannot be read is a clear error');

# plain http to a TLS server, and http without allow_http
($ret, $err) = try_server(url => "http://127.0.0.1:$port", allow_http => 'true');
isnt($ret, 0, 'plain http against a TLS port fails');
my ($r2, $o2, $e2) = $node->psql('postgres', "CREATE SERVER nohttp FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'http://127.0.0.1:$port', project_id '1')");
like($e2, qr/plain http URL .* is not allowed/, 'http:// is refused without allow_http');


# --- verify modes against each kind of bad certificate ------------------------------
# an expired certificate from the private CA (openssl ca can backdate)
open my $cnf, '>', "$pki/ca.cnf" or die $!;
print $cnf "[ca]\ndefault_ca = d\n[d]\ndatabase = $pki/index.txt\nserial = $pki/serial\nnew_certs_dir = $pki\n" .
	"default_md = sha256\npolicy = p\ncopy_extensions = copy\n[p]\ncommonName = supplied\n";
close $cnf;
open my $idx, '>', "$pki/index.txt" or die $!; close $idx;
open my $ser, '>', "$pki/serial" or die $!; print $ser "1000\n"; close $ser;
openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=localhost', '-keyout', "$pki/expired.key", '-out', "$pki/expired.csr");
openssl('ca', '-batch', '-config', "$pki/ca.cnf", '-cert', "$pki/ca.pem", '-keyfile', "$pki/ca.key",
	'-in', "$pki/expired.csr", '-out', "$pki/expired.pem", '-extfile', "$pki/san.ext",
	'-startdate', '20200101000000Z', '-enddate', '20200102000000Z');
chmod 0644, glob("$pki/*");
my $expired = start_emulator(data => $data, name => 'expired', tls_cert => "$pki/expired.pem", tls_key => "$pki/expired.key");

my %servers = (
	'wrong host name' => "https://127.0.0.1:$wrong->{port}",
	'expired certificate' => "https://127.0.0.1:$expired->{port}",
	'unknown CA' => "https://127.0.0.1:$port",
);
# what each mode must do: 1 = the run succeeds
my %expect = (
	'wrong host name' => { full => 0, ca => 1, none => 1 },
	'expired certificate' => { full => 0, ca => 0, none => 1 },
	'unknown CA' => { full => 0, ca => 0, none => 1 },
);
for my $case (sort keys %servers)
{
	for my $mode (qw(full ca none))
	{
		my %o = (url => $servers{$case}, verify => $mode);
		$o{ca_file} = "$pki/ca.pem" unless $case eq 'unknown CA';
		($ret, $err) = try_server(%o);
		if ($expect{$case}{$mode})
		{
			is($ret, 0, "$case, verify $mode: the run succeeds") or diag $err;
		}
		else
		{
			like($err, qr/could not connect to PostHog server "s\d+": /, "$case, verify $mode: refused");
		}
	}
}
like(psql_fails($node, q{CREATE SERVER badverify FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://x', project_id '1', verify 'maybe')},
	'an unknown verify mode is refused'), qr/invalid value for option "verify"/, 'by the validator');

# --- mutual TLS --------------------------------------------------------------------------
openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=exporter', '-keyout', "$pki/client.key", '-out', "$pki/client.csr");
openssl('x509', '-req', '-in', "$pki/client.csr", '-CA', "$pki/ca.pem", '-CAkey', "$pki/ca.key",
	'-CAcreateserial', '-days', '2', '-out', "$pki/client.pem");
chmod 0644, glob("$pki/*");
my $mtls = start_emulator(data => $data, name => 'mtls', tls_cert => "$pki/server.pem", tls_key => "$pki/server.key",
	tls_client_ca => "$pki/ca.pem");
($ret, $err) = try_server(url => "https://localhost:$mtls->{port}", ca_file => "$pki/ca.pem");
isnt($ret, 0, 'a server that requires a client certificate refuses a client without one');
($ret, $err) = try_server(url => "https://localhost:$mtls->{port}", ca_file => "$pki/ca.pem",
	client_cert => "$pki/client.pem", client_key => "$pki/client.key");
is($ret, 0, 'with client_cert and client_key (mutual TLS) the run succeeds') or diag $err;

# --- through an HTTPS proxy ---------------------------------------------------------------
my $proxy_log = "$PostgreSQL::Test::Utils::tmp_check/proxy.log";
my $proxy_port_file = "$PostgreSQL::Test::Utils::tmp_check/proxy.port";
my $proxy = IPC::Run::start([ 'python3', "$ENV{TESTDIR}/test/connect_proxy.py", '--port-file', $proxy_port_file, '--log', $proxy_log ]);
wait_for(sub { -s $proxy_port_file }, 30);
my $proxy_port = slurp_file($proxy_port_file);
$proxy_port =~ s/\s+//g;
($ret, $err) = try_server(url => "https://localhost:$port", ca_file => "$pki/ca.pem", proxy => "http://127.0.0.1:$proxy_port");
is($ret, 0, 'an export through an HTTP CONNECT proxy succeeds') or diag $err;
like(slurp_file($proxy_log), qr/CONNECT localhost:$port/, 'and really went through the proxy');
like(psql_fails($node, q{CREATE SERVER badproxy FOREIGN DATA WRAPPER posthog_export OPTIONS (url 'https://x', project_id '1', proxy 'http://user:pw@proxy:3128')},
	'a proxy with credentials in its URL is refused'), qr/invalid value for option "proxy"/, 'by the validator');
$proxy->kill_kill;

# --- SSRF: this host's own addresses need allow_loopback ------------------------------------
($ret, $err) = try_server(url => "https://127.0.0.1:$port", ca_file => "$pki/ca.pem", allow_loopback => 'no');
like($err, qr/refusing to connect PostHog server "s\d+" to local address 127\.0\.0\.1/, 'a loopback address is refused by default');
($ret, $err) = try_server(url => "https://localhost:$port", ca_file => "$pki/ca.pem", allow_loopback => 'no');
like($err, qr/refusing to connect .* to local address (127\.0\.0\.1|::1)/, 'so is a host name that resolves to loopback');
($ret, $err) = try_server(url => "https://169.254.169.254", allow_loopback => 'no', connect_timeout => '2');
like($err, qr/refusing to connect .* to local address 169\.254\.169\.254/, 'and a link-local (cloud metadata) address');

# --- a response larger than max_response_size ---------------------------------------------
($ret, $err) = try_server(url => "https://localhost:$port", ca_file => "$pki/ca.pem", max_response_size => '2048');
like($err, qr/PostHog response exceeds max_response_size \(2048 bytes\)/, 'a response larger than max_response_size is refused');

$node->stop;
done_testing();
