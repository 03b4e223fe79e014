# Problematic source values, end to end: each lands cleaned the way PostHog
# lands it, or fails the run with a clear error -- never a crash, never a
# half-written page.  Some come through the emulator's data files, the rest
# as canned response bodies (invalid UTF-8, numbers beyond double, deep
# nesting, wrong shapes) that no well-behaved JSON encoder would produce.
use strict;
use warnings;

use Encode;
use File::Temp qw(tempdir);
use JSON::PP;
use MIME::Base64;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
my $u = sub { sprintf '00000000-0000-4000-8000-%012d', $_[0] };
my %base = (team_id => 1, distinct_id => 'd', elements_chain => '', timestamp => '2026-11-20T00:10:00Z',
	created_at => '2026-11-20T00:10:01Z');
append_events($data,
	{ %base, uuid => $u->(1), event => "emoji \x{1F680} and\ttab\nnewline", properties => { "k\x{1F600}" => "line1\nline2\ttab", rtl => "\x{5E2}\x{5D1}\x{5E8}\x{5D9}\x{5EA}" } },
	{ %base, uuid => $u->(2), event => 'big', properties => { blob => ('x' x (10 * 1024 * 1024)), n => 1 } },
	# written as text: Perl itself would round these
	'{"uuid": "' . $u->(3) . '", "event": "bigint", "properties": {"big": 123456789012345678901234567890, "neg": -98765432109876543210}, ' .
	  '"team_id": 1, "distinct_id": "d", "elements_chain": "", "timestamp": "2026-11-20T00:10:00Z", "created_at": "2026-11-20T00:10:01Z"}',
	{ %base, uuid => $u->(4), event => 'empty', properties => {} },
	{ %base, uuid => $u->(5), event => 'nullprops', properties => undef },
	{ %base, uuid => $u->(6), event => 'future', timestamp => '9999-12-31T23:59:59.999999Z' },
	{ %base, uuid => $u->(7), event => 'past', timestamp => '1970-01-01T00:00:00Z' },
);
my $emu = start_emulator(data => $data);
my $node = new_node('badinput');
setup_server($node, $emu, options => { page_size => 1000, max_retries => 1 });
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('ok', 'posthog', table_name => 'ok', lookback => '100 years', check_server => false)});
psql_ok($node, q{CALL posthog_export.run_export('ok', '2026-11-20 00:00+00', '2026-11-20 01:00+00')}, 'the file-borne corpus exports');
my $get = sub { Encode::decode_utf8($node->safe_psql('postgres', $_[0])) };
is($get->(qq{SELECT event FROM posthog_exports.ok WHERE uuid = '@{[$u->(1)]}'}), "emoji \x{1F680} and\ttab\nnewline",
	'emoji, tabs and newlines kept in text');
is($get->(qq{SELECT properties->>'k\x{1F600}' || '|' || (properties->>'rtl') FROM posthog_exports.ok WHERE uuid = '@{[$u->(1)]}'}),
	"line1\nline2\ttab|\x{5E2}\x{5D1}\x{5E8}\x{5D9}\x{5EA}", '... and in property keys and values');
is($node->safe_psql('postgres', qq{SELECT length(properties->>'blob') FROM posthog_exports.ok WHERE uuid = '@{[$u->(2)]}'}),
	10 * 1024 * 1024, 'a 10 MB property lands whole');
is($node->safe_psql('postgres', qq{SELECT (properties->'big')::text || ' ' || (properties->'neg')::text FROM posthog_exports.ok WHERE uuid = '@{[$u->(3)]}'}),
	'123456789012345678901234567890 -98765432109876543210', 'integers beyond 64 bits are kept exactly');
is($node->safe_psql('postgres', qq{SELECT coalesce(properties::text, 'NULL') FROM posthog_exports.ok WHERE uuid IN ('@{[$u->(4)]}', '@{[$u->(5)]}') ORDER BY uuid}),
	"{}\nNULL", 'empty properties stay {}, null properties are NULL');
is($node->safe_psql('postgres', qq{SELECT to_char(timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM posthog_exports.ok WHERE uuid IN ('@{[$u->(6)]}', '@{[$u->(7)]}') ORDER BY uuid}),
	"9999-12-31\n1970-01-01", 'timestamps far in the future and the past');

# --- canned bodies --------------------------------------------------------------
my @columns = qw(uuid event properties elements_chain distinct_id team_id timestamp_utc);
my $n = 0;
# Runs a fresh export whose first (only) response is $body; returns (ret, stderr, rows in its table).
sub canned
{
	my ($body, $cols) = @_;
	$n++;
	emu_reset($emu);
	my $json = '{"results": [' . $body . '], "columns": ' . encode_json($cols // \@columns) . ', "types": [], "hasMore": false}';
	emu_faults($emu, { on_request => 1, times => 5, body_b64 => encode_base64($json, '') });
	$node->safe_psql('postgres', "SELECT posthog_export.create_export('c$n', 'posthog', table_name => 'c$n', check_server => false)");
	my ($ret, $out, $err) = $node->psql('postgres', "CALL posthog_export.run_export('c$n', '2026-11-20 00:00+00', '2026-11-20 01:00+00')");
	my $rows = $node->safe_psql('postgres', "SELECT count(*) FROM posthog_exports.c$n");
	return ($ret, $err, $rows);
}
my $row = sub { my ($uuid, $event, $props, %o) = @_;
	return '["' . $uuid . '", ' . $event . ', ' . $props . ', "", "d", ' . ($o{team} // 1) . ', ' . ($o{ts} // '"2026-11-20T00:10:00Z"') . ']'; };

my ($ret, $err, $rows) = canned($row->($u->(10), "\"bad \xff\xfe utf8 \xc3\x28\"", "\"{\\\"k\\\": \\\"v \xe9\xff\\\"}\""));
is("$ret $rows", '0 1', 'invalid UTF-8 bytes land');
is($get->("SELECT event || '|' || (properties->>'k') FROM posthog_exports.c$n"),
	"bad \x{FFFD}\x{FFFD} utf8 \x{FFFD}(|v \x{FFFD}\x{FFFD}", '... each invalid byte replaced by U+FFFD');

($ret, $err, $rows) = canned($row->($u->(11), '"nums"', '"{\"huge\": 1e400, \"tiny\": 1e-400, \"precise\": 0.12345678901234567890123456789}"'));
is("$ret $rows", '0 1', 'numbers beyond double precision land');
is($node->safe_psql('postgres', "SELECT properties->'huge' = '1e400'::jsonb AND properties->'tiny' = '1e-400'::jsonb AND properties->>'precise' = '0.12345678901234567890123456789' FROM posthog_exports.c$n"),
	't', '... with every digit (jsonb numeric)');

# jsonb built from the text must be the value jsonb_in makes of it, byte for byte
my @json_texts = (
	q{{"b": 1, "a": 2, "aa": 3, "a": 4, "ab": {"y": 1, "x": 2, "y": 3}}},
	q{{"k": [1, 1.0, -0, 0.5e1, 1E+2, -1.25e-3, 123456789012345678, 1234567890123456789, -9223372036854775808, 9223372036854775807, 1e400]}},
	q{{"s": "q\"uote\\\\ back\/slash \b\f\n\r\t \u00e9\u4e2d\ud83d\ude00 end", "\u00e9": 1, "e": 2, "": 3}},
	q{[]}, q{{}}, q{[[], {}, [{}], [[[]]]]},
	q{"just a string"}, q{42}, q{-0.5}, q{true}, q{false}, q{null},
	qq{ \t\n{ "x" : [ true , false , null ] , "y":{} } \n},
	q{{"zz": {"b": {"d": 1, "c": 2}, "a": []}, "z": [{"b": 1, "a": 2}, {"a": 3}]}},
	'{"n": ' . ('[' x 60) . '1' . (']' x 60) . '}',
	'{' . join(', ', map { "\"k$_\": $_" } reverse 1 .. 100) . '}',
);
($ret, $err, $rows) = canned(join ', ', map { $row->($u->(100 + $_), '"json"', encode_json($json_texts[$_])) } 0 .. $#json_texts);
is("$ret $rows", '0 ' . scalar(@json_texts), 'properties of every JSON shape land') or diag $err;
is($node->safe_psql('postgres', "SELECT count(*) || ':' || coalesce(string_agg(v.i::text, ',')
	FILTER (WHERE t.properties::text IS DISTINCT FROM v.text::jsonb::text), '') FROM (VALUES "
	. join(', ', map { "('@{[$u->(100 + $_)]}', $_, \$json\$$json_texts[$_]\$json\$)" } 0 .. $#json_texts)
	. ") v(uuid, i, text) JOIN posthog_exports.c$n t USING (uuid)"),
	scalar(@json_texts) . ':', '... each equal, byte for byte, to what jsonb_in makes of its text');

($ret, $err, $rows) = canned($row->($u->(12), '"deep"', '"' . ('[' x 100000) . (']' x 100000) . '"'));
isnt($ret, 0, 'properties nested 100,000 deep fail the run');
like($err, qr/stack depth limit exceeded|too deeply nested|nesting/i, '... with a clear error, and the server is fine');
is($node->safe_psql('postgres', 'SELECT 1'), 1, 'no crash');

($ret, $err, $rows) = canned($row->($u->(13), '"x"', '"not json at all"'));
like($err, qr/invalid input syntax for type json.*\n.*\n.*event 00000000-0000-4000-8000-000000000013 \(row 1 of page 1\) of export "c$n"/s,
	'properties that are not JSON fail the run, naming the event');

($ret, $err, $rows) = canned('[null, "e", "{}", "", "d", 1, "2026-11-20T00:10:00Z"], ' . $row->($u->(14), '"e"', '"{}"'));
like($err, qr/PostHog returned an event without uuid/, 'a null uuid fails the run clearly');
is($rows, 0, '... writing nothing of the page');

($ret, $err, $rows) = canned($row->($u->(15), '"e"', '"{}"', ts => 'null') . ', ' . $row->($u->(16), '"e"', '"{}"'));
like($err, qr/PostHog returned an event without timestamp/, 'a null timestamp fails the run clearly');

($ret, $err, $rows) = canned($row->($u->(17), '"e"', '"{}"', team => '"abc"'));
like($err, qr/invalid input syntax for type integer: "abc"/, 'a team_id of the wrong type fails the run clearly');

($ret, $err, $rows) = canned($row->($u->(18), '"e"', '"{}"', ts => '"yesterday-ish"'));
like($err, qr/invalid input syntax for type timestamp with time zone/, 'a malformed timestamp fails the run clearly');

($ret, $err, $rows) = canned('["' . $u->(19) . '", "e", "{}", "", "d", 1, "2026-11-20T00:10:00Z", "extra"]', [ @columns, 'extra' ]);
like($err, qr/PostHog returned 8 columns, the events query selects 7/, 'an extra column fails the run clearly');

($ret, $err, $rows) = canned('["' . $u->(20) . '", "e", "{}", "", "d", "2026-11-20T00:10:00Z"]');
like($err, qr/rows have 6 values but there are 7 columns/, 'rows not matching the columns fail the run clearly');

($ret, $err, $rows) = canned($row->($u->(21), '"' . ('e' x 1000) . '"', '"{}"'));
like($err, qr/value too long for type character varying\(200\)/, 'an event name of 1,000 characters does not fit VARCHAR(200): a clear error');
is($rows, 0, '... and no partial page');

($ret, $err, $rows) = canned($row->($u->(22), "\"raw \x01 control\"", '"{}"'));
like($err, qr/invalid response from PostHog: control character in string/, 'a raw control character in a string is an invalid response');

is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE status = 'failed' AND error IS NOT NULL AND error <> ''}),
	$node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE status <> 'completed'}),
	'every failed run says why in runs.error');
is($node->safe_psql('postgres', 'SELECT 1'), 1, 'the server survived the whole corpus');

$node->stop;
done_testing();
