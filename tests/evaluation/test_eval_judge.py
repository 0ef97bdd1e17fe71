"""`directalign eval --judge openai:...`: the judge's server from the spec or --judge-base-url, its key from the
environment, and neither the key nor URL credentials in anything printed or written."""

from __future__ import annotations

import json

from directalign.cli.main import main
from tests.judges.conftest import JudgeHandler
from tests.local_server import LocalServer, serving

KEY = "sk-eval-environment-key-0123456789"


def test_eval_with_an_openai_judge_behind_credentials(tiny_model_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    samples = tmp_path / "samples.jsonl"
    base = ["eval", "--model", str(tiny_model_dir), "--ref-model", str(tiny_model_dir), "--data", "builtin",
            "--limit", "2", "--generate", "--max-new-tokens", "4", "--save-samples", str(samples), "--json"]
    with serving(LocalServer(JudgeHandler)) as server:
        url = server.url_with_credentials("carol:topsecret-pw")
        assert main([*base, "--judge", f"openai:fair-judge@{url}"]) == 0
        with_spec = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert main([*base, "--judge", "openai:fair-judge", "--judge-base-url", server.base_url]) == 0
        with_option = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert main([*base, "--judge", "openai:nope", "--judge-base-url", url]) == 1
        assert server.authorizations[0].startswith("Basic ") and f"Bearer {KEY}" in server.authorizations
    captured = capsys.readouterr()
    assert with_spec["win_rate/n"] == with_option["win_rate/n"] == 2
    assert with_spec["win_rate/judge"] == f"openai:fair-judge@{server.base_url.replace('http://', 'http://***@')}"
    assert "error: the server at http://***@127.0.0.1:" in captured.err and "'nope': HTTP 404" in captured.err
    shown = json.dumps([with_spec, with_option]) + captured.out + captured.err + samples.read_text()
    assert "topsecret" not in shown and "carol" not in shown and KEY not in shown
