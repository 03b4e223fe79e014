# IMPORT FOREIGN SCHEMA and posthog_export.query() (issue 15).
#
# Import: PostHog's schema query (DatabaseSchemaQuery) lists the tables; a
# foreign table per table of the remote schema posthog, with the mapped
# column types (checked against the emulator's own answer to the schema
# query, read here over HTTP), no team_id and no join fields; LIMIT TO and
# EXCEPT; the schema system; an unknown remote schema or an import option
# refused; names that need quoting or do not fit (a canned schema body:
# long names, dotted warehouse names, posthog.* tables, a field traverser
# through a lazy join, types of every kind); a malformed schema.
# query(): values of each type as HogQL placeholders, NULLs, unicode,
# JSON strings into jsonb, arrays into text[], 0/1 into boolean, datetimes
# with the project's offset into timestamptz, a count mismatch, a cell
# that does not fit, hasMore refused, bad values refused; roles without
# USAGE or without a user mapping; the API key in no message.
use strict;
use warnings;

use Encode qw(encode_utf8);
use File::Temp qw(tempdir);
use HTTP::Tiny;
use JSON::PP;
use MIME::Base64 qw(encode_base64);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $json = JSON::PP->new->utf8->canonical;
my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 300, seed => 23,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T02:00:00Z');
# a project time zone with an offset: datetimes come back as +05:30
my $emu = start_emulator(data => $data, timezone => 'Asia/Kolkata');
my $node = new_node('fdw_import');
setup_server($node, $emu, options => { max_retries => 1 });
my @messages;    # every error and notice seen, checked for the key at the end

# (the foreign data wrapper's handler, with ImportForeignSchema, comes with the extension)

sub fails
{
	my ($sql, $name) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n$sql");
	isnt($ret, 0, $name);
	push @messages, $err;
	return $err;
}

sub rows
{
	my ($sql) = @_;
	my ($ret, $out, $err) = $node->psql('postgres', $sql);
	push @messages, $err;
	is($ret, 0, "runs: " . substr($sql =~ s/\s+/ /gr, 0, 90)) or diag($err);
	return $out;
}

# --- the emulator's own answer to the schema query: the expectation --------------
my $http = HTTP::Tiny->new(timeout => 30);
my $res = $http->post("$emu->{url}/api/projects/1/query/", {
		headers => { Authorization => "Bearer $PhxTest::API_KEY", 'Content-Type' => 'application/json' },
		content => '{"query": {"kind": "DatabaseSchemaQuery"}}' });
is($res->{status}, 200, 'the emulator answers the schema query');
my $schema = $json->decode($res->{content});
ok(ref $schema->{tables} eq 'HASH' && ref $schema->{joins} eq 'ARRAY', 'in PostHog\'s shape: tables and joins');
my %pg_type = (integer => 'bigint', float => 'double precision', decimal => 'numeric', string => 'text',
	datetime => 'timestamp with time zone', date => 'date', boolean => 'boolean', array => 'ARRAY',
	json => 'jsonb', unknown => 'text', expression => 'text');
my %expected;    # table -> "column:type" in order
for my $t (sort keys %{ $schema->{tables} })
{
	next if $t =~ /^system\./;
	my @cols;
	for my $f (values %{ $schema->{tables}{$t}{fields} })
	{
		push @cols, "$f->{name}:$pg_type{$f->{type}}" if $pg_type{ $f->{type} };
	}
	$expected{$t} = join ',', sort @cols;
}
ok(exists $expected{events} && exists $expected{sessions} && exists $expected{raw_persons},
	'the schema lists the emulator\'s tables');

# --- IMPORT FOREIGN SCHEMA posthog -----------------------------------------------
emu_reset($emu);
rows(q{CREATE SCHEMA ph; IMPORT FOREIGN SCHEMA posthog FROM SERVER posthog INTO ph});
my $reqs = emu_requests($emu);
is(scalar(@$reqs), 1, 'import makes one request');
is($reqs->[0]{kind}, 'DatabaseSchemaQuery', 'the schema query');

sub imported
{
	my ($schema_name) = @_;
	my %got;
	for my $line (split /\n/, rows(qq{
		SELECT c.table_name, string_agg(c.column_name || ':' || c.data_type, ',' ORDER BY c.column_name || ':' || c.data_type COLLATE "C")
		  FROM information_schema.columns c JOIN information_schema.foreign_tables f
		    ON f.foreign_table_schema = c.table_schema AND f.foreign_table_name = c.table_name
		 WHERE c.table_schema = '$schema_name' GROUP BY 1 ORDER BY 1}))
	{
		my ($t, $cols) = split /\|/, $line, 2;
		$got{$t} = $cols;
	}
	return \%got;
}
my $got = imported('ph');
is_deeply([ sort keys %$got ], [ sort keys %expected ], 'a foreign table per table of the schema');
for my $t (sort keys %expected)
{
	# string_agg sorted in C collation; perl's sort is bytewise too
	is($got->{$t}, $expected{$t}, "$t: every value field, with its mapped type");
}
is(rows(q{SELECT string_agg(column_name || ':' || data_type || ':' || udt_name, ',' ORDER BY ordinal_position) FROM information_schema.columns
	WHERE table_schema = 'ph' AND table_name = 'events' AND column_name IN ('timestamp', 'properties', 'uuid', '$session_id')}),
	'uuid:text:text,timestamp:timestamp with time zone:timestamptz,$session_id:text:text,properties:jsonb:jsonb',
	'events: timestamp timestamptz, properties jsonb, uuid text (PostHog types it as a string), "$session_id" quoted');
is(rows(q{SELECT udt_name FROM information_schema.columns WHERE table_schema = 'ph' AND table_name = 'sessions' AND column_name = '$urls'}),
	'_text', 'sessions.$urls: text[]');
is(rows(q{SELECT string_agg(column_name || ':' || data_type, ',' ORDER BY column_name) FROM information_schema.columns
	WHERE table_schema = 'ph' AND table_name = 'raw_persons' AND column_name IN ('is_deleted', 'version', 'created_at')}),
	'created_at:timestamp with time zone,is_deleted:boolean,version:bigint', 'raw_persons: flags boolean, version bigint');
is(rows(q{SELECT count(*) FROM information_schema.columns WHERE table_schema = 'ph'
	AND column_name IN ('team_id', 'pdi', 'poe', 'person', 'session')}), '0',
	'no team_id (PostHog does not list it), no lazy join, virtual table or traverser to a table');
is(rows(q{SELECT count(*) FROM pg_foreign_table ft JOIN pg_class c ON c.oid = ft.ftrelid
	JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'ph' AND ft.ftoptions IS NOT NULL}), '0',
	'names that fit need no table option');
is(rows(q{SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
	WHERE n.nspname = 'ph' AND a.attfdwoptions IS NOT NULL}), '0', 'nor a column option');
is(rows(q{SELECT srvname FROM pg_foreign_table ft JOIN pg_foreign_server s ON s.oid = ft.ftserver
	JOIN pg_class c ON c.oid = ft.ftrelid WHERE c.relname = 'events' AND c.relnamespace = 'ph'::regnamespace}),
	'posthog', 'on the server imported from');

# --- LIMIT TO, EXCEPT, system, refusals ----------------------------------------------
rows(q{CREATE SCHEMA lim; IMPORT FOREIGN SCHEMA posthog LIMIT TO (events, sessions, nosuch) FROM SERVER posthog INTO lim});
is_deleted_keys(imported('lim'), [qw(events sessions)], 'LIMIT TO: only those tables');
rows(q{CREATE SCHEMA exc; IMPORT FOREIGN SCHEMA posthog EXCEPT (events) FROM SERVER posthog INTO exc});
is_deleted_keys(imported('exc'), [ grep { $_ ne 'events' } sort keys %expected ], 'EXCEPT: all the others');

sub is_deleted_keys
{
	my ($h, $want, $name) = @_;
	is_deeply([ sort keys %$h ], [ sort @$want ], $name);
}

rows(q{CREATE SCHEMA sys; IMPORT FOREIGN SCHEMA system FROM SERVER posthog INTO sys});
is(rows(q{SELECT count(*) FROM pg_class WHERE relnamespace = 'sys'::regnamespace}), '0',
	'schema system: the system.* tables (the emulator has none)');

my $err = fails(q{IMPORT FOREIGN SCHEMA public FROM SERVER posthog INTO ph}, 'an unknown remote schema is refused');
like($err, qr/ERROR:  HV00Q: schema "public" is not present on foreign server "posthog"/,
	'as postgres_fdw refuses it (ERRCODE_FDW_SCHEMA_NOT_FOUND)');
like($err, qr/HINT:  A PostHog server has the schemas posthog .* and system/, 'naming the schemas there are');
$err = fails(q{CREATE SCHEMA opt; IMPORT FOREIGN SCHEMA posthog FROM SERVER posthog INTO opt OPTIONS (import_default 'true')},
	'an import option is refused');
like($err, qr/HV00D: invalid option "import_default"/, 'naming it');

# --- names: a canned schema (real PostHog's shapes) -----------------------------------
my $long_table = 'a_table_whose_name_is_much_longer_than_postgres_allows_for_a_name_' . ('x' x 10);
my $long_field = 'properties_of_something_with_a_field_name_longer_than_sixty_three_bytes_é';
sub f { my ($name, $type, %o) = @_; return ($name => { name => $name, hogql_value => $name, type => $type,
	schema_valid => JSON::PP::true, chain => $o{chain}, table => $o{table}, fields => $o{fields} }); }
my $canned = {
	tables => {
		$long_table => { type => 'posthog', id => 'x', name => $long_table,
			fields => { f('id', 'integer'), f($long_field, 'json'), f('we`ird', 'weird_type') } },
		'stripe.charges' => { type => 'data_warehouse', id => 'y', name => 'stripe.charges',
			fields => { f('amount', 'decimal'), f('day', 'date'), f('paid', 'boolean'), f('fee', 'float'),
				f('tags', 'array'), f('e', 'expression'), f('u', 'unknown') } },
		'posthog.ai_events' => { type => 'posthog', id => 'z', name => 'posthog.ai_events',
			fields => { f('trace_id', 'string'), f('pdi', 'lazy_table', table => 'person_distinct_ids', fields => ['person_id']),
				f('person_id', 'field_traverser', chain => [ 'pdi', 'person_id' ]),
				f('person', 'field_traverser', chain => [ 'pdi', 'person' ]),
				f('lost', 'field_traverser', chain => [ 'nowhere', 'x' ]),
				f('poe', 'virtual_table', table => 'events', fields => ['id']), f('v', 'view', table => 'v') } },
		person_distinct_ids => { type => 'posthog', id => 'person_distinct_ids', name => 'person_distinct_ids',
			fields => { f('distinct_id', 'string'), f('person_id', 'string'),
				f('person', 'lazy_table', table => 'persons', fields => ['id']) } },
		'system.teams' => { type => 'system', id => 'system.teams', name => 'system.teams',
			fields => { f('id', 'integer'), f('name', 'string') } },
		'nothing_selectable' => { type => 'posthog', id => 'n', name => 'nothing_selectable',
			fields => { f('j', 'lazy_table', table => 'events') } },
	},
	joins => [] };
# names are bytes here (no "use utf8"): encoded as they are, UTF-8 in, UTF-8 out
my $canned_body = encode_base64(JSON::PP->new->canonical->encode($canned), '');
emu_reset($emu);
emu_faults($emu, { on_request => 1, body_b64 => $canned_body });
rows(q{CREATE SCHEMA names; IMPORT FOREIGN SCHEMA posthog FROM SERVER posthog INTO names});
my $tables = rows(q{SELECT string_agg(c.relname || coalesce(' ' || array_to_string(ft.ftoptions, ','), ''), ';' ORDER BY c.relname)
	FROM pg_foreign_table ft JOIN pg_class c ON c.oid = ft.ftrelid WHERE c.relnamespace = 'names'::regnamespace});
my $cut = substr($long_table, 0, 54);
like($tables, qr/^\Q$cut\E_[0-9a-f]{8} table=\Q$long_table\E;ai_events table=posthog\.ai_events;person_distinct_ids;stripe_charges table=stripe\.charges$/,
	'long names cut with a hash, dotted names with underscores, posthog.* without the prefix: each with its HogQL name in option table; a table without a value field left out');
my $cols = rows(q{SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod) || coalesce(' ' || array_to_string(a.attfdwoptions, ','), ''), ';' ORDER BY a.attnum)
	FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
	WHERE c.relnamespace = 'names'::regnamespace AND a.attnum > 0 AND c.relname LIKE 'a\_table%'});
my $fcut = substr($long_field, 0, 54);
like($cols, qr/^id:bigint;\Q$fcut\E_[0-9a-f]{8}:jsonb expression=`\Q$long_field\E`;we`ird:text$/,
	'a long field name cut, its HogQL name in option expression (quoted as HogQL); a name that fits has none; an unknown type is text');
is(rows(q{SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
	FROM pg_attribute a WHERE a.attrelid = 'names.stripe_charges'::regclass AND a.attnum > 0}),
	'amount:numeric,day:date,e:text,fee:double precision,paid:boolean,tags:text[],u:text',
	'decimal, date, expression, float, boolean, array, unknown: in PostHog\'s order');
is(rows(q{SELECT string_agg(a.attname || ':' || format_type(a.atttypid, a.atttypmod), ',' ORDER BY a.attnum)
	FROM pg_attribute a WHERE a.attrelid = 'names.ai_events'::regclass AND a.attnum > 0}),
	'person_id:text,trace_id:text',
	'a field traverser through a lazy join to a value is a column; to a table, nowhere, a virtual table or a view is not');
emu_reset($emu);
emu_faults($emu, { on_request => 1, body_b64 => $canned_body });
rows(q{CREATE SCHEMA sys2; IMPORT FOREIGN SCHEMA system FROM SERVER posthog INTO sys2});
is(rows(q{SELECT c.relname || ' ' || array_to_string(ft.ftoptions, ',') FROM pg_foreign_table ft JOIN pg_class c ON c.oid = ft.ftrelid
	WHERE c.relnamespace = 'sys2'::regnamespace}), 'teams table=system.teams', 'schema system: system.teams as teams');

# a schema that is not one: retried, then refused with what was wrong
emu_reset($emu);
emu_faults($emu, { every => JSON::PP::true, body_b64 => encode_base64('{"tables": {"events": {"fields": {"a": {"name": "a"}}}}}', '') });
$err = fails(q{CREATE SCHEMA bad; IMPORT FOREIGN SCHEMA posthog FROM SERVER posthog INTO bad}, 'a malformed schema fails the import');
like($err, qr/failed after 2 requests: the last answer was not a valid query result(?s:.*)invalid schema from PostHog: the field has no type \(field "a" of table "events"\)/,
	'after the retries, saying what is wrong');
like($err, qr/CONTEXT:  PostHog query: DatabaseSchemaQuery/, 'naming the query');
emu_reset($emu);
emu_faults($emu, { every => JSON::PP::true, body_b64 => encode_base64('{"results": [], "columns": []}', '') });
$err = fails(q{CREATE SCHEMA bad2; IMPORT FOREIGN SCHEMA posthog FROM SERVER posthog INTO bad2}, 'an answer without tables fails');
like($err, qr/invalid schema from PostHog: "tables" is missing/, 'saying so');
emu_reset($emu);

# --- query(): values of each type ------------------------------------------------
is(rows(q{SELECT s, n, f, b, z IS NULL FROM posthog_export.query('posthog',
	'SELECT {s} AS s, {n} AS n, {f} AS f, {b} AS b, {z} AS z',
	jsonb_build_object('s', 'héllo ☃ ユーザー', 'n', 42, 'f', 1.5, 'b', true, 'z', null))
	AS t(s text, n bigint, f float8, b boolean, z text)}),
	'héllo ☃ ユーザー|42|1.5|t|t', 'a string (unicode), an integer, a float, a boolean, a null');
$reqs = emu_requests($emu);
$reqs->[-1]{values}{s} = encode_utf8($reqs->[-1]{values}{s});
is_deeply($reqs->[-1]{values}, { s => 'héllo ☃ ユーザー', n => 42, f => 1.5, b => JSON::PP::true, z => undef },
	'each sent as a HogQL value, typed');
is($reqs->[-1]{query}, 'SELECT {s} AS s, {n} AS n, {f} AS f, {b} AS b, {z} AS z', 'never pasted into the text');
is(rows(q{SELECT n, b, f FROM posthog_export.query('posthog', 'SELECT {n} AS n, {b} AS b, {f} AS f',
	'{"n": 7, "b": false, "f": 2.25}') AS t(n text, b text, f numeric)}), '7|false|2.25',
	'numbers and booleans into text, a float into numeric');

# arrays as values: IN {list}
open my $fh, '<', "$data/events.ndjson" or die $!;
# the project's rows (the data holds some of another team, which PostHog never shows)
my @events = grep { ($_->{team_id} // 1) == 1 } map { $json->decode($_) } grep { /\S/ } <$fh>;
close $fh;
my $n_pv = grep { $_->{event} eq '$pageview' || $_->{event} eq '$autocapture' } @events;
is(rows(q{SELECT n FROM posthog_export.query('posthog', 'SELECT count() AS n FROM events WHERE event IN {names}',
	jsonb_build_object('names', jsonb_build_array('$pageview', '$autocapture'))) AS t(n bigint)}),
	$n_pv, 'an array value: as many events as the data holds');

# an event as the data file holds it
my ($ev) = grep { defined $_->{properties} && ref $_->{properties} eq 'HASH' && defined $_->{properties}{'$browser'} } @events;
my $row = rows(qq{SELECT uuid, event, properties->>'\$browser', timestamp = '$ev->{timestamp}'::timestamptz
	FROM posthog_export.query('posthog',
	'SELECT uuid, event, properties, timestamp FROM events WHERE uuid = {u}', jsonb_build_object('u', '$ev->{uuid}'))
	AS t(uuid uuid, event text, properties jsonb, timestamp timestamptz)});
is($row, "$ev->{uuid}|$ev->{event}|$ev->{properties}{'$browser'}|t",
	'an event: uuid into uuid, properties (a JSON string) into jsonb, a +05:30 datetime into the right timestamptz');
like(rows(qq{SELECT ts FROM posthog_export.query('posthog',
	'SELECT timestamp FROM events WHERE uuid = {u}', jsonb_build_object('u', '$ev->{uuid}')) AS t(ts text)}),
	qr/\+05:30\z/, '(which PostHog sent in the project\'s time zone)');
is(rows(qq{SELECT json_typeof(properties) FROM posthog_export.query('posthog',
	'SELECT properties FROM events WHERE uuid = {u}', jsonb_build_object('u', '$ev->{uuid}')) AS t(properties json)}),
	'object', 'a JSON column into json');

# sessions: an array into text[], booleans, floats, NULLs
open $fh, '<', "$data/sessions.ndjson" or die $!;
my ($s) = grep { ($_->{team_id} // 1) == 1 && defined $_->{'$vitals_lcp'} && defined $_->{'$is_bounce'} }
  map { $json->decode($_) } grep { /\S/ } <$fh>;
close $fh;
my $lcp = $s->{'$vitals_lcp'};
is(rows(qq{SELECT cardinality(urls), urls[1], is_bounce, lcp = $lcp, utm IS NULL FROM posthog_export.query('posthog',
	'SELECT \$urls, \$is_bounce, \$vitals_lcp, \$entry_utm_medium FROM sessions WHERE session_id = {id}',
	jsonb_build_object('id', '$s->{session_id}')) AS t(urls text[], is_bounce boolean, lcp float8, utm text)}),
	join('|', scalar @{ $s->{'$urls'} }, encode_utf8($s->{'$urls'}[0]), $s->{'$is_bounce'} ? 't' : 'f', 't',
		defined $s->{'$entry_utm_medium'} ? 'f' : 't'),
	'an Array(String) into text[], a Bool into boolean, a Float64, a NULL');
is(rows(qq{SELECT u FROM posthog_export.query('posthog', 'SELECT \$urls FROM sessions WHERE session_id = {id}',
	jsonb_build_object('id', '$s->{session_id}')) AS t(u jsonb)}), JSON::PP->new->utf8->encode($s->{'$urls'}) =~ s/","/", "/gr,
	'an array into jsonb');

# raw_persons: the 0/1 of Int8 flags into boolean
is(rows(q{SELECT bool_and(d = (d2 = 1)), count(*) > 0 FROM posthog_export.query('posthog',
	'SELECT is_deleted AS d, is_deleted AS d2 FROM raw_persons LIMIT 1000') AS t(d boolean, d2 int)}),
	't|t', 'Int8 0/1 into boolean');

# --- query(): what does not fit ----------------------------------------------------
$err = fails(q{SELECT * FROM posthog_export.query('posthog', 'SELECT event, timestamp FROM events LIMIT 1') AS t(event text)},
	'a column definition list of another length is refused');
like($err, qr/42804: the column definition list of query\(\) has 1 columns, PostHog returned 2(?s:.*)DETAIL:  PostHog's columns: event, "timestamp"\./,
	'saying how many and which');
$err = fails(q{SELECT * FROM posthog_export.query('posthog', 'SELECT event FROM events LIMIT 1') AS t(event int)},
	'a cell that does not fit its column is refused');
like($err, qr/invalid input syntax for type integer(?s:.*)CONTEXT:  column "event" of query\(\), row 1/,
	'with the input function\'s error and the column, in its context');
$err = fails(q{SELECT * FROM posthog_export.query('posthog', 'SELECT $urls FROM sessions LIMIT 1') AS t(u int)},
	'an array into an integer is refused');
like($err, qr/HV004: PostHog returned a JSON value for column "u" of query\(\), which is of type integer/, 'with our error');
$err = fails(q{SELECT * FROM posthog_export.query('posthog', 'SELECT event FROM events') AS t(event text)},
	'more rows than the page: refused');
like($err, qr/54000: PostHog has more rows for this query than the 100 it returned(?s:.*)HINT:  Add a LIMIT \(at most 50000\), a filter or an aggregate/,
	'hasMore is an error with a hint, never a silently cut result');
$err = fails(q{SELECT * FROM posthog_export.query('posthog', 'SELECT {o} AS o', '{"o": {"a": 1}}') AS t(o text)},
	'an object value is refused');
like($err, qr/value "o" of query\(\) is an object/, 'saying which');
$err = fails(q{SELECT * FROM posthog_export.query('posthog', 'SELECT {o} AS o', '{"o": [[1]]}') AS t(o text)},
	'a nested array value is refused');
$err = fails(q{SELECT * FROM posthog_export.query('posthog', 'SELECT 1 AS o', '{"a-b": 1}') AS t(o text)},
	'a key that is no placeholder name is refused');
like($err, qr/invalid placeholder name "a-b"/, 'naming it');
$err = fails(q{SELECT * FROM posthog_export.query('posthog', 'SELECT 1 AS o', '[1]') AS t(o text)},
	'values that are not an object are refused');
$err = fails(q{SELECT * FROM posthog_export.query('posthog', 'SELECT nosuch FROM events LIMIT 1') AS t(o text)},
	'a query PostHog refuses');
like($err, qr/rejected the query \(HTTP 400\)(?s:.*)CONTEXT:  HogQL query: SELECT nosuch FROM events LIMIT 1/,
	'its error, with the HogQL');
$err = fails(q{SELECT * FROM posthog_export.query('nosuch', 'SELECT 1 AS o') AS t(o text)}, 'an unknown server');
like($err, qr/server "nosuch" does not exist/, 'saying so');

# --- roles: USAGE, user mapping -----------------------------------------------------
$node->safe_psql('postgres', q{CREATE ROLE alice; CREATE ROLE bob; GRANT USAGE ON FOREIGN SERVER posthog TO bob;
	CREATE SCHEMA alice_s AUTHORIZATION alice; CREATE SCHEMA bob_s AUTHORIZATION bob;});
$err = fails(q{SET ROLE alice; SELECT * FROM posthog_export.query('posthog', 'SELECT 1 AS o') AS t(o int)},
	'query() without USAGE on the server');
like($err, qr/42501: permission denied for foreign server posthog/, 'is refused as postgres_fdw refuses it');
$err = fails(q{SET ROLE alice; IMPORT FOREIGN SCHEMA posthog FROM SERVER posthog INTO alice_s}, 'import without USAGE');
like($err, qr/42501: permission denied for foreign server posthog/, 'is refused');
$err = fails(q{SET ROLE bob; SELECT * FROM posthog_export.query('posthog', 'SELECT 1 AS o') AS t(o int)},
	'query() without a user mapping');
like($err, qr/42704: user mapping not found for role "bob" on server "posthog"/, 'is refused, naming role and server');
$err = fails(q{SET ROLE bob; IMPORT FOREIGN SCHEMA posthog FROM SERVER posthog INTO bob_s}, 'import without a user mapping');
like($err, qr/user mapping not found for role "bob" on server "posthog"/, 'is refused');
$node->safe_psql('postgres', q{CREATE USER MAPPING FOR bob SERVER posthog OPTIONS (api_key 'phx_bobs_wrong_key')});
$err = fails(q{SET ROLE bob; IMPORT FOREIGN SCHEMA posthog FROM SERVER posthog INTO bob_s}, 'import with a wrong key');
like($err, qr/rejected the API key \(HTTP 401\)/, 'runs as bob, with his key');
unlike($err, qr/phx_bobs_wrong_key/, 'which is not in the error');
is(rows(q{SET ROLE bob; SELECT count(*) FROM pg_class WHERE relnamespace = 'bob_s'::regnamespace}), '0', 'nothing imported');

# --- the key in no message -----------------------------------------------------------
my $key = $PhxTest::API_KEY;
is(scalar(grep { /\Q$key\E/ } @messages), 0, 'the API key is in no error or notice (' . scalar(@messages) . ' outputs)');
# the server's own messages (the test cluster also logs every statement, keys included: not ours)
my @logged = grep { /^\S+ \S+ \S+ \[\d+\] .*?(?:LOG|ERROR|WARNING|NOTICE|DETAIL|HINT|CONTEXT|FATAL):  / && !/LOG:  statement: / }
  split /\n/, slurp_file($node->logfile);
# (log_min_messages = log: the retries' LOG lines and their DETAIL, not the ERRORs sent to the client)
ok(scalar(grep { /LOG:  posthog_export: / } @logged) > 0, 'the server log holds our messages');
is(scalar(grep { /\Q$key\E|phx_bobs_wrong_key/ } @logged), 0, 'the API keys are in none of its messages');

done_testing();
