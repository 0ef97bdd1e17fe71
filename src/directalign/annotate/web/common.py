"""What the pages and the JSON API share: the app's state, project look-up, the cached status and exports."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import jinja2
from fastapi import HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import func, select

from directalign.annotate.db import Database, audit
from directalign.annotate.export import export_rows
from directalign.annotate.models import DONE, Assignment, Project
from directalign.annotate.status import project_status
from directalign.annotate.votes import ProjectVotes, load_votes
from directalign.annotate.web.security import Viewer, client_ip
from directalign.evaluation.winrate import prompt_text


@dataclass
class AppState:
    db: Database
    secure_cookies: bool = True
    n_boot: int = 200
    templates: jinja2.Environment = field(default_factory=lambda: jinja2.Environment(
        loader=jinja2.PackageLoader("directalign.annotate", "templates"), autoescape=True))
    _cache: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)


def project_or_404(request: Request, name: str) -> Project:
    db = request.app.state.annotate.db
    with db.read() as session:
        project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        raise HTTPException(404, f"no project {name!r}")
    return project


def message_text(messages: list[dict]) -> str:
    """A response's text: its messages' contents (normally one assistant message)."""
    return "\n\n".join(str(m.get("content", "")) for m in messages)


def prompt_of(messages: list[dict]) -> str:
    return prompt_text(messages)


def _version(db: Database, project: Project) -> tuple:
    with db.read() as session:
        return tuple(session.execute(select(func.count(), func.max(Assignment.submitted_at)).where(
            Assignment.project_id == project.id, Assignment.status == DONE)).one())


def project_status_cached(request: Request, project: Project) -> dict:
    """The project's status, recomputed only when its votes changed (the bootstrap intervals take a while)."""
    state: AppState = request.app.state.annotate
    key = (project.id, _version(state.db, project))
    with state._lock:
        cached = state._cache.get(("status", project.id))
    if cached and cached[0] == key:
        return cached[1]
    status = project_status(state.db, project, n_boot=state.n_boot)
    with state._lock:
        state._cache[("status", project.id)] = (key, status)
    return status


def votes_of(request: Request, project: Project) -> ProjectVotes:
    return load_votes(request.app.state.annotate.db, project)


def export_response(request: Request, project: Project, fmt: str, keep_ties: bool, keep_both_bad: bool,
                    min_votes: int, viewer: Viewer) -> Response:
    db: Database = request.app.state.annotate.db
    rows, summary = export_rows(load_votes(db, project, with_text=True), fmt, keep_ties, keep_both_bad, min_votes)
    with db.write() as session:
        audit(session, db.clock(), "export", viewer.user.id, project.id, client_ip(request), **summary.to_dict())
    body = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    filename = f"{project.name}-{fmt}.jsonl"
    return Response(body, media_type="application/jsonl",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})
