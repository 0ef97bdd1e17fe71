"""Adapters from public multi-annotator data sets to this package's long tables, records and scored responses.

Each takes the data set's folder as published (see its SOURCE.md) and returns plain rows
{"item_id", "annotator_id", "label"}, PreferenceRecords, or ScoredResponses:
- PandaLM test set (WeOpenML/PandaLM data/testset-v1.json): 999 pairs, three human annotators, ties allowed.
- AlpacaEval (tatsu-lab/alpaca_eval results/<model>/<judge>/annotations.json): three LLM judges, 805 pairs.
- XSTest (paul-rottger/exaggerated-safety model_completions/*.csv): two human annotators per completion.
- LLMBar (princeton-nlp/LLMBar Dataset/**/dataset.json): one gold label per pair.
- Vicuna-80 (lm-sys/FastChat fastchat/eval/table): GPT-4 1-10 scores of 7 models' answers.
- OpenAssistant 100 trees (LAION-AI/Open-Assistant en_100_tree.jsonl): crowd-ranked sibling replies.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from directalign.data.types import PreferenceRecord
from directalign.errors import DataError
from directalign.quality.pairs import ScoredResponses

PANDALM_LABELS = {0: "tie", 1: "response1", 2: "response2"}
PANDALM_HUMANS = ("annotator1", "annotator2", "annotator3")
ALPACA_EVAL_JUDGES = (
    "alpaca_eval_gpt4_turbo_fn",
    "alpaca_eval_cot_gpt4_turbo_fn",
    "weighted_alpaca_eval_gpt4_turbo",
)


def pandalm_labels(folder: str | Path, judges: bool = False) -> list[dict[str, Any]]:
    """Long table of the PandaLM test set: three humans (annotator1..3) an item; tie/response1/response2.

    judges=True adds the gpt-3.5-turbo and PandaLM-7B verdicts as two more annotators (an unparsed
    gpt-3.5-turbo answer, "garbage", becomes a missing label).
    """
    folder = Path(folder)
    rows = []
    for number, row in enumerate(_json(folder / "testset-v1.json"), start=1):
        for name in PANDALM_HUMANS:
            label = _pandalm_label(row.get(name), folder / "testset-v1.json", number, name)
            rows.append({"item_id": str(row["idx"]), "annotator_id": name, "label": label})
    if judges:
        gpt = {"1": "response1", "2": "response2", "tie": "tie"}
        for row in _json(folder / "gpt-3.5-turbo-testset-v1.json"):
            label = gpt.get(str(row["gpt_result"]).strip().lower())
            rows.append({"item_id": str(row["idx"]), "annotator_id": "gpt-3.5-turbo", "label": label})
        for number, row in enumerate(_json(folder / "pandalm-7b-testset-v1.json"), start=1):
            label = _pandalm_label(row["pandalm_result"], folder / "pandalm-7b-testset-v1.json", number, "")
            rows.append({"item_id": str(row["idx"]), "annotator_id": "pandalm-7b", "label": label})
    return rows


def pandalm_records(folder: str | Path) -> tuple[list[PreferenceRecord], list[float]]:
    """Pairs from the human majority of the PandaLM test set (ties and 3-way splits dropped), with agreement.

    Returns the records and, parallel to them, the share of the three annotators who gave the majority label.
    """
    path = Path(folder) / "testset-v1.json"
    records, agreement = [], []
    for number, row in enumerate(_json(path), start=1):
        votes = Counter(row[name] for name in PANDALM_HUMANS)
        label, count = votes.most_common(1)[0]
        if label == 0 or count < 2:
            continue
        prompt = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
        chosen, rejected = (row["response1"], row["response2"])[:: 1 if label == 1 else -1]
        records.append(_record(prompt, chosen, rejected, f"{path}:{number}"))
        agreement.append(count / len(PANDALM_HUMANS))
    return records, agreement


def alpaca_eval_labels(folder: str | Path) -> list[dict[str, Any]]:
    """Long table of three AlpacaEval judges on the same 805 pairs: labels output_1 / output_2 / tie.

    `preference` is 1 (output_1 better) or 2, a real number in [1, 2] for the weighted judge; it is rounded,
    and exactly 1.5 is a tie. Rows are matched across the judges' files by position (same instruction,
    checked).
    """
    folder = Path(folder)
    rows, instructions = [], None
    for judge in ALPACA_EVAL_JUDGES:
        path = folder / f"{judge}.annotations.json.gz"
        data = _json(path)
        if instructions is None:
            instructions = [r["instruction"] for r in data]
        for number, row in enumerate(data, start=1):
            if number > len(instructions) or row["instruction"] != instructions[number - 1]:
                raise DataError(f"{path}:{number}: field 'instruction' does not match the first judge's row")
            rows.append({"item_id": number - 1, "annotator_id": judge, "label": _alpaca_label(row["preference"])})
    return rows


def xstest_labels(folder: str | Path) -> list[dict[str, Any]]:
    """Long table of XSTest's two human annotators on 5 models x 450 completions (item "model:id").

    Labels: 1_full_compliance, 2_full_refusal, 3_partial_refusal.
    """
    rows = []
    for path in sorted((Path(folder) / "model_completions").glob("*.csv")):
        model = path.stem.removeprefix("xstest_v2_completions_")
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                for name in ("annotation_1", "annotation_2"):
                    rows.append({"item_id": f"{model}:{row['id']}", "annotator_id": name, "label": row[name]})
    if not rows:
        raise DataError(f"{folder}: no model_completions/*.csv files")
    return rows


def llmbar_records(path: str | Path) -> list[PreferenceRecord]:
    """LLMBar pairs {input, output_1, output_2, label 1|2}: the gold label picks the chosen output."""
    records = []
    for number, row in enumerate(_json(Path(path)), start=1):
        if row.get("label") not in (1, 2):
            raise DataError(f"{path}:{number}: field 'label' must be 1 or 2, found {row.get('label')!r}")
        chosen, rejected = (row["output_1"], row["output_2"])[:: 1 if row["label"] == 1 else -1]
        records.append(_record(row["input"], chosen, rejected, f"{path}:{number}"))
    return records


def vicuna80_scored(folder: str | Path) -> list[ScoredResponses]:
    """The 80 Vicuna questions with their 7 models' answers, each scored by its mean GPT-4 review score.

    Every answer is reviewed 3-4 times (once per pairing it appears in), each review scoring it 1-10 (0 for an
    empty answer); the mean of those scores is the answer's score.
    """
    folder = Path(folder)
    questions = {r["question_id"]: r["text"] for r in _jsonl(folder / "question.jsonl")}
    answers: dict[int, list[dict]] = defaultdict(list)
    for path in sorted((folder / "answer").glob("*.jsonl")):
        for row in _jsonl(path):
            answers[row["question_id"]].append(row)
    scores: dict[str, list[float]] = defaultdict(list)
    for path in sorted((folder / "review").glob("*/*.jsonl")):
        for row in _jsonl(path):
            scores[row["answer1_id"]].append(float(row["score"][0]))
            scores[row["answer2_id"]].append(float(row["score"][1]))
    items = []
    for qid, text in questions.items():
        scored = [a for a in answers[qid] if scores.get(a["answer_id"])]
        items.append(
            ScoredResponses(
                prompt=text,
                responses=[a["text"] for a in scored],
                scores=[sum(scores[a["answer_id"]]) / len(scores[a["answer_id"]]) for a in scored],
                source=f"{folder / 'question.jsonl'}:question {qid}",
            )
        )
    return items


def oasst_scored(path: str | Path) -> list[ScoredResponses]:
    """Every turn of the OpenAssistant trees where two or more ranked assistant replies answer the same
    conversation: the conversation so far as the prompt, the replies as responses, score = -rank (rank 0 is the
    crowd's best). Unranked, deleted and non-assistant replies are left out."""
    path = Path(path)
    items: list[ScoredResponses] = []

    def walk(node: dict, history: list[dict], tree: str) -> None:
        turn = history + [{"role": "user" if node["role"] == "prompter" else "assistant", "content": node["text"]}]
        replies = node.get("replies") or []
        if node["role"] == "prompter":
            ranked = [r for r in replies if r["role"] == "assistant" and r.get("rank") is not None
                      and not r.get("deleted")]
            if len(ranked) >= 2:
                items.append(ScoredResponses(
                    prompt=turn, responses=[r["text"] for r in ranked], scores=[float(-r["rank"]) for r in ranked],
                    source=f"{path}:tree {tree} message {node['message_id']}",
                ))
        for reply in replies:
            walk(reply, turn, tree)

    for row in _jsonl(path):
        walk(row["prompt"], [], row["message_tree_id"])
    return items


def vicuna80_score_labels(folder: str | Path) -> list[dict[str, Any]]:
    """Long table of GPT-4's 1-10 scores of each Vicuna-80 answer, one "annotator" per review file.

    An answer is scored once in every pairing it takes part in (3-4 review files), so the agreement of these
    scores measures how consistently the judge scores the same answer against different opponents.
    """
    rows = []
    for path in sorted((Path(folder) / "review").glob("*/*.jsonl")):
        judge = f"{path.parent.name}/{path.stem}"
        for row in _jsonl(path):
            for key, score in zip(("answer1_id", "answer2_id"), row["score"], strict=True):
                rows.append({"item_id": row[key], "annotator_id": judge, "label": float(score)})
    if not rows:
        raise DataError(f"{folder}: no review/*/*.jsonl files")
    return rows


def _record(prompt: str, chosen: str, rejected: str, source: str) -> PreferenceRecord:
    return PreferenceRecord(
        prompt=[{"role": "user", "content": prompt}],
        responses=[[{"role": "assistant", "content": chosen}], [{"role": "assistant", "content": rejected}]],
        pairs=[(0, 1)],
        source=source,
    )


def _pandalm_label(value: Any, path: Path, number: int, field: str) -> str:
    if value not in PANDALM_LABELS:
        raise DataError(f"{path}:{number}: field {field!r} must be 0, 1 or 2, found {value!r}")
    return PANDALM_LABELS[value]


def _alpaca_label(preference: Any) -> str | None:
    if preference is None:
        return None
    value = float(preference)
    return "tie" if value == 1.5 else ("output_1" if value < 1.5 else "output_2")


def _json(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows")
    return data


def _jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
