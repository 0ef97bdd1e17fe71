"""Load and faults against a real server process on 127.0.0.1 (marked `load`: each takes 15-40 s of wall time).

20 annotator clients (directalign.annotate.loadtest) claim and vote as fast as the server answers; the database
is then audited against what the clients were told. benchmarks/annotate_load.py runs the full 60 s and prints
the figures; here the figures are printed (measured under whatever else the machine runs) and not asserted.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from directalign.annotate.db import Database
from directalign.annotate.loadtest import audit_votes, free_port, prepare, run_clients, start_server

pytestmark = pytest.mark.load
CLIENTS = 20


@pytest.fixture
def server(tmp_path):
    """Start/restart/kill a `directalign annotate serve` child process on a fresh database."""

    class Server:
        db_path = str(tmp_path / "load.db")
        port = free_port()
        log = tmp_path / "server.log"
        process = None

        def start(self):
            self.process = start_server(self.db_path, self.port, self.log)

        def kill9(self):
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    handle = Server()
    yield handle
    if handle.process is not None and handle.process.poll() is None:
        handle.process.terminate()
        handle.process.wait(30)


def test_twenty_clients_lose_duplicate_and_overcollect_nothing(server):
    # Few enough items that the clients run out: the last votes race for the last free slots.
    tokens = prepare(server.db_path, n_items=150, n_clients=CLIENTS, overlap=3)
    server.start()
    result = run_clients(server.port, "load", tokens, seconds=15)
    print(f"\nload: {CLIENTS} clients: {result.summary()}")
    audit = audit_votes(Database(server.db_path), "load", result.acknowledged)
    assert audit.ok, audit
    assert audit.votes == audit.acknowledged == len(result.acknowledged) > 0
    assert result.connection_errors == 0 and not result.refused
    if result.finished_clients == CLIENTS:  # every client ran out of items: the project is exactly complete
        assert audit.votes == 150 * 3


def test_kill_9_under_load_keeps_every_acknowledged_vote_and_leases_recover(server):
    tokens = prepare(server.db_path, n_items=150, n_clients=CLIENTS, overlap=3, lease_seconds=4)
    server.start()
    killer = threading.Timer(3.0, server.kill9)
    killer.start()
    restarted = threading.Timer(4.0, server.start)  # clients keep retrying while the server is down
    restarted.start()
    result = run_clients(server.port, "load", tokens, seconds=12)
    killer.join()
    restarted.join()
    print(f"\nfaults: kill -9 at 3 s, restart from 4 s: {result.summary()}")
    assert result.connection_errors > 0  # the kill did land under load
    db = Database(server.db_path)
    audit = audit_votes(db, "load", result.acknowledged)
    assert audit.ok, audit  # every acknowledged vote is in the database, nothing doubled or over-collected
    assert audit.votes >= audit.acknowledged
    # Leases held at the kill run out (4 s) and their slots go to whoever asks next: finish the project.
    time.sleep(4.5)
    assert audit_votes(db, "load", []).stale_leases == 0
    rest = run_clients(server.port, "load", tokens, seconds=120)
    final = audit_votes(db, "load", result.acknowledged + rest.acknowledged)
    assert final.ok and rest.finished_clients == CLIENTS and final.votes == 150 * 3, final
