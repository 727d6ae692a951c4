"""`python -m api`: serve the API with uvicorn (what `make run` does).

    python -m api              the HTTP API (in queue mode: HTTP only, jobs go to the workers)
    python -m api worker       a queue worker (PGDBAAS_EXECUTOR=queue): runs the operations' jobs
    python -m api secret-key   print a new Fernet key for PGDBAAS_SECRET_KEY
"""
from __future__ import annotations

import logging
import sys

USAGE = "usage: python -m api [serve | worker | secret-key]"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else "serve"
    if command == "secret-key":
        from cryptography.fernet import Fernet

        print(Fernet.generate_key().decode())
        return 0
    if command not in ("serve", "worker") or len(args) > 1:
        print(USAGE, file=sys.stderr)
        return 2

    from pydantic import ValidationError

    from api.settings import Settings

    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"pgdbaas: invalid settings: {exc}", file=sys.stderr)
        return 2
    problem = settings.startup_problem()
    if problem is None and command == "worker" and settings.executor != "queue":
        problem = "`python -m api worker` runs queue jobs: set PGDBAAS_EXECUTOR=queue (and PGDBAAS_DATABASE_URL)"
    if problem:
        print(f"pgdbaas: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if command == "worker":
        from api.engine.worker import main as worker_main

        return worker_main(settings)

    import uvicorn

    from api.main import create_app

    uvicorn.run(create_app(settings), host=settings.listen_host, port=settings.listen_port,
                log_level=settings.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
