"""`directalign annotate`: collect pairwise preferences and run blind human evaluations in a web app.

Thin: parse -> call directalign.annotate -> print. Every subcommand takes --db (a path: an SQLite file in WAL
mode, or any SQLAlchemy URL). The web app and its database need the `annotate` extra.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys

from directalign.cli.common import COUNT, FRACTION, NONNEGATIVE_INT, number
from directalign.errors import ConfigError

EXTRA_HINT = "directalign annotate needs its extra: pip install 'directalign[annotate]'"


def register(subparsers) -> None:
    p = subparsers.add_parser("annotate", help="pairwise annotation and human-evaluation web app")
    commands = p.add_subparsers(dest="annotate_command", metavar="COMMAND")

    def command(name: str, help: str, func) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.add_argument("--db", required=True, help="SQLite file path, or an SQLAlchemy URL")
        sub.set_defaults(func=func)
        return sub

    command("init", "create the database (or upgrade it to the newest schema)", run_init)

    u = command("add-user", "add an account; the password comes from stdin or a prompt, the API token is the "
                "last line printed", run_add_user)
    u.add_argument("--username", required=True)
    u.add_argument("--role", choices=["admin", "annotator"], default="annotator")

    c = command("create-project", "a project from a preference file (--data), or a blind human evaluation "
                "from prompts and two models (--prompts --model --adapter)", run_create_project)
    add_project_arguments(c)

    j = command("judge", "run a pairwise judge on a project's items, for judge-vs-human agreement", run_judge)
    j.add_argument("--name", required=True)
    j.add_argument("--judge", required=True, metavar="KIND:ARG",
                   help="openai:MODEL, local:MODEL, reward-model:DIR, reward:FILE.py:FUNCTION")

    s = command("serve", "run the web app and the JSON API", run_serve)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=number(int, 0, 65535), default=8080)
    s.add_argument("--workers", type=COUNT, default=1, help="worker processes (> 1 needs a database server URL)")
    s.add_argument("--ssl-keyfile")
    s.add_argument("--ssl-certfile")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn's log level (info logs every request)")
    s.add_argument("--insecure-cookies", action="store_true",
                   help="cookies without the Secure flag, for plain HTTP on a host that is not localhost")

    t = command("status", "a project's counts, agreement, annotators and win rate (all projects without --name)",
                run_status)
    t.add_argument("--name")
    t.add_argument("--bootstrap", type=NONNEGATIVE_INT, default=1000, help="resamples for the intervals (0: none)")
    t.add_argument("--json", action="store_true", help="print one JSON object")

    e = command("export", "write the votes as training data (dpo, kto) or one row per vote (votes)", run_export)
    e.add_argument("--name", required=True)
    e.add_argument("--format", choices=["dpo", "kto", "votes"], default="dpo")
    e.add_argument("--output", required=True, help=".jsonl or .jsonl.gz")
    e.add_argument("--keep-ties", action="store_true", help="also write tied and split items (dpo: chosen = "
                   "more decisive votes; kto: a tie is two desirable responses)")
    e.add_argument("--keep-both-bad", action="store_true", help="dpo: also write items judged both bad "
                   "(kto always writes them, as two undesirable responses)")
    e.add_argument("--min-votes", type=COUNT, default=1, help="leave out items with fewer votes")

    g = command("set-guidelines", "replace a project's guidelines (Markdown)", run_set_guidelines)
    g.add_argument("--name", required=True)
    g.add_argument("--guidelines", required=True, help="Markdown file")
    p.set_defaults(func=lambda args: p.print_help() or 2)


def add_project_arguments(c: argparse.ArgumentParser) -> None:
    c.add_argument("--name", required=True)
    c.add_argument("--data", help="preference file (any format `directalign train` reads); shown without labels")
    c.add_argument("--limit", type=COUNT, help="only the first N pairs (or prompts)")
    c.add_argument("--shuffle", action="store_true", help="shuffle the pairs before --limit (seeded by --seed)")
    c.add_argument("--overlap", type=COUNT, default=3, help="annotators per item (default 3)")
    c.add_argument("--lease-seconds", type=number(float, 0, low_open=True), default=600.0,
                   help="how long a claimed item is held")
    c.add_argument("--guidelines", help="Markdown file shown before the first item (default: built-in)")
    gold = c.add_argument_group("gold items")
    gold.add_argument("--gold", help="preference file of known-answer pairs (its chosen response is the answer)")
    gold.add_argument("--gold-count", type=NONNEGATIVE_INT, default=0, help="take N pairs of --data as gold items")
    gold.add_argument("--gold-rate", type=FRACTION, default=0.0, help="share of items that are gold, after "
                      "the qualification round (e.g. 0.1)")
    gold.add_argument("--gold-feedback", action="store_true", help="tell annotators when they miss a gold item")
    gold.add_argument("--qualification", type=NONNEGATIVE_INT, default=0,
                      help="first N items of each annotator are gold")
    gold.add_argument("--qualification-pass", type=FRACTION, default=0.8, help="accuracy needed to go on")
    human = c.add_argument_group("blind human evaluation")
    human.add_argument("--prompts", help="prompts file (.txt lines, rows with prompt/instruction, or a "
                       "preference file)")
    human.add_argument("--model", help="base model of the evaluated side: embedded name, folder or hub id")
    human.add_argument("--adapter", help="LoRA adapter of the evaluated side (reference: the base without it)")
    human.add_argument("--reference-model", help="reference model (default: --model)")
    human.add_argument("--reference-adapter", help="adapter of the reference side")
    human.add_argument("--max-new-tokens", type=COUNT, default=256)
    human.add_argument("--temperature", type=number(float, 0), default=0.7)
    human.add_argument("--top-p", type=number(float, 0, 1, low_open=True), default=0.9)
    human.add_argument("--batch-size", type=COUNT, default=8)
    human.add_argument("--judge", metavar="KIND:ARG", help="also judge the pairs, for judge-vs-human agreement")
    c.add_argument("--seed", type=NONNEGATIVE_INT, default=0)


def _library():
    try:
        import argon2  # noqa: F401
        import fastapi  # noqa: F401

        from directalign.annotate import auth, db, export, projects, render, status
    except ImportError as err:
        raise ConfigError(f"{EXTRA_HINT} (missing: {err.name})") from err
    return auth, db, export, projects, render, status


def _database(args):
    db = _library()[1].Database(args.db)
    if args.annotate_command != "init":
        db.check_ready()
    return db


def run_init(args) -> int:
    db = _database(args)
    print(f"database {db.shown if not db.is_sqlite else args.db}: schema at revision {db.migrate()}")
    return 0


def run_add_user(args) -> int:
    auth = _library()[0]
    db = _database(args)
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.username}: ")
        if getpass.getpass("again: ") != password:
            raise ConfigError("the two passwords differ")
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    token = auth.add_user(db, args.username, password, args.role)
    print(f"user {args.username} ({args.role}) added; API token (shown once):")
    print(token)
    return 0


def run_create_project(args) -> int:
    from pathlib import Path

    from directalign.annotate.create import create
    from directalign.generation.base import GenerationConfig

    projects = _library()[3]
    options = projects.ProjectOptions(
        overlap=args.overlap, lease_seconds=args.lease_seconds, gold_rate=args.gold_rate,
        gold_feedback=args.gold_feedback, qualification_size=args.qualification,
        qualification_pass=args.qualification_pass)
    if args.guidelines:
        path = Path(args.guidelines)
        if not path.is_file():
            raise ConfigError(f"--guidelines {path}: no such file")
        options.guidelines = path.read_text(encoding="utf-8")
    generation = GenerationConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                  top_p=args.top_p, seed=args.seed)
    print(create(_database(args), args.name, options, data=args.data, prompts=args.prompts, model=args.model,
                 adapter=args.adapter, reference_model=args.reference_model,
                 reference_adapter=args.reference_adapter, generation=generation, batch_size=args.batch_size,
                 limit=args.limit, shuffle=args.shuffle, seed=args.seed, gold=args.gold,
                 gold_count=args.gold_count, judge=args.judge))
    return 0


def run_judge(args) -> int:
    from directalign.annotate.humaneval import run_judge as judge_items

    db = _database(args)
    project = _library()[3].get_project(db, args.name)
    print(f"judged {judge_items(db, project, args.judge)} items of {args.name} with {args.judge}")
    return 0


def run_serve(args) -> int:
    from directalign.annotate.server import serve

    shown = _library()[1].Database(args.db).shown if "://" in args.db else args.db
    scheme = "https" if args.ssl_certfile else "http"
    print(f"serving {shown} on {scheme}://{args.host}:{args.port} (Ctrl+C stops)", flush=True)
    serve(args.db, args.host, args.port, args.workers, not args.insecure_cookies, args.ssl_keyfile,
          args.ssl_certfile, args.log_level)
    return 0


def run_status(args) -> int:
    _, _, _, projects, render, status = _library()
    db = _database(args)
    if not args.name:
        rows = [{"name": p.name, "kind": p.kind, "items": n, "gold_items": g, "overlap": p.overlap}
                for p, n, g in projects.list_projects(db)]
        print(json.dumps({"projects": rows}) if args.json else
              "\n".join(f"{r['name']}: {r['kind']}, {r['items']} items, {r['gold_items']} gold, overlap "
                        f"{r['overlap']}" for r in rows) or "no projects")
        return 0
    result = status.project_status(db, projects.get_project(db, args.name), n_boot=args.bootstrap)
    print(json.dumps(result) if args.json else render.status_text(result))
    return 0


def run_export(args) -> int:
    _, _, export, projects, _, _ = _library()
    from directalign.annotate.votes import load_votes

    db = _database(args)
    project = projects.get_project(db, args.name)
    rows, summary = export.export_rows(load_votes(db, project, with_text=True), args.format, args.keep_ties,
                                       args.keep_both_bad, args.min_votes)
    path = export.write_jsonl(rows, args.output)
    dropped = ", ".join(f"{reason} {n}" for reason, n in sorted(summary.dropped.items())) or "none"
    print(f"wrote {summary.rows} {args.format} rows from {summary.items} items to {path} (left out: {dropped})")
    return 0


def run_set_guidelines(args) -> int:
    from pathlib import Path

    path = Path(args.guidelines)
    if not path.is_file():
        raise ConfigError(f"--guidelines {path}: no such file")
    _library()[3].set_guidelines(_database(args), args.name, path.read_text(encoding="utf-8"))
    print(f"guidelines of {args.name} replaced from {path}")
    return 0
