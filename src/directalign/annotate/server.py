"""Serve the app with uvicorn: one process on SQLite (one writer anyway), or several workers on a server database."""

from __future__ import annotations

import os

from directalign.annotate.db import Database
from directalign.annotate.web.app import DB_ENVIRONMENT, INSECURE_ENVIRONMENT, create_app
from directalign.errors import ConfigError


def serve(db: str, host: str = "127.0.0.1", port: int = 8080, workers: int = 1, secure_cookies: bool = True,
          ssl_keyfile: str | None = None, ssl_certfile: str | None = None, log_level: str = "info") -> None:
    """Run until interrupted. workers > 1 needs a database server (PostgreSQL): SQLite has one writer."""
    import uvicorn

    database = Database(db)
    database.check_ready()
    tls = {"ssl_keyfile": ssl_keyfile, "ssl_certfile": ssl_certfile}
    if workers > 1:
        if database.is_sqlite:
            raise ConfigError("--workers > 1 needs a database server URL (e.g. postgresql+psycopg://...); "
                              "SQLite takes one writer at a time")
        os.environ[DB_ENVIRONMENT] = database.url
        os.environ[INSECURE_ENVIRONMENT] = "0" if secure_cookies else "1"
        uvicorn.run("directalign.annotate.web.app:app_from_environment", factory=True, host=host, port=port,
                    workers=workers, log_level=log_level, **tls)
        return
    app = create_app(database, secure_cookies=secure_cookies)
    uvicorn.run(app, host=host, port=port, log_level=log_level, **tls)
