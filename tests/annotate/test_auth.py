"""Accounts, passwords, tokens, sessions and login throttling."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from directalign.annotate import auth
from directalign.annotate.models import AuditEvent, User, WebSession
from directalign.errors import ConfigError
from tests.annotate.conftest import PASSWORD, client, csrf_of


def test_passwords_are_argon2id_hashes_and_tokens_are_stored_as_digests(db):
    token = auth.add_user(db, "alice", PASSWORD, "annotator")
    with db.read() as session:
        user = session.scalar(select(User).where(User.username == "alice"))
        assert auth.user_for_token(session, token).id == user.id
        assert auth.user_for_token(session, token + "x") is None
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert user.token_hash == auth.digest(token) and token not in user.token_hash


@pytest.mark.parametrize(("username", "password", "role", "message"), [
    ("bob", "short", "annotator", "at least 8 characters"),
    ("bob smith", PASSWORD, "annotator", "letters, digits"),
    ("bob", PASSWORD, "owner", "choose one of admin, annotator"),
])
def test_bad_accounts_are_config_errors(db, username, password, role, message):
    with pytest.raises(ConfigError, match=message):
        auth.add_user(db, username, password, role)


def test_a_second_user_of_the_same_name_is_refused(db):
    auth.add_user(db, "alice", PASSWORD, "annotator")
    with pytest.raises(ConfigError, match="already exists"):
        auth.add_user(db, "alice", PASSWORD, "admin")


def test_wrong_password_is_refused_and_repeated_failures_are_throttled(db, clock):
    auth.add_user(db, "alice", PASSWORD, "annotator")
    for _ in range(auth.FREE_FAILURES):
        result = auth.login(db, "alice", "wrong password", "10.0.0.1")
        assert result.user is None and result.retry_after == 0
    throttled = auth.login(db, "alice", PASSWORD, "10.0.0.1")  # even the right password: not checked now
    assert throttled.user is None and throttled.retry_after == pytest.approx(1.0)
    clock.advance(1.5)
    assert auth.login(db, "alice", "wrong again", "10.0.0.1").user is None
    longer = auth.login(db, "alice", PASSWORD, "10.0.0.1")
    assert longer.retry_after == pytest.approx(2.0)  # 2^(n - FREE_FAILURES): the lock doubles per failure
    clock.advance(2.5)
    assert auth.login(db, "alice", PASSWORD, "10.0.0.1").user.username == "alice"
    assert auth.login(db, "alice", "wrong", "10.0.0.1").retry_after == 0  # success cleared the failures
    with db.read() as session:
        actions = session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)).all()
    assert actions.count("login_failed") == 7 and actions.count("login_throttled") == 2 and "login" in actions


def test_unknown_users_fail_like_wrong_passwords(db):
    result = auth.login(db, "nobody", PASSWORD, "10.0.0.2")
    assert result.user is None and result.retry_after == 0


def test_login_sets_a_fresh_httponly_secure_samesite_session(app, db):
    auth.add_user(db, "alice", PASSWORD, "annotator")
    browser = client(app)
    page = browser.get("/login")
    before = browser.cookies.get("directalign_session")
    cookie_header = page.headers["set-cookie"].lower()
    assert "httponly" in cookie_header and "secure" in cookie_header and "samesite=lax" in cookie_header
    response = browser.post("/login", data={"username": "alice", "password": PASSWORD,
                                            "csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/"
    after = browser.cookies.get("directalign_session")
    assert after and after != before  # session fixation: the pre-login id never becomes a logged-in one
    with db.read() as session:
        assert session.get(WebSession, auth.digest(before)) is None
        assert session.get(WebSession, auth.digest(after)).user_id is not None
    home = browser.get("/")
    assert home.status_code == 200 and "alice (annotator)" in home.text
    browser.post("/logout", data={"csrf_token": csrf_of(home.text)})
    assert browser.get("/", follow_redirects=False).status_code == 303  # back to the login page


def test_login_page_refuses_bad_passwords_and_throttles_with_retry_after(app, db):
    auth.add_user(db, "alice", PASSWORD, "annotator")
    browser = client(app)
    token = csrf_of(browser.get("/login").text)
    for _ in range(auth.FREE_FAILURES):
        wrong = browser.post("/login", data={"username": "alice", "password": "nope", "csrf_token": token})
        assert wrong.status_code == 401 and "Wrong username or password" in wrong.text
    throttled = browser.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token})
    assert throttled.status_code == 429 and int(throttled.headers["retry-after"]) >= 1
    assert "Too many failed logins" in throttled.text


def test_the_next_parameter_cannot_redirect_off_site(app, db):
    auth.add_user(db, "alice", PASSWORD, "annotator")
    browser = client(app)
    token = csrf_of(browser.get("/login").text)
    response = browser.post("/login", data={"username": "alice", "password": PASSWORD, "csrf_token": token,
                                            "next": "//evil.example/x"}, follow_redirects=False)
    assert response.headers["location"] == "/"
