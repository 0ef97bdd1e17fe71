"""metrics.jsonl and the running means between logs."""

import json

import pytest

from directalign.engine.distributed import Dist
from directalign.engine.metrics import MetricsWriter, RunningMeans, read_metrics


def test_means_are_weighted_by_counts():
    means = RunningMeans()
    means.add({"loss": 1.0, "acc": 0.0}, weight=3)
    means.add({"loss": 3.0}, weight=1)
    assert means.pop(Dist()) == {"loss": pytest.approx(1.5), "acc": 0.0}
    assert means.pop(Dist()) == {}


def test_means_survive_a_checkpoint():
    means = RunningMeans()
    means.add({"loss": 2.0}, weight=2)
    restored = RunningMeans()
    restored.load_state_dict(json.loads(json.dumps(means.state_dict())))
    restored.add({"loss": 5.0}, weight=1)
    assert restored.pop(Dist()) == {"loss": pytest.approx(3.0)}


def test_a_resumed_file_keeps_events_up_to_the_checkpoint_and_skips_cut_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    events = [{"step": s, "split": "train"} for s in range(1, 6)]
    path.write_text("".join(json.dumps(e) + "\n" for e in events) + '{"step": 6, "spl')  # a kill mid-line
    writer = MetricsWriter(path)
    writer.start(resume_step=3)
    assert [e["step"] for e in read_metrics(path)] == [1, 2, 3]
    writer.write({"step": 4, "split": "train", "loss": float("nan")})
    assert read_metrics(path)[-1] == {"step": 4, "split": "train", "loss": None}  # non-finite written as null
    MetricsWriter(path).start(resume_step=None)
    assert path.read_text() == ""


def test_a_writer_on_another_process_writes_nothing(tmp_path):
    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path, enabled=False)
    writer.start(None)
    writer.write({"step": 1})
    assert not path.exists()


def test_a_damaged_last_line_is_dropped_and_one_elsewhere_is_named(tmp_path):
    from directalign.errors import DataError

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "split": "train", "loss": 0.7}\n{"step": 2, "spl')  # cut by a kill
    assert [e["step"] for e in read_metrics(path)] == [1]
    path.write_bytes(b'{"step": 1, "split": "train"}\n\xff\x00 garbage\n{"step": 2, "split": "train"}\n')
    with pytest.raises(DataError, match=r"metrics\.jsonl:2: not a metrics event"):
        read_metrics(path)


def test_a_resume_keeps_the_good_events_of_a_damaged_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "split": "train"}\n\xff garbage\n{"step": "x"}\n[1]\n'
                     b'{"step": 2, "split": "train"}\n{"step": 3, "split": "train"}\n')
    MetricsWriter(path).start(resume_step=2)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
