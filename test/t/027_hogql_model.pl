# The hogql model: the owner's own HogQL query, exported per interval, over
# the emulator's groups.  Rows are compared exactly with an oracle read from
# the data files (groups.ndjson), not through the extension: append and
# merge mode, a rerun, a resume after kill -9 in a multi-page interval, an
# invalid query refused at create time, a query changed by alter_export
# from the next interval, and a keyless result too big for one page; a key
# that is Nullable, or duplicated within a page or across a page boundary
# (an error, in append and merge mode alike); a query or key change refused
# while an interrupted run has a cursor, and a cursor of another length; a
# query ending in a "-- comment"; a column named by a keyword; one request
# to create an export.
use strict;
use warnings;

use File::Temp qw(tempdir);
use IPC::Run;
use JSON::PP;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 300, seed => 5,
	start => '2026-11-01T00:00:00Z', end => '2026-11-02T00:00:00Z');
my $emu = start_emulator(data => $data);
my $node = new_node('hogql', conf => "restart_after_crash = on\n");
# three rows a page: every interval of more than three rows pages
setup_server($node, $emu, options => { page_size => 3 });

# --- the oracle: groups.ndjson read directly ------------------------------------
# bytes as read (UTF-8), compared with psql's output bytewise
my $json = JSON::PP->new;
my @raw;
open my $fh, '<', "$data/groups.ndjson" or die $!;
while (my $line = <$fh>) { my $r = $json->decode($line); push @raw, $r if $r->{team_id} == 1; }
close $fh;
sub us { my $t = shift; $t =~ s/Z$//; $t .= '.000000' unless $t =~ /\./; $t =~ s/\.(\d+)$/'.' . substr($1 . '000000', 0, 6)/e; return $t; }
# groups: the latest version of each (index, key) by updated_at
my %latest;
for my $r (@raw)
{
	my $k = "$r->{index}|$r->{key}";
	$latest{$k} = $r if !$latest{$k} || us($r->{updated_at}) gt us($latest{$k}{updated_at});
}
# the rows [start, end) of the groups query: "index|key|name|version|created_at", sorted
sub expected_groups
{
	my ($start, $end, $only_index) = @_;
	my @rows;
	for my $r (values %latest)
	{
		my $c = us($r->{created_at});
		next unless $c ge us($start) && $c lt us($end);
		next if defined $only_index && $r->{index} != $only_index;
		push @rows, join '|', $r->{index}, $r->{key}, $r->{properties}{name}, $r->{properties}{version}, $c;
	}
	return join "\n", sort @rows;
}
sub table_groups
{
	my ($table) = @_;
	return $node->safe_psql('postgres', qq{SELECT string_agg(s, E'\\n' ORDER BY s COLLATE "C") FROM (SELECT concat_ws('|', index, key,
		properties::jsonb->>'name', properties::jsonb->>'version', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')) AS s
		FROM $table) t});
}
sub sorted_lines { return join "\n", sort split /\n/, shift; }

my $Q = q{SELECT index, key, properties, created_at FROM groups WHERE created_at >= toDateTime64({start}, 6, 'UTC') AND created_at < toDateTime64({end}, 6, 'UTC')};
(my $Qsql = $Q) =~ s/'/''/g;
my ($S, $M, $E) = ('2026-09-01T00:00:00Z', '2026-10-01T00:00:00Z', '2026-11-01T00:00:00Z');
my $run = sub { my ($name, $s, $e, $force) = @_;
	"CALL posthog_export.run_export('$name', '$s', '$e'" . ($force ? ', force => true' : '') . ')' };
my $all = expected_groups($S, $E);
my $n_all = scalar(split /\n/, $all);
cmp_ok($n_all, '>=', 6, "the oracle has groups created in the range ($n_all)");

# --- append mode ---------------------------------------------------------------
psql_ok($node, qq{SELECT posthog_export.create_export('g_append', 'posthog', 'hogql', every => '1 day',
	mode => 'append', query => '$Qsql', key => ARRAY['index', 'key'], check_server => false)}, 'create a hogql export in append mode');
is($node->safe_psql('postgres', q{SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attnum)
	FROM pg_attribute WHERE attrelid = 'posthog_exports.g_append'::regclass AND attnum > 0}),
	'index bigint, key text, properties text, created_at timestamp with time zone',
	'the table is created with the probed columns and types mapped from ClickHouse\'s');
is($node->safe_psql('postgres', q{SELECT columns::text FROM posthog_export.exports WHERE name = 'g_append'}),
	q{{"key": "String", "index": "UInt8", "created_at": "DateTime64(6, 'UTC')", "properties": "String"}},
	'the probed columns and types are stored with the export');
psql_ok($node, $run->('g_append', $S, $E), 'run [09-01, 11-01), a day at a time');
is(table_groups('posthog_exports.g_append'), $all, "append: exactly the oracle's rows ($n_all)");
my $err = psql_fails($node, $run->('g_append', $S, $E, 1), 'force is refused in append mode');
like($err, qr/appends, so force would duplicate rows/, '... as for the built-in models');
my ($ret, $out, $stderr) = $node->psql('postgres', $run->('g_append', $S, $E));
like($stderr, qr/61 intervals of export "g_append" were already exported, skipped them/, 'a rerun skips the exported intervals');
is(table_groups('posthog_exports.g_append'), $all, 'append: no row written twice by the rerun');

# --- merge mode ----------------------------------------------------------------
# the query ends in a comment: the probe and the pages put a line break after it
psql_ok($node, qq{SELECT posthog_export.create_export('g_merge', 'posthog', 'hogql', every => '1 day',
	query => '$Qsql -- the groups created in the interval', key => ARRAY['index', 'key'], check_server => false)},
	'create a hogql export with a key (merge by default), its query ending in a -- comment');
is($node->safe_psql('postgres', q{SELECT mode FROM posthog_export.exports WHERE name = 'g_merge'}), 'merge', 'a key makes merge the default mode');
like($node->safe_psql('postgres', q{SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'posthog_exports.g_merge'::regclass AND contype = 'p'}),
	qr/PRIMARY KEY \(index, key\)/, 'the merge table gets the key as primary key');
psql_ok($node, $run->('g_merge', $S, $E), 'merge run');
is(table_groups('posthog_exports.g_merge'), $all, 'merge: exactly the oracle\'s rows');
$node->safe_psql('postgres', q{UPDATE posthog_exports.g_merge SET properties = '{"name": "stale"}'});
psql_ok($node, $run->('g_merge', $S, $E, 1), 'forced rerun of every interval');
is(table_groups('posthog_exports.g_merge'), $all, 'merge: the rerun restores the rows, no duplicates');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_exports.g_merge}), $n_all, "still $n_all rows");

# --- an invalid query is refused at create time, nothing created ----------------
$err = psql_fails($node, q{SELECT posthog_export.create_export('g_bad', 'posthog', 'hogql', every => '1 day',
	query => 'SELECT index, kex FROM groups', check_server => false)}, 'a query PostHog cannot resolve is refused');
like($err, qr/Unable to resolve field: kex/, "... with PostHog's error text");
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.exports WHERE name = 'g_bad'}), '0', 'no export created');
is($node->safe_psql('postgres', q{SELECT to_regclass('posthog_exports.g_bad') IS NULL}), 't', 'no table created');
$err = psql_fails($node, q{SELECT posthog_export.create_export('g_bad', 'posthog', 'hogql', every => '1 day',
	query => 'SELECT index, toString(key) FROM groups', check_server => false)}, 'an unnamed expression is refused');
like($err, qr/has no name of its own.*AS my_column/s, '... with a hint to alias it');
$err = psql_fails($node, q{SELECT posthog_export.create_export('g_bad', 'posthog', 'hogql', every => '1 day',
	query => 'SELECT index, key FROM groups', key => ARRAY['nope'], check_server => false)}, 'a key that is not a column is refused');
like($err, qr/key column "nope" is not a column of the query/, '... naming it');
$err = psql_fails($node, q{SELECT posthog_export.create_export('g_bad', 'posthog', 'hogql', every => '1 day', mode => 'merge',
	query => 'SELECT index, key FROM groups', check_server => false)}, 'merge without a key is refused');
like($err, qr/merge mode needs a key/, '... saying so');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.exports WHERE name = 'g_bad'}), '0', 'still nothing created');

# --- alter_export(query => ...) applies from the next interval -------------------
psql_ok($node, qq{SELECT posthog_export.create_export('g_alter', 'posthog', 'hogql', every => '1 day',
	mode => 'append', query => '$Qsql', key => ARRAY['index', 'key'], check_server => false)}, 'create g_alter');
psql_ok($node, $run->('g_alter', $S, $M), 'first half with the first query');
psql_ok($node, qq{SELECT posthog_export.alter_export('g_alter', query => '$Qsql AND index = 0')}, 'alter the query');
psql_ok($node, $run->('g_alter', $M, $E), 'second half with the new query');
is(table_groups('posthog_exports.g_alter'), sorted_lines(expected_groups($S, $M) . "\n" . expected_groups($M, $E, 0)),
	'the first half has every group, the second only those of index 0');
$err = psql_fails($node, q{SELECT posthog_export.alter_export('g_alter', query => 'SELECT index FROM groupz')}, 'an invalid new query is refused');
like($err, qr/groupz/, "... with PostHog's error");
like($node->safe_psql('postgres', q{SELECT query FROM posthog_export.exports WHERE name = 'g_alter'}), qr/AND index = 0$/, 'the query is unchanged');

# --- without a key the interval must fit one page --------------------------------
psql_ok($node, q{SELECT posthog_export.create_export('g_nokey', 'posthog', 'hogql', every => '1 day',
	query => 'SELECT index, key, updated_at FROM raw_groups', check_server => false)}, 'create a keyless export (append)');
$err = psql_fails($node, $run->('g_nokey', '2026-10-01', '2026-10-02'), 'more rows than a page fail the interval');
like($err, qr/returned more than 3 rows for interval/, '... clearly, not truncated');
is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.g_nokey'), '0', 'nothing of it written');
psql_ok($node, q{SELECT posthog_export.alter_export('g_nokey', query => 'SELECT index, key, updated_at FROM raw_groups WHERE key = ''company_0'' -- one group')}, 'a query of few rows, ending in a comment');
psql_ok($node, $run->('g_nokey', '2026-10-02', '2026-10-03'), 'fits one page');
is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.g_nokey'), scalar(grep { $_->{key} eq 'company_0' } @raw),
	'every version of company_0 written');

# --- resume after kill -9 in the middle of a multi-page interval ------------------
my $nraw = scalar @raw;
psql_ok($node, q{SELECT posthog_export.create_export('g_kill', 'posthog', 'hogql', every => '1 day', mode => 'append',
	query => 'SELECT index, key, updated_at, properties FROM raw_groups', key => ARRAY['index', 'key', 'updated_at'], check_server => false)},
	'create g_kill: every version of every group, in one interval');
emu_reset($emu);
emu_faults($emu, { on_request => 4, delay => 60 });
my $call = $run->('g_kill', '2026-10-01', '2026-10-02');
my ($in, $o, $e) = ('', '', '');
my $h = IPC::Run::start([ 'psql', '-X', '-d', $node->connstr('postgres'), '-c', $call ], '<', \$in, '>', \$o, '2>', \$e);
wait_for(sub { $node->safe_psql('postgres', q{SELECT pages FROM posthog_export.runs WHERE export_name = 'g_kill'}) eq '3' }, 60);
my $pid;
wait_for(sub {
	$pid = $node->safe_psql('postgres', q{SELECT pid FROM pg_stat_activity WHERE query LIKE 'CALL posthog_export.run_export(''g_kill''%' AND wait_event_type = 'Extension'});
	return $pid ne '';
}, 60);
ok($pid, 'the run waits for page 4 with three pages committed');
is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.g_kill'), '9', 'nine rows committed');
kill 'KILL', $pid;
$h->finish;
ok(wait_for(sub { $node->psql('postgres', 'SELECT 1') == 0 }, 120), 'the server is back after the crash');

# the interrupted run resumes under the query and key it started with: neither can change now
($ret, $out, $stderr) = $node->psql('postgres', q{SELECT posthog_export.alter_export('g_kill', key => ARRAY['index', 'key'])},
	extra_params => ['-v', 'VERBOSITY=verbose']);
like($stderr, qr/55000: cannot change the query or key of export "g_kill" now/, 'a key change is refused while a run has a cursor (55000)');
like($stderr, qr/HINT:  Finish or rerun the interval first \(CALL posthog_export.run_export\('g_kill', '2026-10-01/, '... with a hint to finish the interval');
$err = psql_fails($node, q{SELECT posthog_export.alter_export('g_kill', query => 'SELECT index, key, updated_at, properties FROM raw_groups WHERE index = 0')},
	'a query change is refused too');
like($err, qr/cannot change the query or key of export "g_kill" now/, '... saying so');
is($node->safe_psql('postgres', q{SELECT array_to_string(key, ',') || ' ' || query FROM posthog_export.exports WHERE name = 'g_kill'}),
	'index,key,updated_at SELECT index, key, updated_at, properties FROM raw_groups', 'the query and key are unchanged');
psql_ok($node, q{SELECT posthog_export.alter_export('g_kill', key => ARRAY['index', 'key', 'updated_at'])}, 'the same key again is no change');
# a cursor of another length than the key is an error, not a silent restart
my $cursor = $node->safe_psql('postgres', q{SELECT cursor::text FROM posthog_export.runs WHERE export_name = 'g_kill'});
like($cursor, qr/^\{.+,.+,.+\}$/, "the committed cursor has three keys ($cursor)");
$node->safe_psql('postgres', q{UPDATE posthog_export.runs SET cursor = ARRAY['1', 'x'] WHERE export_name = 'g_kill'});
$err = psql_fails($node, $call, 'a cursor of two keys for a key of three fails the run');
like($err, qr/the committed keyset cursor of export "g_kill" has 2 keys, its key has 3/, '... saying so');
is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.g_kill'), '9', 'nothing written by it');
$node->safe_psql('postgres', qq{UPDATE posthog_export.runs SET cursor = '$cursor' WHERE export_name = 'g_kill'});

emu_reset($emu);
psql_ok($node, $call, 'the interval runs again');
ok(defined emu_requests($emu)->[0]{values}{phx_cursor_0}, 'it resumed from the committed cursor');
like(emu_requests($emu)->[0]{query}, qr/WHERE \(`index`, `key`, `updated_at`\) >= \(/, '... from the cursor on (its row read again, and dropped), names in backquotes');
is($node->safe_psql('postgres', q{SELECT count(*) || ' ' || count(DISTINCT (index, key, updated_at)) FROM posthog_exports.g_kill}),
	"$nraw $nraw", "every row of raw_groups exactly once ($nraw)");
my $oracle = join "\n", sort map { join '|', $_->{index}, $_->{key}, us($_->{updated_at}), $_->{properties}{version} } @raw;
is($node->safe_psql('postgres', q{SELECT string_agg(s, E'\n' ORDER BY s COLLATE "C") FROM (SELECT concat_ws('|', index, key,
	to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US'), properties::jsonb->>'version') AS s FROM posthog_exports.g_kill) t}),
	$oracle, 'the rows equal the oracle');
psql_ok($node, q{SELECT posthog_export.alter_export('g_kill', key => ARRAY['index', 'key', 'updated_at', 'properties'])},
	'with the interval finished, the key can change');

# --- the key names one row -----------------------------------------------------
$err = psql_fails($node, q{SELECT posthog_export.create_export('g_null', 'posthog', 'hogql', every => '1 day', mode => 'append',
	query => 'SELECT nullIf(key, ''company_0'') AS k, updated_at FROM raw_groups', key => ARRAY['k'])}, 'a Nullable key column is refused');
like($err, qr/key column "k" of export "g_null" is of type Nullable\(String\), which may be NULL.*coalesce\(k, ''\) AS k/s,
	'... at the probe, with a hint to give it a value');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.exports WHERE name = 'g_null'}), '0', 'nothing created');

# proj-5 has two versions, proj-11 and proj-3 one each: in key order proj-11, proj-3, proj-5 | proj-5,
# the duplicate straddles the first page boundary (three rows a page)
my $Qb = q{SELECT key, updated_at FROM raw_groups WHERE key IN (''proj-11'', ''proj-3'', ''proj-5'')};
my $Qw = q{SELECT key, updated_at FROM raw_groups WHERE key IN (''proj-5'', ''proj-7'')};
for my $mode ('append', 'merge')
{
	psql_ok($node, qq{SELECT posthog_export.create_export('g_dupb_$mode', 'posthog', 'hogql', every => '1 day', mode => '$mode',
		query => '$Qb', key => ARRAY['key'])}, "create g_dupb_$mode: a key duplicated across a page boundary");
	$err = psql_fails($node, $run->("g_dupb_$mode", '2026-10-01', '2026-10-02'), "$mode: the duplicate across pages fails the interval");
	like($err, qr/PostHog returned two rows with the key \(key\) = \(proj-5\) in page 2 of export "g_dupb_$mode".*Extend the key/s,
		'... naming the key, with a hint to extend it');
	is($node->safe_psql('postgres', qq{SELECT count(*) FROM posthog_exports.g_dupb_$mode WHERE key = 'proj-5'}), $mode eq 'merge' ? '0' : '1',
		$mode eq 'merge' ? '... nothing of the staged interval written' : '... the first page was written, the second not');

	psql_ok($node, qq{SELECT posthog_export.create_export('g_dupw_$mode', 'posthog', 'hogql', every => '1 day', mode => '$mode',
		query => '$Qw', key => ARRAY['key'])}, "create g_dupw_$mode: a key duplicated within a page");
	$err = psql_fails($node, $run->("g_dupw_$mode", '2026-10-01', '2026-10-02'), "$mode: the duplicate within a page fails the interval");
	like($err, qr/PostHog returned two rows with the key \(key\) = \(proj-5\) in page 1 of export "g_dupw_$mode"/,
		'... naming it' . ($mode eq 'merge' ? ", not with ON CONFLICT's error" : ''));
	is($node->safe_psql('postgres', qq{SELECT count(*) FROM posthog_exports.g_dupw_$mode}), '0', '... nothing written');

	psql_ok($node, qq{SELECT posthog_export.create_export('g_dupk_$mode', 'posthog', 'hogql', every => '1 day', mode => '$mode',
		query => '$Qw', key => ARRAY['key', 'updated_at'])}, "create g_dupk_$mode: the key extended");
	psql_ok($node, $run->("g_dupk_$mode", '2026-10-01', '2026-10-02'), '... runs');
	is($node->safe_psql('postgres', qq{SELECT count(*) FROM posthog_exports.g_dupk_$mode}),
		scalar(grep { $_->{key} eq 'proj-5' || $_->{key} eq 'proj-7' } @raw), '... every version of proj-5 and proj-7 written');
}

# --- names the model pastes are in backquotes: a column named by a keyword --------
psql_ok($node, qq{SELECT posthog_export.create_export('g_kw', 'posthog', 'hogql', every => '1 day', mode => 'merge',
	query => 'SELECT index AS `from`, key AS `select`, properties, created_at FROM groups WHERE created_at >= toDateTime64({start}, 6, ''UTC'') AND created_at < toDateTime64({end}, 6, ''UTC'')',
	key => ARRAY['from', 'select'], check_server => false)}, 'create g_kw: columns named from and select');
psql_ok($node, $run->('g_kw', $S, $E), 'run it');
is($node->safe_psql('postgres', q{SELECT string_agg(s, E'\n' ORDER BY s COLLATE "C") FROM (SELECT concat_ws('|', "from", "select",
	properties::jsonb->>'name', properties::jsonb->>'version', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US')) AS s
	FROM posthog_exports.g_kw) t}), $all, "the oracle's rows, paged by keyword-named keys");

# --- creating an export sends one request: the probe checks the server -----------
emu_reset($emu);
psql_ok($node, qq{SELECT posthog_export.create_export('g_one', 'posthog', 'hogql', every => '1 day', query => '$Qsql')},
	'create with check_server (the default)');
my $reqs = emu_requests($emu);
is(scalar(@$reqs), 1, 'one request');
like($reqs->[0]{query}, qr/^SELECT \* FROM \(SELECT index.*\n\) LIMIT 0$/s, '... the probe, with a line break after the query');

done_testing();
