# Checks up front and messages a DBA can act on (issue 14): check_server()
# and create_export's check (one query: 404 names the URL, 401 the key, 403
# the scope or project, a refused connection the url); a destination column
# that cannot take the model's values and a schema without CREATE are refused
# at create_export with a clean message; a non-UTF8 database is refused at
# CREATE EXTENSION (and at the update from 0.1.0); the NOTICEs of a new export
# (nothing runs it by itself unless a pg_cron job calls run_due; earlier data
# needs a backfill); an answer that is not PostHog's (a proxy's HTML page)
# says so with its content type and first bytes; attempt counts in messages
# and runs.attempts agree.
use strict;
use warnings;

use File::Temp qw(tempdir);
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 300, seed => 22,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my $emu = start_emulator(data => $data, forbidden_key => 'phx_forbidden');
# pg_cron preloaded, posthog_export not: only a pg_cron job can run exports by themselves
my $node = new_node('checks', conf => "shared_preload_libraries = 'pg_cron'\ncron.database_name = 'postgres'\n");
setup_server($node, $emu, options => { max_retries => 1 });
my $port = $emu->{port};

sub q_err
{
	my ($sql, $name) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql);
	isnt($ret, 0, $name);
	return $err;
}

# --- check_server: one query, what answered -------------------------------------
emu_reset($emu);
my $report = $node->safe_psql('postgres', q{SELECT posthog_export.check_server('posthog')});
like($report, qr/PostHog server "posthog" answered a query of project 1 at http:\/\/127\.0\.0\.1:$port\/api\/projects\/1\/query\/ with this API key/,
	'check_server reports what answered');
my $reqs = emu_requests($emu);
is(scalar(@$reqs), 1, 'check_server makes one request');
is($reqs->[0]{status}, 200, 'which PostHog answers');
is($reqs->[0]{auth_scheme}, 'Bearer', 'with the key, as every query');
like($reqs->[0]{query}, qr/^SELECT 1\b/, 'a cheap query');

# --- each failure, precisely -----------------------------------------------------
$node->safe_psql('postgres', q{ALTER USER MAPPING FOR CURRENT_USER SERVER posthog OPTIONS (SET api_key 'phx_wrong')});
my $err = q_err(q{SELECT posthog_export.check_server('posthog')}, 'a wrong key fails the check');
like($err, qr/rejected the API key \(HTTP 401\)(?s:.*)HINT:  The key is not valid/, '401: the key is not valid');
unlike($err, qr/phx_wrong/, '401: the key is not in the error');

$node->safe_psql('postgres', q{ALTER USER MAPPING FOR CURRENT_USER SERVER posthog OPTIONS (SET api_key 'phx_forbidden')});
$err = q_err(q{SELECT posthog_export.check_server('posthog')}, 'a key without access fails the check');
like($err, qr/rejected the API key \(HTTP 403\)(?s:.*)HINT:  The key was accepted but may not query project 1: it needs the query:read scope/,
	'403: the scope or the project');
$node->safe_psql('postgres', "ALTER USER MAPPING FOR CURRENT_USER SERVER posthog OPTIONS (SET api_key '$PhxTest::API_KEY')");

$node->safe_psql('postgres', q{ALTER SERVER posthog OPTIONS (SET project_id '999')});
$err = q_err(q{SELECT posthog_export.check_server('posthog')}, 'a wrong project fails the check');
like($err, qr/PostHog server "posthog" has no query API at http:\/\/127\.0\.0\.1:$port\/api\/projects\/999\/query\/ \(HTTP 404\)/,
	'404: names the URL requested');
like($err, qr/HINT:  Check the server options url \(the base URL, as 'https:\/\/us\.posthog\.com'\) and project_id \(999\)/,
	'404: hints at url and project_id');
unlike($err, qr/\Q$PhxTest::API_KEY\E/, '404: the key is not in the error');
$node->safe_psql('postgres', q{ALTER SERVER posthog OPTIONS (SET project_id '1')});

$err = q_err(q{ALTER SERVER posthog OPTIONS (SET url 'http://127.0.0.1:9/api/projects/1/query/')},
	'a url with the API path is refused');
like($err, qr/invalid value for option "url"(?s:.*)HINT:  Give the base URL/, 'with a hint to give the base URL');

$node->safe_psql('postgres', q{CREATE SERVER down FOREIGN DATA WRAPPER posthog_export
	OPTIONS (url 'http://127.0.0.1:9', project_id '1', allow_http 'true', allow_loopback 'true');
	CREATE USER MAPPING FOR CURRENT_USER SERVER down OPTIONS (api_key 'phx_down');});
$err = q_err(q{SELECT posthog_export.check_server('down')}, 'a server nothing listens on fails the check');
like($err, qr/could not connect to PostHog server "down" \(1 request\)(?s:.*)HINT:  Check the server option url \(http:\/\/127\.0\.0\.1:9\)/,
	'network: could not connect, check the url');
unlike($err, qr/transient/, 'network: a refused connection is not called transient');

# --- create_export checks the server by default -----------------------------------
$err = q_err(q{SELECT posthog_export.create_export('on_down', 'down', table_name => 'on_down')},
	'create_export on a server that does not answer fails');
like($err, qr/could not connect to PostHog server "down"/, 'with the check\'s error');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.exports WHERE name = 'on_down'}), 0, 'and creates no export');
is($node->safe_psql('postgres', q{SELECT to_regclass('posthog_exports.on_down') IS NULL}), 't', 'nor its table');
my ($ret, $out, $notices) = $node->psql('postgres',
	q{SELECT posthog_export.create_export('skip_check', 'down', table_name => 'skip_check', check_server => false)});
is($ret, 0, 'check_server => false skips the check');

# --- NOTICEs of a new export -------------------------------------------------------
like($notices, qr/NOTICE:  nothing will run export "skip_check" by itself\n.*DETAIL:  posthog_export is not in shared_preload_libraries, and no pg_cron job/,
	'NOTICE: nothing runs the export without the preloaded library or a pg_cron job');
like($notices, qr/NOTICE:  export "skip_check" starts with the interval at .*; earlier data needs a backfill\n.*HINT:  Queue the past with: SELECT posthog_export\.backfill\('skip_check', start_at => NULL\)/,
	'NOTICE: earlier data needs a backfill');
emu_reset($emu);
$node->safe_psql('postgres', q{CREATE EXTENSION pg_cron;
	SELECT cron.schedule('posthog', '0 0 1 1 *', 'CALL posthog_export.run_due()');});
($ret, $out, $notices) = $node->psql('postgres',
	q{SELECT posthog_export.create_export('checked', 'posthog', table_name => 'checked')});
is($ret, 0, 'create_export with the check against PostHog succeeds');
is(scalar(@{ emu_requests($emu) }), 1, 'after one request');
unlike($notices, qr/nothing will run/, 'no NOTICE when a pg_cron job calls run_due');
like($notices, qr/earlier data needs a backfill/, 'the backfill NOTICE stays');
$node->safe_psql('postgres', q{SELECT cron.unschedule('posthog')});

# --- destination columns that cannot take the model's values --------------------------
$node->safe_psql('postgres', q{CREATE TABLE posthog_exports.int_uuid ("uuid" integer, event text)});
$err = q_err(q{\set VERBOSITY verbose
	SELECT posthog_export.create_export('int_uuid', 'posthog', table_name => 'int_uuid', check_server => false)},
	'an integer uuid column is refused at create_export');
like($err, qr/ERROR:  42804: column "uuid" of table posthog_exports\.int_uuid is of type integer, which cannot take the events model's values/,
	'naming the column and its type (42804)');
like($err, qr/DETAIL:  The events model writes text values into column "uuid"; the expected type is varchar\(200\)/,
	'and the expected type');
$node->safe_psql('postgres', q{CREATE TABLE posthog_exports.int_props ("uuid" text, properties integer)});
$err = q_err(q{SELECT posthog_export.create_export('int_props', 'posthog', table_name => 'int_props', check_server => false)},
	'an integer properties column is refused');
like($err, qr/column "properties" of table posthog_exports\.int_props is of type integer(?s:.*)expected type is jsonb/, 'jsonb into integer');
$node->safe_psql('postgres', q{CREATE TABLE posthog_exports.typed ("uuid" uuid, properties json, team_id bigint, "timestamp" timestamp, ip inet)});
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT posthog_export.create_export('typed', 'posthog', table_name => 'typed', check_server => false)});
is($ret, 0, 'uuid, json, bigint, timestamp and inet columns take the values') or diag $err;

# --- a schema without CREATE: the same clean message as the other privileges ------------
$node->safe_psql('postgres', q{CREATE ROLE exporter LOGIN; CREATE SCHEMA locked;
	GRANT USAGE ON SCHEMA locked TO exporter; GRANT USAGE ON FOREIGN SERVER posthog TO exporter;});
$node->safe_psql('postgres', "CREATE USER MAPPING FOR exporter SERVER posthog OPTIONS (api_key '$PhxTest::API_KEY')");
$err = q_err(q{SET ROLE exporter;
	SELECT posthog_export.create_export('locked', 'posthog', schema_name => 'locked', table_name => 'ev', check_server => false)},
	'create_export in a schema without CREATE fails');
like($err, qr/ERROR:  permission denied for schema locked\nDETAIL:  Role "exporter" needs CREATE on the schema to create the table locked\.ev\.\nHINT:  Grant it with GRANT USAGE, CREATE ON SCHEMA locked TO exporter/,
	'saying which privilege is missing');
unlike($err, qr/LINE 1|CREATE TABLE IF NOT EXISTS/, 'without the internal SQL');

# --- an answer that is not PostHog's --------------------------------------------------
my $page = "<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head><body>\n"
  . ('<p>the proxy could not reach the upstream server</p>' x 50) . "TAIL_OF_THE_PAGE</body></html>\n";
my $n = 0;
sub run_fault
{
	my (%f) = @_;
	$n++;
	emu_reset($emu);
	emu_faults($emu, { every => JSON::PP::true, body_b64 => encode_base64($page, ''), %f });
	$node->safe_psql('postgres', "SELECT posthog_export.create_export('html$n', 'posthog', table_name => 'html$n', check_server => false)");
	my ($r, $o, $e) = $node->psql('postgres', "CALL posthog_export.run_export('html$n', '2026-11-20 00:00+00', '2026-11-20 01:00+00')");
	return $e;
}
$err = run_fault(body_status => 502, content_type => 'text/html; charset=utf-8');
like($err, qr/failed after 2 requests: the last answer \(HTTP 502\) was not a PostHog API response/, 'a proxy\'s 502 page: not a PostHog API response');
like($err, qr/DETAIL:  The answer \(HTTP 502, Content-Type text\/html; charset=utf-8, \d+ bytes\) is not a PostHog API response; it begins: "<!DOCTYPE html> <html><head><title>502 Bad Gateway/,
	'with its content type and first bytes');
unlike($err, qr/TAIL_OF_THE_PAGE|could not reach the upstream server<\/p> <p>the proxy could not reach the upstream server<\/p> <p>/,
	'not the whole page');
unlike($err, qr/transient/, 'and not called transient');
is($node->safe_psql('postgres', "SELECT attempts || ' ' || status FROM posthog_export.runs WHERE export_name = 'html$n'"), '1 failed',
	'runs.attempts counts the run (its message counts requests)');
$node->psql('postgres', "CALL posthog_export.run_export('html$n', '2026-11-20 00:00+00', '2026-11-20 01:00+00')");
is($node->safe_psql('postgres', "SELECT attempts FROM posthog_export.runs WHERE export_name = 'html$n'"), 2,
	'a second run is attempt 2');

$err = run_fault(body_status => 200, content_type => 'text/html');
like($err, qr/the last answer \(HTTP 200\) was not a PostHog API response(?s:.*)Content-Type text\/html,/, 'a 200 HTML page: the same');

$err = run_fault(body_status => 404, content_type => 'text/html');
like($err, qr/has no query API at http:\/\/127\.0\.0\.1:$port\/api\/projects\/1\/query\/ \(HTTP 404\)(?s:.*)DETAIL:  The answer \(HTTP 404, Content-Type text\/html/,
	'a web site\'s 404 page: names the URL, says it is not PostHog\'s');

$err = run_fault(body_status => 407, content_type => 'text/plain');
like($err, qr/the answer of PostHog server "posthog" \(HTTP 407\) is not a PostHog API response(?s:.*)HINT:  Something other than PostHog answered/,
	'another status from something else: not a PostHog API response');

# --- a non-UTF8 database is refused at CREATE EXTENSION ---------------------------------
$node->safe_psql('postgres', q{CREATE DATABASE latin ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0});
($ret, $out, $err) = $node->psql('latin', 'CREATE EXTENSION posthog_export');
isnt($ret, 0, 'CREATE EXTENSION in a LATIN1 database fails');
like($err, qr/ERROR:  posthog_export needs a database with UTF8 encoding\nDETAIL:  This database uses LATIN1\./, 'saying why');
is($node->safe_psql('latin', q{SELECT count(*) FROM pg_extension WHERE extname = 'posthog_export'}), 0, 'nothing is installed');
$node->safe_psql('latin', q{CREATE EXTENSION posthog_export VERSION '0.1.0'});
($ret, $out, $err) = $node->psql('latin', 'ALTER EXTENSION posthog_export UPDATE');
like($err, qr/posthog_export needs a database with UTF8 encoding/, 'the update to 0.2.0 refuses it too');

$node->stop;
done_testing();
