"""The probe's fault cases, for every trainer: reruns into finished and unfinished folders (same, changed and
damaged configuration), damaged and tampered checkpoints and cache entries, hostile pickles, locks, staging
leftovers, a full disk, SIGINT, SIGTERM, kill -9 and two runs at once.

Each trainer has two base runs made once by `prepare_bases`: `finished` (3 steps, a checkpoint after steps 1 and
2) and `unfinished` (the same folder as a run killed after its last checkpoint leaves it). A case copies one,
changes it, reruns the trainer, and checks the outcome against the finished run's weights (sha256 of the final
weights file: bit-identical or not) and against what must not change.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.probe import Case, Result, probe_env, run_inproc

FAST = ["--model", "{M}", "--logging-steps", "1", "--eval-before-training", "false",
        "--per-device-train-batch-size", "2"]
SHORT = ["--max-length", "64", "--max-prompt-length", "32"]
ONPOLICY = ["--prompts", "{D}/prompts.jsonl", "--reward-funcs", "{D}/rewards.py:length", "--num-generations", "2",
            "--max-new-tokens", "4", "--kl-prompts", "0"]
# trainer -> (config command, argv after the command, data flag, the final weights file, a result key to change)
TRAINERS = {
    "train": ("train", ["train", *FAST, *SHORT, "--kl-prompts", "0"], ["--data", "{D}/text.jsonl"],
              "adapter/adapter_model.safetensors", ["--loss-type", "ipo"]),
    "kto": ("train", ["train", *FAST, *SHORT, "--kl-prompts", "0", "--loss-type", "kto"],
            ["--data", "{D}/kto.jsonl"], "adapter/adapter_model.safetensors", ["--desirable-weight", "2"]),
    "reward-model": ("reward-model train", ["reward-model", "train", *FAST, *SHORT], ["--data", "{D}/text.jsonl"],
                     "reward_model/adapter_model.safetensors", ["--margin", "0.5"]),
    "online-dpo": ("online-dpo", ["online-dpo", *FAST, *ONPOLICY[2:]], ONPOLICY[:2],
                   "adapter/adapter_model.safetensors", ["--loss-type", "ipo"]),
    "grpo": ("grpo", ["grpo", *FAST, *ONPOLICY[2:]], ONPOLICY[:2], "adapter/adapter_model.safetensors",
             ["--epsilon", "0.1"]),
    "iterative-dpo": ("iterative-dpo", ["iterative-dpo", *FAST, *ONPOLICY[2:], "--num-rounds", "2",
                                        "--prompts-per-round", "2"], ONPOLICY[:2], "model/model.safetensors",
                      ["--beta", "0.5"]),
}
BASE_STEPS = ["--max-steps", "3", "--save-steps", "1", "--seed", "3", "--learning-rate", "1e-3"]
FINAL_OUTPUTS = ("finished.json", "adapter", "model", "reward_model", "merged", "README.md")


def base_argv(trainer: str, data: bool = True) -> list[str]:
    _, argv, data_flags, _, _ = TRAINERS[trainer]
    return [*argv, *(data_flags if data else [])]


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if Path(path).is_file() else "missing"


def folder_digest(folder: Path) -> dict[str, str]:
    """sha256 of every file under folder except the lock (what a refused run must leave as it was)."""
    return {str(p.relative_to(folder)): sha256(p) for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.name != ".directalign.lock"}


def base_dir(work: Path, trainer: str, kind: str) -> Path:
    return work / "base" / trainer / kind


def prepare_bases(work: Path) -> None:
    """The finished and unfinished base run of every trainer, and the finished weights' sha256."""
    from benchmarks.probe import Context

    hashes = {}
    for trainer, (_, _, _, weights, _) in TRAINERS.items():
        finished = base_dir(work, trainer, "finished")
        ctx = Context(work, finished)
        result = run_inproc(ctx.fill([*base_argv(trainer), *BASE_STEPS, "--output-dir", str(finished)]))
        if result.rc != 0:
            raise SystemExit(f"base run of {trainer} failed:\n{result.output[-3000:]}")
        hashes[trainer] = sha256(finished / weights)
        unfinished = base_dir(work, trainer, "unfinished")
        shutil.copytree(finished, unfinished)
        for name in FINAL_OUTPUTS:
            path = unfinished / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        if trainer == "iterative-dpo":  # killed in round 2, after its rollout: the round's training reruns
            for name in ("round.json", "trainable.safetensors"):
                (unfinished / "round_2" / name).unlink()
    (work / "base" / "hashes.json").write_text(json.dumps(hashes, indent=1))


# Setups: copy a base run into the case folder and change it.


def _run_dir(ctx) -> Path:
    return ctx.out / "run"


def copy_base(trainer: str, kind: str, change=None):
    def setup(ctx):
        shutil.copytree(base_dir(ctx.work, trainer, kind), _run_dir(ctx))
        if change is not None:
            change(_run_dir(ctx), ctx)
        (ctx.out / "before.json").write_text(json.dumps(folder_digest(_run_dir(ctx))))
    return setup


def checkpoints(run: Path) -> list[Path]:
    found = [p for p in run.rglob("checkpoint-*") if (p / "manifest.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def flip_bytes(path: Path, offset_from_end: int = 64) -> None:
    data = bytearray(path.read_bytes())
    i = max(len(data) - offset_from_end, 0)
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def weights_files(run: Path) -> list[Path]:
    """What a resume reads weights from: checkpoints' trainable weights, finished rounds' weights."""
    return [*(c / "trainable.safetensors" for c in checkpoints(run)),
            *sorted(p for p in run.glob("round_*/trainable.safetensors"))]


def corrupt_latest(run: Path, ctx) -> None:
    flip_bytes(weights_files(run)[-1])


def corrupt_all(run: Path, ctx) -> None:
    for path in weights_files(run):
        flip_bytes(path)


def tamper_consistently(run: Path, ctx) -> None:
    """A checkpoint whose optimizer.json is not JSON but whose manifest agrees (a bad write, not a bit flip)."""
    found = checkpoints(run)
    if not found:  # iterative-dpo: a finished round's record
        (run / "round_1" / "round.json").write_text("{\"step\": ")
        return
    latest = found[-1]
    (latest / "optimizer.json").write_text("{ not json")
    manifest = json.loads((latest / "manifest.json").read_text())
    manifest["optimizer.json"] = sha256(latest / "optimizer.json")
    (latest / "manifest.json").write_text(json.dumps(manifest))


def plant_pickles(run: Path, ctx) -> None:
    """Pickles that create a marker file when loaded, under every name a trainer might torch.load."""
    from benchmarks.probe_files import hostile_pickle

    payload = hostile_pickle(ctx.out / "EXECUTED")
    places = [run, *checkpoints(run), *run.glob("round_*")]
    for place in places:
        for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth", "training_args.bin", "pytorch_model.bin",
                     "trainer_state.pt"):
            (place / name).write_bytes(payload)


def stale_lock(run: Path, ctx) -> None:
    (run / ".directalign.lock").write_text(json.dumps({"pid": 4194301, "host": socket.gethostname()}))


def live_lock(run: Path, ctx) -> None:
    (run / ".directalign.lock").write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname(),
                                                       "started": "earlier"}))


def staging_leftovers(run: Path, ctx) -> None:
    (run / ".staging-checkpoint-3.abc").mkdir()
    (run / ".staging-checkpoint-3.abc" / "trainable.safetensors").write_bytes(b"half")
    (run / ".staging-metrics.jsonl.xyz").write_text("half")


def corrupt_config(run: Path, ctx) -> None:
    (run / "config.json").write_text("{ this was config.json")


def corrupt_metrics(run: Path, ctx) -> None:
    with open(run / "metrics.jsonl", "ab") as f:
        f.write(b'{"step": 2, "split": "tr\n\x00\xff garbage\n')


def user_file(run: Path, ctx) -> None:
    (run / "notes.txt").write_text("my notes")


# Checks.


def same_weights(trainer: str, also=None):
    """The final weights are the finished base run's, bit for bit (and `also` passes)."""
    def check(ctx, result):
        if also is not None and (problem := also(ctx, result)):
            return problem
        expected = json.loads((ctx.work / "base" / "hashes.json").read_text())[trainer]
        got = sha256(_run_dir(ctx) / TRAINERS[trainer][3])
        if result.rc == 0 and got != expected:
            return ("silent", f"final weights differ from the uninterrupted run's ({got[:12]} != {expected[:12]})")
        return None
    return check


def not_executed(ctx, result):
    if (ctx.out / "EXECUTED").exists():
        return ("silent", "a pickle from the run folder was executed")
    return None


def untouched(ctx, result):
    before = json.loads((ctx.out / "before.json").read_text())
    after = folder_digest(_run_dir(ctx))
    changed = sorted(k for k in before if after.get(k) != before[k])
    if changed:
        return ("lost", f"a refused run changed or removed {changed[:4]}")
    return None


def notes_kept(ctx, result):
    if (_run_dir(ctx) / "notes.txt").read_text() != "my notes":
        return ("lost", "notes.txt was changed")
    return None


def fault_cases() -> list[Case]:
    cases = []
    for trainer, (_, _, _, _, change) in TRAINERS.items():
        argv = [*base_argv(trainer), *BASE_STEPS, "--output-dir", "{O}/run"]
        resumed = ("resuming",) if trainer != "iterative-dpo" else ()

        def add(what, expect, names, setup, check, extra=(), mode="inproc", timeout=300.0, trainer=trainer,
                argv=argv):
            cases.append(Case(f"faults/{trainer}/{what}", "faults", trainer, [*argv, *extra], expect, names,
                              setup, check, mode, timeout))

        add("resume", "succeed", resumed, copy_base(trainer, "unfinished"), same_weights(trainer))
        add("damaged-latest-checkpoint", "succeed", ("damaged",), copy_base(trainer, "unfinished", corrupt_latest),
            same_weights(trainer))
        add("damaged-every-checkpoint", "succeed", ("damaged",), copy_base(trainer, "unfinished", corrupt_all),
            same_weights(trainer))
        add("tampered-checkpoint", "succeed", ("damaged",), copy_base(trainer, "unfinished", tamper_consistently),
            same_weights(trainer))
        add("hostile-pickles", "succeed", (), copy_base(trainer, "unfinished", plant_pickles),
            same_weights(trainer, not_executed))
        add("rerun-finished", "refuse", ("finished", "--overwrite-output-dir"), copy_base(trainer, "finished"),
            untouched)
        add("rerun-changed-lr", "refuse", ("learning_rate",), copy_base(trainer, "unfinished"), untouched,
            ["--learning-rate", "5e-4"])
        add("rerun-changed-steps", "refuse", ("max_steps",), copy_base(trainer, "unfinished"), untouched,
            ["--max-steps", "5"])
        add("rerun-changed-loss", "refuse", (change[0].lstrip("-").replace("-", "_"),),
            copy_base(trainer, "unfinished"), untouched, change)
        add("overwrite-finished", "succeed", ("overwrite_output_dir",), copy_base(trainer, "finished"),
            same_weights(trainer), ["--overwrite-output-dir", "true"])
        add("stale-lock", "succeed", ("taking over",), copy_base(trainer, "unfinished", stale_lock),
            same_weights(trainer))
        add("live-lock", "refuse", ("in use",), copy_base(trainer, "unfinished", live_lock), untouched)
        add("staging-leftovers", "succeed", ("removed",), copy_base(trainer, "unfinished", staging_leftovers),
            same_weights(trainer))
        add("corrupt-config.json", "refuse", ("config.json",), copy_base(trainer, "unfinished", corrupt_config),
            untouched)
        add("corrupt-metrics.jsonl", "succeed", resumed, copy_base(trainer, "unfinished", corrupt_metrics),
            same_weights(trainer))
        add("user-files-kept", "succeed", (), copy_base(trainer, "finished", lambda run, ctx: (
            shutil.rmtree(run), run.mkdir(), user_file(run, ctx))), same_weights(trainer, notes_kept))
        add("full-disk", "refuse", ("no space",), None, disk_check(trainer), mode="full_disk")
        for name, signum in (("sigint", "SIGINT"), ("sigterm", "SIGTERM")):
            add(name, "interrupt", ("resume",), None, resumable(trainer), mode=f"signal:{signum}")
        add("kill-9", "succeed", ("taking over",), None, None, mode="kill9")
        add("two-runs-one-folder", "refuse", ("in use",), None, None, mode="concurrent")
    cases += output_integrity_cases() + cache_cases()
    return cases


# Final outputs and the reference cache.


def output_integrity_cases() -> list[Case]:
    def damaged(path: str):
        def setup(ctx):
            shutil.copytree(ctx.work / "base" / path.split("/")[0] / "finished", _run_dir(ctx))
            flip_bytes(_run_dir(ctx) / "/".join(path.split("/")[1:]))
        return setup

    return [
        Case("faults/train/damaged-final-adapter", "faults", "eval",
             ["eval", "--model", "{M}", "--adapter", "{O}/run/adapter", "--data", "{D}/text.jsonl"], "refuse",
             ("adapter_model.safetensors",), damaged("train/adapter/adapter_model.safetensors")),
        Case("faults/reward-model/damaged-final-model", "faults", "reward-model score",
             ["reward-model", "score", "--model", "{O}/run/reward_model", "--data", "{D}/text.jsonl"], "refuse",
             ("adapter_model.safetensors",), damaged("reward-model/reward_model/adapter_model.safetensors")),
        Case("faults/iterative-dpo/damaged-final-model", "faults", "eval",
             ["eval", "--model", "{O}/run/model", "--data", "{D}/text.jsonl"], "refuse", ("model.safetensors",),
             damaged("iterative-dpo/model/model.safetensors")),
    ]


def cache_cases() -> list[Case]:
    """precompute_ref_log_probs reads entries from $DIRECTALIGN_HOME/ref-cache: a damaged one is recomputed."""
    argv = [*base_argv("train"), *BASE_STEPS, "--precompute-ref-log-probs", "true", "--output-dir", "{O}/run"]

    def damage(how: str):
        def setup(ctx):
            home = ctx.out / "home"
            os.environ["DIRECTALIGN_HOME"] = str(home)
            first = run_inproc(ctx.fill([*argv[:-1], "{O}/first"]))
            if first.rc != 0:
                raise RuntimeError(f"the caching run failed: {first.output[-500:]}")
            (ctx.out / "first.sha").write_text(sha256(ctx.out / "first" / TRAINERS["train"][3]))
            for entry in (home / "ref-cache").glob("*.safetensors"):
                if how == "flip":
                    flip_bytes(entry, 12)
                elif how == "truncate":
                    entry.write_bytes(entry.read_bytes()[:40])
                else:
                    entry.write_bytes(b"")
        return setup

    def check(ctx, result):
        os.environ.pop("DIRECTALIGN_HOME", None)
        expected = (ctx.out / "first.sha").read_text()
        if result.rc == 0 and sha256(_run_dir(ctx) / TRAINERS["train"][3]) != expected:
            return ("silent", "trained on the damaged cache entry: weights differ from the run that wrote it")
        return None

    return [Case(f"faults/train/reference-cache-{how}", "faults", "train", argv, "succeed", ("damaged",),
                 damage(how), check) for how in ("flip", "truncate", "empty")]


# Runners of the cases that need processes of their own.


def _popen(argv: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "directalign", *argv], env=probe_env(),
                            stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115


def _wait_for(predicate, timeout: float, process: subprocess.Popen | None = None) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if process is not None and process.poll() is not None:
            return predicate()
        time.sleep(0.05)
    return False


def _train_lines(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum('"split": "train"' in line for line in path.read_text(errors="replace").splitlines())


def _long_argv(case: Case, steps: int = 100000) -> list[str]:
    argv = list(case.argv)
    argv[argv.index("--max-steps") + 1] = str(steps)
    argv[argv.index("--save-steps") + 1] = "2"
    return argv


def _finish(process: subprocess.Popen, log: Path, timeout: float = 120) -> Result:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return Result(-9, log.read_text() + "\n[probe: did not stop]")
    return Result(process.returncode, log.read_text())


def run_signal(case: Case, ctx, signum: str) -> Result:
    """Start a long run, send the signal once a few steps are logged, return what the run said and did."""
    run = _run_dir(ctx)
    process = _popen(ctx.fill(_long_argv(case)), ctx.out / "log.txt")
    if not _wait_for(lambda: _train_lines(run) >= 3, 120, process):
        process.kill()
        return _finish(process, ctx.out / "log.txt")
    process.send_signal(getattr(signal, signum))
    return _finish(process, ctx.out / "log.txt")


def resumable(trainer: str):
    """After an interrupt: the latest checkpoint verifies, and a rerun resumes from it."""
    def check(ctx, result):
        from directalign.engine.checkpoint import verify

        found = checkpoints(_run_dir(ctx))
        if result.rc not in (130, 143):
            return None
        if not found:
            return ("silent", "interrupted but no checkpoint written")
        if (problem := verify(found[-1])) is not None:
            return ("silent", f"{found[-1].name} does not verify: {problem}")
        return None
    return check


def run_kill9(case: Case, ctx) -> Result:
    """kill -9 once a checkpoint exists, then rerun (to one step past it): it must take over and resume."""
    run = _run_dir(ctx)
    process = _popen(ctx.fill(_long_argv(case)), ctx.out / "killed.txt")
    ok = _wait_for(lambda: len(checkpoints(run)) >= 1 and _train_lines(run) >= 3, 120, process)
    process.kill()
    process.wait()
    if not ok:
        return Result(-1, "probe error: the run made no checkpoint before the kill")
    step = int(checkpoints(run)[-1].name.split("-")[1])
    argv = _long_argv(case, step + 1) + ["--resume-allow-changes", "max_steps"]
    again = ctx.run(argv, 300)
    if again.rc == 0 and case.command != "iterative-dpo" and f"step {step} " not in again.output:
        return Result(again.rc, again.output + "\n[probe: the rerun did not resume from the last checkpoint]")
    return again


def run_concurrent(case: Case, ctx) -> Result:
    """Two runs into one folder: the second must be refused, and the first must go on unharmed."""
    run = _run_dir(ctx)
    first = _popen(ctx.fill(_long_argv(case)), ctx.out / "first.txt")
    if not _wait_for(lambda: _train_lines(run) >= 1, 120, first):
        first.kill()
        return _finish(first, ctx.out / "first.txt")
    config = sha256(run / "config.json")
    second = ctx.run(_long_argv(case), 300)
    first.send_signal(signal.SIGTERM)
    stopped = _finish(first, ctx.out / "first.txt")
    if sha256(run / "config.json") != config or stopped.rc != 143:
        return Result(0, second.output + f"\n[probe: the first run was disturbed (exit {stopped.rc})]")
    return second


def run_full_disk(case: Case, ctx) -> Result:
    """The run folder on a 1 MB tmpfs (needs root; the fault suite simulates ENOSPC without it): checkpoints fit,
    the final save does not. The error must be clear, and after the disk is made larger a rerun must resume to
    the uninterrupted run's weights."""
    run = _run_dir(ctx)
    run.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(run)], capture_output=True)
    if mounted.returncode != 0:
        return Result(-1, f"probe error: cannot mount a tmpfs ({mounted.stderr.decode().strip()})")
    try:
        full = ctx.run(case.argv, 300)
        subprocess.run(["mount", "-o", "remount,size=64m", str(run)], check=True)
        again = ctx.run(case.argv, 300)
        (ctx.out / "rerun.json").write_text(json.dumps({"rc": again.rc, "tail": again.output[-1000:]}))
        shutil.copytree(run, ctx.out / "kept", ignore=shutil.ignore_patterns(".directalign.lock"))
    finally:
        subprocess.run(["umount", "-l", str(run)], capture_output=True)
    shutil.rmtree(run, ignore_errors=True)
    shutil.move(ctx.out / "kept", run)
    return full


def disk_check(trainer: str):
    def check(ctx, result):
        rerun = json.loads((ctx.out / "rerun.json").read_text())
        if rerun["rc"] != 0:
            return ("silent", f"after the disk was freed, the rerun failed: {rerun['tail'][-200:]}")
        return same_weights(trainer)(ctx, Result(0, ""))
    return check


RUNNERS = {
    "signal:SIGINT": lambda case, ctx: run_signal(case, ctx, "SIGINT"),
    "signal:SIGTERM": lambda case, ctx: run_signal(case, ctx, "SIGTERM"),
    "kill9": run_kill9,
    "concurrent": run_concurrent,
    "full_disk": run_full_disk,
}
