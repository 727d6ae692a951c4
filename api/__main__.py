"""`python -m api`: serve the API with uvicorn (what `make run` does)."""
from __future__ import annotations

import logging

import uvicorn

from api.main import create_app
from api.settings import Settings


def main() -> None:
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(create_app(settings), host=settings.listen_host, port=settings.listen_port,
                log_level=settings.log_level)


if __name__ == "__main__":
    main()
