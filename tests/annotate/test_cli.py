"""`directalign annotate ...`: init, add-user (token last), create-project, status, export, errors in one line."""

from __future__ import annotations

import io
import json

import pytest

from directalign.annotate import queue
from directalign.annotate.db import Database
from directalign.annotate.projects import get_project
from directalign.cli.main import main
from directalign.data.formats import load_records


def _run(capsys, *argv, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["annotate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_command_line_from_init_to_export(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "a.db")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"q{i}", "chosen": f"yes {i}", "rejected": f"no {i}"}) + "\n"
                            for i in range(6)))
    assert _run(capsys, "init", "--db", db)[1].strip() == f"database {db}: schema at revision 0001"
    code, out, _ = _run(capsys, "add-user", "--db", db, "--username", "ann", "--role", "annotator",
                        stdin="a long password\n", monkeypatch=monkeypatch)
    token = out.strip().splitlines()[-1]
    assert code == 0 and len(token) >= 40 and "ann (annotator) added" in out
    code, out, _ = _run(capsys, "create-project", "--db", db, "--name", "demo", "--data", str(data),
                        "--overlap", "1", "--gold-count", "2")
    assert code == 0
    assert out.strip() == "project demo (pairwise): 4 items, 2 gold items, overlap 1 -> 4 votes to collect"
    database = Database(db)
    project = get_project(database, "demo")
    user = queue.claim(database, project, 1)
    assert user.task is not None
    queue.submit(database, 1, user.task.assignment_id, "a")
    code, out, _ = _run(capsys, "status", "--db", db, "--name", "demo", "--json", "--bootstrap", "0")
    status = json.loads(out)
    assert code == 0 and status["counts"]["votes"] == 1 and status["counts"]["gold_items"] == 2
    assert "project demo (pairwise, overlap 1)" in _run(capsys, "status", "--db", db, "--name", "demo")[1]
    assert "demo: pairwise, 4 items, 2 gold" in _run(capsys, "status", "--db", db)[1]
    out_file = tmp_path / "votes.jsonl"
    code, out, _ = _run(capsys, "export", "--db", db, "--name", "demo", "--format", "votes", "--output",
                        str(out_file))
    assert code == 0 and out.startswith("wrote 1 votes rows") and len(out_file.read_text().splitlines()) == 1
    dpo = tmp_path / "dpo.jsonl"
    _run(capsys, "export", "--db", db, "--name", "demo", "--output", str(dpo))
    assert len(load_records(dpo).records) == 1


@pytest.mark.parametrize(("argv", "message"), [
    (["status", "--name", "x"], "run `directalign annotate init` first"),
    (["create-project", "--name", "x", "--data", "missing.jsonl"], "missing.jsonl: no such file"),
    (["create-project", "--name", "x"], "give either --data FILE"),
    (["create-project", "--name", "bad name", "--data", "DATA"], "use up to 128 letters"),
    (["create-project", "--name", "x", "--data", "DATA", "--overlap", "0"], "argument --overlap: must be >= 1"),
    (["create-project", "--name", "x", "--data", "DATA", "--gold-rate", "0.2"], "--gold-rate needs gold items"),
    (["create-project", "--name", "x", "--prompts", "DATA"], "--prompts needs --model"),
    (["export", "--name", "nope", "--output", "o.jsonl"], "no project 'nope'"),
])
def test_bad_input_is_one_line_and_exit_1(tmp_path, capsys, monkeypatch, argv, message):
    db = str(tmp_path / "a.db")
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    monkeypatch.chdir(tmp_path)
    if argv[0] != "status":
        main(["annotate", "init", "--db", db])
    capsys.readouterr()
    argv = [str(data) if a == "DATA" else a for a in argv]
    code, _, err = _run(capsys, argv[0], "--db", db, *argv[1:])
    assert code == 1 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_duplicate_user_or_project_is_refused(tmp_path, capsys, monkeypatch):
    db = str(tmp_path / "a.db")
    main(["annotate", "init", "--db", db])
    for expected in (0, 1):
        code, _, err = _run(capsys, "add-user", "--db", db, "--username", "ann", stdin="a long password\n",
                            monkeypatch=monkeypatch)
        assert code == expected
    assert "already exists" in err
