"""The JSON API for scripts: `Authorization: Bearer TOKEN` (the token `annotate add-user` prints).

GET  /api/projects                       projects and this user's progress
GET  /api/projects/NAME/next             {"assignment_id", "prompt", "a", "b", ...}, or 204 when nothing is left
                                         (403 with the reason when the qualification round was failed)
POST /api/assignments/ID                 {"verdict": "a" | "b" | "tie" | "both_bad", "rationale": "..."}
POST /api/assignments/ID/skip            give the item back
POST /api/projects/NAME/undo             take back this user's last vote in the project
GET  /api/projects/NAME/mine             this user's own votes
GET  /api/projects/NAME/status           (admin) counts, agreement with intervals, annotators, gold, win rate
GET  /api/projects/NAME/export?format=   (admin) dpo | kto | votes as JSON lines
Re-sending a vote that is already recorded (a retry after a lost response) answers 200 with "duplicate": true.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from directalign.annotate import queue
from directalign.annotate.models import VERDICTS
from directalign.annotate.projects import list_projects
from directalign.annotate.web.common import (
    export_response,
    message_text,
    project_or_404,
    project_status_cached,
    prompt_of,
)
from directalign.annotate.web.security import Viewer, api_viewer, client_ip, db_of, require_admin
from directalign.errors import ConfigError

ApiViewer = Annotated[Viewer, Depends(api_viewer)]
router = APIRouter(prefix="/api")


class VoteIn(BaseModel):
    verdict: str = Field(description=" | ".join(VERDICTS))
    rationale: str = ""


@router.get("/projects")
def projects(request: Request, viewer: ApiViewer):
    db = db_of(request)
    rows = []
    for project, n_items, n_gold in list_projects(db):
        with db.read() as session:
            progress = queue.progress(session, project, viewer.user.id)
        rows.append({"name": project.name, "kind": project.kind, "items": n_items, "gold_items": n_gold,
                     "overlap": project.overlap, "my_votes": progress.mine})
    return {"projects": rows}


@router.get("/projects/{name}/next")
def next_item(name: str, request: Request, viewer: ApiViewer):
    project = project_or_404(request, name)
    claimed = queue.claim(db_of(request), project, viewer.user.id, client_ip(request))
    if claimed.task is None:
        if claimed.reason != "done":
            raise HTTPException(403, claimed.reason)
        return Response(status_code=204)
    task = claimed.task
    return {
        "assignment_id": task.assignment_id,
        "prompt": prompt_of(task.prompt),
        "a": message_text(task.a),
        "b": message_text(task.b),
        "messages": task.prompt,
        "lease_expires_at": task.lease_expires_at,
        "qualification": task.qualification,
        "progress": {"mine": task.progress.mine, "project_votes": task.progress.project_votes,
                     "project_target": task.progress.project_target},
        "guidelines": f"/projects/{name}/guidelines",
    }


@router.post("/assignments/{assignment_id}")
def vote(assignment_id: int, body: VoteIn, request: Request, viewer: ApiViewer):
    try:
        result = queue.submit(db_of(request), viewer.user.id, assignment_id, body.verdict, body.rationale,
                              client_ip(request))
    except queue.AssignmentNotFound as err:
        raise HTTPException(404, str(err)) from err
    except queue.VoteConflict as err:
        raise HTTPException(409, str(err)) from err
    except ValueError as err:
        raise HTTPException(422, str(err)) from err
    answer = {"assignment_id": result.assignment_id, "recorded": True, "duplicate": result.duplicate}
    if result.gold is not None:
        answer["gold"] = result.gold
    return answer


@router.post("/assignments/{assignment_id}/skip")
def skip(assignment_id: int, request: Request, viewer: ApiViewer):
    try:
        queue.skip(db_of(request), viewer.user.id, assignment_id, client_ip(request))
    except queue.AssignmentNotFound as err:
        raise HTTPException(404, str(err)) from err
    except queue.VoteConflict as err:
        raise HTTPException(409, str(err)) from err
    return {"assignment_id": assignment_id, "skipped": True}


@router.post("/projects/{name}/undo")
def undo(name: str, request: Request, viewer: ApiViewer):
    project = project_or_404(request, name)
    undone = queue.undo(db_of(request), project, viewer.user.id, client_ip(request))
    if undone is None:
        raise HTTPException(404, "no vote of yours to undo in this project")
    return {"assignment_id": undone, "undone": True}


@router.get("/projects/{name}/mine")
def mine(name: str, request: Request, viewer: ApiViewer):
    project = project_or_404(request, name)
    return {"votes": queue.my_votes(db_of(request), project, viewer.user.id)}


@router.get("/projects/{name}/status")
def status(name: str, request: Request, viewer: ApiViewer):
    require_admin(viewer)
    return project_status_cached(request, project_or_404(request, name))


@router.get("/projects/{name}/export")
def export(name: str, request: Request, viewer: ApiViewer, format: str = "dpo", keep_ties: bool = False,
           keep_both_bad: bool = False, min_votes: int = 1):
    require_admin(viewer)
    project = project_or_404(request, name)
    try:
        return export_response(request, project, format, keep_ties, keep_both_bad, min_votes, viewer)
    except ConfigError as err:
        raise HTTPException(400, str(err)) from err
