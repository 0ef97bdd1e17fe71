"""Load figures of the annotation server: N concurrent annotator clients for S seconds on 127.0.0.1.

    PYTHONPATH=src python benchmarks/annotate_load.py                 # 20 clients, 60 s, 3,000 items x 3
    PYTHONPATH=src python benchmarks/annotate_load.py --clients 50 --seconds 30 --items 10000

Starts `directalign annotate serve` on a fresh SQLite database (WAL) in a temporary folder, runs the clients of
directalign.annotate.loadtest (each: GET next, POST a vote, repeat), then audits the database: every
acknowledged vote present, none duplicated, no item over its overlap. Prints votes/s and the latency quantiles
of all requests. The figures depend on the machine and its load; quote them with both.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from directalign.annotate.db import Database
from directalign.annotate.loadtest import audit_votes, free_port, prepare, run_clients, start_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--overlap", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="annotate-load-") as folder:
        db_path = str(Path(folder) / "load.db")
        tokens = prepare(db_path, args.items, args.clients, args.overlap)
        port = free_port()
        server = start_server(db_path, port, Path(folder) / "server.log")
        try:
            result = run_clients(port, "load", tokens, args.seconds)
        finally:
            server.terminate()
            server.wait(30)
        audit = audit_votes(Database(db_path), "load", result.acknowledged)
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; server: 1 uvicorn process, "
              "SQLite WAL (votes synchronous=FULL, leases NORMAL)")
        print(f"{args.clients} clients, {args.seconds:.0f} s, {args.items} items x overlap {args.overlap}")
        print(result.summary())
        print(f"audit: {audit.votes} votes in the database, {audit.acknowledged} acknowledged, "
              f"{len(audit.missing)} lost, {audit.duplicated} duplicated, {audit.overcollected} over-collected")
        return 0 if audit.ok else 1


if __name__ == "__main__":
    sys.exit(main())
