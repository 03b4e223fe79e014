# Foreign table scans (issue 15): the results through the foreign tables
# equal the same queries over a local copy of the emulator's data.
#
# The local copy (schema l) is made with one full keyset-paged scan per
# table (page_size 1000, so the events need many pages) and checked against
# the data files themselves (test/expected_rows.py), so the oracle does not
# depend on what the FDW pushes down.  Each query runs twice in one
# transaction (one now()), with S. replaced by ph. (foreign) and l. (local);
# the outputs must be equal (sorted, unless the query orders its rows).
# Covered: filters of each type, NULLs, jsonb ->>, time zones, uuid,
# numbers, booleans, aggregates with GROUP BY/HAVING, empty aggregates,
# ORDER BY/LIMIT/OFFSET, joins with local tables, prepared statements
# (custom and generic plans), a nested-loop parameter, unicode; EXPLAIN
# shows what was pushed and no value pasted into the HogQL; a table
# without a keyset whose result exceeds a request; roles without USAGE or
# a user mapping, views and SECURITY DEFINER functions (whose mapping);
# the API key in no message; a cancel while PostHog is slow.
use strict;
use warnings;

use File::Temp qw(tempdir);
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use POSIX qw(strftime);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time);
use PhxTest;

my $json = JSON::PP->new->utf8->canonical;
my $data = tempdir(CLEANUP => 1);
# three days up to the last full hour: now() - interval filters reach into it
my $end_epoch = int(time / 3600) * 3600;
my $start_epoch = $end_epoch - 3 * 86400;
my $fmt = sub { strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0])) };
generate_data($data, events => 5000, seed => 25, start => $fmt->($start_epoch), end => $fmt->($end_epoch));

# events with properties chosen for ->>: quotes, unicode, a JSON null, numbers, an object, keys with
# $ and spaces; one with no properties at all
my @special = (
	{ q => 'say "hi" ünï ☃', 'key with space' => 'spaced', '$dollar' => 'd1', num => 1.5, flag => JSON::PP::true,
		nul => undef, obj => { a => 1, b => [ 1, 2 ] } },
	{ q => "it's", 'key with space' => 'spaced', '$dollar' => 'd2', num => 42, flag => JSON::PP::false },
	{ q => 'ユーザー', num => -3 },
	{},
);
my $i = 0;
# (the strings here are UTF-8 bytes, as the SQL below: encoded as they are, no second encoding)
my $raw_json = JSON::PP->new->canonical;
append_events($data, map {
		$i++;
		my $ts = $fmt->($end_epoch - 7200 - $i * 60);
		$raw_json->encode({ uuid => sprintf('0195a3c2-0000-4000-8000-%012d', $i), event => 'special event',
			properties => $_, timestamp => $ts, created_at => $ts, team_id => 1,
			distinct_id => "special-$i", elements_chain => '' });
	} @special);

my $emu = start_emulator(data => $data, timezone => 'Asia/Kolkata');
my $node = new_node('fdw_scan');
setup_server($node, $emu, options => { max_retries => 1, page_size => 1000 });
my @messages;    # every output that could show the key

sub run_sql
{
	my ($sql, %o) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql, on_error_stop => 1, %o);
	push @messages, $out, $err;
	return ($ret, $out, $err);
}

sub rows
{
	my ($sql) = @_;
	my ($ret, $out, $err) = run_sql($sql);
	is($ret, 0, 'runs: ' . substr($sql =~ s/\s+/ /gr, 0, 90)) or diag($err);
	return $out;
}

sub fails
{
	my ($sql, $name) = @_;
	my ($ret, $out, $err) = run_sql("\\set VERBOSITY verbose\n$sql");
	isnt($ret, 0, $name);
	return $err;
}

# --- the local copy -----------------------------------------------------------------
rows(q{CREATE SCHEMA ph; IMPORT FOREIGN SCHEMA posthog FROM SERVER posthog INTO ph; CREATE SCHEMA l});
emu_reset($emu);
rows(q{CREATE TABLE l.events AS SELECT * FROM ph.events});
my $reqs = emu_requests($emu);
my $n_events = 0;
open my $fh, '<', "$data/events.ndjson" or die $!;
while (<$fh>)
{
	next unless /\S/;
	# (a line holding a lone surrogate escape is no JSON for JSON::PP: its team_id read as text)
	my $e = eval { $json->decode($_) };
	my $team = $e ? ($e->{team_id} // 1) : /"team_id": (\d+)/ ? $1 : 1;
	$n_events++ if $team == 1;
}
close $fh;
ok($n_events > 5000, "the data holds $n_events events of the project");
is(rows(q{SELECT count(*) || ' ' || count(DISTINCT uuid) FROM l.events}), "$n_events $n_events",
	'a full scan returns every event once');
ok(@$reqs >= int($n_events / 1000) + 1, 'in pages of the server\'s page_size: ' . scalar(@$reqs) . ' requests');
is(scalar(grep { $_->{query} =~ /LIMIT 1000$/ && $_->{query} =~ /ORDER BY timestamp, uuid/ } @$reqs), scalar(@$reqs),
	'each a keyset page of 1000 rows');
is(scalar(grep { ($_->{status} // 0) == 200 } @$reqs), scalar(@$reqs), 'all answered');
like($reqs->[1]{query}, qr/WHERE \(timestamp, uuid\) > \(toDateTime64\(\{c1\}, 6, 'UTC'\), \{c2\}\)/,
	'the second page starts after the first page\'s last key');
my ($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'l.events',
	columns => [qw(uuid event properties distinct_id timestamp)]);
is("$expected $missing $extra", "$n_events 0 0", 'the copy holds the data files\' events (uuid, event, properties, distinct_id, timestamp)');

rows(q{CREATE TABLE l.sessions AS SELECT * FROM ph.sessions;
	CREATE TABLE l.raw_persons AS SELECT * FROM ph.raw_persons;
	CREATE TABLE l.raw_groups AS SELECT * FROM ph.raw_groups;
	CREATE VIEW l.sessions_cmp AS SELECT session_id, distinct_id, "$start_timestamp" AS start_timestamp,
		"$end_timestamp" AS end_timestamp, "$urls" AS urls, "$is_bounce" AS is_bounce, "$vitals_lcp" AS vitals_lcp,
		"$channel_type" AS channel_type, "$pageview_count" AS pageview_count, "$entry_utm_source" AS entry_utm_source
		FROM l.sessions});
($expected, $missing, $extra) = compare_with_source($node, $emu, model => 'sessions', table => 'l.sessions_cmp',
	columns => [qw(session_id distinct_id start_timestamp end_timestamp urls is_bounce vitals_lcp channel_type
		pageview_count entry_utm_source)]);
ok($expected > 300, "sessions in the data: $expected");
is("$missing $extra", '0 0', 'the sessions copy holds the data file\'s sessions (NULLs, arrays, floats, booleans)');
is(rows(q{SELECT count(*) = count(DISTINCT session_id) FROM l.sessions}), 't', 'each session once');
is(rows(q{SELECT count(*) > 0 AND count(*) FILTER (WHERE "$is_bounce" IS NULL) > 0 AND count(*) FILTER (WHERE "$vitals_lcp" IS NULL) > 0
	AND count(*) FILTER (WHERE "$entry_utm_source" IS NULL) > 0 FROM l.sessions}), 't', 'the sessions hold NULLs to filter on');

# a uuid-typed table with a column expression, and its local twin
rows(q{CREATE FOREIGN TABLE ph.ev_typed (id uuid OPTIONS (expression 'uuid'), event text, ts timestamptz OPTIONS (expression 'timestamp'),
		browser text OPTIONS (expression 'properties.$browser'), distinct_id text)
	SERVER posthog OPTIONS (table 'events');
	CREATE VIEW l.ev_typed AS SELECT uuid::uuid AS id, event, timestamp AS ts, properties->>'$browser' AS browser, distinct_id FROM l.events;
	CREATE TABLE names (name text); INSERT INTO names VALUES ('$pageview'), ('signed_up'), ('注文完了 ✅'), ('nosuch'), (NULL);
	CREATE TABLE vals (v bigint); INSERT INTO vals VALUES (0), (1), (3), (NULL);
	ANALYZE names; ANALYZE vals; ANALYZE l.events; ANALYZE l.sessions});

# --- foreign = local -------------------------------------------------------------------
# same(name, query with S. for the schema, ordered => 1 when the query fixes the order,
#      pre => statements before both, empty_ok => 1 when no rows is right)
sub same
{
	my ($name, $q, %o) = @_;
	my $pre = $o{pre} // '';
	my $sql = "BEGIN;\n$pre\n" . ($q =~ s/\bS\./ph./gr) . ";\n\\echo <<split>>\n" . ($q =~ s/\bS\./l./gr) . ";\nCOMMIT;\n";
	my ($ret, $out, $err) = run_sql($sql);
	if ($ret != 0)
	{
		fail("$name: runs");
		diag("query: $q\n$err");
		return;
	}
	my ($f, $l) = split /^<<split>>\n?/m, $out, 2;
	$l //= '';
	my @f = split /\n/, $f;
	my @l = split /\n/, $l;
	unless ($o{ordered})
	{
		@f = sort @f;
		@l = sort @l;
	}
	ok(@l > 0, "$name: the local query has rows") unless $o{empty_ok};
	is_deeply(\@f, \@l, "$name: foreign = local") or diag("query: $q\nforeign: " . join(' | ', @f[0 .. ($#f < 5 ? $#f : 5)]) .
		"\nlocal:   " . join(' | ', @l[0 .. ($#l < 5 ? $#l : 5)]) . "\n" . scalar(@f) . ' vs ' . scalar(@l) . ' rows');
}

# the HogQL of a query's plan (every "PostHog HogQL" line), and its Filter lines
sub explain_plan
{
	my ($q, $pre) = @_;
	my $out = rows(($pre // '') . "EXPLAIN (VERBOSE, COSTS OFF) " . ($q =~ s/\bS\./ph./gr));
	my @hogql = map { s/^\s*PostHog HogQL: //r } grep { /PostHog HogQL: / } split /\n/, $out;
	my @filter = grep { /^\s*Filter: / } split /\n/, $out;
	return (join("\n", @hogql), join("\n", @filter), $out);
}

# pushed(name, query, qr/the HogQL must match/, local filter expected?, values that must not be pasted)
sub pushed
{
	my ($name, $q, $re, $local, @values) = @_;
	my ($h, $f, $all) = explain_plan($q);
	like($h, $re, "$name: pushed as expected") or diag($all);
	if ($local) { isnt($f, '', "$name: a part stays local (Filter)") or diag($all); }
	else { is($f, '', "$name: nothing filtered locally") or diag($all); }
	for my $v (@values)
	{
		unlike($h, qr/\Q$v\E/, "$name: the value $v is not pasted into the HogQL");
	}
	like($h, qr/\{p1\}/, "$name: values are placeholders") if @values;
}

# text: = <> < LIKE ILIKE NOT LIKE IN NOT IN IS NULL
same('text =', q{SELECT uuid, event FROM S.events WHERE event = '$pageview'});
pushed('text =', q{SELECT uuid FROM S.events WHERE event = '$pageview'}, qr/WHERE .*event.* = \{p1\}/, 0, '$pageview');
same('text <>', q{SELECT uuid FROM S.events WHERE event <> '$pageview'});
same('text < (C collation)', q{SELECT uuid, event FROM S.events WHERE event < 'm' COLLATE "C"});
same('text >= (default collation)', q{SELECT uuid, event FROM S.events WHERE event >= 'purchase'});
same('LIKE', q{SELECT uuid, distinct_id FROM S.events WHERE distinct_id LIKE 'user1%'});
pushed('LIKE', q{SELECT uuid FROM S.events WHERE distinct_id LIKE 'user1%'}, qr/LIKE \{p1\}/i, 0, 'user1%');
same('LIKE with _ and an escaped %', q{SELECT uuid FROM S.events WHERE distinct_id LIKE 'user_\%%' OR distinct_id LIKE '_ser2%'});
same('ILIKE', q{SELECT uuid, event FROM S.events WHERE event ILIKE '%PAGE%'});
same('ILIKE unicode', q{SELECT uuid, distinct_id FROM S.events WHERE distinct_id ILIKE '%ユーザー%'});
same('NOT LIKE', q{SELECT uuid FROM S.events WHERE event NOT LIKE '$%'});
same('NOT LIKE on a nullable column', q{SELECT session_id FROM S.sessions WHERE "$entry_utm_source" NOT LIKE 'g%'});
same('IN', q{SELECT uuid FROM S.events WHERE event IN ('$pageview', 'signed_up', '注文完了 ✅')});
pushed('IN', q{SELECT uuid FROM S.events WHERE event IN ('$pageview', 'signed_up')}, qr/event.* IN \{p1\}/, 0, 'signed_up');
same('= ANY(array)', q{SELECT uuid FROM S.events WHERE event = ANY (ARRAY['$identify', 'purchase_completed'])});
same('NOT IN', q{SELECT uuid FROM S.events WHERE event NOT IN ('$pageview', '$autocapture')});
same('NOT IN on a nullable column', q{SELECT session_id FROM S.sessions WHERE "$entry_utm_source" NOT IN ('google', 'twitter')});
same('<> ALL', q{SELECT session_id FROM S.sessions WHERE "$entry_utm_source" <> ALL (ARRAY['google', 'reddit'])});
same('IN with a NULL', q{SELECT session_id FROM S.sessions WHERE "$entry_utm_source" IN ('google', NULL)});
same('NOT IN with a NULL (no row)', q{SELECT session_id FROM S.sessions WHERE "$entry_utm_source" NOT IN ('google', NULL)}, empty_ok => 1);
same('IS NULL', q{SELECT session_id FROM S.sessions WHERE "$entry_utm_source" IS NULL});
same('IS NOT NULL', q{SELECT session_id FROM S.sessions WHERE "$vitals_lcp" IS NOT NULL});
pushed('IS NULL', q{SELECT session_id FROM S.sessions WHERE "$entry_utm_source" IS NULL}, qr/\$entry_utm_source IS NULL|isNull\(\$entry_utm_source\)/, 0);
same('<> on a nullable column', q{SELECT session_id FROM S.sessions WHERE "$entry_utm_source" <> 'google'});
same('= NULL (no row)', q{SELECT session_id FROM S.sessions WHERE "$entry_utm_source" = NULL}, empty_ok => 1);

# AND / OR / NOT with NULLs
same('OR with NULLs', q{SELECT session_id FROM S.sessions WHERE "$entry_utm_source" = 'google' OR "$is_bounce"});
same('NOT (a AND b) with NULLs', q{SELECT session_id FROM S.sessions WHERE NOT ("$entry_utm_source" = 'google' AND "$vitals_lcp" > 2)});
same('NOT (a OR b) with NULLs', q{SELECT session_id FROM S.sessions WHERE NOT ("$entry_utm_source" <> 'google' OR "$is_bounce")});
same('NOT of a comparison with NULLs', q{SELECT session_id FROM S.sessions WHERE NOT ("$vitals_lcp" < 2.5)});
same('NOT LIKE inside NOT', q{SELECT session_id FROM S.sessions WHERE NOT ("$entry_utm_source" NOT LIKE '%e%')});
same('nested AND/OR', q{SELECT uuid FROM S.events WHERE (event = '$pageview' AND distinct_id LIKE 'user1%') OR (event = 'signed_up' AND NOT distinct_id LIKE 'user%')});

# numbers, floats, booleans
same('bigint comparisons', q{SELECT session_id FROM S.sessions WHERE "$pageview_count" > 3 AND "$pageview_count" <= 10});
same('bigint BETWEEN and = ANY', q{SELECT session_id FROM S.sessions WHERE "$pageview_count" BETWEEN 2 AND 4 OR "$screen_count" = ANY ('{1,2}')});
same('bigint vs numeric constant', q{SELECT session_id FROM S.sessions WHERE "$pageview_count" > 2.5});
same('float comparison', q{SELECT session_id FROM S.sessions WHERE "$vitals_lcp" > 2.5});
same('float <> (NULLs)', q{SELECT session_id FROM S.sessions WHERE "$vitals_lcp" <> 1.0});
same('boolean column', q{SELECT session_id FROM S.sessions WHERE "$is_bounce"});
same('NOT boolean (NULLs)', q{SELECT session_id FROM S.sessions WHERE NOT "$is_bounce"});
same('boolean = false', q{SELECT session_id FROM S.sessions WHERE "$is_bounce" = false});
same('boolean IS NOT TRUE', q{SELECT session_id FROM S.sessions WHERE "$is_bounce" IS NOT TRUE});
same('Int8 flags as boolean', q{SELECT id, version FROM S.raw_persons WHERE is_deleted OR NOT is_identified});
same('arithmetic stays local', q{SELECT session_id FROM S.sessions WHERE "$pageview_count" * 2 > 7});
pushed('arithmetic stays local', q{SELECT session_id FROM S.sessions WHERE "$pageview_count" * 2 > 7}, qr/FROM sessions/, 1);

# uuid
my $some_uuid = rows(q{SELECT uuid FROM l.events ORDER BY uuid OFFSET 17 LIMIT 1});
same('uuid as text =', qq{SELECT uuid, event FROM S.events WHERE uuid = '$some_uuid'});
same('uuid typed =', qq{SELECT id, event, browser FROM S.ev_typed WHERE id = '$some_uuid'});
same('uuid typed IN', qq{SELECT id FROM S.ev_typed WHERE id IN ('$some_uuid', '0195a3c2-0000-4000-8000-000000000001', '00000000-0000-0000-0000-000000000000')});
same('uuid upper case', qq{SELECT id FROM S.ev_typed WHERE id = upper('$some_uuid')::uuid});
same('a column expression (properties.\$browser)', q{SELECT id FROM S.ev_typed WHERE browser = 'Firefox'});

# timestamps, now() - interval, time zones
my $mid = $fmt->($end_epoch - 36 * 3600);
my $mid_local = strftime('%Y-%m-%d %H:%M:%S', gmtime($end_epoch - 36 * 3600));
same('timestamp >= now() - interval', q{SELECT uuid FROM S.events WHERE timestamp >= now() - interval '1 day'});
pushed('now() - interval', q{SELECT uuid FROM S.events WHERE timestamp >= now() - interval '1 day'}, qr/timestamp.* >= .*\{p1\}/, 0);
same('timestamp range, fixed literal with offset', qq{SELECT uuid FROM S.events WHERE timestamp >= '$mid' AND timestamp < '$mid'::timestamptz + interval '3 hours'});
for my $tz ('UTC', 'America/New_York', 'Asia/Kolkata', 'Pacific/Chatham')
{
	same("timestamp literal without offset in TimeZone $tz",
		qq{SELECT uuid, timestamp FROM S.events WHERE timestamp BETWEEN '$mid_local' AND '$mid_local'::timestamp + interval '2 hours'},
		pre => "SET LOCAL TimeZone = '$tz';");
}
same('timestamp = an event\'s exact time', qq{SELECT uuid FROM S.events WHERE timestamp = (SELECT timestamp FROM l.events WHERE uuid = '$some_uuid')});
same('timestamptz column vs date_trunc (local)', q{SELECT uuid FROM S.events WHERE date_trunc('hour', timestamp) = date_trunc('hour', now() - interval '30 hours')});
same('created_at - timestamp (late events)', q{SELECT uuid FROM S.events WHERE created_at > timestamp + interval '1 hour'});
same('sessions by start time in a zone', qq{SELECT session_id FROM S.sessions WHERE "\$start_timestamp" < '$mid_local'}, pre => q{SET LOCAL TimeZone = 'Asia/Tokyo';});

# jsonb ->>
same('->> =', q{SELECT uuid FROM S.events WHERE properties->>'$browser' = 'Chrome'});
pushed('->> =', q{SELECT uuid FROM S.events WHERE properties->>'$browser' = 'Chrome'}, qr/properties/, 0, 'Chrome', '$browser');
same('->> a key with a space', q{SELECT uuid FROM S.events WHERE properties->>'key with space' = 'spaced'});
same('->> a key with $ and a unicode key', q{SELECT uuid FROM S.events WHERE properties->>'$dollar' = 'd2' OR properties->>'プロパ_22' IS NOT NULL});
same('->> a missing key IS NULL', q{SELECT count(*) FROM S.events WHERE properties->>'no such key' IS NULL});
same('->> a JSON null IS NULL', q{SELECT uuid FROM S.events WHERE event = 'special event' AND properties->>'nul' IS NULL});
same('->> a value with quotes and unicode', q{SELECT uuid FROM S.events WHERE properties->>'q' = 'say "hi" ünï ☃'});
same('->> a value with an apostrophe', q{SELECT uuid FROM S.events WHERE properties->>'q' = 'it''s'});
same('->> unicode value', q{SELECT uuid FROM S.events WHERE properties->>'q' = 'ユーザー'});
same('->> a number as text', q{SELECT uuid FROM S.events WHERE properties->>'num' = '1.5' OR properties->>'num' = '-3'});
same('->> a boolean as text', q{SELECT uuid FROM S.events WHERE properties->>'flag' = 'false'});
# an object's text: Postgres's jsonb form here, ClickHouse's compact form when the comparison is sent (README)
is(rows(q{SELECT count(*) FROM ph.events WHERE properties->>'obj' = '{"a":1,"b":[1,2]}'}), '1',
	'->> an object as text: compared in ClickHouse\'s compact form when sent');
is(rows(q{SELECT count(*) FROM l.events WHERE properties->>'obj' = '{"a": 1, "b": [1, 2]}'}), '1',
	'->> an object as text: Postgres\'s form locally');
same('->> an integer property', q{SELECT uuid FROM S.events WHERE properties->>'$browser_version' = '107'});
same('->> <> (missing keys)', q{SELECT uuid FROM S.events WHERE properties->>'$browser' <> 'Chrome'});
same('->> IN', q{SELECT uuid FROM S.events WHERE properties->>'$os' IN ('iOS', 'Android')});
same('->> LIKE', q{SELECT uuid FROM S.events WHERE properties->>'$current_url' LIKE '%/pricing'});
same('->> NOT LIKE', q{SELECT uuid FROM S.events WHERE properties->>'$current_url' NOT LIKE 'https://app.%'});
same('->> selected', q{SELECT uuid, properties->>'$browser', properties->>'q' FROM S.events WHERE event IN ('special event', 'signed_up')});
same('-> then ->>', q{SELECT uuid FROM S.events WHERE properties->'obj'->>'a' = '1'});

# aggregates
same('count(*) GROUP BY', q{SELECT event, count(*) FROM S.events GROUP BY event});
pushed('count(*) GROUP BY', q{SELECT event, count(*) FROM S.events GROUP BY event}, qr/count\(\).*GROUP BY event/, 0);
same('count(x), count(DISTINCT x)', q{SELECT event, count(distinct_id), count(DISTINCT distinct_id), count(person_id) FROM S.events GROUP BY event});
same('min, max of timestamps', q{SELECT event, min(timestamp), max(timestamp) FROM S.events GROUP BY event});
same('sum, min, max, avg', q{SELECT "$channel_type", sum("$pageview_count"), min("$vitals_lcp"), max("$vitals_lcp"), round(avg("$vitals_lcp")::numeric, 6), count("$vitals_lcp")
	FROM S.sessions GROUP BY "$channel_type"});
pushed('sum, avg', q{SELECT "$channel_type", sum("$pageview_count"), avg("$vitals_lcp") FROM S.sessions GROUP BY "$channel_type"}, qr/sum\(.*avg\(.*GROUP BY/, 0);
same('HAVING', q{SELECT event, count(*) FROM S.events GROUP BY event HAVING count(*) > 200});
pushed('HAVING', q{SELECT event, count(*) FROM S.events GROUP BY event HAVING count(*) > 200}, qr/HAVING/, 0, '200');
same('GROUP BY with WHERE', q{SELECT distinct_id, count(*) FROM S.events WHERE event = '$pageview' AND timestamp > now() - interval '2 days' GROUP BY distinct_id});
same('GROUP BY a nullable column', q{SELECT "$entry_utm_source", count(*), sum("$screen_count") FROM S.sessions GROUP BY 1});
same('GROUP BY a boolean', q{SELECT "$is_bounce", count(*) FROM S.sessions GROUP BY 1});
same('GROUP BY ->>', q{SELECT properties->>'$browser', count(*) FROM S.events GROUP BY 1});
same('count(*) alone', q{SELECT count(*) FROM S.events});
same('count with a filter', q{SELECT count(*), count(DISTINCT event) FROM S.events WHERE distinct_id LIKE 'user%'});
same('min/max of text', q{SELECT min(event COLLATE "C"), max(distinct_id COLLATE "C") FROM S.events});
same('aggregates over no rows', q{SELECT count(*), count("$vitals_lcp"), sum("$pageview_count"), min("$vitals_lcp"), max(session_id), avg("$vitals_lcp"),
	min("$start_timestamp") FROM S.sessions WHERE session_id = 'no such session'});
same('aggregates over no rows, grouped (no group)', q{SELECT event, sum(1), count(*) FROM S.events WHERE event = 'no such event' GROUP BY event}, empty_ok => 1);
same('sum over only NULLs', q{SELECT sum("$vitals_lcp"), max("$vitals_lcp"), avg("$vitals_lcp") FROM S.sessions WHERE "$vitals_lcp" IS NULL});
same('aggregate with ORDER BY LIMIT', q{SELECT event, count(*) FROM S.events GROUP BY event ORDER BY 2 DESC, event COLLATE "C" LIMIT 3}, ordered => 1);
same('count(*) FILTER (local)', q{SELECT count(*) FILTER (WHERE event = '$pageview') FROM S.events});

# ORDER BY / LIMIT / OFFSET
same('ORDER BY timestamp, uuid LIMIT', q{SELECT uuid, timestamp FROM S.events ORDER BY timestamp, uuid LIMIT 25}, ordered => 1);
pushed('ORDER BY LIMIT', q{SELECT uuid, timestamp FROM S.events ORDER BY timestamp LIMIT 25}, qr/ORDER BY timestamp ASC LIMIT 25/, 0);
# a uuid (here text under a non-C collation) is not ordered by PostHog: that sort stays here
like(rows(q{EXPLAIN (COSTS OFF) SELECT uuid, timestamp FROM ph.events ORDER BY timestamp, uuid LIMIT 25}), qr/Sort/,
	'ORDER BY timestamp, uuid: sorted here (ClickHouse orders uuids and text otherwise)');
same('ORDER BY DESC LIMIT OFFSET', q{SELECT uuid, timestamp FROM S.events ORDER BY timestamp DESC, uuid DESC LIMIT 10 OFFSET 7}, ordered => 1);
same('ORDER BY a nullable float DESC (NULLs first)', q{SELECT session_id, "$vitals_lcp" FROM S.sessions ORDER BY "$vitals_lcp" DESC, session_id LIMIT 30}, ordered => 1);
same('ORDER BY ASC NULLS FIRST', q{SELECT session_id, "$vitals_lcp" FROM S.sessions ORDER BY "$vitals_lcp" NULLS FIRST, session_id LIMIT 30}, ordered => 1);
same('ORDER BY DESC NULLS LAST', q{SELECT session_id, "$entry_utm_source" FROM S.sessions ORDER BY "$entry_utm_source" COLLATE "C" DESC NULLS LAST, session_id COLLATE "C" LIMIT 40}, ordered => 1);
same('ORDER BY with a filter LIMIT', q{SELECT uuid, timestamp, event FROM S.events WHERE event = 'signed_up' ORDER BY timestamp DESC, uuid LIMIT 5}, ordered => 1);
same('LIMIT without ORDER BY (count)', q{SELECT count(*) FROM (SELECT uuid FROM S.events WHERE event = '$pageview' LIMIT 1500) s});
same('OFFSET past the end', q{SELECT uuid FROM S.events ORDER BY timestamp, uuid LIMIT 5 OFFSET 100000}, ordered => 1, empty_ok => 1);
same('ORDER BY a text column (C) LIMIT', q{SELECT distinct_id COLLATE "C", uuid FROM S.events ORDER BY 1, 2 LIMIT 20}, ordered => 1);

# joins with local tables, a nested-loop parameter
same('join with a local table', q{SELECT n.name, count(e.uuid) FROM names n LEFT JOIN S.events e ON e.event = n.name GROUP BY n.name});
same('join forced into a nested loop', q{SELECT n.name, e.uuid FROM names n JOIN S.events e ON e.event = n.name},
	pre => 'SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;');
same('a correlated subquery (parameter per outer row)', q{SELECT v, (SELECT count(*) FROM S.sessions s WHERE s."$screen_count" = vals.v) FROM vals});
same('LATERAL with a parameter, ORDER BY LIMIT', q{SELECT n.name, x.uuid FROM names n, LATERAL (SELECT uuid FROM S.events e WHERE e.event = n.name ORDER BY timestamp, uuid LIMIT 2) x},
	pre => 'SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off;');
same('two foreign tables joined', q{SELECT count(*), count(DISTINCT s.session_id) FROM S.events e JOIN S.sessions s ON s.session_id = e."$session_id" WHERE e.event = '$pageview'});
same('EXISTS against a local table', q{SELECT uuid FROM S.events e WHERE EXISTS (SELECT 1 FROM names n WHERE n.name = e.event)});
my ($h) = explain_plan(q{SELECT v, (SELECT count(*) FROM S.sessions s WHERE s."$screen_count" = vals.v) FROM vals});
like($h, qr/\$screen_count = \{p1\}/, 'the parameter of the subquery is sent as a value');

# prepared statements: custom and generic plans
my $prep = q{
PREPARE q1(text, bigint) AS SELECT count(*), min(timestamp) FROM S.events WHERE event = $1 AND (SELECT 1) = 1 AND length(distinct_id) > $2 - 100;
EXECUTE q1('$pageview', 1); EXECUTE q1('signed_up', 1); EXECUTE q1('no such', 1); EXECUTE q1('注文完了 ✅', 1);
EXECUTE q1('$pageview', 2); EXECUTE q1('$autocapture', 3); EXECUTE q1(NULL, 3);
PREPARE q2(text[]) AS SELECT event, count(*) FROM S.events WHERE event = ANY($1) GROUP BY event ORDER BY event COLLATE "C";
EXECUTE q2('{$pageview,signed_up}'); EXECUTE q2('{}'); EXECUTE q2('{$identify,NULL}');
PREPARE q3(timestamptz, int) AS SELECT uuid FROM S.events WHERE timestamp >= $1 ORDER BY timestamp, uuid LIMIT $2;
EXECUTE q3(now() - interval '1 hour 10 minutes', 3); EXECUTE q3(now() - interval '2 days', 4); EXECUTE q3(NULL, 4);
DEALLOCATE ALL};
same('prepared statements, custom plans', $prep, ordered => 1);
same('prepared statements, generic plans', $prep, ordered => 1, pre => 'SET LOCAL plan_cache_mode = force_generic_plan;');
my $gen = rows(q{SET plan_cache_mode = force_generic_plan;
	PREPARE g(text) AS SELECT count(*) FROM ph.events WHERE event = $1;
	EXPLAIN (VERBOSE, COSTS OFF) EXECUTE g('$pageview')});
like($gen, qr/PostHog HogQL: .*event = \{p1\}/, 'a generic plan sends its parameter as a value');
unlike($gen =~ s/\n.*p1 = .*//r, qr/PostHog HogQL: .*\$pageview/, 'not pasted');

# unicode
same('unicode event name', q{SELECT uuid, distinct_id FROM S.events WHERE event = '注文完了 ✅'});
same('unicode distinct ids', q{SELECT distinct_id, count(*) FROM S.sessions WHERE distinct_id LIKE 'ユーザー-%' GROUP BY distinct_id});
same('unicode in arrays', q{SELECT session_id, "$urls" FROM S.sessions WHERE "$entry_hostname" = '例え.テスト'});

# a filter on a column no HogQL expression can evaluate: everything comes back, filtered here
same('a local-only condition', q{SELECT uuid FROM S.events WHERE md5(uuid) LIKE 'a%'});
pushed('a local-only condition', q{SELECT uuid FROM S.events WHERE md5(uuid) LIKE 'a%' AND event = 'signed_up'}, qr/WHERE .*event/, 1);

# every row once, through many pages, with a pushed filter and a keyset of the user's
is(rows(q{SELECT count(*) || ' ' || count(DISTINCT uuid) FROM (SELECT uuid FROM ph.events WHERE event <> 'special event' OFFSET 0) s}),
	rows(q{SELECT count(*) || ' ' || count(DISTINCT uuid) FROM l.events WHERE event <> 'special event'}), 'a filtered paged scan: every row once');
rows(q{CREATE FOREIGN TABLE ph.ev_key (id text OPTIONS (expression 'uuid'), ts timestamptz OPTIONS (expression 'timestamp'), event text)
	SERVER posthog OPTIONS (table 'events', keyset 'ts, id')});
emu_reset($emu);
is(rows(q{SELECT count(*) || ' ' || count(DISTINCT id) FROM (SELECT id FROM ph.ev_key OFFSET 0) s}), "$n_events $n_events",
	'a foreign table with the option keyset: every row once');
$reqs = emu_requests($emu);
ok(@$reqs > 5 && !grep({ $_->{query} !~ /ORDER BY timestamp, uuid LIMIT 1000$/ } @$reqs), 'paged by its keyset: ' . scalar(@$reqs) . ' requests');

# --- a table without a keyset --------------------------------------------------------
same('a table without a keyset (one request)', q{SELECT key, "index", updated_at FROM S.raw_groups});
my @many = map { ["k$_"] } 1 .. 50000;
emu_reset($emu);
emu_faults($emu, { on_request => 1, body_b64 => encode_base64($json->encode({ columns => ['key'], types => [ [ 'key', 'String' ] ],
	results => \@many, hasMore => JSON::PP::false }), '') });
my $err = fails(q{SELECT key FROM ph.raw_groups}, 'a table without a keyset whose result fills a request fails');
like($err, qr/54000: the result of foreign table ph.raw_groups has more rows than PostHog returns in one request \(50000\)/,
	'saying so') or diag($err);
like($err, qr/HINT:  .*option "keyset"/, 'with a hint (filter, LIMIT, keyset, export)');
emu_reset($emu);

# --- roles ---------------------------------------------------------------------------
rows(q{CREATE ROLE alice; CREATE ROLE bob; CREATE ROLE carol;
	GRANT USAGE ON SCHEMA ph TO alice, bob, carol; GRANT SELECT ON ALL TABLES IN SCHEMA ph TO alice, bob, carol;
	GRANT USAGE ON FOREIGN SERVER posthog TO bob, carol;
	CREATE USER MAPPING FOR carol SERVER posthog OPTIONS (api_key 'phx_carols_wrong_key')});
$err = fails(q{SET ROLE alice; SELECT count(*) FROM ph.events}, 'a role without USAGE on the server');
like($err, qr/42501: permission denied for foreign server posthog/, 'gets postgres_fdw\'s kind of error') or diag($err);
$err = fails(q{SET ROLE bob; SELECT count(*) FROM ph.events}, 'a role without a user mapping');
like($err, qr/42704: user mapping not found for role "bob" on server "posthog"/, 'gets postgres_fdw\'s kind of error') or diag($err);
$err = fails(q{SET ROLE carol; SELECT count(*) FROM ph.events}, 'a role with its own (wrong) key');
like($err, qr/rejected the API key \(HTTP 401\)/, 'uses its own mapping');
# EXPLAIN makes no request: as with postgres_fdw (without use_remote_estimate) it needs no USAGE nor mapping
like(rows(q{SET ROLE alice; EXPLAIN (VERBOSE) SELECT count(*) FROM ph.events WHERE event = 'x'}), qr/PostHog HogQL: SELECT count\(\) FROM events WHERE \(event = \{p1\}\)/,
	'EXPLAIN without USAGE or a mapping shows the HogQL (no request)');
# a view: the scan runs with the view owner's mapping (checkAsUser), as postgres_fdw does
rows(q{CREATE VIEW public.admin_counts AS SELECT event, count(*) AS n FROM ph.events GROUP BY event;
	GRANT SELECT ON public.admin_counts TO alice;
	CREATE VIEW public.carol_counts AS SELECT count(*) AS n FROM ph.events; ALTER VIEW public.carol_counts OWNER TO carol;
	CREATE FUNCTION public.definer_count() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS 'SELECT count(*) FROM ph.events';
	CREATE FUNCTION public.invoker_count() RETURNS bigint LANGUAGE sql AS 'SELECT count(*) FROM ph.events';
	GRANT EXECUTE ON FUNCTION public.definer_count(), public.invoker_count() TO alice});
is(rows(q{SET ROLE alice; SELECT sum(n) FROM public.admin_counts}), $n_events,
	'alice (no USAGE, no mapping) reads through a view of the owner: the owner\'s mapping');
$err = fails(q{SELECT n FROM public.carol_counts}, 'the superuser through a view owned by carol');
like($err, qr/rejected the API key \(HTTP 401\)/, 'uses carol\'s mapping (the view owner\'s), not the caller\'s');
is(rows(q{SET ROLE alice; SELECT public.definer_count()}), $n_events, 'a SECURITY DEFINER function scans with its owner\'s mapping');
$err = fails(q{SET ROLE alice; SELECT public.invoker_count()}, 'a SECURITY INVOKER function as alice');
like($err, qr/permission denied for foreign server posthog/, 'runs as alice');
# a prepared plan keeps whose mapping it uses: made by the superuser, executed after SET ROLE carol
$err = fails(q{PREPARE pc AS SELECT count(*) FROM ph.events; EXECUTE pc; SET ROLE carol; EXECUTE pc},
	'a cached plan executed by another role');
like($err, qr/rejected the API key \(HTTP 401\)/, 'uses the executing role\'s mapping');

# --- cancel while PostHog is slow --------------------------------------------------------
emu_reset($emu);
emu_faults($emu, { on_request => 1, delay => 30 });
my $t0 = time;
$err = fails(q{SET statement_timeout = '1s'; SELECT count(*) FROM ph.events WHERE event = 'signed_up'}, 'a scan waiting on a slow answer');
my $took = time - $t0;
like($err, qr/57014: canceling statement due to statement timeout/, 'is cancelled with the normal error') or diag($err);
ok($took < 8, sprintf('promptly (%.1f s)', $took));
emu_reset($emu);
is(rows(q{SELECT count(*) FROM ph.events WHERE event = 'special event'}), scalar(@special), 'the next scan works');

# --- the key in no output ---------------------------------------------------------------
my $key = $PhxTest::API_KEY;
is(scalar(grep { defined $_ && /\Q$key\E|phx_carols_wrong_key/ } @messages), 0,
	'the API keys are in no result, error, NOTICE or EXPLAIN (' . scalar(@messages) . ' outputs)');
my @logged = grep { /^\S+ \S+ \S+ \[\d+\] .*?(?:LOG|ERROR|WARNING|NOTICE|DETAIL|HINT|CONTEXT|FATAL):  / && !/LOG:  statement: / }
  split /\n/, slurp_file($node->logfile);
is(scalar(grep { /\Q$key\E|phx_carols_wrong_key/ } @logged), 0, 'nor in the server log\'s messages');

done_testing();
