"""The annotation database: users, sessions, projects, items, assignments (the votes) and the audit log.

Times are Unix seconds (floats): leases compare them directly and SQLite has no time zone type. An item holds
two responses, `response_0` and `response_1` (JSON message lists); which one an annotator sees on the left is
drawn per assignment (`left`) and stored, and a verdict is stored both as given (`verdict`: a, b, tie,
both_bad) and in response terms (`preferred`: "0", "1", "tie", "both_bad"), so agreement and export never
depend on the side. The schema is created and upgraded by the Alembic migrations beside this module
(`directalign.annotate.db.migrate`); a test checks that they match these classes.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ROLES = ("admin", "annotator")
VERDICTS = ("a", "b", "tie", "both_bad")
KINDS = ("pairwise", "humaneval")
# Assignment states: leased (shown, lease running or run out), done (a vote), skipped (never shown again to that
# annotator), expired (released: counts for nobody, may be renewed by its annotator while the item has room).
LEASED, DONE, SKIPPED, EXPIRED = "leased", "done", "skipped", "expired"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    # SHA-256 of the API token: a 256-bit random token needs no slow hash, and the database never holds it.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class WebSession(Base):
    """A browser session; the cookie holds a random id, the table its SHA-256 (a leaked table opens nothing)."""

    __tablename__ = "web_sessions"

    id_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    flash: Mapped[str | None] = mapped_column(Text, nullable=True)


class LoginFailure(Base):
    __tablename__ = "login_failures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    ip: Mapped[str] = mapped_column(String(64), index=True)
    at: Mapped[float] = mapped_column(Float, index=True)


class Project(Base):
    __tablename__ = "projects"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    overlap: Mapped[int] = mapped_column(Integer)
    lease_seconds: Mapped[float] = mapped_column(Float)
    guidelines: Mapped[str] = mapped_column(Text)
    gold_rate: Mapped[float] = mapped_column(Float)
    gold_feedback: Mapped[bool] = mapped_column(Boolean)
    qualification_size: Mapped[int] = mapped_column(Integer)
    qualification_pass: Mapped[float] = mapped_column(Float)
    source: Mapped[str] = mapped_column(Text)
    settings: Mapped[str] = mapped_column(Text)  # JSON: how the project was made (models, seeds, options)
    created_at: Mapped[float] = mapped_column(Float)


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        UniqueConstraint("project_id", "position"),
        Index("ix_items_queue", "project_id", "n_votes", "position"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[str] = mapped_column(Text)  # JSON message list
    response_0: Mapped[str] = mapped_column(Text)  # JSON message list: the file's chosen / the evaluated model
    response_1: Mapped[str] = mapped_column(Text)  # the file's rejected / the reference
    source: Mapped[str] = mapped_column(Text)  # "file:line" of the row it came from
    # Known answer of a gold item (0 or 1, the better response); None for a regular item.
    gold_answer: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Votes (status done), kept by the queue in the same transaction as each vote and undo, so that finding the
    # least-annotated items is an index scan instead of a count per item.
    n_votes: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    judge_name: Mapped[str | None] = mapped_column(Text, nullable=True)
    judge_winner: Mapped[str | None] = mapped_column(String(16), nullable=True)  # "0", "1", "tie"
    judge_prob: Mapped[float | None] = mapped_column(Float, nullable=True)  # P(response_0 better)
    judge_flip: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class Assignment(Base):
    __tablename__ = "assignments"
    # One assignment per (item, annotator), whatever its state: the database itself refuses a second one.
    __table_args__ = (
        UniqueConstraint("item_id", "user_id"),
        Index("ix_assignments_item_status", "item_id", "status"),
        Index("ix_assignments_user_project_status", "user_id", "project_id", "status"),
        Index("ix_assignments_project_status", "project_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    left: Mapped[int] = mapped_column(Integer)  # the response index shown as A
    is_gold: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    leased_at: Mapped[float] = mapped_column(Float)
    lease_expires_at: Mapped[float] = mapped_column(Float)
    verdict: Mapped[str | None] = mapped_column(String(16), nullable=True)
    preferred: Mapped[str | None] = mapped_column(String(16), nullable=True)
    rationale: Mapped[str | None] = mapped_column(Text, nullable=True)
    submitted_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    gold_correct: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class GuidelineAck(Base):
    __tablename__ = "guideline_acks"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    at: Mapped[float] = mapped_column(Float)


class AuditEvent(Base):
    """One action; the migration adds triggers that refuse UPDATE and DELETE on this table (append-only)."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    project_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    detail: Mapped[str] = mapped_column(Text)  # JSON
    ip: Mapped[str | None] = mapped_column(String(64), nullable=True)
