"""Accounts, API tokens, browser sessions, CSRF tokens and login throttling.

Passwords: Argon2id through argon2-cffi (RFC 9106), rehashed on login when its parameters change. API tokens and
session ids are 256-bit random values (`secrets`), stored as SHA-256 digests. A session is created before login
(it carries the login form's CSRF token) and replaced by a fresh id on login, so an id planted before login
never becomes an authenticated one (session fixation). Throttling: after `FREE_FAILURES` failed logins for one
username (or 4x that from one address) within `FAILURE_WINDOW` seconds, further attempts are refused without
checking the password for 2^(n - FREE_FAILURES) seconds after the last failure, capped at `MAX_LOCK` (the OWASP
authentication cheat sheet's exponential back-off).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from directalign.annotate.db import Database, audit
from directalign.annotate.models import ROLES, LoginFailure, User, WebSession
from directalign.errors import ConfigError

FREE_FAILURES = 5
FAILURE_WINDOW = 15 * 60.0
MAX_LOCK = 15 * 60.0
SESSION_SECONDS = 12 * 3600.0
ANONYMOUS_SESSION_SECONDS = 3600.0
MIN_PASSWORD_LENGTH = 8
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

_hasher = PasswordHasher()
# Verified against when the username does not exist, so that a login takes as long either way.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def add_user(db: Database, username: str, password: str, role: str) -> str:
    """Create an account and return its API token (shown once; only its digest is stored)."""
    if not USERNAME.match(username):
        raise ConfigError(f"username {username!r}: use 1-64 letters, digits and . _ @ -")
    if role not in ROLES:
        raise ConfigError(f"--role {role!r}: choose one of {', '.join(ROLES)}")
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"the password must have at least {MIN_PASSWORD_LENGTH} characters")
    token = new_secret()
    try:
        with db.write() as session:
            now = db.clock()
            user = User(username=username, password_hash=_hasher.hash(password), role=role,
                        token_hash=digest(token), created_at=now)
            session.add(user)
            session.flush()
            audit(session, now, "add_user", user.id, username=username, role=role)
    except IntegrityError as err:
        raise ConfigError(f"user {username!r} already exists") from err
    return token


def user_for_token(session: Session, token: str) -> User | None:
    return session.scalar(select(User).where(User.token_hash == digest(token)))


@dataclass
class LoginResult:
    user: User | None
    retry_after: float = 0.0  # > 0: throttled, the password was not checked


def login(db: Database, username: str, password: str, ip: str) -> LoginResult:
    """Check a password under the throttle; every attempt is audited and each failure recorded."""
    now = db.clock()
    with db.read() as session:
        wait = _lock_remaining(session, username, ip, now)
        user = session.scalar(select(User).where(User.username == username))
    if wait > 0:
        with db.write() as session:
            audit(session, now, "login_throttled", user.id if user else None, ip=ip, username=username)
        return LoginResult(None, wait)
    ok = _verify(user.password_hash if user else _DUMMY_HASH, password) and user is not None
    with db.write() as session:
        if ok:
            if _hasher.check_needs_rehash(user.password_hash):
                session.get(User, user.id).password_hash = _hasher.hash(password)
            session.execute(delete(LoginFailure).where(LoginFailure.username == username))
            audit(session, now, "login", user.id, ip=ip)
        else:
            session.add(LoginFailure(username=username, ip=ip, at=now))
            audit(session, now, "login_failed", user.id if user else None, ip=ip, username=username)
    return LoginResult(user if ok else None)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _lock_remaining(session: Session, username: str, ip: str, now: float) -> float:
    since = now - FAILURE_WINDOW
    waits = []
    for column, value, free in ((LoginFailure.username, username, FREE_FAILURES),
                                (LoginFailure.ip, ip, 4 * FREE_FAILURES)):
        count, last = session.execute(
            select(func.count(), func.max(LoginFailure.at)).where(column == value, LoginFailure.at >= since)
        ).one()
        if count >= free:
            waits.append(last + min(2.0 ** (count - free), MAX_LOCK) - now)
    return max([0.0, *waits])


# Browser sessions.


def start_session(db: Database, user_id: int | None) -> tuple[str, WebSession]:
    """A new session (anonymous when user_id is None): returns the cookie value and the row."""
    cookie = new_secret()
    now = db.clock()
    lifetime = SESSION_SECONDS if user_id is not None else ANONYMOUS_SESSION_SECONDS
    row = WebSession(id_hash=digest(cookie), user_id=user_id, csrf_token=new_secret(), created_at=now,
                     expires_at=now + lifetime)
    with db.write() as session:
        session.execute(delete(WebSession).where(WebSession.expires_at < now))
        session.add(row)
    return cookie, row


def find_session(session: Session, cookie: str | None, now: float) -> WebSession | None:
    if not cookie:
        return None
    row = session.get(WebSession, digest(cookie))
    return row if row is not None and row.expires_at >= now else None


def end_session(db: Database, cookie: str | None) -> None:
    if cookie:
        with db.write() as session:
            session.execute(delete(WebSession).where(WebSession.id_hash == digest(cookie)))


def csrf_ok(expected: str | None, given: str | None) -> bool:
    """Constant-time comparison of the session's CSRF token with the one a form or header sent."""
    return bool(expected) and bool(given) and hmac.compare_digest(expected, given)
