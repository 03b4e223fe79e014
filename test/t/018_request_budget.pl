# PostHog's request budget, shared by the cluster: two exports sharing one
# key pace their requests together (no 429 of their own making, the wait
# visible in progress, runs and status); a 429 PostHog sends anyway is
# waited out by every user of the key and is never a failed attempt; the
# concurrency limit holds across sessions; a backfill does not hold up a
# 5-minute schedule that shares its budget.
use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Run;
use POSIX qw(strftime floor);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);
use Time::Local qw(timegm);
use PhxTest;

my $now = time;
my $floor = floor($now / 300) * 300;
my $hour = floor($now / 3600) * 3600;
my $iso = sub { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0])) };
my $sql_ts = sub { strftime("'%Y-%m-%d %H:%M:%S+00'", gmtime($_[0])) };

# 1,000 events an hour over the last 4 hours
my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 4000, seed => 18, start => $iso->($hour - 3 * 3600), end => $iso->($now));

# PostHog's limits, in the emulator: 3,600 requests an hour per key and one
# query at a time per project; the server options say the same
my $RPH = 3600;
my $emu = start_emulator(data => $data, extra => [ '--requests-per-hour', $RPH, '--max-concurrent', 1 ]);
my $conf = <<'EOC';
shared_preload_libraries = 'posthog_export'
posthog_export.launcher_naptime = 1
posthog_export.retry_interval = 0
posthog_export.max_workers = 3
EOC
my $node = new_node('budget', conf => $conf);
setup_server($node, $emu, options => { page_size => 100, requests_per_hour => $RPH, max_concurrent_requests => 1 });
# the scheduler stays out of the first parts
$node->safe_psql('postgres', q{ALTER SYSTEM SET posthog_export.scheduler = off; SELECT pg_reload_conf();});

# create_export on a server (default "posthog"), with named arguments given as SQL
sub create { my ($name, $server, %o) = @_;
	my $extra = join '', map { qq{, "$_" => $o{$_}} } sort keys %o;
	$node->safe_psql('postgres', qq{SELECT posthog_export.create_export('$name', '} . ($server // 'posthog') . qq{', table_name => '$name'$extra, check_server => false)}); }
sub bg_call { my ($sql) = @_; my ($out, $err) = ('', '');
	my $h = IPC::Run::start([ 'psql', '-X', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $sql ],
		'<', \undef, '>', \$out, '2>', \$err);
	return { h => $h, out => \$out, err => \$err }; }
# the emulator's RFC 3339 request times, as epoch seconds
sub rfc_epoch { my ($t) = @_;
	my ($y, $mo, $d, $h, $mi, $s) = $t =~ /^(\d+)-(\d+)-(\d+)T(\d+):(\d+):([\d.]+)/ or die "bad time $t";
	return timegm(0, $mi, $h, $d, $mo - 1, $y) + $s; }

# --- two exports sharing one key -------------------------------------------------
create('a');
create('b');
emu_reset($emu);
my $range = sprintf("%s, %s", $sql_ts->($hour - 3 * 3600), $sql_ts->($hour - 3600));
my $t0 = time;
my @bg = map { bg_call("CALL posthog_export.run_export('$_', $range)") } qw(a b);
my %seen;
while (grep { $_->{h}->pumpable } @bg)
{
	my $w = $node->safe_psql('postgres', q{SELECT string_agg(DISTINCT coalesce(waiting_for, '-') || '|' || (waiting_until IS NOT NULL), ',') FROM posthog_export.progress});
	$seen{$_}++ for split /,/, $w;
	my $s = $node->safe_psql('postgres', q{SELECT string_agg(export_name || ':' || source_bound || ':' || coalesce(waiting_for, '-'), ',') FROM posthog_export.status WHERE running});
	$seen{"status $_"}++ for split /,/, $s;
	eval { $_->{h}->pump_nb if $_->{h}->pumpable } for @bg;
	usleep(100_000);
	last if time - $t0 > 300;
}
$_->{h}->finish for @bg;
my $elapsed = time - $t0;
is(join('', map { ${ $_->{err} } } @bg), '', 'both runs finished without an error');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE status = 'completed'}), 4, 'each exported its two hours');
for my $e (qw(a b))
{
	my ($exp, $missing, $extra) = compare_with_source($node, $emu, table => "posthog_exports.$e",
		start => $iso->($hour - 3 * 3600), end => $iso->($hour - 3600));
	is("$missing/$extra", '0/0', "export $e equals the source ($exp rows)");
}
my $reqs = emu_requests($emu);
my @throttled = grep { $_->{status} == 429 } @$reqs;
is(scalar(@throttled), 0, 'PostHog never throttled them: ' . scalar(@$reqs) . ' requests, none past the budget or the concurrency limit');
# the budget lets 10 go at once (RPH / 20, at most 10), then refills at (RPH - 10) an hour
my @t = sort { $a <=> $b } map { rfc_epoch($_->{time}) } @$reqs;
my $worst = 0;
for my $i (0 .. $#t)
{
	for my $j ($i .. $#t)
	{
		my $allowed = 10 + ($t[$j] - $t[$i]) * ($RPH - 10) / 3600 + 1;
		$worst = ($j - $i + 1) - $allowed if ($j - $i + 1) - $allowed > $worst;
	}
}
cmp_ok($worst, '<=', 0, sprintf('the requests were paced: never more than 10 + the hourly rate in any stretch (%d requests in %.1f s)', scalar(@t), $elapsed));
cmp_ok(scalar(@t), '>', 20, 'enough requests for the budget to bind');
ok($seen{"PostHog's request budget|true"}, "progress showed a run waiting for PostHog's request budget, with until when")
	or diag explain \%seen;
ok((grep { /^status \w:true:/ } keys %seen), 'status showed a running export as source-bound') or diag explain \%seen;
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE waited > '0'}), 4, 'runs.waited records the waits of every run');
is($node->safe_psql('postgres', q{SELECT string_agg(source_bound::text, ',' ORDER BY export_name) FROM posthog_export.status WHERE export_name IN ('a', 'b')}),
	'true,true', 'status: both exports are source-bound (their last runs waited most of the time)');

# --- a 429 from PostHog: everyone with the key waits, nobody fails ----------------
# a second server over the same URL, project and key shares the budget; no retry allowed
$node->safe_psql('postgres', qq{
	CREATE SERVER p2 FOREIGN DATA WRAPPER posthog_export OPTIONS (url '$emu->{url}', project_id '1', allow_http 'true',
		allow_loopback 'true', page_size '100', max_retries '0', requests_per_hour '$RPH', max_concurrent_requests '1');
	CREATE USER MAPPING FOR CURRENT_USER SERVER p2 OPTIONS (api_key '$PhxTest::API_KEY');});
create('c', 'p2');
emu_reset($emu);
emu_faults($emu, { on_request => 1, status => 429, retry_after => 3 });
my $t1 = time;
psql_ok($node, "CALL posthog_export.run_export('c', " . $sql_ts->($hour - 3600) . ', ' . $sql_ts->($hour) . ')',
	'a run throttled by PostHog succeeds with max_retries 0: a 429 is a wait, not a failed attempt');
$reqs = emu_requests($emu);
is($reqs->[0]{status}, 429, 'the first request was throttled');
cmp_ok(rfc_epoch($reqs->[1]{time}) - rfc_epoch($reqs->[0]{time}), '>=', 2.9, 'the next one waited the 3 seconds PostHog asked for');
is($node->safe_psql('postgres', q{SELECT status || ' ' || attempts || ' ' || (waited >= '2.9 s') FROM posthog_export.runs WHERE export_name = 'c'}),
	'completed 1 true', 'one attempt, completed, and the wait is in runs.waited');

# while one user of the key is told to wait, the others wait too
emu_reset($emu);
emu_faults($emu, { on_request => 1, status => 429, retry_after => 4 });
my $bc = bg_call("CALL posthog_export.run_export('c', " . $sql_ts->($hour - 7200) . ', ' . $sql_ts->($hour - 3600) . ')');
ok(wait_for(sub { scalar(@{ emu_requests($emu) }) >= 1 }, 30), 'c got its 429');
my $ta = time;
$node->safe_psql('postgres', "CALL posthog_export.run_export('a', " . $sql_ts->($hour - 3600) . ', ' . $sql_ts->($hour) . ')');
cmp_ok(time - $ta, '>=', 2.5, sprintf('a, on another server with the same key, waited for the 429 too (%.1f s)', time - $ta));
$bc->{h}->finish;
is(${ $bc->{err} }, '', 'and c finished');
is(scalar(grep { $_->{status} == 429 } @{ emu_requests($emu) }), 1, 'no second 429');

# --- cancel during a wait ---------------------------------------------------------
emu_reset($emu);
emu_faults($emu, { on_request => 1, status => 429, retry_after => 600 });
my $bd = bg_call("CALL posthog_export.run_export('b', " . $sql_ts->($hour - 3600) . ', ' . $sql_ts->($hour) . ')');
ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.progress WHERE waiting_for LIKE '%429%' AND waiting_until > now() + '500 s'}) == 1 }, 30),
	'progress shows the wait for the 429 and until when');
is($node->safe_psql('postgres', q{SELECT waiting_for FROM posthog_export.status WHERE export_name = 'b'}), "PostHog's rate limit (HTTP 429)", 'so does status');
$node->safe_psql('postgres', q{SELECT pg_cancel_backend(pid) FROM posthog_export.progress});
$bd->{h}->finish;
like(${ $bd->{err} }, qr/canceling statement due to user request/, 'the wait is cancellable');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.progress}), 0, 'and leaves nothing in progress');

# --- a backfill and a 5-minute schedule sharing the budget ------------------------
# restart: a fresh budget (the 429 above still blocks it for minutes)
$node->restart;
emu_reset($emu);
$node->safe_psql('postgres', q{SELECT posthog_export.drop_export(name) FROM posthog_export.exports});
create('bf', undef, every => q{'5 minutes'}, delay => q{'0'});
create('sched', undef, every => q{'5 minutes'}, delay => q{'0'});
$node->safe_psql('postgres', q{SELECT posthog_export.pause('sched')});
$node->safe_psql('postgres', "SELECT posthog_export.backfill('bf', " . $sql_ts->($hour - 3 * 3600) . ', ' . $sql_ts->($hour) . ')');
$node->safe_psql('postgres', q{ALTER SYSTEM SET posthog_export.scheduler = on; SELECT pg_reload_conf();});
# the backfill runs (36 intervals, 1 request each, about one a second once the burst is spent)
ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE export_name = 'bf' AND status = 'completed'}) >= 12 }, 120),
	'the backfill is under way');
# now three intervals of the schedule fall due at once
$node->safe_psql('postgres', "UPDATE posthog_export.exports SET next_interval_start = " . $sql_ts->($floor - 900) . " WHERE name = 'sched'");
$node->safe_psql('postgres', q{SELECT posthog_export.unpause('sched')});
my $ts = time;
ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE export_name = 'sched' AND status = 'completed'}) >= 3 }, 120),
	'the schedule caught up');
my $sched_secs = time - $ts;
my $bf_left = $node->safe_psql('postgres', q{SELECT 36 - count(*) FROM posthog_export.runs WHERE export_name = 'bf' AND status = 'completed'});
cmp_ok($sched_secs, '<', 12, sprintf('its 3 intervals took %.1f s, while the backfill had %d intervals to go', $sched_secs, $bf_left));
cmp_ok($bf_left, '>', 3, 'the backfill was still going');
ok(wait_for(sub { $node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE export_name = 'bf' AND status = 'completed'}) == 36 }, 180),
	'the backfill finished too');
is(scalar(grep { $_->{status} == 429 } @{ emu_requests($emu) }), 0, 'without a 429');
my ($exp, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.bf',
	start => $iso->($hour - 3 * 3600), end => $iso->($hour));
is("$missing/$extra", '0/0', "the backfill equals the source ($exp rows)");

$node->stop;
$emu->{handle}->kill_kill;
done_testing();
