"""The HTML pages: login, projects, guidelines, the item page, the annotator's own votes, the admin dashboard.

Every page is a Jinja2 template with autoescape on, so model text (prompts, responses, rationales, names) is
always text; the one exception is the guidelines, rendered from Markdown by markdown-it with raw HTML off (it
escapes any tag) and unsafe link schemes refused. Forms post with the session's CSRF token, and each action
ends in a redirect (post/redirect/get), so a reload never votes twice.
"""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markdown_it import MarkdownIt

from directalign.annotate import auth, plots, queue
from directalign.annotate.db import audit
from directalign.annotate.models import GuidelineAck, WebSession
from directalign.annotate.projects import list_projects
from directalign.annotate.web.common import (
    export_response,
    message_text,
    project_or_404,
    project_status_cached,
    votes_of,
)
from directalign.annotate.web.security import (
    COOKIE,
    Viewer,
    client_ip,
    db_of,
    page_viewer,
    require_admin,
    require_csrf,
    safe_next,
    set_session_cookie,
)
from directalign.errors import ConfigError

PageViewer = Annotated[Viewer, Depends(page_viewer)]
router = APIRouter()
_markdown = MarkdownIt("commonmark", {"html": False})


def render(request: Request, name: str, status_code: int = 200, **context) -> HTMLResponse:
    state = request.app.state.annotate
    html = state.templates.get_template(name).render(request=request, **context)
    return HTMLResponse(html, status_code=status_code)


def take_flash(request: Request, viewer: Viewer) -> str | None:
    if viewer.session is None or not viewer.session.flash:
        return None
    with db_of(request).write() as session:
        row = session.get(WebSession, viewer.session.id_hash)
        message, row.flash = row.flash, None
    return message


def set_flash(request: Request, viewer: Viewer, message: str) -> None:
    with db_of(request).write() as session:
        session.get(WebSession, viewer.session.id_hash).flash = message


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/"):
    db = db_of(request)
    with db.read() as session:
        web = auth.find_session(session, request.cookies.get(COOKIE), db.clock())
    cookie = None
    if web is None:
        cookie, web = auth.start_session(db, None)
    response = render(request, "login.html", csrf=web.csrf_token, next=safe_next(next), error=None)
    if cookie:
        set_session_cookie(response, request, cookie, auth.ANONYMOUS_SESSION_SECONDS)
    return response


@router.post("/login")
def login_submit(request: Request, username: str = Form(""), password: str = Form(""),
                 csrf_token: str = Form(""), next: str = Form("/")):
    db = db_of(request)
    with db.read() as session:
        web = auth.find_session(session, request.cookies.get(COOKIE), db.clock())
    require_csrf(web, csrf_token)
    result = auth.login(db, username, password, client_ip(request))
    if result.retry_after > 0:
        wait = int(result.retry_after) + 1
        response = render(request, "login.html", 429, csrf=web.csrf_token, next=safe_next(next),
                          error=f"Too many failed logins. Try again in {wait} s.")
        response.headers["Retry-After"] = str(wait)
        return response
    if result.user is None:
        return render(request, "login.html", 401, csrf=web.csrf_token, next=safe_next(next),
                      error="Wrong username or password.")
    # A fresh session id on login: an id known before it (fixation) stays anonymous.
    auth.end_session(db, request.cookies.get(COOKIE))
    cookie, _ = auth.start_session(db, result.user.id)
    response = redirect(safe_next(next))
    set_session_cookie(response, request, cookie, auth.SESSION_SECONDS)
    return response


@router.post("/logout")
def logout(request: Request, viewer: PageViewer, csrf_token: str = Form("")):
    require_csrf(viewer.session, csrf_token)
    db = db_of(request)
    with db.write() as session:
        audit(session, db.clock(), "logout", viewer.user.id, ip=client_ip(request))
    auth.end_session(db, request.cookies.get(COOKIE))
    response = redirect("/login")
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/", response_class=HTMLResponse)
def index(request: Request, viewer: PageViewer):
    db = db_of(request)
    rows = []
    for project, n_items, n_gold in list_projects(db):
        with db.read() as session:
            progress = queue.progress(session, project, viewer.user.id)
        rows.append({"project": project, "items": n_items, "gold": n_gold, "progress": progress})
    return render(request, "index.html", viewer=viewer, rows=rows, flash=take_flash(request, viewer))


@router.get("/projects/{name}/guidelines", response_class=HTMLResponse)
def guidelines(name: str, request: Request, viewer: PageViewer):
    project = project_or_404(request, name)
    with db_of(request).read() as session:
        acked = session.get(GuidelineAck, (viewer.user.id, project.id)) is not None
    return render(request, "guidelines.html", viewer=viewer, project=project, acked=acked,
                  guidelines_html=_markdown.render(project.guidelines))


@router.post("/projects/{name}/guidelines")
def acknowledge(name: str, request: Request, viewer: PageViewer, csrf_token: str = Form("")):
    require_csrf(viewer.session, csrf_token)
    project = project_or_404(request, name)
    db = db_of(request)
    with db.write() as session:
        if session.get(GuidelineAck, (viewer.user.id, project.id)) is None:
            session.add(GuidelineAck(user_id=viewer.user.id, project_id=project.id, at=db.clock()))
            audit(session, db.clock(), "read_guidelines", viewer.user.id, project.id, client_ip(request))
    return redirect(f"/projects/{name}/annotate")


@router.get("/projects/{name}/annotate", response_class=HTMLResponse)
def annotate(name: str, request: Request, viewer: PageViewer):
    project = project_or_404(request, name)
    db = db_of(request)
    with db.read() as session:
        acked = session.get(GuidelineAck, (viewer.user.id, project.id)) is not None
    if not acked:
        return redirect(f"/projects/{name}/guidelines")
    claimed = queue.claim(db, project, viewer.user.id, client_ip(request))
    flash = take_flash(request, viewer)
    if claimed.task is None:
        return render(request, "done.html", viewer=viewer, project=project, reason=claimed.reason, flash=flash)
    task = claimed.task
    return render(request, "item.html", viewer=viewer, project=project, task=task, flash=flash,
                  prompt=task.prompt, a=message_text(task.a), b=message_text(task.b))


@router.post("/projects/{name}/assignments/{assignment_id}")
def vote(name: str, assignment_id: int, request: Request, viewer: PageViewer, verdict: str = Form(""),
         rationale: str = Form(""), csrf_token: str = Form("")):
    require_csrf(viewer.session, csrf_token)
    project_or_404(request, name)
    try:
        result = queue.submit(db_of(request), viewer.user.id, assignment_id, verdict, rationale, client_ip(request))
    except queue.AssignmentNotFound as err:
        raise HTTPException(404, str(err)) from err
    except (queue.VoteConflict, ValueError) as err:
        set_flash(request, viewer, f"Not recorded: {err}")
        return redirect(f"/projects/{name}/annotate")
    if result.gold is not None:
        expected = result.gold["expected"].upper()
        set_flash(request, viewer, "Known-answer item: you were right." if result.gold["correct"]
                  else f"Known-answer item: the expected answer was {expected}.")
    return redirect(f"/projects/{name}/annotate")


@router.post("/projects/{name}/assignments/{assignment_id}/skip")
def skip(name: str, assignment_id: int, request: Request, viewer: PageViewer, csrf_token: str = Form("")):
    require_csrf(viewer.session, csrf_token)
    project_or_404(request, name)
    try:
        queue.skip(db_of(request), viewer.user.id, assignment_id, client_ip(request))
    except queue.AssignmentNotFound as err:
        raise HTTPException(404, str(err)) from err
    except queue.VoteConflict as err:
        set_flash(request, viewer, f"Not skipped: {err}")
    return redirect(f"/projects/{name}/annotate")


@router.post("/projects/{name}/undo")
def undo(name: str, request: Request, viewer: PageViewer, csrf_token: str = Form("")):
    require_csrf(viewer.session, csrf_token)
    project = project_or_404(request, name)
    undone = queue.undo(db_of(request), project, viewer.user.id, client_ip(request))
    set_flash(request, viewer, "Your last vote was taken back; vote again." if undone else "Nothing to undo.")
    return redirect(f"/projects/{name}/annotate")


@router.get("/projects/{name}/mine", response_class=HTMLResponse)
def mine(name: str, request: Request, viewer: PageViewer):
    project = project_or_404(request, name)
    votes = queue.my_votes(db_of(request), project, viewer.user.id)
    return render(request, "mine.html", viewer=viewer, project=project, votes=votes)


@router.get("/projects/{name}/dashboard", response_class=HTMLResponse)
def dashboard(name: str, request: Request, viewer: PageViewer):
    require_admin(viewer)
    project = project_or_404(request, name)
    status = project_status_cached(request, project)
    kinds = [k for k in plots.PLOTS if k != "winrate" or project.kind == "humaneval"]
    return render(request, "dashboard.html", viewer=viewer, project=project, status=status, plots=kinds,
                  status_json=json.dumps(status, indent=1))


@router.get("/projects/{name}/plots/{kind}.svg")
def plot(name: str, kind: str, request: Request, viewer: PageViewer):
    require_admin(viewer)
    if kind not in plots.PLOTS:
        raise HTTPException(404, f"no plot {kind!r}")
    project = project_or_404(request, name)
    svg = plots.render(kind, project_status_cached(request, project), votes_of(request, project))
    return Response(svg, media_type="image/svg+xml")


@router.get("/projects/{name}/export")
def export(name: str, request: Request, viewer: PageViewer, format: str = "dpo", keep_ties: bool = False,
           keep_both_bad: bool = False, min_votes: int = 1):
    require_admin(viewer)
    project = project_or_404(request, name)
    try:
        return export_response(request, project, format, keep_ties, keep_both_bad, min_votes, viewer)
    except ConfigError as err:
        raise HTTPException(400, str(err)) from err

