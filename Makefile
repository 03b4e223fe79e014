# posthog_export: pull PostHog events, persons and sessions into Postgres.
#
#   make && make install    build and install (PGXS; needs pg_config)
#   make demo               set up everything on a fresh Debian machine and run an export
#   make test               set up everything and run every test suite
#   make bench              benchmarks (not part of make test)

MODULE_big = posthog_export
OBJS = \
	src/module.o \
	src/api/fdw_validator.o \
	src/api/export_functions.o \
	src/api/run_procedures.o \
	src/api/dependencies.o \
	src/posthog/server_options.o \
	src/posthog/hogql.o \
	src/posthog/query_client.o \
	src/posthog/http_transport.o \
	src/posthog/request_budget.o \
	src/posthog/http_receive.o \
	src/posthog/network_policy.o \
	src/posthog/response.o \
	src/posthog/json_scan.o \
	src/posthog/schema_query.o \
	src/posthog/hogql_types.o \
	src/models/registry.o \
	src/models/paging.o \
	src/models/keys.o \
	src/models/cell_convert.o \
	src/models/jsonb_build.o \
	src/models/events.o \
	src/models/persons.o \
	src/models/sessions.o \
	src/models/custom.o \
	src/models/hogql_model.o \
	src/fdw/fdw_handler.o \
	src/fdw/fdw_upper.o \
	src/fdw/deparse.o \
	src/fdw/fdw_scan.o \
	src/fdw/remote_rows.o \
	src/fdw/import_schema.o \
	src/fdw/query_function.o \
	src/store/security.o \
	src/store/catalog_spi.o \
	src/store/catalog.o \
	src/store/ownership.o \
	src/store/runs.o \
	src/store/row_context.o \
	src/store/destination.o \
	src/store/merge_sql.o \
	src/store/bulk_insert.o \
	src/run/intervals.o \
	src/run/failure_policy.o \
	src/run/progress.o \
	src/run/due_work.o \
	src/run/settle.o \
	src/worker/shmem.o \
	src/worker/launcher.o \
	src/worker/scheduler.o \
	src/worker/run_worker.o

EXTENSION = posthog_export
DATA = posthog_export--0.1.0.sql posthog_export--0.1.0--0.2.0.sql posthog_export--0.2.0.sql
PGFILEDESC = "posthog_export - pull PostHog data into PostgreSQL"

# make installcheck (PGXS) runs both suites against an installed extension:
# pg_regress (sql/, expected/) and prove_installcheck (the TAP suites).
REGRESS = options exports fdw
REGRESS_OPTS = --inputdir=. --outputdir=$(or $(REGRESS_OUTPUTDIR),.)
TAP_TESTS = 1
PROVE_TESTS = test/t/*.pl

PG_CPPFLAGS = -Isrc
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare
SHLIB_LINK = -lcurl

# Debian keeps the server's pg_config here; fall back to the one on PATH.
PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
endif

# our TAP helpers (PhxTest.pm), next to PGXS's PostgreSQL::Test modules
PG_PROVE_FLAGS += -I $(abspath $(srcdir)/test/perl)

.PHONY: demo test bench deps

deps:
	bash test/install_deps.sh

demo:
	bash test/demo.sh

test:
	bash test/run_tests.sh

bench:
	bash test/bench.sh

# every object depends on the headers (PGXS tracks no header dependencies)
$(OBJS): $(wildcard src/*.h src/*/*.h)

# both fuzzers (libFuzzer, ASan, UBSan), each for FUZZ_SECONDS: the response
# parser, and the jsonb builder against jsonb_in: make fuzz [FUZZ_SECONDS=600]
fuzz:
	bash test/install_deps.sh
	$(MAKE) -C test/fuzz run

.PHONY: fuzz

# the TAP suites with the server under valgrind (slow; not part of make test)
valgrind:
	bash test/valgrind.sh

.PHONY: valgrind
