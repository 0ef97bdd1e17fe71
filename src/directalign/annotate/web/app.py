"""The ASGI app (FastAPI): pages, the JSON API, static files from the package, security headers, error pages.

`create_app(db)` builds it for one database; `app_from_environment()` is the factory uvicorn's workers import
(the database URL comes in DIRECTALIGN_ANNOTATE_DB), so several worker processes can share a PostgreSQL URL.
"""

from __future__ import annotations

import os
from importlib.resources import files

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from directalign.annotate.db import Database
from directalign.annotate.web import api, pages
from directalign.annotate.web.common import AppState
from directalign.annotate.web.security import SECURITY_HEADERS, LoginRequired

DB_ENVIRONMENT = "DIRECTALIGN_ANNOTATE_DB"
INSECURE_ENVIRONMENT = "DIRECTALIGN_ANNOTATE_INSECURE_COOKIES"


def create_app(db: Database, secure_cookies: bool = True, n_boot: int = 200) -> FastAPI:
    db.check_ready()
    app = FastAPI(title="directalign annotate", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.annotate = AppState(db, secure_cookies=secure_cookies, n_boot=n_boot)
    app.mount("/static", StaticFiles(directory=str(files("directalign.annotate") / "static")), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(LoginRequired)
    async def to_login(request: Request, exc: LoginRequired):
        return RedirectResponse(f"/login?next={exc.next_url}", status_code=303)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: HTTPException):
        headers = getattr(exc, "headers", None)
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers)
        return pages.render(request, "error.html", exc.status_code, code=exc.status_code, detail=exc.detail)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": detail}, status_code=422)
        return pages.render(request, "error.html", 422, code=422, detail=detail)

    return app


def app_from_environment() -> FastAPI:
    """The app for `uvicorn --factory` workers: the database from DIRECTALIGN_ANNOTATE_DB."""
    return create_app(Database(os.environ[DB_ENVIRONMENT]),
                      secure_cookies=os.environ.get(INSECURE_ENVIRONMENT) != "1")
