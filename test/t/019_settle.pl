# Late events, exactly once: rows that become visible after their interval
# was exported land through the settle pass, once, in append and in merge
# mode; a row later than settle_window is reported (a WARNING, runs and
# status) and not written; an interval whose count matches costs one count
# request and no re-read; settle_window '0' sends nothing; and the
# scheduler wakes for the checks by itself.
#
# Rows are made late with the emulator's "_visible_at": hidden until its
# clock (set with /_emulator/config) reaches that time.  The settle window
# runs on the database's real clock, from when each interval was exported.
use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep time);
use PhxTest;

my $u = sub { sprintf '00000000-0000-4000-9000-%012d', $_[0] };
my $event = sub {
	my ($n, $created, %o) = @_;
	return { uuid => $u->($n), event => $o{event} // 'late', properties => { n => $n },
		timestamp => $o{timestamp} // $created, created_at => $created, team_id => 1,
		distinct_id => "late-$n", elements_chain => '',
		($o{visible} ? (_visible_at => $o{visible}) : ()) };
};
# the emulator's clock: before, during and after the late rows
my $SOON = '2030-01-01T00:00:00Z';     # rows visible late, within the window
my $LATER = '2040-01-01T00:00:00Z';    # rows visible after the window
my $set_clock = sub { emu_call($_[0], 'POST', 'config', { clock => $_[1] }); };

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 400, seed => 19,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T02:00:00Z');
append_events($data,
	# late within the window: three in the first hour, two in the second
	$event->(1, '2026-11-20T00:10:00Z', visible => $SOON),
	$event->(2, '2026-11-20T00:20:00Z', visible => $SOON),
	$event->(3, '2026-11-20T00:59:59.999999Z', visible => $SOON),
	$event->(4, '2026-11-20T01:00:00Z', visible => $SOON),
	$event->(5, '2026-11-20T01:30:00Z', visible => $SOON),
	# late and excluded by one export's filter; late and older than the lookback
	$event->(6, '2026-11-20T01:40:00Z', visible => $SOON, event => '$feature_flag_called'),
	$event->(7, '2026-11-20T00:30:00Z', visible => $SOON, timestamp => '2026-11-01T00:00:00Z'),
	# visible all along, but not exported: the counts must leave them out too
	$event->(8, '2026-11-20T00:40:00Z', timestamp => '2026-11-01T00:00:00Z'),
	$event->(9, '2026-11-20T01:50:00Z', event => '$feature_flag_called'),
	# later than the window: two in the second hour, one in the first
	$event->(10, '2026-11-20T01:10:00Z', visible => $LATER),
	$event->(11, '2026-11-20T01:20:00Z', visible => $LATER),
	$event->(12, '2026-11-20T00:50:00Z', visible => $LATER),
	# a third hour nobody exports
	$event->(13, '2026-11-20T02:10:00Z', visible => $SOON));

my $emu = start_emulator(data => $data);
my $node = new_node('settle');
setup_server($node, $emu, options => { page_size => 100 });
my $q = sub { $node->safe_psql('postgres', $_[0]) };

# --- the settings -------------------------------------------------------------
psql_ok($node, q{SELECT posthog_export.create_export('ev_append', 'posthog', table_name => 'ev_append',
	exclude_events => ARRAY['$feature_flag_called'], settle_window => '40 seconds', settle_every => '2 seconds', check_server => false)},
	'an append export that settles for 40 seconds, every 2 seconds');
psql_ok($node, q{SELECT posthog_export.create_export('ev_merge', 'posthog', table_name => 'ev_merge', mode => 'merge',
	settle_window => '40 seconds', settle_every => '2 seconds', check_server => false)}, 'and one in merge mode');
psql_ok($node, q{SELECT posthog_export.create_export('ev_off', 'posthog', table_name => 'ev_off', settle_window => '0', check_server => false)},
	'and one that does not settle');
psql_ok($node, q{SELECT posthog_export.create_export('ev_default', 'posthog', table_name => 'ev_default', check_server => false)},
	'and one with the defaults');
is($q->(q{SELECT string_agg(format('%s %s %s %s', name, settle_window, settle_every, next_settle_at IS NULL), ', ' ORDER BY name)
	FROM posthog_export.exports}),
	'ev_append 00:00:40 00:00:02 t, ev_default 1 day 01:00:00 t, ev_merge 00:00:40 00:00:02 t, ev_off 00:00:00 01:00:00 t',
	'the settle settings are stored; no check is pending before an interval is exported');
$q->(q{SELECT posthog_export.drop_export('ev_default')});

# --- export two hours while the late rows are hidden ----------------------------
for my $name (qw(ev_append ev_merge ev_off))
{
	psql_ok($node, qq{CALL posthog_export.run_export('$name', '2026-11-20 00:00+00', '2026-11-20 02:00+00')},
		"$name exports two hours");
}
my %cmp = (start => '2026-11-20T00:00:00Z', end => '2026-11-20T02:00:00Z');
my %append = (%cmp, table => 'posthog_exports.ev_append', exclude => ['$feature_flag_called']);
my %merge = (%cmp, table => 'posthog_exports.ev_merge', dedupe => 1);
my ($e, $m, $x) = compare_with_source($node, $emu, %append, visible_at => '2027-01-01T00:00:00Z');
is("$m/$x", '0/0', "append: the rows visible at the export, all of them ($e)");
($e, $m, $x) = compare_with_source($node, $emu, %merge, visible_at => '2027-01-01T00:00:00Z');
is("$m/$x", '0/0', "merge: the same ($e)");
is($q->(q{SELECT string_agg(format('%s %s', name, next_settle_at IS NOT NULL AND next_settle_at <= now() + interval '2 seconds'), ', ' ORDER BY name)
	FROM posthog_export.exports}), 'ev_append t, ev_merge t, ev_off f',
	'a completed interval schedules its first check, settle_every after it finished');
is($q->(q{SELECT string_agg(format('%s %s', s.export_name, COALESCE(s.next_run = e.next_settle_at, false)), ', ' ORDER BY s.export_name)
	FROM posthog_export.status s JOIN posthog_export.exports e ON e.name = s.export_name}),
	'ev_append t, ev_merge t, ev_off f', 'status.next_run is the check, earlier than the next interval');
is($q->(q{SELECT count(*) FROM posthog_export.runs WHERE settled_at IS NOT NULL OR source_rows IS NOT NULL OR late_rows <> 0 OR late_missed <> 0}),
	'0', 'no run has been checked yet');

# requests of one run_due (with faults, if given), by export: {settle => n, page => n}; and its stderr
my $run_due = sub {
	my ($name, @faults) = @_;
	emu_reset($emu);
	emu_faults($emu, @faults) if @faults;
	my ($ret, $out, $err) = $node->psql('postgres', 'CALL posthog_export.run_due()');
	is($ret, 0, "run_due: $name") or diag($err);
	my %req;
	for my $r (@{ emu_requests($emu) })
	{
		my ($exp, $kind) = ($r->{name} // '') =~ /^posthog_export (\S+) (settle|page)/ or next;
		$req{$exp}{$kind}++;
	}
	return (\%req, $err);
};
# waits until every run of the settling exports has a check due
my $wait_check = sub {
	my $wait = $q->(q{SELECT COALESCE(extract(epoch FROM max(next_settle_at) - clock_timestamp()), 0)
		FROM posthog_export.exports WHERE name IN ('ev_append', 'ev_merge')});
	sleep($wait + 0.2) if $wait > 0;
};
my $in_window = sub {
	is($q->(q{SELECT bool_and(clock_timestamp() < r.finished_at + e.settle_window) FROM posthog_export.runs r
		JOIN posthog_export.exports e USING (export_id) WHERE e.name IN ('ev_append', 'ev_merge')}), 't',
		"($_[0] happens within the window)");
};
my $runs = sub {
	my ($name) = @_;
	return $q->(qq{SELECT string_agg(format('%s:%s/%s/%s/%s', to_char(interval_start AT TIME ZONE 'UTC', 'HH24'),
		rows, source_rows, late_rows, late_missed), ' ' ORDER BY interval_start) FROM posthog_export.runs WHERE export_name = '$name'});
};

# --- a check that finds nothing: one count request, no re-read -------------------
$wait_check->();
$in_window->('the first check');
my ($req) = $run_due->('the first checks');
is($req->{ev_append}{settle} // 0, 1, 'append: one count request checks both intervals');
is($req->{ev_merge}{settle} // 0, 1, 'merge: the same');
is(($req->{ev_append}{page} // 0) + ($req->{ev_merge}{page} // 0), 0, 'counts that match read nothing again');
ok(!exists $req->{ev_off}, 'settle_window 0: no request at all');
is($q->(q{SELECT count(*) FROM posthog_export.runs r JOIN posthog_export.exports e USING (export_id)
	WHERE e.name <> 'ev_off' AND (settled_at IS NULL OR source_rows <> rows OR late_rows <> 0)}), '0',
	'each run records its check: settled_at, and source_rows equal to the rows it received');
is($q->(q{SELECT count(*) FROM posthog_export.runs r JOIN posthog_export.exports e USING (export_id)
	WHERE e.name = 'ev_off' AND settled_at IS NULL AND source_rows IS NULL}), '2', 'the export that does not settle is not checked');
my $settle_req = (grep { ($_->{name} // '') eq 'posthog_export ev_append settle' } @{ emu_requests($emu) })[0];
like($settle_req->{query}, qr/countIf\(created_at >= toDateTime64\(\{s0\}, 6, 'UTC'\)/, 'the count is a countIf per interval');
unlike($settle_req->{query}, qr/2026|feature_flag/, 'no value is pasted into the HogQL text');
is_deeply([ @{ $settle_req->{values} }{qw(s0 e0 s1 e1)} ],
	[ '2026-11-20 00:00:00.000000', '2026-11-20 01:00:00.000000', '2026-11-20 01:00:00.000000', '2026-11-20 02:00:00.000000' ],
	'the intervals travel as values');
is_deeply($settle_req->{values}{exclude_events}, ['$feature_flag_called'], 'with the export\'s filter');
cmp_ok($settle_req->{query_bytes}, '<', 262144, "well under ClickHouse's max_query_size ($settle_req->{query_bytes} bytes)");

# --- rows become visible within the window; a pass failing half-way writes nothing
$set_clock->($emu, '2030-06-01T00:00:00Z');
$wait_check->();
$in_window->('the check after the late rows appeared');
# the append export's third request (a page of the first interval read again) fails
my $err;
($req, $err) = $run_due->('the late rows appeared, and a page fails', { on_request => 3, status => 400 });
like($err, qr/WARNING:  export "ev_append": the check for late rows failed; it is tried again at /,
	'append: the failed pass is a WARNING');
like($runs->('ev_append'), qr{^00:\d+/\d+/0/0 01:\d+/\d+/0/0$}, 'append: its runs record no check');
($e, $m, $x) = compare_with_source($node, $emu, %append, visible_at => '2035-01-01T00:00:00Z');
is("$m/$x", '5/0', 'append: nothing of the failed interval was written');
is($q->(q{SELECT format('%s %s %s', paused, consecutive_failures, retry_at IS NULL) FROM posthog_export.exports WHERE name = 'ev_append'}),
	'f 0 t', 'append: a failed pass is no failure of the export');
is($req->{ev_merge}{settle}, 1, 'merge: one count request');
cmp_ok($req->{ev_merge}{page} // 0, '>=', 2, 'and the two intervals read again');
ok(!exists $req->{ev_off}, 'settle_window 0: still no request');
($e, $m, $x) = compare_with_source($node, $emu, %merge, visible_at => '2035-01-01T00:00:00Z');
is("$m/$x", '0/0', "merge: the late rows landed, none lost and none twice ($e rows)");
$wait_check->();
$in_window->('the append export\'s pass tried again');
($req) = $run_due->('the append export\'s pass tried again');
is($req->{ev_append}{settle}, 1, 'append: one count request');
cmp_ok($req->{ev_append}{page} // 0, '>=', 2, 'and the two intervals read again');
is(($req->{ev_merge}{settle} // 0) . '/' . ($req->{ev_merge}{page} // 0), '1/0', 'merge: one count request, nothing read again');
($e, $m, $x) = compare_with_source($node, $emu, %append, visible_at => '2035-01-01T00:00:00Z');
is("$m/$x", '0/0', "append: the late rows landed, none lost and none twice ($e rows)");
my %rows = map { $_ => $q->("SELECT rows FROM posthog_export.runs WHERE export_name = 'ev_append' AND interval_start = '2026-11-20 0$_:00+00'") } (0, 1);
is($runs->('ev_append'), sprintf('00:%d/%d/3/0 01:%d/%d/2/0', $rows{0}, $rows{0} + 3, $rows{1}, $rows{1} + 2),
	'append: runs show what each check found and wrote (rows/source_rows/late_rows/late_missed)');
like($runs->('ev_merge'), qr{^00:\d+/\d+/3/0 01:\d+/\d+/3/0$},
	'merge: the excluded-by-the-other-export event counts here; unchanged rows are not rewritten');
($e, $m, $x) = compare_with_source($node, $emu, %cmp, table => 'posthog_exports.ev_off', visible_at => '2035-01-01T00:00:00Z');
is($m, 6, 'without settling the late rows are lost');

# the next check: counts match again, nothing read
$wait_check->();
$in_window->('the check after that');
($req) = $run_due->('checks after the late rows landed');
is(($req->{ev_append}{settle} // 0) . '/' . ($req->{ev_append}{page} // 0), '1/0', 'append: one count request, nothing read again');
is(($req->{ev_merge}{settle} // 0) . '/' . ($req->{ev_merge}{page} // 0), '1/0', 'merge: the same');
($e, $m, $x) = compare_with_source($node, $emu, %append, visible_at => '2035-01-01T00:00:00Z');
is("$m/$x", '0/0', 'append: still exactly once');

# --- rows later than the window: reported, not written ---------------------------
$set_clock->($emu, '2041-01-01T00:00:00Z');
# (new_node logs LOG and above only, where WARNING ranks below ERROR)
$node->append_conf('postgresql.conf', "log_min_messages = warning\n");
$node->reload;
my $left = $q->(q{SELECT extract(epoch FROM max(r.finished_at + e.settle_window) - clock_timestamp()) FROM posthog_export.runs r
	JOIN posthog_export.exports e USING (export_id) WHERE e.name IN ('ev_append', 'ev_merge')});
sleep($left + 0.5) if $left > 0;
($req, $err) = $run_due->('the report checks');
is($req->{ev_append}{settle}, 1, 'the last check is one count request');
is(($req->{ev_append}{page} // 0) + ($req->{ev_merge}{page} // 0), 0, 'and reads nothing');
like($err, qr/WARNING:  export "ev_append": 2 events of interval \[[^)]*\) became visible later than settle_window \(00:00:40\); they were not exported/,
	'a WARNING names the export, the interval, the rows and the window');
like($err, qr/WARNING:  export "ev_merge": 1 event of interval \[[^)]*\) became visible later than settle_window \(00:00:40\); it was not exported/,
	'one per interval and export');
like($err, qr/HINT:  Raise settle_window .* force => true/, 'with a hint');
like(slurp_file($node->logfile), qr/WARNING:  export "ev_append": 2 events of interval/, 'the WARNING is in the server log');
like($runs->('ev_append'), qr{^00:\d+/\d+/3/1 01:\d+/\d+/2/2$}, 'runs.late_missed counts them');
is($q->(q{SELECT string_agg(format('%s %s', export_name, late_rows_missed), ', ' ORDER BY export_name) FROM posthog_export.status}),
	'ev_append 3, ev_merge 3, ev_off 0', 'status.late_rows_missed too');
($e, $m, $x) = compare_with_source($node, $emu, %append, visible_at => '2035-01-01T00:00:00Z');
is("$m/$x", '0/0', 'append: the rows after the window were not written');
($e, $m, $x) = compare_with_source($node, $emu, %merge, visible_at => '2035-01-01T00:00:00Z');
is("$m/$x", '0/0', 'merge: nor here');
is($q->(q{SELECT count(*) FROM posthog_export.exports WHERE next_settle_at IS NOT NULL}), '0', 'no check is pending any more');
sleep(2.2);
($req) = $run_due->('after the last checks');
is(scalar(keys %$req), 0, 'an interval is never checked again after its last check');
like(slurp_file($node->logfile), qr/export "ev_append" settle pass: 2 intervals checked \(1 count request, 0 pages read again\), 3 late rows found, 0 written, 3 missed/,
	'each pass is logged');

# --- force starts settling over; settle_window '0' stops it -----------------------
psql_ok($node, q{CALL posthog_export.run_export('ev_merge', '2026-11-20 00:00+00', '2026-11-20 02:00+00', force => true)},
	'merge: export the hours again, as the hint says');
($e, $m, $x) = compare_with_source($node, $emu, %merge);
is("$m/$x", '0/0', "merge: now every row is there ($e)");
is($q->(q{SELECT string_agg(format('%s %s %s', settled_at IS NULL, late_rows, late_missed), ', ') FROM posthog_export.runs
	WHERE export_name = 'ev_merge'}), 't 0 0, t 0 0', 'and its runs start settling over');
is($q->(q{SELECT late_rows_missed FROM posthog_export.status WHERE export_name = 'ev_merge'}), '0', 'nothing is missed any more');
psql_ok($node, q{SELECT posthog_export.alter_export('ev_merge', settle_window => '0')}, 'alter_export turns settling off');
is($q->(q{SELECT next_settle_at IS NULL FROM posthog_export.exports WHERE name = 'ev_merge'}), 't', 'nothing is pending then');

# --- intervals exported at different times share their checks --------------------
psql_ok($node, q{SELECT posthog_export.create_export('ev_pair', 'posthog', table_name => 'ev_pair',
	settle_window => '40 seconds', settle_every => '3 seconds', check_server => false);
	CALL posthog_export.run_export('ev_pair', '2026-11-20 00:00+00', '2026-11-20 01:00+00')}, 'export an hour');
sleep(1.5);
psql_ok($node, q{CALL posthog_export.run_export('ev_pair', '2026-11-20 01:00+00', '2026-11-20 02:00+00')},
	'and the next one, a while later');
my $wait = $q->(q{SELECT extract(epoch FROM next_settle_at - clock_timestamp()) FROM posthog_export.exports WHERE name = 'ev_pair'});
sleep($wait + 0.2) if $wait > 0;
($req) = $run_due->('the first check of the first hour');
is($req->{ev_pair}{settle}, 1, 'one count request checks both hours: the second, due soon, is taken along');
is($q->(q{SELECT count(DISTINCT settled_at) || ' ' || count(settled_at) FROM posthog_export.runs WHERE export_name = 'ev_pair'}),
	'1 2', 'and from then on they fall due together');

# --- 150 intervals: 100 per count request, the rest in the next pass at once -------
psql_ok($node, q{SELECT posthog_export.create_export('ev_many', 'posthog', table_name => 'ev_many', every => '5 minutes',
	settle_window => '2 minutes', settle_every => '2 seconds', check_server => false);
	CALL posthog_export.run_export('ev_many', '2026-11-20 00:00+00', '2026-11-20 12:30+00')}, 'export 150 five-minute intervals');
$wait = $q->(q{SELECT extract(epoch FROM max(finished_at) + interval '2 seconds' - clock_timestamp()) FROM posthog_export.runs WHERE export_name = 'ev_many'});
sleep($wait + 0.2) if $wait > 0;
($req) = $run_due->('150 intervals due');
my ($many) = grep { ($_->{name} // '') eq 'posthog_export ev_many settle' } @{ emu_requests($emu) };
is(($req->{ev_many}{settle} // 0) . '/' . ($req->{ev_many}{page} // 0), '1/0', 'a pass: one count request, nothing read again');
is(scalar(() = $many->{query} =~ /countIf\(/g), 100, 'for the 100 oldest intervals');
cmp_ok($many->{query_bytes}, '<', 65536, "its text with its values is $many->{query_bytes} bytes");
is($q->(q{SELECT format('%s %s', count(settled_at), (SELECT next_settle_at <= now() FROM posthog_export.exports WHERE name = 'ev_many'))
	FROM posthog_export.runs WHERE export_name = 'ev_many'}), '100 t', 'the next pass is due at once');
($req) = $run_due->('the other 50');
is($req->{ev_many}{settle}, 1, 'and checks the other 50 with one more request');
is($q->(q{SELECT count(settled_at) FROM posthog_export.runs WHERE export_name = 'ev_many'}), '150', 'all 150 are checked');
$q->(q{SELECT posthog_export.drop_export('ev_many')});

# --- a cancelled pass changes nothing and is tried again ---------------------------
my $before = $q->(q{SELECT string_agg(settled_at::text, ',' ORDER BY run_id) FROM posthog_export.runs WHERE export_name = 'ev_pair'});
$wait = $q->(q{SELECT extract(epoch FROM next_settle_at - clock_timestamp()) FROM posthog_export.exports WHERE name = 'ev_pair'});
sleep($wait + 0.2) if $wait > 0;
emu_reset($emu);
emu_faults($emu, { on_request => 1, delay => 5 });
my ($ret, $out);
($ret, $out, $err) = $node->psql('postgres', q{SET statement_timeout = '1s'; CALL posthog_export.run_due()});
isnt($ret, 0, 'run_due is cancelled while the count request hangs');
like($err, qr/canceling statement due to statement timeout/, 'with the cancel as its error');
ok(wait_for(sub { slurp_file($node->logfile) =~ /export "ev_pair" settle pass failed after 0 of 2 intervals/ }, 30),
	'the worker records the cancelled pass');
is($q->(q{SELECT string_agg(settled_at::text, ',' ORDER BY run_id) FROM posthog_export.runs WHERE export_name = 'ev_pair'}),
	$before, 'its runs are as they were');
is($q->(q{SELECT next_settle_at > now() FROM posthog_export.exports WHERE name = 'ev_pair'}), 't', 'and it is tried again later');
$node->stop;

# --- the scheduler wakes for the checks by itself ---------------------------------
my $data2 = tempdir(CLEANUP => 1);
generate_data($data2, events => 200, seed => 23,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
append_events($data2, map { $event->(100 + $_, "2026-11-20T00:${_}5:00Z", visible => $SOON) } 1 .. 4);
my $emu2 = start_emulator(data => $data2, name => 'scheduled');
my $sched = new_node('settle_scheduler', conf => "shared_preload_libraries = 'posthog_export'\nposthog_export.launcher_naptime = 1\n");
setup_server($sched, $emu2);
$sched->safe_psql('postgres', q{SELECT posthog_export.create_export('auto', 'posthog', table_name => 'auto', mode => 'merge',
	settle_window => '2 minutes', settle_every => '1 second', check_server => false);
	CALL posthog_export.run_export('auto', '2026-11-20 00:00+00', '2026-11-20 01:00+00')});
my %auto = (start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z', table => 'posthog_exports.auto', dedupe => 1);
($e, $m, $x) = compare_with_source($sched, $emu2, %auto);
is("$m/$x", '4/0', 'the late rows were not there at the export');
$set_clock->($emu2, '2030-06-01T00:00:00Z');
ok(wait_for(sub { $sched->safe_psql('postgres', q{SELECT late_rows FROM posthog_export.runs WHERE export_name = 'auto'}) == 4 }, 90),
	'the scheduler runs the settle pass by itself');
($e, $m, $x) = compare_with_source($sched, $emu2, %auto);
is("$m/$x", '0/0', "and the late rows landed ($e rows)");
$sched->stop;

done_testing();
