# HTTPS: certificate and host verification are on by default; ca_file trusts
# a private root certificate instead of the system's; http:// needs allow_http.
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
	my (%options) = @_;
	$n++;
	my $opts = join ', ', map { "$_ '$options{$_}'" } sort keys %options;
	$node->safe_psql('postgres', qq{
		CREATE SERVER s$n FOREIGN DATA WRAPPER posthog_export OPTIONS (project_id '1', max_retries '1', retry_base_delay '10', $opts);
		CREATE USER MAPPING FOR CURRENT_USER SERVER s$n OPTIONS (api_key '$PhxTest::API_KEY');});
	my ($ret, $out, $err) = $node->psql('postgres', qq{
		SELECT posthog_export.create_export('e$n', 's$n', table_name => 't$n');
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

$node->stop;
done_testing();
