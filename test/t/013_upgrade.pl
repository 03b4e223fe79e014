# ALTER EXTENSION posthog_export UPDATE from the released 0.1.0 keeps every
# export, run, backfill and exported row, ends with the same catalog as a
# fresh install, and the exports go on from where 0.1.0 left them.  Before
# the update the new library refuses to work on the old catalog and says
# what to do.
use strict;
use warnings;

use File::Temp qw(tempdir);
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use PhxTest;

my $data = tempdir(CLEANUP => 1);
generate_data($data, events => 800, seed => 13, start => '2026-11-20T00:00:00Z', end => '2026-11-20T03:00:00Z');
my $emu = start_emulator(data => $data);

my $node = PostgreSQL::Test::Cluster->new('upgrade');
$node->init;
$node->start;
$node->safe_psql('postgres', q{CREATE EXTENSION posthog_export VERSION '0.1.0'});
setup_server($node, $emu, options => { page_size => 100 });
$node->safe_psql('postgres', q{CREATE ROLE alice LOGIN; GRANT USAGE ON FOREIGN SERVER posthog TO alice;});

# What 0.1.0 left behind: an export that exported its first hour (rows and
# a completed run), a run that failed half-way with a cursor, a queued
# backfill, and a paused export owned by another role.
$node->safe_psql('postgres', q{
	CREATE SCHEMA posthog_exports;
	CREATE TABLE posthog_exports.ev (uuid text PRIMARY KEY, event text, properties jsonb,
	  elements jsonb, "set" jsonb, set_once jsonb, distinct_id text, team_id integer,
	  ip text, site_url text, "timestamp" timestamptz);
	INSERT INTO posthog_exports.ev (uuid, event, "timestamp")
	  SELECT gen_random_uuid()::text, 'old', '2026-11-20 00:30+00' FROM generate_series(1, 25);
	INSERT INTO posthog_export.exports (name, owner, server_name, model, mode, schema_name,
	  table_name, "interval", lookback, delay, next_interval_start)
	VALUES ('ev', current_user::regrole, 'posthog', 'events', 'append', 'posthog_exports', 'ev',
	        '1 hour', '7 days', '0', date_trunc('hour', now()) + interval '1 hour'),
	       ('alices', 'alice', 'posthog', 'events', 'append', 'posthog_exports', 'alices',
	        '1 day', '0', '1 minute', '2026-11-21 00:00+00');
	UPDATE posthog_export.exports SET paused = true, paused_reason = 'paused by hand' WHERE name = 'alices';
	INSERT INTO posthog_export.runs (export_id, export_name, interval_start, interval_end, status,
	  trigger, rows, rows_written, bytes, pages, attempts, started_at, finished_at, cursor, error)
	SELECT export_id, 'ev', '2026-11-20 00:00+00', '2026-11-20 01:00+00', 'completed', 'schedule',
	       25, 25, 9000, 1, 1, '2026-11-20 01:01+00', '2026-11-20 01:01:05+00', '{a,b}', NULL
	  FROM posthog_export.exports WHERE name = 'ev';
	INSERT INTO posthog_export.runs (export_id, export_name, interval_start, interval_end, status,
	  trigger, rows, rows_written, bytes, pages, attempts, started_at, finished_at, cursor, error)
	SELECT export_id, 'alices', '2026-11-19 00:00+00', '2026-11-20 00:00+00', 'failed', 'manual',
	       7, 7, 100, 1, 3, '2026-11-20 00:01+00', '2026-11-20 00:02+00', '{x,y}', 'boom'
	  FROM posthog_export.exports WHERE name = 'alices';
	INSERT INTO posthog_export.backfills (export_id, start_at, end_at, next_start)
	SELECT export_id, '2026-11-20 01:00+00', '2026-11-20 03:00+00', '2026-11-20 01:00+00'
	  FROM posthog_export.exports WHERE name = 'ev';});

# (0.1.0 keeps the owner in exports.owner, 0.2.0 as the owner of the export's type)
my $snapshot = sub {
	my ($owner) = @_;
	$node->safe_psql('postgres', qq{
		SELECT (SELECT string_agg(format('%s %s %s %s %s %s %s', export_id, name, $owner, model, next_interval_start, paused, paused_reason), ';' ORDER BY export_id) FROM posthog_export.exports)
		 || '#' || (SELECT string_agg(format('%s %s %s %s %s %s %s %s', run_id, export_name, interval_start, status, rows, attempts, cursor, error), ';' ORDER BY run_id) FROM posthog_export.runs)
		 || '#' || (SELECT string_agg(format('%s %s %s %s', backfill_id, next_start, end_at, status), ';' ORDER BY backfill_id) FROM posthog_export.backfills)
		 || '#' || (SELECT count(*) FROM posthog_exports.ev)});
};
my $before = $snapshot->('owner');

# 0.1.0 kept no dependency on an export's owner: one whose role was dropped
# has no owner 0.2.0 could give its type; the update says so and what to do
$node->safe_psql('postgres', q{CREATE ROLE ghost;
	INSERT INTO posthog_export.exports (name, owner, server_name, model, mode, schema_name,
	  table_name, "interval", lookback, next_interval_start)
	VALUES ('orphan', 'ghost', 'posthog', 'events', 'append', 'posthog_exports', 'orphan', '1 hour', '0', now());
	DROP ROLE ghost;});

my $err = psql_fails($node, q{SELECT posthog_export.pause('ev')}, 'the new library on the 0.1.0 catalog');
like($err, qr/extension "posthog_export" is at version 0.1.0, but its library is version 0.2.0.*\n.*HINT:  Update it: ALTER EXTENSION posthog_export UPDATE;/,
	'refuses with a hint to update');

$err = psql_fails($node, 'ALTER EXTENSION posthog_export UPDATE', 'the update with an export whose owner was dropped');
like($err, qr/ERROR:  export "orphan" is owned by a role that does not exist \(OID \d+\).*\n.*HINT:  Give it an existing owner \(UPDATE posthog_export.exports SET owner = 'role' WHERE name = 'orphan'\) or delete it/s,
	'is refused, naming the export and what to do');
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'posthog_export'}), '0.1.0', 'and leaves the catalog at 0.1.0');
$node->safe_psql('postgres', q{DELETE FROM posthog_export.exports WHERE name = 'orphan'});

psql_ok($node, 'ALTER EXTENSION posthog_export UPDATE', 'ALTER EXTENSION posthog_export UPDATE');
is($node->safe_psql('postgres', q{SELECT extversion FROM pg_extension WHERE extname = 'posthog_export'}), '0.2.0', 'the catalog is at 0.2.0');
is($snapshot->('(SELECT t.typowner::regrole FROM pg_type t WHERE t.oid = owner_type)'), $before,
	'every export, run, backfill and exported row is kept, and its owner');
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_export.runs WHERE crashes <> 0}), '0', 'the new column starts at 0');
is($node->safe_psql('postgres', q{SELECT string_agg(format('%s %s %s %s %s', export_name, settled_at IS NOT NULL, source_rows, late_rows, late_missed), ', ' ORDER BY run_id) FROM posthog_export.runs}),
	'ev t 25 0 0, alices f  0 0', 'the completed run counts as checked, with the rows it received, so the update sends no settle checks');
is($node->safe_psql('postgres', q{SELECT string_agg(format('%s %s %s %s', name, settle_window, settle_every, next_settle_at IS NULL), ', ' ORDER BY name) FROM posthog_export.exports}),
	'alices 1 day 01:00:00 t, ev 1 day 01:00:00 t', 'events exports settle by default; nothing is pending for runs finished over a day ago');
is($node->safe_psql('postgres', q{SELECT string_agg(format('%s %s %s %s %s %s', name, columns IS NULL, filter IS NULL, filter_values IS NULL, query IS NULL, key IS NULL), ', ' ORDER BY name) FROM posthog_export.exports}),
	'alices t t t t t, ev t t t t t', 'the exports of 0.1.0 have no custom columns, filter, query or key (NULL)');
is($node->safe_psql('postgres', q{SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute
	WHERE attrelid = 'posthog_export.exports'::regclass AND attnum > 0 AND NOT attisdropped AND attnum > (SELECT attnum FROM pg_attribute
	WHERE attrelid = 'posthog_export.exports'::regclass AND attname = 'owner_type')}),
	'columns,filter,filter_values,query,key', 'the new columns come last, in order');

# the same catalog as a fresh install
my $fresh = PostgreSQL::Test::Cluster->new('fresh');
$fresh->init;
$fresh->start;
$fresh->safe_psql('postgres', 'CREATE EXTENSION posthog_export');
my $catalog_sql = q{
	SELECT string_agg(x, E'\n' ORDER BY x) FROM (
	  SELECT format('column %s.%s %s %s %s', table_name, column_name, data_type, is_nullable, column_default) AS x
	    FROM information_schema.columns WHERE table_schema = 'posthog_export'
	  UNION ALL SELECT format('function %s(%s) %s', p.proname, pg_get_function_identity_arguments(p.oid), pg_get_function_result(p.oid))
	    FROM pg_proc p WHERE p.pronamespace = 'posthog_export'::regnamespace
	  UNION ALL SELECT format('view %s %s', c.relname, pg_get_viewdef(c.oid))
	    FROM pg_class c WHERE c.relnamespace = 'posthog_export'::regnamespace AND c.relkind = 'v'
	  UNION ALL SELECT format('constraint %s %s', conrelid::regclass, pg_get_constraintdef(oid))
	    FROM pg_constraint WHERE connamespace = 'posthog_export'::regnamespace
	  UNION ALL SELECT format('policy %s %s %s', tablename, policyname, qual) FROM pg_policies WHERE schemaname = 'posthog_export'
	  UNION ALL SELECT format('index %s', pg_get_indexdef(indexrelid)) FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
	    WHERE c.relnamespace = 'posthog_export'::regnamespace
	  UNION ALL SELECT format('grant %s %s', c.relname,
	                          ARRAY(SELECT a::text FROM unnest(c.relacl) a ORDER BY 1))
	    FROM pg_class c WHERE c.relnamespace = 'posthog_export'::regnamespace
	  UNION ALL SELECT format('comment %s', d.description) FROM pg_description d JOIN pg_class c ON c.oid = d.objoid
	    WHERE c.relnamespace = 'posthog_export'::regnamespace
	  UNION ALL SELECT format('event trigger %s %s %s %s %s', evtname, evtevent, evtenabled, evttags, evtfoid::regproc)
	    FROM pg_event_trigger
	  UNION ALL SELECT format('member %s', pg_describe_object(classid, objid, objsubid)) FROM pg_depend
	    WHERE refclassid = 'pg_extension'::regclass AND deptype = 'e'
	      AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'posthog_export')
	) s};
is($node->safe_psql('postgres', $catalog_sql), $fresh->safe_psql('postgres', $catalog_sql),
	'the updated catalog equals a fresh install of 0.2.0 (columns, functions, views, constraints, policies, indexes, grants, comments)');
$fresh->stop;

# each export 0.1.0 made has its type now, owned by the export's owner, closed to
# PUBLIC, not a member of the extension (pg_dump dumps it): the dependency that keeps
# DROP ROLE from leaving an export without its owner, in any session
is($node->safe_psql('postgres', q{SELECT string_agg(format('%s %s %s %s', e.name, t.typname, t.typowner::regrole, t.typacl), ', ' ORDER BY e.name)
	FROM posthog_export.exports e JOIN pg_type t ON t.oid = e.owner_type
	WHERE t.typnamespace = 'posthog_export'::regnamespace AND t.typtype = 'e'
	  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')}),
	'alices export alices alice {alice=U/alice}, ev export ev ' . $node->safe_psql('postgres', 'SELECT current_user') . ' {'
	. $node->safe_psql('postgres', q{SELECT format('%s=U/%s', current_user, current_user)}) . '}',
	'the update gives each export its type, owned by its owner, closed to PUBLIC, not a member of the extension');
my (undef, undef, $drop_alice) = $node->psql('postgres', 'DROP ROLE alice');
like($drop_alice, qr/role "alice" cannot be dropped because some objects depend on it\nDETAIL:  .*owner of type posthog_export."export alices"/s,
	'so DROP ROLE of alice is refused');

# the exports 0.1.0 made depend on their server now (the library is not
# preloaded here: event triggers, not the hook): without the user mapping
# that also holds it back, DROP SERVER is refused; a rename carries them along
$err = psql_fails($node, q{BEGIN; DROP USER MAPPING FOR CURRENT_USER SERVER posthog; DROP SERVER posthog; COMMIT;},
	'DROP SERVER of the server of the exports 0.1.0 made');
like($err, qr/ERROR:  cannot drop server posthog because exports depend on it\nDETAIL:  export "alices" of role "alice" depends on server posthog\nexport "ev" of role "\w+" depends on server posthog/,
	'is refused, naming both exports');
is($node->safe_psql('postgres', q{BEGIN; ALTER SERVER posthog RENAME TO renamed;
	SELECT string_agg(DISTINCT server_name, ',') FROM posthog_export.exports; ROLLBACK;}), 'renamed', 'a rename carries them along');

# the exports go on: the queued backfill runs, the completed hour is not exported again
psql_ok($node, q{CALL posthog_export.run_due()}, 'run_due after the update');
is($node->safe_psql('postgres', q{SELECT string_agg(status, ',' ORDER BY interval_start) FROM posthog_export.runs WHERE export_name = 'ev'}),
	'completed,completed,completed', 'the backfilled hours completed after the one 0.1.0 exported');
is($node->safe_psql('postgres', q{SELECT next_settle_at BETWEEN now() AND now() + interval '1 hour 1 minute' FROM posthog_export.exports WHERE name = 'ev'}),
	't', 'the intervals exported after the update have their settle checks ahead');
my ($e, $m, $x) = compare_with_source($node, $emu, table => q{(SELECT * FROM posthog_exports.ev WHERE event <> 'old') t}, start => '2026-11-20T01:00:00Z', end => '2026-11-20T03:00:00Z',
	columns => [qw(uuid event distinct_id timestamp)]);
is("$m/$x", "0/0", "the backfilled hours were exported in full ($e rows)");
is($node->safe_psql('postgres', q{SELECT count(*) FROM posthog_exports.ev WHERE event = 'old'}), '25', 'the rows 0.1.0 wrote are untouched');

$node->stop;
$emu->{handle}->kill_kill;
done_testing();
