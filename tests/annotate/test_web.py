"""The web app and JSON API: the item page, CSRF, roles, inert model text, SQL metacharacters, the API contract."""

from __future__ import annotations

import json
import re

import pytest
from sqlalchemy import select

from directalign.annotate import auth
from directalign.annotate.create import create
from directalign.annotate.models import Assignment, AuditEvent, Item
from directalign.annotate.projects import ProjectOptions
from tests.annotate.conftest import PASSWORD, add_project, client, csrf_of, login

XSS = '<script>alert("pwned")</script><img src=x onerror="alert(1)">'
SQL = "Robert'); DROP TABLE items; -- \" OR 1=1 --"


@pytest.fixture
def tokens(db):
    return {name: auth.add_user(db, name, PASSWORD, role)
            for name, role in (("admin", "admin"), ("ann1", "annotator"), ("ann2", "annotator"))}


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def _start(browser, csrf, name="p"):
    response = browser.post(f"/projects/{name}/guidelines", data={"csrf_token": csrf})
    assert response.status_code == 200
    return response


def test_guidelines_come_first_then_the_item_page_votes_by_form(app, db, tokens):
    add_project(db, n=2, overlap=1)
    browser, csrf = login(app, "ann1")
    first = browser.get("/projects/p/annotate", follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/projects/p/guidelines"
    guidelines = browser.get("/projects/p/guidelines")
    assert "<h1>How to compare two responses</h1>" in guidelines.text and 'id="start"' in guidelines.text
    page = _start(browser, csrf)
    assert 'id="response-a"' in page.text and 'id="verdict-both_bad"' in page.text
    assignment = re.search(r"/assignments/(\d+)\"", page.text).group(1)
    after = browser.post(f"/projects/p/assignments/{assignment}", data={"csrf_token": csrf, "verdict": "tie",
                                                                       "rationale": "both fine"})
    assert after.status_code == 200 and re.search(r"/assignments/(\d+)\"", after.text).group(1) != assignment
    mine = browser.get("/projects/p/mine")
    assert "both fine" in mine.text and ">tie<" in mine.text
    assert browser.get("/projects/p/guidelines").text.count('id="back"') == 1  # one click away afterwards


def test_every_form_post_without_the_csrf_token_is_refused(app, db, tokens):
    add_project(db, n=2, overlap=1)
    browser, csrf = login(app, "ann1")
    page = _start(browser, csrf)
    assignment = re.search(r"/assignments/(\d+)\"", page.text).group(1)
    posts = [("/projects/p/guidelines", {}), (f"/projects/p/assignments/{assignment}", {"verdict": "a"}),
             (f"/projects/p/assignments/{assignment}/skip", {}), ("/projects/p/undo", {}), ("/logout", {})]
    for url, data in posts:
        for token in (None, "forged-token"):
            response = browser.post(url, data={**data, **({"csrf_token": token} if token else {})})
            assert response.status_code == 403 and "CSRF" in response.text, url
    login_page = client(app)
    login_page.get("/login")
    refused = login_page.post("/login", data={"username": "ann1", "password": PASSWORD})
    assert refused.status_code == 403
    with db.read() as session:
        assert session.get(Assignment, int(assignment)).status == "leased"  # nothing was recorded


def test_the_cookie_cannot_drive_the_api_without_the_csrf_header(app, db, tokens):
    add_project(db, n=2, overlap=1)
    browser, csrf = login(app, "ann1")
    task = browser.get("/api/projects/p/next").json()  # a GET with the cookie is fine (same-origin reads)
    refused = browser.post(f"/api/assignments/{task['assignment_id']}", json={"verdict": "a"})
    assert refused.status_code == 403 and "X-CSRF-Token" in refused.json()["detail"]
    accepted = browser.post(f"/api/assignments/{task['assignment_id']}", json={"verdict": "a"},
                            headers={"X-CSRF-Token": csrf})
    assert accepted.status_code == 200


def test_model_text_renders_inert(app, db, tokens, tmp_path):
    data = tmp_path / "xss.jsonl"
    data.write_text(json.dumps({"prompt": f"Say {XSS}", "chosen": XSS, "rejected": f"no {XSS}"}) + "\n")
    create(db, "x", ProjectOptions(overlap=1, guidelines=f"# Rules\n\n{XSS}\n\n[link](javascript:alert(1))"),
           data=str(data))
    browser, csrf = login(app, "ann1")
    guidelines = browser.get("/projects/x/guidelines").text
    page = _start(browser, csrf, "x").text
    for html in (page, guidelines):
        assert "<script>alert" not in html and "<img src=x" not in html and 'href="javascript:' not in html
    assert page.count("&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;") == 3  # prompt, A, B as text
    assignment = re.search(r"/assignments/(\d+)\"", page).group(1)
    browser.post(f"/projects/x/assignments/{assignment}", data={"csrf_token": csrf, "verdict": "a",
                                                               "rationale": XSS})
    mine = browser.get("/projects/x/mine").text
    assert "<script>alert" not in mine and "&lt;img src=x onerror=" in mine
    headers = browser.get("/projects/x/mine").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"


def test_sql_metacharacters_in_every_field_are_stored_as_text(app, db, tokens, tmp_path):
    data = tmp_path / "sql.jsonl"
    data.write_text(json.dumps({"prompt": SQL, "chosen": f"{SQL} chosen", "rejected": f"{SQL} rejected"}) + "\n")
    create(db, "sql", ProjectOptions(overlap=1), data=str(data))
    task = client(app).get("/api/projects/sql/next", headers=bearer(tokens["ann1"])).json()
    assert task["prompt"] == SQL and {task["a"], task["b"]} == {f"{SQL} chosen", f"{SQL} rejected"}
    vote = client(app).post(f"/api/assignments/{task['assignment_id']}", headers=bearer(tokens["ann1"]),
                            json={"verdict": "a", "rationale": SQL})
    assert vote.status_code == 200
    sneaky = client(app)
    token = csrf_of(sneaky.get("/login").text)
    for username in ("admin' --", "' OR '1'='1", SQL):
        assert sneaky.post("/login", data={"username": username, "password": f"x' OR '1'='1{SQL}",
                                           "csrf_token": token}).status_code == 401
    assert client(app).get("/api/projects/p' OR '1'='1/next", headers=bearer(tokens["ann1"])).status_code == 404
    with db.read() as session:
        item = session.scalars(select(Item)).one()
        assert json.loads(item.prompt)[0]["content"] == SQL
        assert session.scalars(select(Assignment)).one().rationale == SQL
        detail = session.scalars(select(AuditEvent.detail).where(AuditEvent.action == "vote")).one()
        assert json.loads(detail)["rationale"] == SQL
    rows = client(app).get("/api/projects/sql/export?format=votes", headers=bearer(tokens["admin"])).text
    assert json.loads(rows.splitlines()[0])["rationale"] == SQL


def test_an_annotator_reads_only_their_own_work(app, db, tokens):
    add_project(db, n=3, overlap=2)
    own = client(app).get("/api/projects/p/next", headers=bearer(tokens["ann1"])).json()
    client(app).post(f"/api/assignments/{own['assignment_id']}", headers=bearer(tokens["ann1"]),
                     json={"verdict": "a", "rationale": "ann1's reason"})
    other = client(app)
    for url in ("/api/projects/p/status", "/api/projects/p/export?format=votes", "/api/projects/p/export"):
        assert other.get(url, headers=bearer(tokens["ann2"])).status_code == 403, url
    assert other.post(f"/api/assignments/{own['assignment_id']}", headers=bearer(tokens["ann2"]),
                      json={"verdict": "b"}).status_code == 404
    assert other.post(f"/api/assignments/{own['assignment_id']}/skip",
                      headers=bearer(tokens["ann2"])).status_code == 404
    assert other.get("/api/projects/p/mine", headers=bearer(tokens["ann2"])).json() == {"votes": []}
    browser, _ = login(app, "ann2")
    for url in ("/projects/p/dashboard", "/projects/p/plots/agreement.svg", "/projects/p/export?format=dpo"):
        page = browser.get(url)
        assert page.status_code == 403 and "ann1's reason" not in page.text, url
    assert "ann1's reason" not in browser.get("/projects/p/mine").text
    assert client(app).get("/api/projects/p/status", headers=bearer(tokens["admin"])).status_code == 200
    assert client(app).get("/api/projects/p/next").status_code == 401
    assert client(app).get("/api/projects/p/next", headers=bearer("not-a-token")).status_code == 401


def test_api_contract_next_vote_skip_undo_and_204(app, db, tokens):
    add_project(db, n=2, overlap=1)
    api, headers = client(app), bearer(tokens["ann1"])
    task = api.get("/api/projects/p/next", headers=headers).json()
    assert {"assignment_id", "prompt", "a", "b"} <= task.keys() and task["prompt"].startswith("question")
    assert api.post(f"/api/assignments/{task['assignment_id']}", headers=headers,
                    json={"verdict": "sideways"}).status_code == 422
    first = api.post(f"/api/assignments/{task['assignment_id']}", headers=headers, json={"verdict": "both_bad"})
    assert first.json() == {"assignment_id": task["assignment_id"], "recorded": True, "duplicate": False}
    retry = api.post(f"/api/assignments/{task['assignment_id']}", headers=headers, json={"verdict": "both_bad"})
    assert retry.status_code == 200 and retry.json()["duplicate"]
    assert api.post(f"/api/assignments/{task['assignment_id']}", headers=headers,
                    json={"verdict": "a"}).status_code == 409
    second = api.get("/api/projects/p/next", headers=headers).json()
    assert api.post(f"/api/assignments/{second['assignment_id']}/skip", headers=headers).json()["skipped"]
    assert api.get("/api/projects/p/next", headers=headers).status_code == 204
    assert api.post("/api/projects/p/undo", headers=headers).json()["assignment_id"] == task["assignment_id"]
    assert api.get("/api/projects/p/next", headers=headers).json()["assignment_id"] == task["assignment_id"]
    assert api.get("/api/projects/nope/next", headers=headers).status_code == 404


def test_admin_dashboard_status_and_plots(app, db, tokens):
    add_project(db, n=4, overlap=2)
    api = client(app)
    for name in ("ann1", "ann2"):
        while (task := api.get("/api/projects/p/next", headers=bearer(tokens[name]))).status_code == 200:
            api.post(f"/api/assignments/{task.json()['assignment_id']}", headers=bearer(tokens[name]),
                     json={"verdict": "a"})
    status = api.get("/api/projects/p/status", headers=bearer(tokens["admin"])).json()
    assert status["counts"]["votes"] == 8 and status["counts"]["complete_items"] == 4
    assert status["agreement"]["pairable_items"] == 4 and "fleiss_kappa" in status["agreement"]
    browser, _ = login(app, "admin")
    page = browser.get("/projects/p/dashboard")
    assert page.status_code == 200 and page.text.count('class="plot"') == 5
    for kind in ("votes", "throughput", "agreement", "annotators", "drift"):
        svg = browser.get(f"/projects/p/plots/{kind}.svg")
        assert svg.headers["content-type"].startswith("image/svg+xml") and svg.text.lstrip().startswith("<?xml")
    assert browser.get("/projects/p/plots/nothing.svg").status_code == 404
