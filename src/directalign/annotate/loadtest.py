"""Load and fault checks of a running annotation server: concurrent annotator clients and an audit of the votes.

Used by the load and fault tests and by benchmarks/annotate_load.py. Only the Python standard library: each
client is a thread with its own keep-alive HTTP connection to 127.0.0.1 that claims an item (GET next), votes on
it (POST) and repeats until its time is up or nothing is left (204). A vote is *acknowledged* when the server
answered 200; when the connection breaks instead (the server was killed), the client reconnects and sends the
same vote again, which the server answers 200 (recorded, perhaps as a duplicate of a vote it had committed) or
409 (the lease ran out and the item filled up meanwhile: never acknowledged, so never promised).
`audit_votes` then checks the database against what the clients were told.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select

from directalign.annotate.db import Database
from directalign.annotate.models import DONE, LEASED, Assignment, Item, Project

VERDICT_CHOICES = ("a", "b", "a", "b", "tie", "both_bad")


@dataclass
class LoadResult:
    seconds: float
    acknowledged: list[int] = field(default_factory=list)  # assignment ids answered 200 (first time)
    latencies: list[float] = field(default_factory=list)  # seconds per request that got an answer
    refused: Counter = field(default_factory=Counter)  # HTTP status -> count, for answers other than 200/204
    connection_errors: int = 0
    finished_clients: int = 0  # clients that got 204 (nothing left) before their time ran out

    @property
    def votes_per_second(self) -> float:
        return len(self.acknowledged) / self.seconds if self.seconds else 0.0

    def latency_ms(self, quantile: float) -> float:
        ordered = sorted(self.latencies)
        return 1000 * ordered[min(len(ordered) - 1, int(quantile * len(ordered)))] if ordered else float("nan")

    def summary(self) -> str:
        return (f"{len(self.acknowledged)} acknowledged votes in {self.seconds:.1f} s = {self.votes_per_second:.1f} "
                f"votes/s; {len(self.latencies)} requests, latency p50 {self.latency_ms(0.5):.1f} ms, p95 "
                f"{self.latency_ms(0.95):.1f} ms, p99 {self.latency_ms(0.99):.1f} ms; refused {dict(self.refused)}, "
                f"connection errors {self.connection_errors}, clients finished early {self.finished_clients}")


def run_clients(port: int, project: str, tokens: list[str], seconds: float, host: str = "127.0.0.1",
                seed: int = 0) -> LoadResult:
    """len(tokens) annotator clients for `seconds` (or until none has anything left); thread-safe tallies."""
    result = LoadResult(seconds=0.0)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    start = threading.Barrier(len(tokens))
    threads = [threading.Thread(target=_client, args=(host, port, project, token, deadline, result, lock,
                                                      random.Random(seed + i), start), daemon=True)
               for i, token in enumerate(tokens)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 120)
    result.seconds = time.monotonic() - began
    return result


def _client(host, port, project, token, deadline, result: LoadResult, lock, rng, start) -> None:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection(host, port, timeout=30)
    start.wait()
    pending: tuple[int, str] | None = None  # a vote sent whose answer was lost
    while time.monotonic() < deadline:
        try:
            if pending is None:
                status, body = _request(connection, "GET", f"/api/projects/{project}/next", None, headers, result,
                                        lock)
                if status == 204:
                    with lock:
                        result.finished_clients += 1
                    return
                if status != 200:
                    _refused(result, lock, status)
                    continue
                pending = (json.loads(body)["assignment_id"], rng.choice(VERDICT_CHOICES))
            assignment, verdict = pending
            status, _ = _request(connection, "POST", f"/api/assignments/{assignment}",
                                    json.dumps({"verdict": verdict}), headers, result, lock)
            pending = None
            if status == 200:
                # "duplicate": true only follows a lost answer: the vote was committed before, answered now.
                with lock:
                    result.acknowledged.append(assignment)
            else:
                _refused(result, lock, status)
        except (OSError, http.client.HTTPException):
            with lock:
                result.connection_errors += 1
            connection.close()
            time.sleep(0.2)
            connection = http.client.HTTPConnection(host, port, timeout=30)
    connection.close()


def _request(connection, method, url, body, headers, result: LoadResult, lock) -> tuple[int, bytes]:
    began = time.monotonic()
    connection.request(method, url, body=body, headers=headers)
    response = connection.getresponse()
    data = response.read()
    with lock:
        result.latencies.append(time.monotonic() - began)
    return response.status, data


def _refused(result: LoadResult, lock, status: int) -> None:
    with lock:
        result.refused[status] += 1


@dataclass
class VoteAudit:
    votes: int  # status done in the database
    acknowledged: int
    missing: list[int]  # acknowledged assignment ids that are not done: lost votes
    duplicated: int  # (item, annotator) pairs with more than one assignment
    overcollected: int  # regular items with more than `overlap` votes
    stale_leases: int  # leases still live at `now` (should be 0 once every lease has run out)

    @property
    def ok(self) -> bool:
        return not self.missing and self.duplicated == 0 and self.overcollected == 0


def audit_votes(db: Database, project_name: str, acknowledged: list[int], now: float | None = None) -> VoteAudit:
    """What the database holds against what the clients were told (see the module docstring)."""
    now = time.time() if now is None else now
    with db.read() as session:
        project = session.scalar(select(Project).where(Project.name == project_name))
        done = set(session.scalars(select(Assignment.id).where(Assignment.project_id == project.id,
                                                               Assignment.status == DONE)))
        pairs = session.execute(select(Assignment.item_id, Assignment.user_id, func.count())
                                .where(Assignment.project_id == project.id)
                                .group_by(Assignment.item_id, Assignment.user_id)
                                .having(func.count() > 1)).all()
        per_item = session.execute(select(Item.id, func.count(Assignment.id)).join(Assignment)
                                   .where(Item.project_id == project.id, Item.gold_answer.is_(None),
                                          Assignment.status == DONE)
                                   .group_by(Item.id)).all()
        live = session.scalar(select(func.count()).where(Assignment.project_id == project.id,
                                                         Assignment.status == LEASED,
                                                         Assignment.lease_expires_at >= now))
    return VoteAudit(votes=len(done), acknowledged=len(set(acknowledged)),
                     missing=sorted(set(acknowledged) - done), duplicated=len(pairs),
                     overcollected=sum(count > project.overlap for _, count in per_item), stale_leases=live)


def prepare(db_path: str, n_items: int, n_clients: int, overlap: int = 3, lease_seconds: float = 600.0,
            project: str = "load") -> list[str]:
    """A fresh database with one project of n_items synthetic pairs and n_clients annotators; their tokens."""
    from directalign.annotate import auth
    from directalign.annotate.projects import Pair, ProjectOptions, create_project

    db = Database(db_path)
    db.migrate()
    pairs = [Pair([{"role": "user", "content": f"Question {i}: which answer is better?"}],
                  [{"role": "assistant", "content": f"A careful answer to question {i}."}],
                  [{"role": "assistant", "content": f"A hasty answer to question {i}."}], f"synthetic:{i}")
             for i in range(n_items)]
    create_project(db, project, "pairwise", pairs, ProjectOptions(overlap=overlap, lease_seconds=lease_seconds),
                   "synthetic")
    tokens = [auth.add_user(db, f"client{i:02d}", "load-test-password", "annotator") for i in range(n_clients)]
    db.dispose()
    return tokens


# The server as a child process.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: str, port: int, log: Path, ready_timeout: float = 120.0) -> subprocess.Popen:
    """`directalign annotate serve` in a child process (this checkout's code), returned once it answers."""
    source = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "directalign.cli.main", "annotate", "serve", "--db", db, "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    with open(log, "ab") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}; see {log}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/login")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"the server did not answer on port {port} within {ready_timeout:.0f} s; see {log}")
