"""The FastAPI application: wiring only (store, executor, host pool, routers, start-up duties)."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.context import Context
from api.deps import current_account
from api.engine.scheduler import SchedulerThread
from api.errors import Conflict, ServiceError
from api.executor import Executor
from api.hosts import HostPool
from api.routers import agent, dbaas, itcare, mgmt, v1
from api.routers.common import declare_400_not_422, dialect_of, validation_problems
from api.security import load_cipher
from api.services import accounts, catalog, clusters, requests
from api.settings import Settings
from api.store import STARTUP_LOCK, advisory_lock, make_engine, migrate, session_factory
from api.store.models import Account, Cluster, Operation

log = logging.getLogger("pgdbaas")


def build_context(settings: Settings, role: str = "api") -> Context:
    """The store (migrated), the executor of PGDBAAS_EXECUTOR and the rest. `role`: "api" (an
    HTTP process) or "worker" (`python -m api worker`, queue mode)."""
    if problem := settings.startup_problem():
        raise RuntimeError(problem)
    queue_mode = settings.executor == "queue"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(settings.store_url, queue_schema=queue_mode)
    sessions = session_factory(make_engine(settings.store_url))
    if queue_mode:
        from api.engine.queue import QueueExecutor

        executor = QueueExecutor(sessions, settings=settings, role=role)
    else:
        executor = Executor(sessions, jobs_dir=settings.jobs_dir, playbook_dir=settings.playbook_dir,
                            workers=settings.workers)
    ctx = Context(settings=settings, sessions=sessions, executor=executor,
                  hosts=HostPool(settings.inventory, settings.host_group),
                  cipher=load_cipher(settings.secret_key, settings.data_dir))
    executor.attach(ctx)
    return ctx


def boot_agent_instance(ctx: Context) -> Operation | None:
    """The agent seed's "on boot": provision the default instance if absent, and start it."""
    name = ctx.settings.agent_instance
    if not name:
        return None
    with ctx.sessions() as session:
        owner = session.scalar(select(Account).where(Account.name == ctx.settings.admin_user))
    if owner is None:
        log.warning("PGDBAAS_AGENT_INSTANCE is set but no admin account exists: not booting %s", name)
        return None
    cluster_id = clusters.agent_cluster_id(ctx)
    with ctx.sessions.begin() as session:
        if cluster_id is None:
            # No id recorded yet (an older store, or a crash right after the create): the admin's own
            # cluster of that name is the facade's; from here on it is kept by id.
            cluster_id = session.scalar(select(Cluster.id).where(
                Cluster.owner_id == owner.id, Cluster.name == name, Cluster.service_state != clusters.TERMINATED))
            if cluster_id:
                clusters.remember_agent_cluster(session, cluster_id)
        cluster = session.get(Cluster, cluster_id) if cluster_id else None
    try:
        if cluster is None or cluster.service_state == clusters.TERMINATED:
            spec = clusters.ClusterSpec(name=name, port=ctx.settings.agent_port or None)
            cluster, operation = clusters.create_cluster(ctx, owner, spec)
            with ctx.sessions.begin() as session:
                clusters.remember_agent_cluster(session, cluster.id)
            return operation
        return clusters.boot(ctx, owner, cluster.id)
    except Conflict as exc:  # e.g. recovery is already observing it
        log.warning("agent instance %s not booted: %s", name, exc.message)
        return None


def start_up(ctx: Context) -> None:
    """The start-up duties (first admin, the engine catalog's seed, crash recovery, the agent's
    boot), one API process of the store at a time: several may start at once on one PostgreSQL store."""
    with advisory_lock(ctx.sessions.kw["bind"], STARTUP_LOCK):
        accounts.ensure_admin(ctx)
        catalog.seed(ctx)
        interrupted = requests.recover(ctx)
        if interrupted:
            log.warning("%d request(s) were interrupted by a restart", len(interrupted))
        boot_agent_instance(ctx)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx = await run_in_threadpool(build_context, settings)
        app.state.context = ctx
        await run_in_threadpool(start_up, ctx)
        # In queue mode the workers tick (a periodic task); here, a thread of this process.
        scheduler = None
        if settings.executor == "inprocess" and settings.scheduler_interval > 0:
            scheduler = SchedulerThread(ctx, settings.scheduler_interval)
            scheduler.start()
        try:
            yield
        finally:
            if scheduler is not None:
                await run_in_threadpool(scheduler.stop)
            await run_in_threadpool(ctx.executor.shutdown)

    app = FastAPI(title="pgdbaas", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Self-hosted PostgreSQL database-as-a-service. Every mutating call is an "
                              "ansible-runner job, answered at once with a request to poll at /v1/requests/{id}.")

    # Every error is rendered by the dialect owning the path (api/routers/common.py).
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        body = dialect_of(request.url.path).render(exc.status_code, exc.message, field=exc.field,
                                                   request_id=getattr(exc, "request_id", None))
        return JSONResponse(status_code=exc.status_code, content=body)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        body = dialect_of(request.url.path).validation_body(validation_problems(exc.errors(), exc.body))
        return JSONResponse(status_code=400, content=body)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code < 400:
            return Response(status_code=exc.status_code, headers=exc.headers)
        body = dialect_of(request.url.path).render(exc.status_code, str(exc.detail))
        return JSONResponse(status_code=exc.status_code, content=body, headers=exc.headers)

    @app.get("/health", tags=["health"])
    def health():
        return {"status": "ok"}

    def openapi_document() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = declare_400_not_422(get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi_document

    # The reference pages need an account too; a browser asks for it (HTTP Basic) and reuses it.
    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_actor=Depends(current_account)):
        return app.openapi()

    @app.get("/docs", include_in_schema=False)
    def docs(_actor=Depends(current_account)):
        return get_swagger_ui_html(openapi_url="/openapi.json", title="pgdbaas API")

    app.include_router(v1.router)
    app.include_router(agent.router)
    app.include_router(itcare.router)
    app.include_router(dbaas.router)
    app.include_router(mgmt.router)
    return app
