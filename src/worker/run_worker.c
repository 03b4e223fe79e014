/*-------------------------------------------------------------------------
 *
 * run_worker.c
 *		Runs an export in a background worker connected as its owner.
 *
 * An export's destination table belongs to its owner, and so does the
 * code that writing into it may run: triggers (deferred ones fire at
 * commit), defaults, check and domain constraints, index expressions,
 * partition routing.  That code must never run with more privilege than
 * the owner, and nothing it sets (GUCs, temporary objects, prepared
 * statements, advisory locks, LISTEN) may outlive the run.  So whenever
 * the session that asks for a run is not the owner's own session (the
 * scheduler, a superuser's CALL run_export or run_due, pg_cron), the run
 * happens in a new background worker whose session user IS the owner, as
 * pg_cron runs a job as its owner.  Everything, including the commit and
 * its deferred triggers, runs as the owner; the worker exits afterwards,
 * taking all session state with it.
 *
 * A caller that waits (run_export, run_due) gets the worker's NOTICEs,
 * WARNINGs and ERROR relayed through a shared memory queue, as parallel
 * query relays its workers' messages; a cancel is passed on as a cancel.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "libpq/pqformat.h"
#include "libpq/pqmq.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/proc.h"
#include "storage/shm_mq.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "worker/worker.h"

PGDLLEXPORT void phx_run_worker_main(Datum main_arg);

/* room for the worker's messages; a message larger than this is streamed */
#define PHX_MQ_SIZE		65536

/* What a run worker is asked to do; travels in bgw_extra. */
typedef struct PhxRunRequest
{
	Oid			dboid;
	Oid			owner;
	int32		export_id;
	PhxRunKind	kind;
	TimestampTz start;			/* PHX_RUN_RANGE only */
	TimestampTz end;
	bool		force;
	dsm_handle	seg;			/* DSM_HANDLE_INVALID: nobody waits */
} PhxRunRequest;

StaticAssertDecl(sizeof(PhxRunRequest) <= BGW_EXTRALEN,
				 "PhxRunRequest must fit in bgw_extra");

/* Fills in a run worker for "req"; the scheduler and run_in_worker share it. */
void
phx_run_worker_init(BackgroundWorker *worker, PhxExport *exp, PhxRunKind kind,
					TimestampTz start, TimestampTz end, bool force, dsm_handle seg)
{
	PhxRunRequest req;

	memset(&req, 0, sizeof(req));
	req.dboid = MyDatabaseId;
	req.owner = exp->owner;
	req.export_id = exp->export_id;
	req.kind = kind;
	req.start = start;
	req.end = end;
	req.force = force;
	req.seg = seg;

	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "posthog_export");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "phx_run_worker_main");
	snprintf(worker->bgw_type, BGW_MAXLEN, "posthog_export run");
	snprintf(worker->bgw_name, BGW_MAXLEN, "posthog_export run of export %d", exp->export_id);
	memcpy(worker->bgw_extra, &req, sizeof(req));
	worker->bgw_notify_pid = MyProcPid;
}

/*
 * Re-raises, in the caller, a message the worker sent.  An error becomes
 * the caller's ERROR, or a WARNING when "errors_as_warnings" (run_due goes
 * on with the other exports); errcontext says where it came from.
 */
static void
relay_message(StringInfo msg, PhxExport *exp, bool errors_as_warnings,
			  ErrorData **error)
{
	char		msgtype = pq_getmsgbyte(msg);
	ErrorData	edata;

	if (msgtype != 'E' && msgtype != 'N')
		return;					/* nothing else is relayed */
	pq_parse_errornotice(msg, &edata);
	edata.context = edata.context
		? psprintf("%s\nbackground worker running export \"%s\" as its owner", edata.context, exp->name)
		: psprintf("background worker running export \"%s\" as its owner", exp->name);
	if (edata.elevel >= ERROR)
	{
		if (errors_as_warnings)
			edata.elevel = WARNING;
		else
		{
			/* the worker is ending; raise it once the worker is gone */
			edata.elevel = ERROR;
			if (*error == NULL)
			{
				*error = palloc(sizeof(ErrorData));
				**error = edata;
			}
			return;
		}
	}
	ThrowErrorData(&edata);
}

/*
 * Runs exp in a background worker connected as its owner and waits for
 * it, relaying its messages.  kind PHX_RUN_RANGE exports [start, end);
 * PHX_RUN_DUE runs the export's due work.  The worker commits its own
 * work, page by page, as the scheduler's workers do.  Returns false when
 * the run failed (with "errors_as_warnings"; otherwise that is an error):
 * an error, due work whose failure was recorded, or no worker.
 */
bool
phx_run_in_worker(PhxExport *exp, PhxRunKind kind, TimestampTz start,
				  TimestampTz end, bool force, bool errors_as_warnings)
{
	char	   *problem = phx_owner_session_problem(exp->owner);
	dsm_segment *seg;
	shm_mq	   *mq;
	shm_mq_handle *mqh;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	ErrorData  *error = NULL;
	bool		finished = false;
	bool		failed = false;

	if (problem)
	{
		ereport(errors_as_warnings ? WARNING : ERROR,
				(errcode(ERRCODE_INVALID_AUTHORIZATION_SPECIFICATION),
				 errmsg("cannot run export \"%s\": %s", exp->name, problem),
				 errhint("Run it as its owner, or give the owner LOGIN (ALTER ROLE ... LOGIN).")));
		return false;
	}

	seg = dsm_create(PHX_MQ_SIZE, 0);
	mq = shm_mq_create(dsm_segment_address(seg), PHX_MQ_SIZE);
	shm_mq_set_receiver(mq, MyProc);
	phx_run_worker_init(&worker, exp, kind, start, end, force, dsm_segment_handle(seg));
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
	{
		dsm_detach(seg);
		ereport(errors_as_warnings ? WARNING : ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not start a background worker to run export \"%s\" as its owner",
						exp->name),
				 errhint("Raise max_worker_processes, or run fewer exports at once.")));
		return false;
	}
	mqh = shm_mq_attach(mq, seg, handle);

	PG_TRY();
	{
		for (;;)
		{
			Size		nbytes;
			void	   *data;
			StringInfoData msg;
			shm_mq_result res = shm_mq_receive(mqh, &nbytes, &data, false);

			if (res != SHM_MQ_SUCCESS)
				break;			/* the worker detached: it has exited */
			initStringInfo(&msg);
			appendBinaryStringInfo(&msg, data, nbytes);
			if (msg.len > 0 && msg.data[0] == 'Z')
			{
				/* 'E' after it: due work whose failure the worker recorded */
				finished = true;
				failed |= msg.len > 1 && msg.data[1] == 'E';
			}
			else
			{
				if (msg.len > 0 && msg.data[0] == 'E')
					failed = true;
				relay_message(&msg, exp, errors_as_warnings, &error);
			}
			pfree(msg.data);
		}
		(void) WaitForBackgroundWorkerShutdown(handle);
	}
	PG_CATCH();
	{
		pid_t		pid;

		/* cancelled while waiting: cancel the run too, which records it */
		if (GetBackgroundWorkerPid(handle, &pid) == BGWH_STARTED)
			kill(pid, SIGINT);
		PG_RE_THROW();
	}
	PG_END_TRY();
	dsm_detach(seg);

	if (error)
		ThrowErrorData(error);
	if (!finished)
		ereport(errors_as_warnings ? WARNING : ERROR,
				(errcode(ERRCODE_CONNECTION_FAILURE),
				 errmsg("the background worker running export \"%s\" ended without finishing",
						exp->name),
				 errdetail("It may have crashed or been terminated; the server log says why."),
				 errhint("The run resumes from its last committed page when it runs again.")));
	return finished && !failed;
}

/*
 * Entry point of a run worker: connects as the export's owner, then runs
 * what it was asked and exits.  With a waiting caller, its messages go to
 * the caller's queue, and a final 'Z' says it finished.
 */
void
phx_run_worker_main(Datum main_arg)
{
	PhxRunRequest req;
	PhxExport  *exp;
	bool		waited_for;
	bool		ok = true;

	memcpy(&req, MyBgworkerEntry->bgw_extra, sizeof(req));
	waited_for = req.seg != DSM_HANDLE_INVALID;
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (waited_for)
	{
		/* no resource owner yet: the mapping lasts until exit */
		dsm_segment *seg = dsm_attach(req.seg);
		shm_mq	   *mq;

		if (seg == NULL)
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("could not map the message queue of the session that started this run")));
		mq = dsm_segment_address(seg);
		shm_mq_set_sender(mq, MyProc);
		pq_redirect_to_shm_mq(seg, shm_mq_attach(mq, seg, NULL));
	}

#if PG_VERSION_NUM >= 170000
	BackgroundWorkerInitializeConnectionByOid(req.dboid, req.owner, BGWORKER_BYPASS_ROLELOGINCHECK);
#else
	BackgroundWorkerInitializeConnectionByOid(req.dboid, req.owner, 0);
#endif
	pgstat_report_appname("posthog_export run");

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	if (SPI_connect_ext(SPI_OPT_NONATOMIC) != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	exp = phx_export_by_id(req.export_id);
	if (exp && exp->owner != req.owner)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the owner of export \"%s\" changed before its run started", exp->name),
				 errhint("Run it again.")));
	if (exp)
	{
		pgstat_report_activity(STATE_RUNNING,
							   psprintf("posthog_export: export \"%s\"", exp->name));
		if (req.kind == PHX_RUN_RANGE)
			phx_run_range(exp, req.start, req.end, "manual", req.force, true);
		else
			ok = phx_run_due_export(exp, true);
	}
	else if (waited_for)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("export %d was dropped before its run started", req.export_id)));
	SPI_finish();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	if (waited_for)
	{
		StringInfoData buf;

		pq_beginmessage(&buf, 'Z');
		pq_sendbyte(&buf, ok ? 'I' : 'E');
		pq_endmessage(&buf);
	}
	proc_exit(0);
}
