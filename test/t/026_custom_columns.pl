# Exports users shape themselves (events): extra columns computed by PostHog
# from HogQL expressions, filled exactly (an oracle over the data files, not
# the extension); a filter that excludes rows, with its values as HogQL
# values, also in the settle pass's counts; create_export's probe (LIMIT 0)
# refusing a bad expression with PostHog's own message and creating nothing,
# and giving new columns their types; a column added to the table later,
# filled from then on; alter_export of the filter applying from the next
# interval; reserved placeholder names and other bad arguments refused.
use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(sleep);
use PhxTest;

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 600, seed => 26,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T03:00:00Z');

# The oracle: the events of [start, end) as the events model selects them
# (created_at in it, timestamp after start - 7 days, the project's team),
# those whose $browser is $browser if given; per event "uuid|v1|v2...", one
# value per field: a property's value as HogQL gives it (strings as they
# are, numbers as their JSON text, missing or null: \N), or len:<property>,
# its length in bytes.
my $oracle_py = "$data/oracle.py";
open my $fh, '>', $oracle_py or die $!;
print $fh <<'PY';
import json, sys
from datetime import datetime, timedelta
def ts(s):
    return datetime.fromisoformat(s.replace("Z", "+00:00"))
data, start, end, browser, fields = sys.argv[1], ts(sys.argv[2]), ts(sys.argv[3]), sys.argv[4], [f for f in sys.argv[5].split(",") if f]
out = []
for line in open(data + "/events.ndjson", encoding="utf-8"):
    e = json.loads(line)
    if e.get("team_id", 1) != 1:
        continue
    c, t = ts(e["created_at"]), ts(e["timestamp"])
    if not (start <= c < end and t >= start - timedelta(days=7)):
        continue
    p = e.get("properties") or {}
    if browser and p.get("$browser") != browser:
        continue
    row = [e["uuid"]]
    for f in fields:
        v = p.get(f[4:] if f.startswith("len:") else f)
        if v is None:
            row.append("\\N")
        elif f.startswith("len:"):
            row.append(str(len(v.encode("utf-8"))))
        elif isinstance(v, bool):
            row.append("true" if v else "false")
        elif isinstance(v, (int, float)):
            row.append(json.dumps(v))
        else:
            row.append(v)
    out.append("|".join(row))
print("\n".join(sorted(out)))
PY
close $fh;
my $oracle = sub {
	my ($start, $end, $browser, @fields) = @_;
	my ($out, $err);
	IPC::Run::run([ 'python3', $oracle_py, $data, $start, $end, $browser // '', join(',', @fields) ],
		'>', \$out, '2>', \$err) or die "oracle failed: $err";
	chomp $out;
	return $out;
};

my $emu = start_emulator(data => $data);
my $node = new_node('custom');
setup_server($node, $emu, options => { page_size => 50 });
my $q = sub { $node->safe_psql('postgres', $_[0]) };
# the table's rows of hour h (created in it: the oracle's uuids) as "uuid|c1|c2..."
my $table = sub {
	my ($tab, $start, $end, @cols) = @_;
	my $uuids = join ',', map { (split /\|/)[0] } grep { length } split /\n/, $oracle->($start, $end, undef);
	return $q->(qq{SELECT string_agg(concat_ws('|', uuid, } . join(', ', map { qq{COALESCE(${_}::text, '\\N')} } @cols)
		. qq{), E'\\n' ORDER BY concat_ws('|', uuid, } . join(', ', map { qq{COALESCE(${_}::text, '\\N')} } @cols)
		. qq{)) FROM posthog_exports.$tab WHERE uuid = ANY (string_to_array('$uuids', ','))});
};
my $H0 = '2026-11-20T00:00:00Z';
my $H1 = '2026-11-20T01:00:00Z';
my $H2 = '2026-11-20T02:00:00Z';
my $last_request = sub {
	my ($name) = @_;
	return (grep { ($_->{name} // '') eq $name } @{ emu_requests($emu) })[-1];
};

# --- custom columns: the probe types a new table, a run fills them exactly ----
emu_reset($emu);
psql_ok($node, q{SELECT posthog_export.create_export(name => 'ev_cols', server => 'posthog', table_name => 'ev_cols',
	columns => '{"browser": "properties.$browser", "browser_len": "length(properties.$browser) -- bytes",
	             "width": "properties.$screen_width", "ts_copy": "timestamp", "device": "properties.$device_type"}')},
	'create_export with custom columns');
my $probe = $last_request->('posthog_export ev_cols check');
ok($probe, 'create_export sent one probe request') or diag(explain(emu_requests($emu)));
is(scalar(@{ emu_requests($emu) }), 1, 'and nothing else (the probe checks the server too)');
like($probe->{query} // '', qr/\(length\(properties\.\$browser\) -- bytes\n\) AS phx_column_\d+/,
	'the expressions are pasted as written, each line ended (a -- comment ends there)');
like($probe->{query} // '', qr/ LIMIT 0$/, 'the probe asks for no rows');
is($q->(q{SELECT string_agg(format('%s %s', attname, format_type(atttypid, atttypmod)), ', ' ORDER BY attnum)
	FROM pg_attribute WHERE attrelid = 'posthog_exports.ev_cols'::regclass AND attnum > 11 AND NOT attisdropped}),
	'width text, device text, browser text, ts_copy timestamp with time zone, browser_len numeric',
	'the new table has the custom columns after the model\'s, typed from the probe\'s types (jsonb key order)');
is($q->(q{SELECT columns::text FROM posthog_export.exports WHERE name = 'ev_cols'}),
	'{"width": "properties.$screen_width", "device": "properties.$device_type", "browser": "properties.$browser", "ts_copy": "timestamp", "browser_len": "length(properties.$browser) -- bytes"}',
	'exports.columns keeps the expressions');

# a table that lacks one of the columns (as an existing table might)
$q->(q{ALTER TABLE posthog_exports.ev_cols DROP COLUMN device});
psql_ok($node, qq{CALL posthog_export.run_export('ev_cols', '$H0', '$H1')}, 'export the first hour');
my $want = $oracle->($H0, $H1, undef, '$browser', 'len:$browser', '$screen_width');
cmp_ok(scalar(split /\n/, $want), '>', 50, 'the oracle has rows for the hour');
is($table->('ev_cols', $H0, $H1, 'browser', 'browser_len', 'width'), $want,
	'every custom column of every row is exactly what the data says');
is($q->(q{SELECT count(*) FROM posthog_exports.ev_cols WHERE ts_copy IS DISTINCT FROM "timestamp"}), '0',
	'a datetime expression lands as timestamptz, equal to the model\'s timestamp');
my $page = $last_request->('posthog_export ev_cols page 1') // (grep { ($_->{name} // '') =~ /^posthog_export ev_cols page/ } @{ emu_requests($emu) })[0];
ok($page && $page->{query} =~ /AS phx_column_1/, 'the page query selects them after the model\'s columns');

# the column comes back to the table: filled from the next interval on
$q->(q{ALTER TABLE posthog_exports.ev_cols ADD COLUMN device text});
psql_ok($node, qq{CALL posthog_export.run_export('ev_cols', '$H1', '$H2')}, 'export the second hour');
is($table->('ev_cols', $H1, $H2, 'browser', 'device'), $oracle->($H1, $H2, undef, '$browser', '$device_type'),
	'a column added to the table later is filled exactly from then on');
is($q->(qq{SELECT count(*) FROM posthog_exports.ev_cols WHERE device IS NOT NULL AND uuid = ANY (string_to_array('}
	. join(',', map { (split /\|/)[0] } split /\n/, $want) . q{', ','))}), '0', 'and not in the rows written before');

# --- a filter: rows excluded, exactly; its values travel as values -------------
psql_ok($node, q{SELECT posthog_export.create_export(name => 'ev_filt', server => 'posthog', table_name => 'ev_filt',
	filter => 'properties.$browser = {browser}', filter_values => '{"browser": "Chrome"}',
	settle_window => '1 minute', settle_every => '1 second')}, 'create_export with a filter');
psql_ok($node, qq{CALL posthog_export.run_export('ev_filt', '$H0', '$H1')}, 'export the first hour');
my $chrome = $oracle->($H0, $H1, 'Chrome');
my $all = $oracle->($H0, $H1);
cmp_ok(scalar(split /\n/, $chrome), '<', scalar(split /\n/, $all), 'the filter excludes rows of the hour');
cmp_ok(scalar(split /\n/, $chrome), '>', 5, 'and keeps some');
is($q->(q{SELECT string_agg(uuid, E'\n' ORDER BY uuid) FROM posthog_exports.ev_filt}), $chrome,
	'exactly the rows that pass the filter ('. scalar(split /\n/, $chrome) . ' of ' . scalar(split /\n/, $all) . ')');
$page = (grep { ($_->{name} // '') =~ /^posthog_export ev_filt page/ } @{ emu_requests($emu) })[-1];
like($page->{query}, qr/AND \(properties\.\$browser = \{browser\}\n\)/, 'the filter is in the WHERE as written');
unlike($page->{query}, qr/Chrome/, 'its value is not pasted');
is($page->{values}{browser}, 'Chrome', 'it travels as a HogQL value');

# the settle pass counts with the same filter: the counts agree, nothing is read again
emu_reset($emu);
sleep(1.5);
psql_ok($node, q{CALL posthog_export.run_due()}, 'run_due: the settle check of the filtered export');
my $settle = $last_request->('posthog_export ev_filt settle');
ok($settle, 'a settle count was sent');
like($settle->{query} // '', qr/AND \(properties\.\$browser = \{browser\}\n\)/, 'with the filter');
is($settle->{values}{browser}, 'Chrome', 'and its value');
is(scalar(grep { ($_->{name} // '') =~ /^posthog_export ev_filt page/ } @{ emu_requests($emu) }), 0,
	'the count agrees with the rows exported: nothing is read again');
is($q->(q{SELECT format('%s %s', rows = source_rows, late_rows) FROM posthog_export.runs WHERE export_name = 'ev_filt'}), 't 0',
	'the run records a matching count');

# alter_export of the filter: from the next interval on
psql_ok($node, q{SELECT posthog_export.alter_export('ev_filt', filter_values => '{"browser": "Firefox"}')},
	'alter_export changes the filter\'s value');
is($q->(q{SELECT filter_values::text FROM posthog_export.exports WHERE name = 'ev_filt'}), '{"browser": "Firefox"}', 'stored');
is($q->(q{SELECT format('%s %s', r.settled_at >= r.finished_at + e.settle_window, r.source_rows = r.rows) FROM posthog_export.runs r
	JOIN posthog_export.exports e USING (export_id) WHERE e.name = 'ev_filt'}), 't t',
	'the interval exported under the old filter is checked no more (a count with the new one would not match it)');
psql_ok($node, qq{CALL posthog_export.run_export('ev_filt', '$H1', '$H2')}, 'export the second hour');
my $firefox = $oracle->($H1, $H2, 'Firefox');
cmp_ok(scalar(split /\n/, $firefox), '>', 5, 'the oracle has Firefox rows in the second hour');
is($q->(qq{SELECT string_agg(uuid, E'\\n' ORDER BY uuid) FROM posthog_exports.ev_filt WHERE uuid <> ALL (string_to_array('}
	. join(',', split /\n/, $chrome) . q{', ','))}), $firefox, 'the second hour holds exactly the rows of the new filter');
is($q->(q{SELECT count(*) FROM posthog_exports.ev_filt}), scalar(split /\n/, $chrome) + scalar(split /\n/, $firefox),
	'the first hour is left as it was');
my $err = psql_fails($node, q{SELECT posthog_export.alter_export('ev_filt', filter => '', filter_values => '{"browser": "Chrome"}')},
	'an empty filter with new values');
like($err, qr/filter_values needs a filter/, 'is refused');
psql_ok($node, q{SELECT posthog_export.alter_export('ev_filt', filter => '')}, 'an empty filter alone clears it');
is($q->(q{SELECT format('%s %s', filter IS NULL, filter_values IS NULL) FROM posthog_export.exports WHERE name = 'ev_filt'}), 't t',
	'and its stored values with it: both NULL');

# --- a probe of alter_export goes through the new server, as the new owner -------
setup_server($node, $emu, server => 'posthog_badkey', api_key => 'phx_not_the_key');
emu_reset($emu);
$err = psql_fails($node, q{SELECT posthog_export.alter_export('ev_filt', server => 'posthog_badkey',
	filter => 'properties.$browser = {browser}', filter_values => '{"browser": "Safari"}')},
	'alter_export of server and filter together');
like($err, qr/rejected the API key \(HTTP 401\)/, 'probes the filter through the new server, with its user mapping');
is($q->(q{SELECT format('%s %s', server_name, filter IS NULL) FROM posthog_export.exports WHERE name = 'ev_filt'}), 'posthog t',
	'and changes nothing');
$q->(q{CREATE ROLE newowner; GRANT USAGE ON FOREIGN SERVER posthog TO newowner});
$err = psql_fails($node, q{SELECT posthog_export.alter_export('ev_filt', owner => 'newowner',
	filter => 'properties.$browser = {browser}', filter_values => '{"browser": "Safari"}')},
	'alter_export of owner and filter together, the new owner without a user mapping');
like($err, qr/user mapping/i, 'fails on the new owner\'s user mapping');
is(scalar(grep { ($_->{name} // '') =~ /ev_filt check/ } @{ emu_requests($emu) }), 1,
	'before any probe as the old owner (the one probe sent was through the new server)');

# --- custom columns into timestamp and jsonb columns ---------------------------------
psql_ok($node, q{SELECT posthog_export.create_export(name => 'ev_types', server => 'posthog', table_name => 'ev_types',
	columns => '{"ts_ny": "toTimeZone(timestamp, ''America/New_York'')", "title": "''[WIP] title''",
	             "arr": "''[1, 2]''", "braces": "''{draft} (see [1]''"}')},
	'create_export with columns whose strings hold brackets, braces and parentheses');
$q->(q{ALTER TABLE posthog_exports.ev_types ALTER COLUMN ts_ny TYPE timestamp without time zone,
	ALTER COLUMN title TYPE jsonb USING to_jsonb(title), ALTER COLUMN arr TYPE jsonb USING to_jsonb(arr),
	ALTER COLUMN braces TYPE jsonb USING to_jsonb(braces)});
psql_ok($node, qq{CALL posthog_export.run_export('ev_types', '$H0', '$H1')}, 'export the first hour');
is($q->(q{SELECT format('%s %s', count(*) > 50, count(*) FILTER (WHERE ts_ny IS DISTINCT FROM timezone('UTC', "timestamp")))
	FROM posthog_exports.ev_types}), 't 0',
	'a New York time into a timestamp column is stored as UTC wall time, as the model\'s own timestamps');
is($q->(q{SELECT string_agg(DISTINCT format('%s %s %s', title, arr, braces), '; ') FROM posthog_exports.ev_types}),
	'"[WIP] title" [1, 2] "{draft} (see [1]"',
	'a string into jsonb: the JSON it holds, else (one that only looks like JSON) a JSON string');

# --- refused up front, with PostHog's error text, creating nothing ----------------
$err = psql_fails($node, q{SELECT posthog_export.create_export(name => 'bad', server => 'posthog', table_name => 'bad',
	columns => '{"x": "nosuchfunction(properties.$browser)"}')}, 'an invalid expression');
like($err, qr/nosuchfunction/, 'is refused with PostHog\'s error text');
like($err, qr/checking the columns and filter of export "bad" with PostHog/, 'saying what was checked');
is($q->(q{SELECT format('%s %s', (SELECT count(*) FROM posthog_export.exports WHERE name = 'bad'), to_regclass('posthog_exports.bad') IS NULL)}),
	'0 t', 'nothing was created: no export, no table');
$err = psql_fails($node, q{SELECT posthog_export.create_export(name => 'bad', server => 'posthog', table_name => 'bad',
	filter => 'properties.$browser = {nope}')}, 'a filter with a placeholder without a value');
is($q->(q{SELECT count(*) FROM posthog_export.exports WHERE name = 'bad'}), '0', 'is refused too');
$err = psql_fails($node, q{SELECT posthog_export.alter_export('ev_cols', columns => '{"os": "nosuchfunction(1)"}')},
	'alter_export with an invalid expression');
like($err, qr/nosuchfunction/, 'is refused with PostHog\'s text');
like($q->(q{SELECT columns::text FROM posthog_export.exports WHERE name = 'ev_cols'}), qr/browser_len/, 'and changes nothing');

# check_server => false: no probe; new columns are text
emu_reset($emu);
psql_ok($node, q{SELECT posthog_export.create_export(name => 'noprobe', server => 'posthog', table_name => 'noprobe',
	columns => '{"n": "length(event)"}', check_server => false)}, 'check_server => false');
is(scalar(@{ emu_requests($emu) }), 0, 'sends no request');
is($q->(q{SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'posthog_exports.noprobe'::regclass AND attname = 'n'}),
	'text', 'and creates the custom columns as text');
psql_ok($node, qq{CALL posthog_export.run_export('noprobe', '$H0', '$H1')}, 'which a run fills');
is($q->(q{SELECT format('%s %s', count(*) FILTER (WHERE n IS DISTINCT FROM octet_length(event)::text), count(*) > 50)
	FROM posthog_exports.noprobe WHERE event ~ '^[ -~]*$'}), '0 t', 'with the values as text');

# --- arguments refused before any request ---------------------------------------
emu_reset($emu);
my @bad = (
	[ q{filter => 'event = {start}', filter_values => '{"start": "x"}'},
		qr/ERROR:  placeholder name "start" in filter_values is reserved\nDETAIL:  The export's own queries and PostHog use the placeholders start, end, min_timestamp, min_end, include_events, exclude_events, filters, variables, cursor_\*, s<digits>, e<digits>, m<digits>, r<digits>_start and r<digits>_end\./,
		'a reserved placeholder name' ],
	[ q{filter => 'created_at >= {start}'}, qr/ERROR:  placeholder \{start\} in filter is reserved\nDETAIL:  The export's own queries and PostHog use the placeholders start, end, min_timestamp/,
		'a model\'s own placeholder in the filter, without a value' ],
	[ q{columns => '{"x": "{min_timestamp}"}'}, qr/placeholder \{min_timestamp\} in the expression of column "x" is reserved/,
		'a model\'s own placeholder in a column' ],
	[ q{filter => 'event = { m0 }'}, qr/placeholder \{m0\} in filter is reserved/, 'a settle count placeholder, with spaces' ],
	[ q{filter => '{filters}', filter_values => '{"filters": "x"}'}, qr/placeholder name "filters" in filter_values is reserved/, 'filters, which PostHog treats itself' ],
	[ q{filter => 'event = {variables}'}, qr/placeholder \{variables\} in filter is reserved/, 'variables, which the query runner adds' ],
	[ q{filter => 'event = {other}', filter_values => '{"browser": "x"}'}, qr/placeholder \{other\} in filter has no value in filter_values/, 'a placeholder without a value' ],
	[ q{filter => 'event = {a.b}', filter_values => '{"a": "x"}'}, qr/filter has a brace that does not enclose a placeholder name/, 'a brace around something else' ],
	[ q[filter => 'event = ''x'' }'], qr/filter has a "\}" that closes no placeholder/, 'a lone closing brace' ],
	[ q{filter => '1) OR (1'}, qr/ERROR:  filter closes a parenthesis it did not open/, 'a filter breaking out of its parentheses' ],
	[ q{columns => '{"a": "1) AS a, (2"}'}, qr/the expression of column "a" closes a parenthesis it did not open/, 'a column breaking out of its parentheses' ],
	[ q{columns => '{"a": "1, 2"}'}, qr/the expression of column "a" has a "," outside parentheses/, 'a top-level comma in a column' ],
	[ q{filter => '1 = 1, 2'}, qr/filter has a "," outside parentheses/, 'a top-level comma in the filter' ],
	[ q{filter => '(1 = 1'}, qr/filter leaves 1 parenthesis or bracket open/, 'an unclosed parenthesis' ],
	[ q{filter => '[1) = 1'}, qr/filter closes a bracket with "\)"/, 'a bracket closed by a parenthesis' ],
	[ q{filter => 'event = ''x) OR (1'}, qr/filter has an unterminated string literal or quoted identifier/, 'an unterminated string' ],
	[ q{filter => '1 /* ) OR ( 1'}, qr/filter has an unterminated comment/, 'an unterminated comment' ],
	[ q{filter => 'event = f''{event}'''}, qr/filter has a template string/, 'a template string' ],
	[ q{filter => '1 = <a>x</a>'}, qr/filter has a HogQLX tag/, 'a HogQLX tag' ],
	[ q{columns => '{"xmin": "event"}'}, qr/column name "xmin" in columns is the name of a system column/, 'a system column name' ],
	[ q{columns => (SELECT jsonb_object_agg('c' || i, 'event') FROM generate_series(1, 101) i)},
		qr/columns gives 101 custom columns; at most 100 are allowed/, 'too many columns' ],
	[ q{filter => 'event = {cursor_uuid}', filter_values => '{"cursor_uuid": "x"}'}, qr/placeholder name "cursor_uuid" in filter_values is reserved/, 'a cursor placeholder' ],
	[ q{filter => 'event = {s0}', filter_values => '{"s0": "x"}'}, qr/placeholder name "s0" in filter_values is reserved/, 'a settle count placeholder' ],
	[ q{filter => 'event = {r2_end}', filter_values => '{"r2_end": "x"}'}, qr/placeholder name "r2_end" in filter_values is reserved/, 'a settle range placeholder' ],
	[ q{filter => 'event = {a}', filter_values => '{"a-b": "x"}'}, qr/"a-b" in filter_values is not a valid placeholder name/, 'an invalid placeholder name' ],
	[ q{filter => 'event = {a}', filter_values => '{"a": {"b": 1}}'}, qr/the value of placeholder "a" in filter_values must be a string, a number, a boolean, null or an array of those/, 'an object as a value' ],
	[ q{filter_values => '{"a": 1}'}, qr/filter_values needs a filter/, 'values without a filter' ],
	[ q{columns => '{"event": "properties.$browser"}'}, qr/column "event" in columns is a column of the events model/, 'a column named as a model column' ],
	[ q{columns => '{"x": 1}'}, qr/the expression of column "x" in columns must be a JSON string/, 'an expression that is not a string' ],
	[ q{columns => '["x"]'}, qr/columns must be a JSON object/, 'columns not an object' ],
	[ q{columns => '{"x": "  "}'}, qr/the expression of column "x" must not be empty/, 'an empty expression' ],
	[ q{columns => '{"": "event"}'}, qr/a column name in columns must not be empty/, 'an empty column name' ],
	[ qq{columns => '{"x": "event\\u0001"}'}, qr/the expression of column "x" must not contain control characters/, 'a control character' ],
	[ q{filter => repeat('1 = 1 AND ', 7000) || '1 = 1'}, qr/columns, filter, filter_values and query are too long for a PostHog query/, 'a filter too long' ],
	[ q{model => 'persons', filter => 'is_identified'}, qr/columns, filter and filter_values do not apply to the persons model/, 'a filter on persons' ],
	[ q{query => 'SELECT 1'}, qr/query and key apply to the hogql model only/, 'a query for the events model' ],
	[ q{model => 'hogql', query => 'SELECT 1', columns => '{"x": "event"}'}, qr/columns do not apply to the hogql model/, 'columns for the hogql model' ],
);
for my $b (@bad)
{
	my ($args, $re, $what) = @$b;
	$err = psql_fails($node, qq{SELECT posthog_export.create_export(name => 'refused', server => 'posthog', table_name => 'refused', $args)}, $what);
	like($err, $re, "$what: the message");
}
is(scalar(@{ emu_requests($emu) }), 0, 'no request was sent for any of them');

# a hogql export's columns are its query's, not custom columns: more than 100 are fine
my $wide = join ', ', map { "$_ AS c$_" } 1 .. 101;
psql_ok($node, qq{SELECT posthog_export.create_export(name => 'wide', model => 'hogql', server => 'posthog',
	query => 'SELECT $wide')}, 'a hogql export of 101 columns');
psql_ok($node, qq{SELECT posthog_export.alter_export('wide', query => 'SELECT $wide')},
	'is altered without a complaint about custom columns');
emu_reset($emu);
is($q->(q{SELECT format('%s %s', (SELECT count(*) FROM posthog_export.exports WHERE name = 'refused'), to_regclass('posthog_exports.refused') IS NULL)}),
	'0 t', 'nothing was created');
$err = psql_fails($node, q{SELECT posthog_export.alter_export('ev_filt', filter => 'event = {end}', filter_values => '{"end": 1}')},
	'alter_export with a reserved placeholder');
like($err, qr/placeholder name "end" in filter_values is reserved/, 'is refused the same way');
$err = psql_fails($node, q{SELECT posthog_export.alter_export('ev_filt', filter => '1) OR (1')}, 'alter_export with a filter breaking out');
like($err, qr/filter closes a parenthesis it did not open/, 'is refused the same way');

# what only looks like a way out is HogQL as PostHog reads it: accepted (no request: check_server => false)
psql_ok($node, q~SELECT posthog_export.create_export(name => 'lex_ok', server => 'posthog', table_name => 'lex_ok', check_server => false,
	columns => '{"c": "tuple(1, [2, (3)]) -- ) , (\n", "d": "`odd ) name`"}',
	filter => 'event != ''a) OR (b\'' '''' {x}'' /* ) , { */ AND "(" = {x} // (
	AND 1', filter_values => '{"x": "y"}')~,
	'parentheses, commas and braces in strings, quoted identifiers and comments are accepted');
is($q->(q{SELECT count(*) FROM posthog_export.exports WHERE name = 'lex_ok'}), '1', 'the export exists');

$node->stop;
$emu->{handle}->kill_kill;
done_testing();
