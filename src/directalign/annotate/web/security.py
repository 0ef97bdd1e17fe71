"""Who is asking: browser sessions (cookie + CSRF token) and API tokens (Authorization: Bearer), and the headers.

A page request is authenticated by the session cookie; every form it posts must carry the session's CSRF token.
An API request is authenticated by its bearer token; it may instead use the session cookie (the dashboard's
own polling), and then an unsafe method must send the CSRF token in the X-CSRF-Token header, so a cross-site
form can never act with the cookie. Cookies are HttpOnly, SameSite=Lax and Secure (browsers treat
http://127.0.0.1 and http://localhost as secure origins; `--insecure-cookies` is for plain-HTTP hosts only).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from fastapi import HTTPException, Request

from directalign.annotate import auth
from directalign.annotate.db import Database
from directalign.annotate.models import User, WebSession

COOKIE = "directalign_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")

# script-src 'self' forbids inline scripts and handlers: even markup that slipped through could not run.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class LoginRequired(Exception):
    def __init__(self, next_url: str):
        self.next_url = next_url


@dataclass
class Viewer:
    user: User
    session: WebSession | None  # None when authenticated by an API token


def db_of(request: Request) -> Database:
    return request.app.state.annotate.db


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def page_viewer(request: Request) -> Viewer:
    """The logged-in browser user, or a redirect to the login page."""
    db = db_of(request)
    with db.read() as session:
        web = auth.find_session(session, request.cookies.get(COOKIE), db.clock())
        user = session.get(User, web.user_id) if web is not None and web.user_id is not None else None
    if user is None:
        raise LoginRequired(quote(request.url.path))
    return Viewer(user, web)


def api_viewer(request: Request) -> Viewer:
    """The user of a bearer token, or of the session cookie (with the CSRF header on unsafe methods)."""
    db = db_of(request)
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    with db.read() as session:
        if scheme.lower() == "bearer" and token.strip():
            user = auth.user_for_token(session, token.strip())
            if user is None:
                raise HTTPException(401, "invalid API token", headers={"WWW-Authenticate": "Bearer"})
            return Viewer(user, None)
        web = auth.find_session(session, request.cookies.get(COOKIE), db.clock())
        user = session.get(User, web.user_id) if web is not None and web.user_id is not None else None
    if user is None:
        raise HTTPException(401, "send Authorization: Bearer TOKEN (from `annotate add-user`)",
                            headers={"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS and not auth.csrf_ok(web.csrf_token, request.headers.get(CSRF_HEADER)):
        raise HTTPException(403, "missing or wrong X-CSRF-Token header")
    return Viewer(user, web)


def require_admin(viewer: Viewer) -> None:
    if viewer.user.role != "admin":
        raise HTTPException(403, "admins only")


def require_csrf(viewer_session: WebSession | None, token: str | None) -> None:
    if viewer_session is None or not auth.csrf_ok(viewer_session.csrf_token, token):
        raise HTTPException(403, "the form's CSRF token is missing or wrong; reload the page and try again")


def set_session_cookie(response, request: Request, cookie: str, max_age: float) -> None:
    response.set_cookie(COOKIE, cookie, max_age=int(max_age), httponly=True, samesite="lax", path="/",
                        secure=request.app.state.annotate.secure_cookies)


def safe_next(url: str | None) -> str:
    """Only a path on this site may follow a login (no //host or scheme: no open redirect)."""
    if url and url.startswith("/") and not url.startswith("//") and "\\" not in url:
        return url
    return "/"
