# Persons at the default page size: a pass is two keyset scans (mappings,
# then persons) joined in Postgres, so it costs about (P + M) / page_size
# requests and no query grows with the page (an IN list of a page's person
# ids was ~400 KB at 10,000, over ClickHouse's 256 KiB max_query_size).
# The destination is compared with the source column by column; a second
# run writes exactly the changed rows; is_deleted is accepted as 0/1 or
# true/false and nothing else.
use strict;
use warnings;

use File::Temp qw(tempdir);
use JSON::PP;
use MIME::Base64;
use POSIX qw(ceil);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
my $json = JSON::PP->new->utf8->canonical;
my $PAGE = 50000;				# the default page_size (PostHog's cap)
my $P = 20000;

generate_data($data, events => 200, sessions => 30, persons => $P, seed => 15,
	start => '2026-11-01T00:00:00Z', end => '2026-11-02T00:00:00Z');
# a mapping to a person PostHog does not have
my $missing = '0188f000-0000-7000-8000-000000000001';
open my $fh, '>>', "$data/person_distinct_ids.ndjson" or die $!;
print $fh $json->encode({ team_id => 1, distinct_id => 'orphan', person_id => $missing, is_deleted => 0, version => 0 }), "\n";
close $fh;

my $emu = start_emulator(data => $data);
my $node = new_node('persons_scan');
setup_server($node, $emu);
my $call = sub { "CALL posthog_export.run_export('$_[0]', '$_[1]', '$_[2]')" };

sub persons_equal
{
	my ($name, %o) = @_;
	my ($expected, $missing_rows, $extra) = compare_with_source($node, $emu, model => 'persons', %o);
	is("$missing_rows/$extra", '0/0', "$name: persons equal the source column by column ($expected rows)");
	return $expected;
}

# The query text as ClickHouse would get it: each {name} replaced by its value
# printed as a constant (strings quoted and escaped, lists bracketed).
sub literal
{
	my ($v) = @_;
	return '[' . join(', ', map { literal($_) } @$v) . ']' if ref $v eq 'ARRAY';
	return 'NULL' unless defined $v;
	return $v if !ref $v && $v =~ /^-?\d+(?:\.\d+)?$/;
	(my $s = "$v") =~ s/(['\\])/\\$1/g;
	return "'$s'";
}
sub substituted
{
	my ($r) = @_;
	my $text = $r->{query} // '';
	$text =~ s/\{(\w+)\}/exists $r->{values}{$1} ? literal($r->{values}{$1}) : "{$1}"/ge;
	return $text;
}

# --- first pass: 20,000 persons at the default page size ------------------------
my %person_ids;
open my $pfh, '<', "$data/persons.ndjson" or die $!;
while (<$pfh>)
{
	my $row = $json->decode($_);
	# the data holds rows of another team too, which PostHog never returns
	$person_ids{ $row->{id} } = 1 if ($row->{team_id} // 1) == 1;
}
close $pfh;
is(scalar(keys %person_ids), $P, "the source holds $P persons");

psql_ok($node, q{SELECT posthog_export.create_export('persons', 'posthog', 'persons', check_server => false)}, 'create a persons export');
emu_reset($emu);
psql_ok($node, $call->('persons', '2026-11-20 00:00+00', '2026-11-20 01:00+00'), 'first pass');
my $M = persons_equal('first pass');
cmp_ok($M, '>', $P, "more mappings ($M) than persons");
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_exports.persons WHERE person_version IS NOT NULL}), $M - 1,
	'every mapping found its person but the orphan');
is($node->safe_psql('postgres', q{SELECT coalesce(person_version::text, 'null') || ' ' || is_deleted FROM posthog_exports.persons WHERE distinct_id = 'orphan'}),
	'null false', 'a mapping whose person is missing keeps NULL person columns');

my @reqs = grep { ($_->{kind} // '') eq 'HogQLQuery' } @{ emu_requests($emu) };
my $min = ceil($M / $PAGE) + ceil($P / $PAGE);
my $n = scalar @reqs;
ok($n >= $min && $n <= $min + 2,
	"the pass costs (P + M) / page_size requests plus at most an empty last page per scan: $n for P = $P, M = $M (at least $min)");
is($node->safe_psql('postgres', q{SELECT pages || ' ' || rows FROM posthog_export.runs WHERE export_name = 'persons'}),
	"$n " . ($M + $P), 'the run counts one page per request and every mapping and person received');
is(scalar(grep { ($_->{status} // 0) != 200 } @reqs), 0, 'every request succeeded');
is(scalar(grep { ($_->{query} // '') =~ /\bIN\b/i } @reqs), 0, 'no query has an IN list');
my @person_reqs = grep { ($_->{query} // '') =~ /FROM raw_persons\b/ } @reqs;
cmp_ok(scalar(@person_reqs), '>=', ceil($P / $PAGE), 'the persons are read in pages of page_size');
is(scalar(grep { $_->{query} =~ /FROM raw_persons WHERE id > \{cursor_id\} GROUP BY id ORDER BY id LIMIT $PAGE$/ } @person_reqs),
	scalar(@person_reqs) - 1, 'every page of persons after the first filters by id before GROUP BY');
my ($largest, $largest_body) = (0, 0);
for my $r (@reqs)
{
	my $len = length(substituted($r));
	$largest = $len if $len > $largest;
	my $body = length($json->encode({ query => { kind => 'HogQLQuery', query => $r->{query}, values => $r->{values} // {} } }));
	$largest_body = $body if $body > $largest_body;
}
cmp_ok($largest, '<', 4096, "the largest query text with values substituted is far under 256 KiB: $largest bytes");
diag("persons pass: $n requests for P = $P persons and M = $M mappings at page_size $PAGE; "
	  . "largest query text with values $largest bytes, largest request body about $largest_body bytes");

# --- second pass after some persons changed: exactly their rows are written ---
my $changed = $node->safe_psql('postgres', q{
	SELECT string_agg(json_build_object('id', person_id, 'team_id', 1, 'created_at', created_at,
	         'properties', properties || '{"plan": "changed"}', 'is_identified', true,
	         'is_deleted', 0, 'version', person_version + 1)::text, E'\n')
	FROM (SELECT DISTINCT ON (person_id) person_id, created_at, properties, person_version
	      FROM posthog_exports.persons WHERE person_version IS NOT NULL AND NOT is_deleted
	      ORDER BY person_id LIMIT 40) p});
open $fh, '>>', "$data/persons.ndjson" or die $!;
print $fh $changed, "\n";
close $fh;
# one mapping moved to another person, one deleted
my ($moved, $deleted) = split /\n/, $node->safe_psql('postgres', q{
	SELECT json_build_object('team_id', 1, 'distinct_id', distinct_id, 'person_id', person_id,
	         'version', person_distinct_id_version)::text
	FROM posthog_exports.persons WHERE person_version IS NOT NULL AND NOT is_deleted
	ORDER BY distinct_id DESC LIMIT 2});
my $target = $node->safe_psql('postgres', q{SELECT min(person_id) FROM posthog_exports.persons WHERE NOT is_deleted AND person_version IS NOT NULL});
$moved = $json->decode($moved);
$deleted = $json->decode($deleted);
open $fh, '>>', "$data/person_distinct_ids.ndjson" or die $!;
print $fh $json->encode({ %$moved, person_id => $target, version => $moved->{version} + 1, is_deleted => 0 }), "\n";
print $fh $json->encode({ %$deleted, version => $deleted->{version} + 1, is_deleted => 1 }), "\n";
close $fh;
emu_reload($emu);

$node->safe_psql('postgres', 'CREATE TABLE before AS SELECT * FROM posthog_exports.persons');
psql_ok($node, $call->('persons', '2026-11-20 01:00+00', '2026-11-20 02:00+00'), 'second pass');
persons_equal('second pass');
my $expected_changed = $node->safe_psql('postgres', qq{
	SELECT count(*) FROM posthog_exports.persons
	WHERE person_id IN (SELECT (j->>'id') FROM unnest(string_to_array(\$x\$$changed\$x\$, E'\\n')) s, LATERAL (SELECT s::json AS j) q)
	   OR distinct_id IN ('$moved->{distinct_id}', '$deleted->{distinct_id}')});
my $differ = $node->safe_psql('postgres', q{
	SELECT count(*) FROM (SELECT * FROM posthog_exports.persons EXCEPT ALL SELECT * FROM before) d});
cmp_ok($expected_changed, '>=', 40, "the changes touch $expected_changed rows");
is($differ, $expected_changed, 'exactly the rows of changed persons and mappings differ');
is($node->safe_psql('postgres', q{SELECT rows_written FROM posthog_export.runs WHERE export_name = 'persons' AND interval_start = '2026-11-20 01:00+00'}),
	$expected_changed, 'the second pass writes exactly the changed rows');

# --- is_deleted: 0/1 and true/false, nothing else --------------------------------
my $uuid = sub { sprintf '0188a000-0000-7000-8000-%012d', $_[0] };
sub body
{
	my ($columns, @rows) = @_;
	return encode_base64('{"results": [' . join(', ', @rows) . '], "columns": ' . $json->encode($columns)
		  . ', "types": [], "hasMore": false}', '');
}
my @m_cols = qw(team_id distinct_id person_id is_deleted version);
my @p_cols = qw(id properties created_at is_deleted version);
my $m = sub { my ($did, $n, $del) = @_; return qq{[1, "$did", "${\ $uuid->($n)}", $del, 1]}; };
my $p = sub { my ($n, $del) = @_; return qq{["${\ $uuid->($n)}", "{\\"n\\": $n}", "2026-10-01T10:00:00Z", $del, 2]}; };

psql_ok($node, q{SELECT posthog_export.create_export('flags', 'posthog', 'persons', table_name => 'flags', check_server => false)}, 'create an export for canned pages');
emu_reset($emu);
emu_faults($emu,
	{ on_request => 1, body_b64 => body(\@m_cols, $m->('f-0', 1, 0), $m->('f-1', 2, 1), $m->('f-2', 3, 'true'),
			$m->('f-3', 4, 'false'), $m->('f-4', 9, 0)) },
	{ on_request => 2, body_b64 => body(\@p_cols, $p->(1, 0), $p->(2, 'false'), $p->(3, 1), $p->(4, 'false')) });
psql_ok($node, $call->('flags', '2026-11-20 00:00+00', '2026-11-20 01:00+00'), 'a pass with is_deleted as 0/1 and true/false');
is($node->safe_psql('postgres', q{SELECT string_agg(distinct_id || ':' || is_deleted || ':' || coalesce(person_version::text, '-'), ' ' ORDER BY distinct_id) FROM posthog_exports.flags}),
	'f-0:false:2 f-1:true:2 f-2:true:2 f-3:false:2 f-4:false:-',
	'is_deleted is the mapping\'s or the person\'s, whichever form it came in');

for my $case ([ 'mapping 2', 1, body(\@m_cols, $m->('g-0', 1, 2)), undef, 'person_distinct_ids', 'a number' ],
	[ 'person "yes"', 2, body(\@m_cols, $m->('g-0', 1, 0)), body(\@p_cols, $p->(1, '"yes"')), 'persons', 'a string' ])
{
	my ($what, $bad_req, $first, $second, $query, $kind) = @$case;
	$node->safe_psql('postgres', q{TRUNCATE posthog_exports.flags; DELETE FROM posthog_export.runs WHERE export_name = 'flags'});
	emu_reset($emu);
	emu_faults($emu, { on_request => 1, body_b64 => $first }, $second ? ({ on_request => 2, body_b64 => $second }) : ());
	my ($ret, $out, $err) = $node->psql('postgres', "\\set VERBOSITY verbose\n" . $call->('flags', '2026-11-20 00:00+00', '2026-11-20 01:00+00'));
	isnt($ret, 0, "is_deleted $what: the run fails");
	like($err, qr/ERROR:  HV004: PostHog returned \Q$kind\E for column "is_deleted" of the $query query, where 0, 1, true or false was expected/,
		"is_deleted $what: with errcode HV004 and a message naming the column and query") or diag $err;
	is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.flags'), 0, "is_deleted $what: nothing was written");
}

$node->stop;
done_testing();
