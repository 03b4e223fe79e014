# PhxTest: shared helpers of the TAP suites.
#
# Starts the bundled PostHog emulator on a free port, a PostgreSQL cluster
# with the extension installed and a server/user mapping pointing at the
# emulator, and compares a destination table with the rows the source data
# says it must hold (test/expected_rows.py), column by column.
package PhxTest;

use strict;
use warnings;

use Exporter 'import';
use File::Temp qw(tempdir);
use HTTP::Tiny;
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(usleep);

our @EXPORT = qw(
  start_emulator emu_call emu_faults emu_reset emu_requests emu_reload
  new_node setup_server generate_data append_events
  compare_with_source psql_ok psql_fails wait_for
);

our $API_KEY = 'phx_tap_secret_key_0123456789';
my $repo = $ENV{TESTDIR} // '.';
my $json = JSON::PP->new->utf8->canonical;

# Every emulator a test starts is stopped when the test script ends, even
# when it dies: a leftover emulator keeps its port, its memory and any file
# descriptor it inherited (such as that of an flock held around the run).
my @emulators;
END
{
	local $?;
	eval { $_->kill_kill } for @emulators;
}

# Starts the emulator; returns a hash with port, url, data dir and handle.
sub start_emulator
{
	my (%opt) = @_;
	my $data = $opt{data} // tempdir(CLEANUP => 1);
	my $portfile = "$data/.port";
	unlink $portfile;
	my @cmd = (
		'python3', "$repo/test/emulator/server.py",
		'--data' => $data,
		'--port' => 0,
		'--port-file' => $portfile,
		'--api-key' => $API_KEY,
		'--project-id' => $opt{project_id} // 1,
		'--project-timezone' => $opt{timezone} // 'UTC');
	push @cmd, '--forbidden-key', $opt{forbidden_key} if $opt{forbidden_key};
	push @cmd, '--tls-cert', $opt{tls_cert}, '--tls-key', $opt{tls_key} if $opt{tls_cert};
	push @cmd, '--tls-client-ca', $opt{tls_client_ca} if $opt{tls_client_ca};
	push @cmd, @{ $opt{extra} } if $opt{extra};
	my $log = "$PostgreSQL::Test::Utils::tmp_check/emulator_" . ($opt{name} // 'main') . ".log";
	my $h = IPC::Run::start(\@cmd, '<', \undef, '>>', $log, '2>>', $log);
	push @emulators, $h;
	my $deadline = time + 60;
	until (-s $portfile)
	{
		die "emulator did not start, see $log" if time > $deadline || !$h->pumpable;
		usleep(100_000);
	}
	my $port = PostgreSQL::Test::Utils::slurp_file($portfile);
	$port =~ s/\s+//g;
	my $scheme = $opt{tls_cert} ? 'https' : 'http';
	return {
		handle => $h,
		port => $port,
		data => $data,
		log => $log,
		url => "$scheme://" . ($opt{host} // '127.0.0.1') . ":$port",
		control => "http://127.0.0.1:$port",
	};
}

sub emu_call
{
	my ($emu, $method, $path, $body) = @_;
	my $scheme_url = $emu->{url} =~ /^https/ ? $emu->{url} : $emu->{control};
	my $http = HTTP::Tiny->new(timeout => 30, verify_SSL => 0);
	my $res = $http->request($method, "$scheme_url/_emulator/$path",
		defined $body ? { content => $json->encode($body), headers => { 'content-type' => 'application/json' } } : {});
	die "emulator $method $path: $res->{status} $res->{content}" unless $res->{success};
	return $res->{content} ne '' ? $json->decode($res->{content}) : undef;
}

sub emu_faults { my ($emu, @faults) = @_; emu_call($emu, 'POST', 'faults', { faults => \@faults }); }
sub emu_reset { emu_call($_[0], 'POST', 'reset'); }
sub emu_reload { emu_call($_[0], 'POST', 'reload'); }
sub emu_requests { return emu_call($_[0], 'GET', 'requests'); }

# Writes sample data with the bundled generator.
sub generate_data
{
	my ($dir, %opt) = @_;
	my @cmd = ('python3', "$repo/test/generate_data.py", '--out', $dir,
		'--events', $opt{events} // 2000, '--seed', $opt{seed} // 42,
		'--start', $opt{start}, '--end', $opt{end});
	push @cmd, '--persons', $opt{persons} if defined $opt{persons};
	push @cmd, '--sessions', $opt{sessions} if defined $opt{sessions};
	my ($out, $err);
	IPC::Run::run(\@cmd, '>', \$out, '2>', \$err) or die "generate_data failed: $err";
	return;
}

# Appends events (hash refs, encoded as given) to events.ndjson.
sub append_events
{
	my ($dir, @events) = @_;
	open my $fh, '>>', "$dir/events.ndjson" or die $!;
	print $fh (ref $_ ? $json->encode($_) : $_), "\n" for @events;
	close $fh;
	return;
}

sub new_node
{
	my ($name, %opt) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init(allows_streaming => $opt{allows_streaming} // 0);
	$node->append_conf('postgresql.conf', $opt{conf}) if $opt{conf};
	$node->append_conf('postgresql.conf', "log_min_messages = log\n");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION posthog_export');
	return $node;
}

# CREATE SERVER + USER MAPPING for the emulator.
sub setup_server
{
	my ($node, $emu, %opt) = @_;
	my $server = $opt{server} // 'posthog';
	my %options = (
		url => $emu->{url},
		project_id => 1,
		allow_http => 'true',
		allow_loopback => 'true',
		retry_base_delay => 50,
		# PostHog's budget (120 requests/hour) would make every test wait; the
		# emulator has none unless a test gives it one, and tests of the budget
		# set their own
		requests_per_hour => 1000000,
		%{ $opt{options} // {} });
	my $opts = join ', ', map { "$_ '$options{$_}'" } sort keys %options;
	$node->safe_psql('postgres', qq{
		CREATE SERVER $server FOREIGN DATA WRAPPER posthog_export OPTIONS ($opts);
		CREATE USER MAPPING FOR } . ($opt{user} // 'CURRENT_USER') . qq{ SERVER $server OPTIONS (api_key '} . ($opt{api_key} // $API_KEY) . q{');});
	return $server;
}

sub psql_ok
{
	my ($node, $sql, $name) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 1);
	is($ret, 0, $name) or diag("stderr: $err");
	return $out;
}

# Runs SQL that must fail; returns stderr for the caller to inspect.
sub psql_fails
{
	my ($node, $sql, $name, $user) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 1);
	isnt($ret, 0, $name);
	return $err;
}

sub wait_for
{
	my ($cond, $timeout) = @_;
	my $deadline = time + ($timeout // 60);
	while (time < $deadline)
	{
		return 1 if $cond->();
		usleep(100_000);
	}
	return 0;
}

my %model_columns = (
	events => [qw(uuid:text event:text properties:jsonb elements:jsonb set:jsonb set_once:jsonb
		distinct_id:text team_id:int ip:text site_url:text timestamp:timestamptz)],
	persons => [qw(team_id:int distinct_id:text person_id:text properties:jsonb
		person_distinct_id_version:bigint person_version:bigint created_at:timestamptz is_deleted:bool)],
	sessions => [qw(team_id:bigint session_id:text distinct_id:text start_timestamp:timestamptz
		end_timestamp:timestamptz urls:text[] num_uniq_urls:bigint entry_current_url:text
		entry_pathname:text entry_hostname:text end_current_url:text end_pathname:text
		end_hostname:text entry_referring_domain:text entry_utm_source:text entry_utm_campaign:text
		entry_utm_medium:text entry_utm_term:text entry_utm_content:text entry_gclid:text
		entry_gad_source:text entry_fbclid:text pageview_count:bigint autocapture_count:bigint
		screen_count:bigint channel_type:text session_duration:bigint is_bounce:bool
		last_external_click_url:text vitals_lcp:float8 session_id_v7:text max_inserted_at:timestamptz
		entry_referrer:text entry_gclsrc:text entry_dclid:text entry_gbraid:text entry_wbraid:text
		entry_msclkid:text entry_twclid:text entry_li_fat_id:text entry_mc_cid:text entry_igshid:text
		entry_ttclid:text entry__kx:text entry_irclid:text duration:bigint
		page_screen_autocapture_count_up_to:bigint exit_current_url:text exit_pathname:text)],
);

# Compares a destination table with what the source files say it must
# hold: loads the oracle's CSV (test/expected_rows.py) and diffs every
# column both ways (EXCEPT ALL, so duplicates count).  Options: model,
# table, start/end (RFC 3339), lookback_hours, include/exclude, dedupe,
# visible_at (RFC 3339: rows whose _visible_at is later are left out),
# columns (a subset to compare).  Returns (expected, missing, extra).
sub compare_with_source
{
	my ($node, $emu, %opt) = @_;
	my $model = $opt{model} // 'events';
	my $table = $opt{table} // "posthog_exports.$model";
	my @cmd = ('python3', "$repo/test/expected_rows.py", '--data', $emu->{data}, '--model', $model);
	push @cmd, '--start', $opt{start} if $opt{start};
	push @cmd, '--end', $opt{end} if $opt{end};
	push @cmd, '--lookback-hours', $opt{lookback_hours} if defined $opt{lookback_hours};
	push @cmd, '--include', @{ $opt{include} } if $opt{include};
	push @cmd, '--exclude', @{ $opt{exclude} } if $opt{exclude};
	push @cmd, '--dedupe' if $opt{dedupe};
	push @cmd, '--visible-at', $opt{visible_at} if $opt{visible_at};
	my $csv = "$PostgreSQL::Test::Utils::tmp_check/expected_$$.csv";
	my $err;
	IPC::Run::run(\@cmd, '>', $csv, '2>', \$err) or die "expected_rows failed: $err";
	my @defs = map { [ split /:/ ] } @{ $model_columns{$model} };
	my $coldefs = join ', ', map { "\"$_->[0]\" $_->[1]" } @defs;
	my @compare = $opt{columns} ? @{ $opt{columns} } : map { $_->[0] } @defs;
	my $cols = join ', ', map { "\"$_\"" } @compare;
	my $res = $node->safe_psql('postgres', qq{
		DROP TABLE IF EXISTS pg_temp.expected;
		CREATE TEMP TABLE expected ($coldefs);
		COPY expected FROM '$csv' WITH (FORMAT csv, HEADER true, NULL '\\N');
		SELECT (SELECT count(*) FROM expected) || ' ' ||
		       (SELECT count(*) FROM (SELECT $cols FROM expected EXCEPT ALL
		                              SELECT $cols FROM $table) m) || ' ' ||
		       (SELECT count(*) FROM (SELECT $cols FROM $table EXCEPT ALL
		                              SELECT $cols FROM expected) x);});
	unlink $csv;
	return split / /, $res;
}

1;
