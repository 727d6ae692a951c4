"""`python -m api worker`: a queue worker process (PGDBAAS_EXECUTOR=queue).

It builds the same service context as an API process (store migrated under the lock, host pool,
the shared Fernet key) and runs two procrastinate workers on one event loop: the `operations`
queue (PGDBAAS_WORKERS jobs at once, each in a thread of the loop's default executor) and the
`maintenance` queue (the reaper, so it never waits behind long operations). Before taking jobs it
makes one reaper pass (what a dead worker left) and starts the heartbeats of its operations.
SIGTERM or SIGINT: no new job is taken, running ones finish, then the process exits.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

from api.engine import queue

log = logging.getLogger("pgdbaas.worker")
READY = "pgdbaas worker ready"  # logged once the worker takes jobs (tests wait for it)


class _QuietReaper(logging.Filter):
    """The reaper runs every 10 s: its routine lines (deferred, started, ended) stay out of the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return record.levelno > logging.INFO or ("reaper[" not in message and "scheduler[" not in message)


def main(settings) -> int:
    from api.main import build_context

    for handler in logging.getLogger().handlers:
        handler.addFilter(_QuietReaper())
    ctx = build_context(settings, role="worker")
    queue.set_worker_context(ctx)
    try:
        return asyncio.run(serve(ctx))
    finally:
        ctx.executor.shutdown()


async def serve(ctx) -> int:
    concurrency = ctx.settings.workers
    loop = asyncio.get_running_loop()
    # Sync jobs run in the loop's default executor (asgiref's sync_to_async): one thread per job,
    # plus room for the reaper's store calls. Its threads live as long as the loop, so the job
    # guard's parent-death signal fires only when this process dies.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=concurrency + 4, thread_name_prefix="pgdbaas-job"))
    name = f"{socket.gethostname()}:{os.getpid()}"
    options = dict(wait=True, listen_notify=True, fetch_job_polling_interval=5, abort_job_polling_interval=1,
                   shutdown_graceful_timeout=None, update_heartbeat_interval=5, stalled_worker_timeout=20,
                   install_signal_handlers=False)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with queue.app.open_async():
        try:
            await queue.reap(ctx, starting=True)
        except Exception:  # the periodic reaper tries again in 10 s
            log.exception("the start-up reaper pass failed")
        ctx.executor.start_heartbeats()
        workers = [
            asyncio.create_task(queue.app.run_worker_async(
                queues=[queue.OPERATIONS_QUEUE], concurrency=concurrency, name=name, delete_jobs="never",
                **options)),
            # A reaper pass every 10 s: its finished jobs are not kept.
            asyncio.create_task(queue.app.run_worker_async(
                queues=[queue.MAINTENANCE_QUEUE], concurrency=1, name=f"{name}/maintenance",
                delete_jobs="successful", **options)),
        ]
        log.info("%s %s: %d job(s) at once, jobs in %s", READY, name, concurrency, ctx.settings.jobs_dir)
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait([*workers, stopping], return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            log.info("worker %s stopping: running jobs finish first", name)
        else:
            log.error("worker %s: a procrastinate worker stopped by itself; stopping", name)
        for task in workers:
            task.cancel()  # procrastinate stops taking jobs and waits for the running ones
        await asyncio.gather(*workers, return_exceptions=True)
        stopping.cancel()
    return 0 if stop.is_set() else 1
