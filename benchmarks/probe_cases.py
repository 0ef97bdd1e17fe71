"""The probe's cases of bad data, bad configuration and bad paths, for every command that reads data; the fault
cases are in probe_faults. `build_cases()` is deterministic: the orchestrator and every worker build the same
list and refer to cases by name.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing
from pathlib import Path

from benchmarks.probe import Case
from benchmarks.probe_faults import RUNNERS, TRAINERS, base_argv, fault_cases, prepare_bases  # noqa: F401
from benchmarks.probe_files import BAD_DATA, write_data, write_model

# What each bad file's error must name besides the file (a row, a field): the file name is always required.
BAD_NAMES = {
    "unknown_role.jsonl": ("role",),
    "missing_column.csv": ("rejected",),
    "wrong_types.jsonl": ("chosen",),
}

# Files that are bad preference data but good prompt files (a prompt column is all a prompt file needs).
PROMPT_FILES = {"missing_column.csv"}

RM_MODEL = "{W}/base/reward-model/finished/reward_model"
JUDGE = "reward:{D}/rewards.py:length"


def data_commands() -> dict[str, tuple[list[str], str]]:
    """command -> (argv with {F} for the file, the kind of file it reads: pairs, unpaired, prompts, any)."""
    train = [*base_argv("train"), "--max-steps", "1", "--save-steps", "0", "--output-dir", "{O}/run"]
    return {
        "train": ([*train, "--data", "{F}"], "pairs"),
        "train --eval-data": ([*train, "--data", "{D}/text.jsonl", "--eval-data", "{F}"], "pairs"),
        "kto": ([*train, "--loss-type", "kto", "--data", "{F}"], "unpaired"),
        "reward-model train": ([*base_argv("reward-model"), "--max-steps", "1", "--save-steps", "0",
                                "--output-dir", "{O}/run", "--data", "{F}"], "pairs"),
        "reward-model score": (["reward-model", "score", "--model", RM_MODEL, "--data", "{F}"], "pairs"),
        "eval": (["eval", "--model", "{M}", "--data", "{F}", "--max-length", "64", "--max-prompt-length", "32"],
                 "pairs"),
        "online-dpo": ([*_onpolicy("online-dpo"), "--prompts", "{F}"], "prompts"),
        "grpo": ([*_onpolicy("grpo"), "--prompts", "{F}"], "prompts"),
        "iterative-dpo": ([*_onpolicy("iterative-dpo"), "--prompts", "{F}"], "prompts"),
        "data inspect": (["data", "inspect", "{F}"], "any"),
        "data diagnose": (["data", "diagnose", "{F}"], "pairs"),
        "data filter": (["data", "filter", "{F}", "--out", "{O}/filtered.jsonl"], "pairs"),
        "data pairs": (["data", "pairs", "{F}", "--out", "{O}/pairs.jsonl"], "ranked"),
        "judge pairs": (["judge", "pairs", "--data", "{F}", "--out", "{O}/judged.jsonl", "--judge", JUDGE], "pairs"),
        "judge validate": (["judge", "validate", "--human", "{F}", "--judge", JUDGE], "pairs"),
    }


def _onpolicy(command: str) -> list[str]:
    return [*base_argv(command, data=False), "--max-steps", "1", "--save-steps", "0", "--output-dir", "{O}/run"]


VALID = {"pairs": ["text.jsonl", "conv.jsonl", "hh.jsonl", "sharegpt.json", "pairs.csv", "pairs.parquet",
                   "text.json", "text.jsonl.gz"],
         "unpaired": ["kto.jsonl"], "prompts": ["prompts.jsonl"], "ranked": ["ranked.jsonl"],
         "any": ["text.jsonl", "kto.jsonl", "ranked.jsonl", "conv.jsonl"]}


def _file_name(name: str) -> str:
    return name.split("/")[-1]


def data_cases() -> list[Case]:
    cases = []
    for command, (argv, kind) in data_commands().items():
        for bad in BAD_DATA:
            if kind == "prompts" and bad in PROMPT_FILES:
                continue
            # The field to name is a preference field only where a preference row is what the command reads.
            fields = BAD_NAMES.get(bad, ()) if kind == "pairs" and command != "reward-model score" else ()
            names = (_file_name(bad), *fields)
            filled = [a.replace("{F}", f"{{D}}/{bad}") for a in argv]
            cases.append(Case(f"data/{command}/{bad}", "data", command, filled, "refuse", names))
        for good in VALID[kind]:
            filled = [a.replace("{F}", f"{{D}}/{good}") for a in argv]
            cases.append(Case(f"data/{command}/valid:{good}", "data", command, filled, "succeed"))
        cases += mixed_cases(command, argv, kind)
    return cases


# One bad row among good ones: it must be skipped and counted (named by row), not trained on, not fatal.
MIXED_ROWS = {
    "unknown_role": {"prompt": [{"role": "user", "content": "Hi"}], "chosen": [{"role": "tool", "content": "x"}],
                     "rejected": [{"role": "assistant", "content": "y"}]},
    "wrong_type": {"prompt": "Hi", "chosen": 7, "rejected": "no"},
    "bad_json": "{not json",
    "missing_field": {"prompt": "Hi", "chosen": "yes"},
}


def mixed_setup(kind_row: str, suffix: str):
    def setup(ctx):
        from benchmarks.probe_files import csv_text, text_rows

        rows = text_rows()
        if suffix == ".csv":
            text = csv_text(rows).splitlines(keepends=True)
            text.insert(3, 'What is 1 + 1?,2, or maybe 3,no\n')  # an unquoted comma: 4 fields where 3 are
            (ctx.out / "mixed.csv").write_text("".join(text))
            return
        lines = [json.dumps(r) for r in rows]
        if kind_row.startswith("unknown_role"):
            lines = [json.dumps({"prompt": [{"role": "user", "content": r["prompt"]}],
                                 "chosen": [{"role": "assistant", "content": r["chosen"]}],
                                 "rejected": [{"role": "assistant", "content": r["rejected"]}]}) for r in rows]
        row = MIXED_ROWS[kind_row]
        lines.insert(2, row if isinstance(row, str) else json.dumps(row))
        (ctx.out / "mixed.jsonl").write_text("\n".join(lines) + "\n")
    return setup


def mixed_cases(command: str, argv: list[str], kind: str) -> list[Case]:
    if kind not in ("pairs",) or command in ("reward-model score", "judge validate"):
        return []
    cases = []
    for row, suffix in [*((r, ".jsonl") for r in MIXED_ROWS), ("unquoted_comma", ".csv")]:
        filled = [a.replace("{F}", f"{{O}}/mixed{suffix}") for a in argv]
        # A line that is not JSON is a damaged file (refused, named by line); a readable bad row is skipped.
        expect = "refuse" if row == "bad_json" else "succeed"
        names = (":3",) if row == "bad_json" else ("skipped", ":3" if suffix == ".jsonl" else ":4")
        cases.append(Case(f"data/{command}/one-bad-row:{row}", "data", command, filled, expect, names,
                          setup=mixed_setup(row, suffix)))
    return cases


# Configuration: every numeric key of every training command out of its range, and not a number.


def _out_of_range(f: dataclasses.Field) -> str | None:
    m = f.metadata
    low, high = m.get("low"), m.get("high")
    if low is not None:
        return str(low if m["low_open"] else (low - 1 if float(low).is_integer() else low - 0.5))
    if high is not None:
        return str(high if m["high_open"] else high + 1)
    return None


def config_cases() -> list[Case]:
    from directalign.config.commands import COMMANDS

    cases = []
    for trainer, (command, *_) in TRAINERS.items():
        cls = COMMANDS[command]
        seen_types = set()
        for f in dataclasses.fields(cls):
            argv = [*base_argv(trainer), "--output-dir", "{O}/run"]
            value = _out_of_range(f)
            flag = "--" + f.name.replace("_", "-")
            if value is not None:
                cases.append(Case(f"config/{trainer}/{f.name}={value}", "config", trainer, [*argv, flag, value],
                                  "refuse", (f.name,)))
            hint = str(typing.get_type_hints(cls)[f.name])
            if ("int" in hint or "float" in hint) and "list" not in hint and f.name not in seen_types:
                seen_types.add(f.name)
                cases.append(Case(f"config/{trainer}/{f.name}=abc", "config", trainer, [*argv, flag, "abc"],
                                  "refuse", (f.name,)))
            if f.metadata.get("choices"):
                cases.append(Case(f"config/{trainer}/{f.name}=bogus", "config", trainer, [*argv, flag, "bogus"],
                                  "refuse", (f.name,)))
        for value in ("nan", "inf"):
            cases.append(Case(f"config/{trainer}/learning_rate={value}", "config", trainer,
                              [*base_argv(trainer), "--output-dir", "{O}/run", "--learning-rate", value], "refuse",
                              ("learning_rate",)))
    cases += cross_key_cases() + flag_cases()
    return cases


def cross_key_cases() -> list[Case]:
    train = [*base_argv("train"), "--output-dir", "{O}/run"]
    return [
        Case("config/train/max_prompt_length>=max_length", "config", "train",
             [*train, "--max-length", "16", "--max-prompt-length", "32"], "refuse", ("max_prompt_length",)),
        Case("config/train/max_steps=0", "config", "train", [*train, "--max-steps", "0"], "refuse", ("max_steps",)),
        Case("config/train/unknown-key", "config", "train", [*train, "--lerning-rate", "1e-4"], "refuse",
             ("lerning_rate", "learning_rate")),
        Case("config/train/other-command-key", "config", "train", [*train, "--num-generations", "4"], "refuse",
             ("num_generations",)),
        Case("config/train/bad-bool", "config", "train", [*train, "--bf16", "maybe"], "refuse", ("bf16",)),
        Case("config/train/loss-key-of-another-loss", "config", "train",
             [*train, "--loss-type", "sigmoid", "--simpo-gamma", "1.0"], "refuse", ("simpo_gamma",)),
        Case("config/train/config-missing", "config", "train", [*train, "--config", "{W}/nope.yaml"], "refuse",
             ("nope.yaml",)),
        Case("config/train/config-not-yaml", "config", "train", [*train, "--config", "{D}/garbage.jsonl"],
             "refuse", ("garbage.jsonl",)),
        Case("config/train/config-a-list", "config", "train", [*train, "--config", "{D}/list_rows.jsonl"],
             "refuse", ("list_rows.jsonl",)),
        Case("config/train/config-bad-key", "config", "train", [*train, "--config", "{O}/c.yaml"], "refuse",
             ("c.yaml", "lora_rank"), setup=lambda ctx: (ctx.out / "c.yaml").write_text("lora_rank: 4\n")),
        Case("config/train/config-bad-value", "config", "train", [*train, "--config", "{O}/c.yaml"], "refuse",
             ("lora_r",), setup=lambda ctx: (ctx.out / "c.yaml").write_text("lora_r: [1, 2]\n")),
        Case("config/train/config-a-folder", "config", "train", [*train, "--config", "{D}/empty_folder"],
             "refuse", ("empty_folder",)),
        Case("config/grpo/reward-weights-length", "config", "grpo",
             [*base_argv("grpo"), "--output-dir", "{O}/run", "--reward-weights", "1,2"], "refuse",
             ("reward_weights",)),
        Case("config/train/stray-positional", "config", "train", [*train, "oops"], "refuse", ("oops",)),
    ]


def flag_cases() -> list[Case]:
    """The numeric options of the commands that take argparse flags rather than config keys."""
    rm = RM_MODEL
    specs = {
        "eval": (["eval", "--model", "{M}", "--data", "{D}/text.jsonl"],
                 {"--beta": "-1", "--batch-size": "0", "--limit": "-1", "--samples": "0", "--max-new-tokens": "0",
                  "--max-length": "1", "--max-prompt-length": "0"}),
        "reward-model score": (["reward-model", "score", "--model", rm, "--data", "{D}/text.jsonl"],
                               {"--limit": "-1", "--batch-size": "0"}),
        "data filter": (["data", "filter", "{D}/text.jsonl", "--out", "{O}/f.jsonl"],
                        {"--min-margin": "nan", "--max-length-ratio": "0", "--drop-near-identical": "2",
                         "--min-agreement": "-1"}),
        "data pairs": (["data", "pairs", "{D}/ranked.jsonl", "--out", "{O}/p.jsonl"], {"--min-margin": "-1"}),
        "data diagnose": (["data", "diagnose", "{D}/text.jsonl"],
                          {"--duplicate-threshold": "2", "--identical-threshold": "-1"}),
        "data inspect": (["data", "inspect", "{D}/text.jsonl", "--model", "{M}"],
                         {"--max-length": "0", "--max-prompt-length": "-5"}),
        "judge validate": (["judge", "validate", "--human", "{D}/text.jsonl", "--judge", JUDGE],
                           {"--tie-margin": "-1", "--batch-size": "0", "--limit": "0", "--bootstrap": "-1"}),
        "judge pairs": (["judge", "pairs", "--data", "{D}/text.jsonl", "--out", "{O}/j.jsonl", "--judge", JUDGE],
                        {"--tie-margin": "-1", "--limit": "-3"}),
    }
    cases = []
    for command, (argv, flags) in specs.items():
        for flag, value in flags.items():
            cases.append(Case(f"config/{command}/{flag}={value}", "config", command, [*argv, flag, value], "refuse",
                              (flag,)))
        cases.append(Case(f"config/{command}/--limit=abc", "config", command, [*argv, "--limit", "abc"], "refuse",
                          ("--limit",)))
    return cases


# Paths.


def path_cases() -> list[Case]:
    cases = []
    models = {"missing": "{W}/no-such-model", "a-file": "{W}/files/a_file", "not-a-model": "{W}/files/not_a_model",
              "bad-config": "{W}/files/bad_config_model", "bad-hub-id": "no-such-owner/no-such-model-xyz"}
    for trainer in TRAINERS:
        argv = [*base_argv(trainer), "--output-dir", "{O}/run", "--max-steps", "1"]
        for what, model in models.items():
            cases.append(Case(f"paths/{trainer}/model:{what}", "paths", trainer, [*argv, "--model", model], "refuse",
                              (_file_name(model),)))
        cases.append(Case(f"paths/{trainer}/output-dir:a-file", "paths", trainer,
                          [*argv, "--output-dir", "{W}/files/a_file"], "refuse", ("a_file",),
                          check=_unchanged("{W}/files/a_file")))
        cases.append(Case(f"paths/{trainer}/output-dir:under-a-file", "paths", trainer,
                          [*argv, "--output-dir", "{W}/files/a_file/run"], "refuse", ("a_file",)))
    others = {
        "eval": ["eval", "--model", "{M}", "--data", "{D}/text.jsonl"],
        "reward-model score": ["reward-model", "score", "--data", "{D}/text.jsonl"],
        "judge local": ["judge", "pairs", "--data", "{D}/text.jsonl", "--out", "{O}/j.jsonl"],
    }
    for what, model in models.items():
        cases.append(Case(f"paths/eval/model:{what}", "paths", "eval",
                          ["eval", "--model", model, "--data", "{D}/text.jsonl"], "refuse", (_file_name(model),)))
        cases.append(Case(f"paths/reward-model score/model:{what}", "paths", "reward-model score",
                          [*others["reward-model score"], "--model", model], "refuse", (_file_name(model),)))
        cases.append(Case(f"paths/judge pairs/local:{what}", "paths", "judge pairs",
                          [*others["judge local"], "--judge", f"local:{model}"], "refuse", (_file_name(model),)))
    adapters = {"missing": "{W}/no-such-adapter", "empty-folder": "{D}/empty_folder", "a-model": "{M}",
                "a-file": "{W}/files/a_file", "a-run-folder": "{W}/base/train/finished",
                "checkpoint": "{W}/base/train/finished/checkpoint-2"}
    for what, adapter in adapters.items():
        cases.append(Case(f"paths/eval/adapter:{what}", "paths", "eval", [*others["eval"], "--adapter", adapter],
                          "refuse", (_file_name(adapter),)))
    cases += [
        Case("paths/eval/ref-model:missing", "paths", "eval", [*others["eval"], "--ref-model", "{W}/nope"],
             "refuse", ("nope",)),
        Case("paths/data filter/out:a-folder", "paths", "data filter",
             ["data", "filter", "{D}/text.jsonl", "--out", "{D}/empty_folder"], "refuse", ("empty_folder",)),
        Case("paths/data filter/out:under-a-file", "paths", "data filter",
             ["data", "filter", "{D}/text.jsonl", "--out", "{W}/files/a_file/x.jsonl"], "refuse", ("a_file",)),
        Case("paths/report/missing", "paths", "report", ["report", "{W}/no-such-run"], "refuse", ("no-such-run",)),
        Case("paths/report/not-a-run", "paths", "report", ["report", "{D}/empty_folder"], "refuse",
             ("empty_folder",)),
        Case("paths/report/corrupt-metrics", "paths", "report", ["report", "{O}/run"], "refuse", ("metrics.jsonl",),
             setup=_copy_with("{W}/base/train/finished", "{O}/run",
                              lambda run: (run / "metrics.jsonl").write_bytes(bytes(range(256))))),
    ]
    for trainer in ("grpo", "online-dpo"):
        argv = [*base_argv(trainer), "--output-dir", "{O}/run", "--max-steps", "1"]
        argv = argv[: argv.index("--reward-funcs")] + argv[argv.index("--reward-funcs") + 2:]
        for what, spec, names in [
            ("missing-file", "{W}/nope.py:length", ("nope.py",)),
            ("missing-function", "{D}/rewards.py:absent", ("absent",)),
            ("not-callable", "{D}/rewards.py:not_callable", ("not_callable",)),
            ("syntax-error", "{D}/broken_rewards.py:length", ("broken_rewards.py",)),
            ("raises", "{D}/rewards.py:boom", ("boom",)),
            ("nan", "{D}/rewards.py:nan", ("nan",)),
            ("wrong-count", "{D}/rewards.py:short", ("short",)),
            ("not-numbers", "{D}/rewards.py:text", ("text",)),
            ("unknown-builtin", "no_such_reward", ("no_such_reward",)),
        ]:
            cases.append(Case(f"paths/{trainer}/reward:{what}", "paths", trainer,
                              [*argv, "--reward-funcs", spec], "refuse", names))
        # The built-in reward verifies the built-in tasks only: ordinary prompts with it are refused up front.
        cases.append(Case(f"paths/{trainer}/prompts:default-reward", "paths", trainer,
                          [*argv, "--reward-funcs", "builtin"], "refuse", ("reward_funcs",)))
    return cases


def _unchanged(path: str):
    def check(ctx, result):
        target = Path(ctx.fill([path])[0])
        if not target.is_file() or target.read_text() != "a file, not a folder\n":
            return ("lost", f"{target} was changed")
        return None
    return check


def _copy_with(source: str, target: str, change):
    def setup(ctx):
        src, dst = (Path(p) for p in ctx.fill([source, target]))
        shutil.copytree(src, dst)
        change(dst)
    return setup


def build_cases() -> list[Case]:
    cases = data_cases() + config_cases() + path_cases() + fault_cases()
    names = [c.name for c in cases]
    assert len(names) == len(set(names)), "probe case names must be unique"
    return cases


def prepare(work: Path, bases: bool = True) -> None:
    """The model, the data files and (with bases) every trainer's finished and unfinished base run."""
    write_model(work / "files")
    write_data(work / "data")
    if bases:
        prepare_bases(work)
