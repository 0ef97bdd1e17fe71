"""The OpenAI-compatible backend against a real HTTP server on 127.0.0.1 that the test starts and stops."""

from __future__ import annotations

import base64
import logging
import socket
import sys

import pytest

pytest.importorskip("openai")

from directalign.errors import ConfigError  # noqa: E402
from directalign.generation.base import GenerationConfig, make_generator  # noqa: E402
from directalign.generation.openai_backend import OpenAIGenerator  # noqa: E402
from tests.local_server import JSONHandler, LocalServer, serving  # noqa: E402

PROMPTS = [
    [{"role": "system", "content": "Echo."}, {"role": "user", "content": "one two three"}],
    [{"role": "user", "content": "a b c d e f g h"}],
]


class FakeChatServer(LocalServer):
    """POST /v1/chat/completions: choice i echoes the last user message, cut to max_tokens words, plus "#i".

    max_choices imitates servers that ignore n (llama.cpp, Ollama). Request bodies are kept in `requests`.
    """

    def __init__(self, max_choices: int | None = None):
        super().__init__(ChatHandler)
        self.max_choices = max_choices


class ChatHandler(JSONHandler):
    def do_POST(self):  # noqa: N802 (the http.server API)
        if self.path != "/v1/chat/completions":
            return self.reply(404, {"error": {"message": f"no route {self.path}"}})
        body = self.read_json()
        if body["model"] != "tiny-echo":
            return self.reply(404, {"error": {"message": f"model {body['model']} not found"}})
        words = body["messages"][-1]["content"].split()
        cut = words[: body["max_tokens"]]
        n = body.get("n", 1) if self.server.max_choices is None else min(body.get("n", 1), self.server.max_choices)
        choices = [
            {
                "index": i,
                "message": {"role": "assistant", "content": " ".join(cut) + f" #{i} seed={body.get('seed')}"},
                "finish_reason": "length" if len(cut) < len(words) else "stop",
            }
            for i in range(n)
        ]
        self.chat_completion(body["model"], choices)


@pytest.fixture(autouse=True)
def no_openai_environment(monkeypatch):
    """The tests set OPENAI_API_KEY and OPENAI_BASE_URL themselves; the developer's own must not leak in."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)


@pytest.fixture
def server():
    with serving(FakeChatServer()) as running:
        yield running


@pytest.fixture
def single_choice_server():
    with serving(FakeChatServer(max_choices=1)) as running:
        yield running


def generator_for(server: FakeChatServer, **kwargs) -> OpenAIGenerator:
    return make_generator("openai", model="tiny-echo", base_url=server.base_url, timeout=10, max_retries=0, **kwargs)


def test_sampling_settings_and_messages_go_over_the_wire(server):
    config = GenerationConfig(
        max_new_tokens=3, temperature=0.7, top_p=0.9, top_k=20, num_samples=2, seed=5, stop=["###"]
    )
    out = generator_for(server).generate(PROMPTS, config)
    assert len(server.requests) == 2
    by_prompt = sorted(server.requests, key=lambda body: len(body["messages"]), reverse=True)
    for body, prompt in zip(by_prompt, PROMPTS, strict=True):
        assert body["messages"] == prompt
        assert (body["n"], body["max_tokens"], body["temperature"], body["top_p"]) == (2, 3, 0.7, 0.9)
        assert (body["top_k"], body["stop"]) == (20, ["###"])
    assert sorted(body["seed"] for body in server.requests) == [5, 6]  # seed + prompt index
    assert server.authorizations == ["Bearer EMPTY", "Bearer EMPTY"]
    assert [[c.text for c in samples] for samples in out] == [
        ["one two three #0 seed=5", "one two three #1 seed=5"],
        ["a b c #0 seed=6", "a b c #1 seed=6"],
    ]
    assert [[c.finish_reason for c in samples] for samples in out] == [["stop", "stop"], ["length", "length"]]
    assert out[0][0].token_ids is None


def test_unset_options_are_not_sent(server):
    generator_for(server).generate(PROMPTS[:1], GenerationConfig(max_new_tokens=4))
    (body,) = server.requests
    assert "seed" not in body and "stop" not in body and "top_k" not in body


def test_greedy_asks_once_and_repeats(server):
    out = generator_for(server).generate(PROMPTS[:1], GenerationConfig(max_new_tokens=4, temperature=0, num_samples=3))
    (body,) = server.requests
    assert (body["n"], body["temperature"]) == (1, 0)
    assert [c.text for c in out[0]] == ["one two three #0 seed=None"] * 3


def test_servers_that_ignore_n_are_asked_again_with_new_seeds(single_choice_server):
    generator = generator_for(single_choice_server)
    out = generator.generate(PROMPTS, GenerationConfig(max_new_tokens=8, num_samples=3, seed=10))
    assert [len(samples) for samples in out] == [3, 3]
    first = [body for body in single_choice_server.requests if len(body["messages"]) == 2]
    assert [body["n"] for body in first] == [3, 2, 1]
    assert [body["seed"] for body in first] == [10, 12, 14]  # seed + index + request * number of prompts
    assert [c.text for c in out[0]] == [f"one two three #0 seed={s}" for s in (10, 12, 14)]


def test_unknown_model_is_a_config_error(server):
    generator = make_generator("openai", model="nope", base_url=server.base_url, max_retries=0)
    with pytest.raises(ConfigError, match=r"refused the request for model 'nope': HTTP 404 .*model nope not found"):
        generator.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=2))


def test_unreachable_server_is_a_config_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # The port is closed again: nothing listens there.
    generator = make_generator("openai", model="m", base_url=f"http://127.0.0.1:{port}/v1", timeout=5, max_retries=0)
    with pytest.raises(ConfigError, match=f"cannot reach an OpenAI-compatible server at http://127.0.0.1:{port}/v1"):
        generator.generate(PROMPTS[:1], GenerationConfig(max_new_tokens=2))


def test_missing_openai_package_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "openai", None)  # makes `import openai` fail as if not installed
    with pytest.raises(ConfigError, match="pip install openai"):
        make_generator("openai", model="m")


ENV_KEY = "sk-test-environment-key-0123456789"
TWO_TOKENS = GenerationConfig(max_new_tokens=2)


def test_the_environment_key_is_sent_as_the_bearer_token_and_an_explicit_key_wins(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    generator_for(server).generate(PROMPTS[:1], TWO_TOKENS)
    generator_for(server, api_key="explicit-key-0123").generate(PROMPTS[:1], TWO_TOKENS)
    assert server.authorizations == [f"Bearer {ENV_KEY}", "Bearer explicit-key-0123"]


def test_openai_base_url_is_honoured_when_no_base_url_is_given(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    out = make_generator("openai", model="tiny-echo", max_retries=0).generate(PROMPTS[:1], TWO_TOKENS)
    assert out[0][0].text == "one two #0 seed=None" and len(server.requests) == 1


def test_credentials_in_the_url_are_used_but_never_shown(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    url = server.url_with_credentials("alice:s3cret-pa%40ss")
    generator = make_generator("openai", model="tiny-echo", base_url=url, max_retries=0)
    generator.generate(PROMPTS[:1], TWO_TOKENS)
    # httpx turns URL credentials into HTTP Basic authentication, which takes the place of the bearer key.
    assert server.authorizations == ["Basic " + base64.b64encode(b"alice:s3cret-pa@ss").decode()]
    assert generator.base_url == server.base_url.replace("http://", "http://***@")
    with pytest.raises(ConfigError) as refused:
        make_generator("openai", model="nope", base_url=url, max_retries=0).generate(PROMPTS[:1], TWO_TOKENS)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = f"http://alice:s3cret-pa%40ss@127.0.0.1:{probe.getsockname()[1]}/v1?api_key={ENV_KEY}"
    with pytest.raises(ConfigError) as unreachable:
        make_generator("openai", model="m", base_url=closed, max_retries=0).generate(PROMPTS[:1], TWO_TOKENS)
    for error in (refused.value, unreachable.value):
        message = str(error)
        assert "http://***@127.0.0.1:" in message
        assert "s3cret" not in message and "alice" not in message and ENV_KEY not in message
        assert error.__cause__ is None and error.__suppress_context__  # --debug's traceback cannot show them


def test_request_logs_do_not_show_url_credentials(server, caplog):
    url = server.url_with_credentials("alice:s3cret-pw")
    with caplog.at_level(logging.DEBUG):
        make_generator("openai", model="tiny-echo", base_url=url, max_retries=0).generate(PROMPTS[:1], TWO_TOKENS)
    assert "HTTP Request: POST http://***@127.0.0.1:" in caplog.text and "s3cret" not in caplog.text
