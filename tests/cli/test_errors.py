"""User errors on the command line: one line, exit 1, no traceback, for flags as for config keys."""

import errno
import json

import pytest

from directalign.cli.main import main, os_error_message


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "--data", "x.jsonl", "--batch-size", "0"], "argument --batch-size: must be >= 1; got 0"),
        (["eval", "--data", "x.jsonl", "--beta", "-1"], "argument --beta: must be > 0; got -1"),
        (["data", "filter", "x.jsonl", "--out", "y", "--min-margin", "nan"], "must be a finite number; got nan"),
        (["data", "diagnose", "x.jsonl", "--duplicate-threshold", "2"], "must be in [0, 1]; got 2"),
        (["judge", "validate", "--human", "x", "--judge", "a:b", "--limit", "abc"], "'abc' is not an integer"),
        (["eval"], "the following arguments are required: --data"),
        (["no-such-command"], "invalid choice: 'no-such-command'"),
    ],
)
def test_a_bad_flag_is_one_line_and_exit_1(capsys, argv, message):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "usage:" not in err and "Traceback" not in err


def test_a_path_through_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "d.jsonl").write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n')
    code = main(["data", "filter", str(tmp_path / "d.jsonl"), "--out", str(tmp_path / "a_file" / "out.jsonl")])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and "a_file" in err and err.count("\n") == 1


def test_a_full_disk_says_how_to_go_on():
    message = os_error_message(OSError(errno.ENOSPC, "No space left on device", "/runs/x/adapter"))
    assert message.startswith("/runs/x/adapter: No space left on device; free space and rerun")


@pytest.mark.parametrize("command", [["data", "diagnose"], ["data", "filter"]])
def test_every_command_that_reads_pairs_says_which_rows_it_skipped(tmp_path, capsys, command):
    rows = [json.dumps({"prompt": f"p{i}", "chosen": f"a{i}", "rejected": "b"}) for i in range(4)]
    rows.insert(2, '{"prompt": "p", "chosen": 7, "rejected": "b"}')
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join(rows) + "\n")
    extra = ["--out", str(tmp_path / "out.jsonl")] if command[1] == "filter" else []
    assert main([*command, str(data), *extra]) == 0
    err = capsys.readouterr().err
    assert f"{data}: skipped 1 of 5 rows" in err and f"{data}:3:" in err
