# Destination tables of every shape a user may give the export: the bulk
# writer must do what an INSERT would (casts, defaults, generated columns,
# constraints, indexes), and tables it cannot honour (triggers, row-level
# security, partitioning, deferrable constraints) must still be written
# correctly, through an INSERT statement.
use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 2500, seed => 11,
	start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');
my $emu = start_emulator(data => $data);
my $node = new_node('shapes');
# pages of 1500 rows: more than one batch of the bulk writer per page
setup_server($node, $emu, options => { page_size => 1500 });
my %range = (start => '2026-11-20T00:00:00Z', end => '2026-11-20T01:00:00Z');

sub run_export
{
	my ($name) = @_;
	return $node->psql('postgres',
		"CALL posthog_export.run_export('$name', '2026-11-20 00:00+00', '2026-11-20 01:00+00')");
}

sub create_export
{
	my ($name, $table, $extra) = @_;
	$node->safe_psql('postgres', "SELECT posthog_export.create_export('$name', 'posthog', table_name => '$table'"
		  . ($extra ? ", $extra" : '') . ', check_server => false)');
}

# --- the reference: a table the export creates itself ----------------------------
create_export('plain', 'plain');
my ($ret, $out, $err) = run_export('plain');
is($ret, 0, 'export into a table it creates') or diag $err;
my ($expected, $missing, $extra) = compare_with_source($node, $emu, table => 'posthog_exports.plain', %range);
is("$missing/$extra", '0/0', "it equals the source ($expected rows)");
ok($expected > 1500, 'the interval spans more than one page');

# --- casts, defaults, generated columns, domains, indexes ------------------------
$node->safe_psql('postgres', q{
	CREATE DOMAIN short_text AS text NOT NULL CHECK (length(VALUE) <= 200);
	CREATE TABLE posthog_exports.shaped (
		id bigserial PRIMARY KEY,
		"uuid" uuid NOT NULL UNIQUE,
		event varchar(200) NOT NULL,
		event_upper text GENERATED ALWAYS AS (upper(event)) STORED,
		properties json,
		distinct_id short_text,
		team_id bigint CHECK (team_id > 0),
		"timestamp" timestamptz,
		site_url text DEFAULT 'never used: the model writes this column',
		exported_at timestamptz DEFAULT now(),
		row_tag uuid DEFAULT gen_random_uuid());
	CREATE INDEX shaped_event_lower ON posthog_exports.shaped (lower(event)) WHERE team_id = 1;});
create_export('shaped', 'shaped');
($ret, $out, $err) = run_export('shaped');
is($ret, 0, 'export into a table with other types, defaults, a generated column and a domain') or diag $err;
is($node->safe_psql('postgres', q{
	SELECT count(*) FROM posthog_exports.shaped s JOIN posthog_exports.plain p ON p.uuid = s.uuid::text
	WHERE p.event = s.event AND p.properties = s.properties::jsonb AND p.distinct_id = s.distinct_id
	  AND p.team_id = s.team_id AND p.timestamp = s.timestamp AND s.site_url IS NULL}), $expected,
	'every row holds the values of the reference table, converted to the column types');
is($node->safe_psql('postgres', q{
	SELECT count(DISTINCT id) || ' ' || count(DISTINCT row_tag) || ' ' || count(exported_at) || ' ' ||
	       count(*) FILTER (WHERE event_upper = upper(event))
	FROM posthog_exports.shaped}), "$expected $expected $expected $expected",
	'serial, volatile and stable defaults and the generated column are filled for every row');
my $by_seqscan = $node->safe_psql('postgres', q{
	SET enable_indexscan = off; SET enable_bitmapscan = off;
	SELECT count(*) FROM posthog_exports.shaped WHERE lower(event) = '$pageview' AND team_id = 1});
my $by_index = $node->safe_psql('postgres', q{
	SET enable_seqscan = off;
	SELECT count(*) FROM posthog_exports.shaped WHERE lower(event) = '$pageview' AND team_id = 1});
ok($by_seqscan > 0, 'the partial expression index has rows to cover');
is($by_index, $by_seqscan, 'and holds an entry for each of them');
is($node->safe_psql('postgres', q{
	SET enable_seqscan = off; SET enable_bitmapscan = off;
	SELECT count(*) FROM posthog_exports.shaped s JOIN posthog_exports.plain p ON p.uuid = s.uuid::text}), $expected,
	'the unique index on uuid finds every row');

# --- what an INSERT refuses, the export refuses, naming the row -------------------
my $failure = sub {
	my ($name) = @_;
	return $node->safe_psql('postgres',
		"SELECT status || ': ' || error FROM posthog_export.runs WHERE export_name = '$name'");
};
my $some_uuid = $node->safe_psql('postgres',
	q{SELECT uuid FROM posthog_exports.plain ORDER BY "timestamp", uuid OFFSET 1600 LIMIT 1});

$node->safe_psql('postgres', q{CREATE TABLE posthog_exports.narrow ("uuid" text, event varchar(3))});
create_export('narrow', 'narrow');
($ret, $out, $err) = run_export('narrow');
isnt($ret, 0, 'a value too long for a varchar(n) column fails the run');
like($err, qr/value too long for type character varying\(3\)/, 'with the error an INSERT gives');
like($err, qr/event [0-9a-f-]{36} \(row 1 of page 1\) of export "narrow"/, 'naming the event');

$node->safe_psql('postgres', q{CREATE TABLE posthog_exports.checked ("uuid" text, event text CHECK (event <> '$pageview'))});
create_export('checked', 'checked');
($ret, $out, $err) = run_export('checked');
isnt($ret, 0, 'a CHECK constraint is enforced');
like($err, qr/violates check constraint "checked_event_check"/, 'with the error an INSERT gives');
like($failure->('checked'), qr/^failed: .*checked_event_check/, 'and the run records it');
is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.checked'), 0,
	'nothing of the failed page is left in the table');

$node->safe_psql('postgres', q{CREATE TABLE posthog_exports.notnull ("uuid" text, site_url text NOT NULL)});
create_export('notnull', 'notnull');
($ret, $out, $err) = run_export('notnull');
isnt($ret, 0, 'a NOT NULL column the model leaves empty fails the run');
like($err, qr/null value in column "site_url" of relation "notnull" violates not-null constraint/,
	'with the error an INSERT gives');

$node->safe_psql('postgres', qq{
	CREATE TABLE posthog_exports.uniq ("uuid" text UNIQUE, event text);
	INSERT INTO posthog_exports.uniq VALUES ('$some_uuid', 'already here');});
create_export('uniq', 'uniq');
($ret, $out, $err) = run_export('uniq');
isnt($ret, 0, 'a unique index refuses a uuid the table already holds');
like($err, qr/duplicate key value violates unique constraint "uniq_uuid_key"/, 'with the error an INSERT gives');
like($err, qr/event \Q$some_uuid\E \(row \d+ of page 2\) of export "uniq"/,
	'naming that event, though its index entry is written with its whole batch');
is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.uniq'), 1501,
	'the first page stays committed; the failed one left nothing');

# --- tables written through an INSERT statement ------------------------------------
$node->safe_psql('postgres', q{
	CREATE TABLE posthog_exports.trig ("uuid" text, event text, note text);
	CREATE FUNCTION note_event() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN NEW.note := 'seen ' || NEW.event; RETURN NEW; END$$;
	CREATE TRIGGER note_event BEFORE INSERT ON posthog_exports.trig FOR EACH ROW EXECUTE FUNCTION note_event();
	CREATE TABLE posthog_exports.statements (n bigint);
	CREATE FUNCTION count_rows() RETURNS trigger LANGUAGE plpgsql AS
	  $$BEGIN INSERT INTO posthog_exports.statements SELECT count(*) FROM new_rows; RETURN NULL; END$$;
	CREATE TRIGGER count_rows AFTER INSERT ON posthog_exports.trig REFERENCING NEW TABLE AS new_rows
	  FOR EACH STATEMENT EXECUTE FUNCTION count_rows();});
create_export('trig', 'trig');
($ret, $out, $err) = run_export('trig');
is($ret, 0, 'export into a table with triggers') or diag $err;
is($node->safe_psql('postgres', q{SELECT count(*) FILTER (WHERE note = 'seen ' || event) || ' ' || count(*)
	FROM posthog_exports.trig}), "$expected $expected", 'its row trigger ran for every row');
is($node->safe_psql('postgres', q{SELECT string_agg(n::text, '+' ORDER BY n DESC) FROM posthog_exports.statements}),
	'1500+' . ($expected - 1500), 'and its statement trigger once per page, with the page in its transition table');

$node->safe_psql('postgres', q{
	CREATE TABLE posthog_exports.deferred ("uuid" text UNIQUE DEFERRABLE INITIALLY DEFERRED, event text);});
create_export('deferred', 'deferred');
($ret, $out, $err) = run_export('deferred');
is($ret, 0, 'export into a table with a deferrable unique constraint') or diag $err;
is($node->safe_psql('postgres', 'SELECT count(DISTINCT uuid) FROM posthog_exports.deferred'), $expected,
	'writes every row');

$node->safe_psql('postgres', q{
	CREATE TABLE posthog_exports.parted ("uuid" text, event text, "timestamp" timestamptz)
	  PARTITION BY RANGE ("timestamp");
	CREATE TABLE posthog_exports.parted_early PARTITION OF posthog_exports.parted
	  FOR VALUES FROM (MINVALUE) TO ('2026-11-20 00:30+00');
	CREATE TABLE posthog_exports.parted_late PARTITION OF posthog_exports.parted
	  FOR VALUES FROM ('2026-11-20 00:30+00') TO (MAXVALUE);});
create_export('parted', 'parted');
($ret, $out, $err) = run_export('parted');
is($ret, 0, 'export into a partitioned table') or diag $err;
is($node->safe_psql('postgres', q{SELECT (SELECT count(*) FROM posthog_exports.parted_early) > 0
	AND (SELECT count(*) FROM posthog_exports.parted_late) > 0 AND (SELECT count(*) FROM posthog_exports.parted) = }
	  . $expected), 't', 'routes every row to its partition');
create_export('one_partition', 'parted_early');
($ret, $out, $err) = run_export('one_partition');
isnt($ret, 0, 'a partition written directly refuses rows outside its bounds');
like($err, qr/new row for relation "parted_early" violates partition constraint/, 'with the error an INSERT gives');

# row-level security binds the owner only when forced, and never a superuser
$node->safe_psql('postgres', qq{
	CREATE ROLE exporter LOGIN;
	GRANT USAGE ON SCHEMA posthog_export TO exporter;
	GRANT USAGE, CREATE ON SCHEMA posthog_exports TO exporter;
	GRANT USAGE ON FOREIGN SERVER posthog TO exporter;
	CREATE USER MAPPING FOR exporter SERVER posthog OPTIONS (api_key '$PhxTest::API_KEY');
	SET ROLE exporter;
	CREATE TABLE posthog_exports.secured ("uuid" text, event text);
	ALTER TABLE posthog_exports.secured ENABLE ROW LEVEL SECURITY;
	ALTER TABLE posthog_exports.secured FORCE ROW LEVEL SECURITY;
	CREATE POLICY no_pageviews ON posthog_exports.secured FOR INSERT WITH CHECK (event <> '\$pageview');
	CREATE POLICY read_all ON posthog_exports.secured FOR SELECT USING (true);
	SELECT posthog_export.create_export('secured', 'posthog', table_name => 'secured', check_server => false);});
($ret, $out, $err) = $node->psql('postgres',
	"SET ROLE exporter; CALL posthog_export.run_export('secured', '2026-11-20 00:00+00', '2026-11-20 01:00+00')");
isnt($ret, 0, 'a row-level security policy is enforced');
like($err, qr/new row violates row-level security policy for table "secured"/, 'with the error an INSERT gives');
$node->safe_psql('postgres', q{SET ROLE exporter;
	ALTER POLICY no_pageviews ON posthog_exports.secured WITH CHECK (true);
	CALL posthog_export.run_export('secured', '2026-11-20 00:00+00', '2026-11-20 01:00+00');});
is($node->safe_psql('postgres', 'SELECT count(*) FROM posthog_exports.secured'), $expected,
	'and, once it allows them, every row is written');

# --- large pages: every request asks for page_size (each is a turn of PostHog's budget)
my $bigdata = tempdir(CLEANUP => 1);
generate_data($bigdata, events => 12000, seed => 12,
	start => '2026-11-21T00:00:00Z', end => '2026-11-21T01:00:00Z');
my $big = start_emulator(data => $bigdata, name => 'big');
setup_server($node, $big, server => 'big', options => { page_size => 40000 });
$node->safe_psql('postgres', q{SELECT posthog_export.create_export('big', 'big', table_name => 'big', check_server => false)});
emu_reset($big);
($ret, $out, $err) = $node->psql('postgres',
	"CALL posthog_export.run_export('big', '2026-11-21 00:00+00', '2026-11-21 01:00+00')");
is($ret, 0, 'export with page_size 40000') or diag $err;
is(join(',', map { $_->{query} =~ /LIMIT (\d+)/ ? $1 : '?' } @{ emu_requests($big) }), '40000',
	'the first page asks for page_size rows: 12,000 events in one request');
($expected, $missing, $extra) = compare_with_source($node, $big, table => 'posthog_exports.big',
	start => '2026-11-21T00:00:00Z', end => '2026-11-21T01:00:00Z');
is("$missing/$extra", '0/0', "and the table equals the source ($expected rows)");

$node->stop;
done_testing();
