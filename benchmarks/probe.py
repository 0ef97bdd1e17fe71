"""Hostile-input probe: hundreds of cases of bad data, bad configuration, bad paths, faults and hostile files,
each run through the real command line, each outcome classified automatically.

    python benchmarks/probe.py [--jobs 2] [--only SUBSTRING] [--json probe.json] [--isolated]

Outcomes (a case's expectation is "refuse", "succeed" or "interrupt"):
- clear error: a refused case exited 1 with no traceback, and its message is one or two
  lines naming what it must name (the file, row and field, or the key and its range);
- handled: a case that must succeed did, its output names what it must (a skipped row, a damaged checkpoint),
  and its check passed (the weights equal the uninterrupted run's, nothing executed);
- unclear error: refused without a traceback, but the message is longer or does not name what it must;
- traceback: "Traceback" in the output, or a crash / hang (an exit code that is not 0, 1, 2, 130 or 143);
- silent wrong: a refused case that exited 0, or a wrong number (a check failed);
- refused wrongly: a case that must succeed was refused;
- data lost: something written before the case (a finished adapter, config.json, metrics) is gone or changed.

Speed: every case is a `directalign ...` command line. Most fail at config or data load, so they run grouped:
each worker process (`--jobs`, default 2) imports torch once and calls the CLI's main(argv) case after case,
capturing what it prints. The runs that must be processes of their own (the ones sent SIGINT or SIGTERM,
killed with kill -9, or holding a folder while a second run tries it) are `python -m directalign`
subprocesses. `--isolated` runs every other case as its own subprocess too (slow, exact).
Models are a 2-layer random Llama with hidden size 16 built from a config; training cases run 1-3 steps.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUTCOMES = ["clear error", "handled", "unclear error", "traceback", "silent wrong", "refused wrongly", "data lost",
            "probe error"]
CLEAN_CODES = {0, 1, 2, 130, 143}
ERROR_LINE = re.compile(r"^error: ")


@dataclass
class Result:
    rc: int
    output: str
    seconds: float = 0.0


@dataclass
class Case:
    """One probe case. argv may hold {D} (data folder), {M} (model folder), {W} (work folder), {O} (the case's
    own folder). setup(ctx) prepares {O}; check(ctx, result) returns a problem: ("silent", why), ("lost", why)
    or None. mode: "inproc" (grouped in a worker), "process" (its own `python -m directalign`), or the name of
    a runner in probe_cases.RUNNERS (signals, concurrency)."""

    name: str
    group: str
    command: str
    argv: list[str]
    expect: str = "refuse"
    names: tuple[str, ...] = ()
    setup: object = None
    check: object = None
    mode: str = "inproc"
    timeout: float = 300.0
    notes: dict = field(default_factory=dict)


@dataclass
class Context:
    """What setup and check functions see: the folders, and a way to run another command line."""

    work: Path
    out: Path
    runner: object = None

    @property
    def data(self) -> Path:
        return self.work / "data"

    @property
    def model(self) -> Path:
        return self.work / "files" / "model"

    def fill(self, argv: list[str]) -> list[str]:
        return [a.format(D=self.data, M=self.model, W=self.work, O=self.out) for a in argv]

    def run(self, argv: list[str], timeout: float = 300.0) -> Result:
        return self.runner(self.fill(argv), timeout)


# Classification.


def error_message(output: str) -> list[str]:
    """The error's lines: from the first `error:` line to the end, blank lines dropped."""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if ERROR_LINE.match(line):
            return [x for x in lines[i:] if x.strip()]
    return []


def classify(case: Case, result: Result, problem: tuple[str, str] | None) -> tuple[str, str]:
    """(outcome, why) of a case, from its exit code, its output and its check's problem."""
    if "Traceback (most recent call last)" in result.output:
        last = [x for x in result.output.splitlines() if x.strip()][-1:]
        return "traceback", (last[0] if last else "")[:200]
    if result.rc not in CLEAN_CODES:
        return "traceback", f"exit code {result.rc} (a crash, a kill or a hang)"
    if problem is not None and problem[0] == "lost":
        return "data lost", problem[1]
    text = result.output.lower()
    missing = [n for n in case.names if n.lower() not in text]
    if case.expect == "refuse":
        if result.rc == 0:
            return "silent wrong", "exit 0 where the case must be refused"
        if result.rc != 1:
            return "unclear error", f"exit code {result.rc}"
        message = error_message(result.output)
        if not message:
            return "unclear error", "no 'error:' line"
        if len(message) > 2:
            return "unclear error", f"{len(message)} lines: {' / '.join(message)[:200]}"
        missing = [n for n in case.names if n.lower() not in " ".join(message).lower()]
        if missing:
            return "unclear error", f"does not name {missing}: {message[0][:200]}"
        if problem is not None:
            return "silent wrong", problem[1]
        return "clear error", message[0][:200]
    wanted = {"succeed": (0,), "interrupt": (130, 143)}[case.expect]
    if result.rc not in wanted:
        message = error_message(result.output)
        return "refused wrongly", f"exit {result.rc}: {(message or [''])[0][:200]}"
    if problem is not None:
        return "silent wrong", problem[1]
    if missing:
        return "silent wrong", f"output does not say {missing}"
    return "handled", ""


# Running a command line.


def run_inproc(argv: list[str], timeout: float = 300.0) -> Result:
    """The CLI's main(argv) in this process, with everything it prints captured."""
    from directalign.cli.main import main

    buffer = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(buffer):
        try:
            rc = main(list(argv))
        except SystemExit as exit_:
            rc = exit_.code if isinstance(exit_.code, int) else 1
        except BaseException:  # noqa: BLE001 (what escapes main is what a user would see as a traceback)
            traceback.print_exc(file=buffer)
            rc = 1
    return Result(int(rc or 0), buffer.getvalue(), time.perf_counter() - start)


def probe_env() -> dict:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")]))
    return env


def run_process(argv: list[str], timeout: float = 300.0) -> Result:
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-m", "directalign", *argv], capture_output=True, text=True,
                              env=probe_env(), timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        return Result(-9, out + "\n[probe: timed out]", time.perf_counter() - start)
    return Result(done.returncode, done.stdout + done.stderr, time.perf_counter() - start)


def execute(case: Case, work: Path, runner) -> dict:
    """Set up, run and check one case; returns its JSON row."""
    from benchmarks import probe_cases

    ctx = Context(work, work / "cases" / case.name, runner)
    ctx.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    problem = None
    try:
        if case.setup is not None:
            case.setup(ctx)
        if case.mode in probe_cases.RUNNERS:
            result = probe_cases.RUNNERS[case.mode](case, ctx)
        else:
            result = ctx.run(case.argv, case.timeout)
        if case.check is not None:
            problem = case.check(ctx, result)
    except Exception as err:  # noqa: BLE001 (a fault in the probe itself is reported, not hidden)
        result = Result(-1, f"probe error: {err!r}\n{traceback.format_exc()}")
    outcome, why = classify(dataclasses.replace(case, names=tuple(ctx.fill(list(case.names)))), result, problem)
    if result.rc == -1 and result.output.startswith("probe error"):
        outcome, why = "probe error", result.output.splitlines()[0][:200]
    return {"name": case.name, "group": case.group, "command": case.command, "expect": case.expect,
            "argv": ctx.fill(case.argv), "rc": result.rc, "outcome": outcome, "why": why,
            "seconds": round(time.perf_counter() - start, 2), "output_tail": result.output[-1500:]}


# Workers and the orchestration.


def worker(work: Path, names: list[str], results: Path) -> None:
    os.environ.update(probe_env())
    from benchmarks import probe_cases

    cases = {c.name: c for c in probe_cases.build_cases()}
    with open(results, "a") as f:
        for name in names:
            case = cases[name]
            runner = run_process if case.mode == "process" else run_inproc
            row = execute(case, work, runner)
            f.write(json.dumps(row) + "\n")
            f.flush()


def prepare(work: Path) -> None:
    os.environ.update(probe_env())
    from benchmarks import probe_cases

    probe_cases.prepare(work)


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(Path(__file__)), *args], env=probe_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def run_probe(work: Path, cases: list[Case], jobs: int, isolated: bool, log=print) -> list[dict]:
    """Prepare the files and base runs, then run the cases over `jobs` workers; a worker that dies mid-case
    (a segfault) has that case recorded as a crash and the rest continue in a fresh worker."""
    start = time.perf_counter()
    prep = _spawn(["--prepare", str(work)])
    _, err = prep.communicate()
    if prep.returncode != 0:
        raise SystemExit(f"probe: preparing the files failed:\n{err[-3000:]}")
    log(f"prepared the model, data and base runs in {time.perf_counter() - start:.0f} s")
    if isolated:
        for case in cases:
            case.mode = case.mode if case.mode != "inproc" else "process"
    # The cases that start processes of their own first, dealt round-robin with the rest, so that the workers
    # finish together.
    ordered = [c.name for c in cases if c.mode != "inproc"] + [c.name for c in cases if c.mode == "inproc"]
    queues = [ordered[i::jobs] for i in range(jobs)]
    rows: list[dict] = []
    for round_ in range(3):
        running = []
        for i, names in enumerate(q for q in queues if q):
            results = work / f"results-{round_}-{i}.jsonl"
            running.append((names, results, _spawn(["--worker", str(work), str(results), *names])))
        queues = []
        for names, results, process in running:
            _, err = process.communicate()
            done = [json.loads(x) for x in results.read_text().splitlines()] if results.is_file() else []
            rows += done
            if len(done) < len(names):
                crashed = names[len(done)]
                rows.append({"name": crashed, "outcome": "traceback", "rc": process.returncode,
                             "why": f"the worker died (exit {process.returncode}): {err[-300:]}",
                             **_case_fields(cases, crashed)})
                queues.append(names[len(done) + 1:])
        if not any(queues):
            break
    order = {c.name: i for i, c in enumerate(cases)}
    return sorted(rows, key=lambda r: order.get(r["name"], 0))


def _case_fields(cases: list[Case], name: str) -> dict:
    case = next(c for c in cases if c.name == name)
    return {"group": case.group, "command": case.command, "expect": case.expect, "argv": case.argv}


def table(rows: list[dict]) -> str:
    groups = sorted({r["group"] for r in rows}, key=["data", "config", "paths", "faults"].index)
    header = ["", "cases", *OUTCOMES]
    lines = [header]
    for name, subset in [*((g, [r for r in rows if r["group"] == g]) for g in groups), ("all", rows)]:
        counts = Counter(r["outcome"] for r in subset)
        lines.append([name, str(len(subset)), *(str(counts.get(o, 0)) for o in OUTCOMES)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) + " |" for line in lines]
    text.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--only", help="run only the cases whose name contains this")
    parser.add_argument("--json", default="probe.json", help="where to write every case (default probe.json)")
    parser.add_argument("--isolated", action="store_true", help="every case in a process of its own (slow)")
    parser.add_argument("--work", help="work folder (default: a temporary one, removed afterwards)")
    parser.add_argument("--prepare", help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.prepare:
        prepare(Path(args.prepare))
        return 0
    if args.worker:
        worker(Path(args.worker[0]), args.worker[2:], Path(args.worker[1]))
        return 0
    from benchmarks import probe_cases

    cases = [c for c in probe_cases.build_cases() if not args.only or args.only in c.name]
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        work = Path(args.work) if args.work else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        rows = run_probe(work, cases, args.jobs, args.isolated)
    seconds = time.perf_counter() - start
    load = os.getloadavg()
    print(table(rows))
    print(f"{len(rows)} cases in {seconds:.0f} s, {args.jobs} jobs; load average {load[0]:.2f} {load[1]:.2f}")
    bad = [r for r in rows if r["outcome"] not in ("clear error", "handled")]
    for r in bad:
        print(f"  {r['outcome']}: {r['name']}: {r['why']}")
    Path(args.json).write_text(json.dumps({"seconds": round(seconds), "jobs": args.jobs, "load": load,
                                           "cases": rows}, indent=1))
    print(f"every case: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
