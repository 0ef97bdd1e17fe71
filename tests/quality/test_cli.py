from __future__ import annotations

import argparse
import json

import pytest

from directalign.cli.data_quality import register
from directalign.errors import DataError
from tests.quality.conftest import shared_path


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_agreement_table_and_json(tmp_path, capsys):
    # Cohen's kappa example of Wikipedia as a CSV of two raters: kappa 0.4.
    lines = ["item,rater,verdict"]
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    lines += [f"{i},A,{x}" for i, x in enumerate(a)] + [f"{i},B,{x}" for i, x in enumerate(b)]
    path = tmp_path / "labels.csv"
    path.write_text("\n".join(lines) + "\n")
    argv = ["agreement", str(path), "--item-col", "item", "--annotator-col", "rater", "--label-col", "verdict"]
    assert run(argv + ["--bootstrap", "50"]) == 0
    text = capsys.readouterr().out
    assert "50 items, 2 annotators, 100 labels" in text and "A vs B" in text and "0.400" in text
    assert run(argv + ["--json", "--bootstrap", "0"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["pairwise_kappa"]["A vs B"] == pytest.approx(0.4)
    assert data["percent_agreement"] == pytest.approx(0.7)


def test_agreement_error_names_file_row_and_field(tmp_path):
    path = write_jsonl(
        tmp_path / "bad.jsonl", [{"item_id": 1, "annotator_id": "a", "label": 1}, {"item_id": 2, "label": 1}]
    )
    with pytest.raises(DataError, match=r"bad.jsonl:2: missing field 'annotator_id'"):
        run(["agreement", path])


@pytest.mark.shared_data
def test_agreement_on_pandalm_wide_table(capsys):
    path = shared_path("pandalm-testset", "testset-v1.json")
    argv = ["agreement", str(path), "--item-col", "idx", "--label-cols", "annotator1,annotator2,annotator3"]
    assert run(argv + ["--json", "--bootstrap", "100"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["n_items"] == 999 and data["categories"] == [0, 1, 2]
    low, high = data["intervals"]["fleiss_kappa"]
    assert low < data["fleiss_kappa"] < high


def pair_rows() -> list[dict]:
    return [
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "score_chosen": 9, "score_rejected": 2},
        {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5", "score_chosen": 9, "score_rejected": 9},
        {
            "prompt": "Name a colour",
            "chosen": "Blue is a colour.",
            "rejected": "blue is a colour",
            "score_chosen": 8,
            "score_rejected": 3,
        },
        {"prompt": "Say hi", "chosen": "hi " * 20, "rejected": "hello", "score_chosen": 7, "score_rejected": 6},
        {
            "prompt": "Explain rain",
            "chosen": "Water falls from clouds.",
            "rejected": "No idea at all.",
            "score_chosen": 8,
            "score_rejected": 2,
        },
    ]


def test_diagnose(tmp_path, capsys):
    rows = pair_rows()
    for i, row in enumerate(rows):
        row["shown_first"] = i % 2 == 0
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    assert run(["diagnose", path, "--position-col", "shown_first"]) == 0
    text = capsys.readouterr().out
    assert "5 records, 5 pairs" in text
    assert "exact duplicates: 1 groups, 2 rows\n  row 1, row 2" in text
    assert run(["diagnose", path, "--json", "--position-col", "shown_first"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["position_bias"]["count"] == 3 and data["position_bias"]["total"] == 5
    assert data["near_identical_pairs"] == [[2, 0, 1.0]]


def test_filter_writes_loadable_pairs(tmp_path, capsys):
    path = write_jsonl(tmp_path / "pairs.jsonl", pair_rows())
    out = tmp_path / "kept.jsonl"
    argv = [
        "filter",
        path,
        "--out",
        str(out),
        "--drop-ties",
        "--min-margin",
        "2",
        "--max-length-ratio",
        "5",
        "--drop-near-identical",
        "0.9",
        "--json",
    ]
    assert run(argv) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(f["removed"], f["kept"]) for f in data["filters"]] == [(1, 4), (1, 3), (0, 3), (1, 2)]
    assert data["kept_pairs"] == 2
    from directalign.data.formats import load_records

    kept = load_records(out).records
    assert [r.prompt[0]["content"] for r in kept] == ["What is 2+2?", "Explain rain"]


def test_filter_needs_the_score_columns(tmp_path):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b"}]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError, match=r"pairs.jsonl:1: missing field 'score_chosen'"):
        run(["filter", path, "--out", str(tmp_path / "o.jsonl"), "--min-margin", "1"])


def test_aggregate_majority_and_dawid_skene(tmp_path, capsys):
    rows = [
        {"item_id": i, "annotator_id": a, "label": lab}
        for i, labels in enumerate([["A", "A", "B"], ["B", "B", "B"], ["A", "B", None]])
        for a, lab in zip(["x", "y", "z"], labels, strict=True)
        if lab is not None
    ]
    path = write_jsonl(tmp_path / "labels.jsonl", rows)
    out = tmp_path / "agg.csv"
    assert run(["aggregate", path, "--out", str(out)]) == 0
    assert "3 items aggregated by majority" in capsys.readouterr().out
    lines = out.read_text().splitlines()
    assert lines[0].startswith("item_id,label,confidence,agreement,n_labels,tied")
    assert lines[3].startswith("2,,0.0,0.0,2,")
    out = tmp_path / "agg.jsonl"
    assert run(["aggregate", path, "--out", str(out), "--method", "dawid-skene", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["reliability"]) == {"x", "y", "z"}
    labels = [json.loads(line)["label"] for line in out.read_text().splitlines()]
    assert labels[:2] == ["A", "B"]


def test_calibration(tmp_path, capsys):
    rows = [{"item_id": f"g{i}", "annotator_id": "good", "label": "yes"} for i in range(10)]
    rows += [{"item_id": f"g{i}", "annotator_id": "bad", "label": "yes" if i < 3 else "no"} for i in range(10)]
    path = write_jsonl(tmp_path / "labels.jsonl", rows)
    gold = write_jsonl(tmp_path / "gold.jsonl", [{"item_id": f"g{i}", "label": "yes"} for i in range(10)])
    assert run(["calibration", path, "--gold", gold]) == 0
    text = capsys.readouterr().out
    assert "2 annotators, 1 flagged" in text and "FLAG: accuracy 0.30 < 0.70" in text
    assert run(["calibration", path, "--gold", gold, "--json", "--window", "5"]) == 0
    data = json.loads(capsys.readouterr().out)
    bad = next(a for a in data["annotators"] if a["annotator"] == "bad")
    assert bad["window_accuracy"] == [0.6, 0.0]


def test_main_prints_data_errors_in_one_line(tmp_path, capsys):
    from directalign.cli.main import main

    path = write_jsonl(tmp_path / "x.jsonl", [{"item_id": 1, "annotator_id": "a", "label": [1, 2]}])
    assert main(["data", "agreement", path]) == 1
    err = capsys.readouterr().err
    assert err.strip().count("\n") == 0 and "x.jsonl:1: field 'label'" in err


def test_agreement_ratings_on_krippendorff_2011(tmp_path, capsys):
    from tests.quality.conftest import long_rows
    from tests.quality.test_agreement import KRIPPENDORFF_2011

    path = write_jsonl(tmp_path / "ratings.jsonl", long_rows(KRIPPENDORFF_2011))
    assert run(["agreement", path, "--ratings", "--json", "--bootstrap", "0"]) == 0
    alpha = json.loads(capsys.readouterr().out)["alpha"]
    assert alpha == pytest.approx({"nominal": 0.743, "ordinal": 0.815, "interval": 0.849}, abs=5e-4)


def test_filter_error_names_row_and_field_of_a_bad_score(tmp_path):
    rows = pair_rows()
    rows[2]["score_rejected"] = "high"
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    with pytest.raises(DataError, match=r"pairs.jsonl:3: field 'score_rejected': must be a number, found 'high'"):
        run(["filter", path, "--out", str(tmp_path / "o.jsonl"), "--min-margin", "1"])


def test_pairs_from_scored_rows_load_as_ranked_records(tmp_path, capsys):
    from directalign.data.formats import load_records

    source = write_jsonl(tmp_path / "rated.jsonl", [
        {"prompt": "q1", "responses": ["a", "b", "c"], "scores": [1, 6, 4]},
        {"prompt": "q2", "responses": ["a", "b"], "scores": [2, 2]},  # a tie: no pair
    ])
    out = tmp_path / "pairs.jsonl"
    assert run(["pairs", source, "--out", str(out), "--strategy", "all-pairs", "--min-margin", "2.5"]) == 0
    text = capsys.readouterr().out
    assert "2 prompts with 5 scored responses" in text and "2 pairs from 1 prompts; 1 prompts gave none" in text
    assert "rated.jsonl:2: no pair (scores [2.0, 2.0])" in text
    loaded = load_records(str(out))
    assert loaded.schema == "ranked"
    [record] = loaded.records
    assert record.pairs == [(1, 0), (2, 0)]  # 6-1 and 4-1 reach the margin, 6-4 does not


def test_pairs_names_the_row_of_bad_scores(tmp_path):
    source = write_jsonl(tmp_path / "rated.jsonl", [{"prompt": "q", "responses": ["a", "b"], "scores": [1]}])
    with pytest.raises(DataError, match=r"rated.jsonl:1: scores must be 2 numbers"):
        run(["pairs", source, "--out", str(tmp_path / "out.jsonl")])


def test_pairs_from_openassistant_ranks(tmp_path, capsys):
    path = shared_path("oasst-en-100-trees", "en_100_tree.jsonl")
    out = tmp_path / "oasst.jsonl"
    assert run(["pairs", f"oasst:{path}", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["prompts"] == summary["records"] == summary["pairs"] == 212  # best vs worst: one each
