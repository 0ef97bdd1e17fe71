"""Fixtures of the annotation tests: a migrated database on a clock the test moves, users, projects, a client."""

from __future__ import annotations

import os
import re

import pytest

pytest.importorskip("fastapi", reason="the annotate extra is not installed (pip install -e '.[annotate]')")
pytest.importorskip("argon2", reason="the annotate extra is not installed (pip install -e '.[annotate]')")

from argon2 import PasswordHasher  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from directalign.annotate import auth  # noqa: E402
from directalign.annotate.db import Database  # noqa: E402
from directalign.annotate.projects import Pair, ProjectOptions, create_project, get_project  # noqa: E402
from directalign.annotate.web.app import create_app  # noqa: E402

PASSWORD = "correct horse battery"
# A PostgreSQL database the tests may empty, e.g. postgresql+psycopg://annotate:annotate@127.0.0.1/annotate_test
POSTGRES_URL = os.environ.get("DIRECTALIGN_TEST_POSTGRES_URL")


class Clock:
    """A clock the test sets and moves (leases, throttling, sessions)."""

    def __init__(self, now: float = 1_800_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(autouse=True)
def fast_passwords(monkeypatch):
    """Argon2id with small parameters: the same code path, a fraction of the 2-core machine's time."""
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def db(tmp_path, clock) -> Database:
    database = Database(str(tmp_path / "annotate.db"), clock=clock)
    database.migrate()
    yield database
    database.dispose()


def make_pairs(n: int, prefix: str = "question", gold: int = 0) -> list[Pair]:
    """n regular pairs, then `gold` gold pairs whose answer is response 0."""
    pairs = [Pair([{"role": "user", "content": f"{prefix} {i}"}], [{"role": "assistant", "content": f"good {i}"}],
                  [{"role": "assistant", "content": f"bad {i}"}], f"mem:{i}") for i in range(n)]
    pairs += [Pair([{"role": "user", "content": f"gold {i}"}], [{"role": "assistant", "content": f"right {i}"}],
                   [{"role": "assistant", "content": f"wrong {i}"}], f"gold:{i}", gold_answer=0) for i in range(gold)]
    return pairs


def add_project(db: Database, name: str = "p", n: int = 10, gold: int = 0, **options):
    create_project(db, name, options.pop("kind", "pairwise"), make_pairs(n, gold=gold), ProjectOptions(**options),
                   "mem")
    return get_project(db, name)


def add_users(db: Database, names: list[str], role: str = "annotator") -> dict[str, int]:
    """{name: user id}; tokens are not needed in the queue tests."""
    from sqlalchemy import select

    from directalign.annotate.models import User

    for name in names:
        auth.add_user(db, name, PASSWORD, role)
    with db.read() as session:
        return dict(session.execute(select(User.username, User.id).where(User.username.in_(names))).all())


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path, clock) -> Database:
    """The database on SQLite, and on PostgreSQL when DIRECTALIGN_TEST_POSTGRES_URL names one (else skipped)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("db")
        return
    if not POSTGRES_URL:
        pytest.skip("set DIRECTALIGN_TEST_POSTGRES_URL to run the PostgreSQL variant")
    pytest.importorskip("psycopg", reason="psycopg is not installed")
    database = Database(POSTGRES_URL, clock=clock)
    _empty(database)
    database.migrate()
    yield database
    _empty(database)
    database.dispose()


def _empty(database: Database) -> None:
    from sqlalchemy import text

    with database.writer.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE"))
        connection.execute(text("CREATE SCHEMA public"))


@pytest.fixture
def app(db):
    return create_app(db, n_boot=50)


def client(app) -> TestClient:
    return TestClient(app, base_url="https://testserver")


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


def login(app, username: str, password: str = PASSWORD) -> tuple[TestClient, str]:
    """A browser-like client logged in as username, and its session's CSRF token."""
    browser = client(app)
    page = browser.get("/login")
    response = browser.post("/login", data={"username": username, "password": password,
                                            "csrf_token": csrf_of(page.text), "next": "/"})
    assert response.status_code == 200, response.text
    return browser, csrf_of(response.text)
