"""The OpenAI-compatible backend and the pairwise judge against a server nobody here wrote: llama-cpp-python's
(`python -m llama_cpp.server`) serving the embedded model's GGUF on a free 127.0.0.1 port.

Skipped, with the reason, where llama-cpp-python's server is not installed (`pip install 'llama-cpp-python[server]'`
builds llama.cpp from source, 10-20 minutes on two cores; CI does not build it).
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

from directalign.generation.base import GenerationConfig
from directalign.models.loading import DEFAULT_MODEL, EMBEDDED_MODELS, _gguf_path, load_model, load_tokenizer

pytestmark = pytest.mark.real_server

# llama-cpp-python[server]'s modules, and the client.
SERVER_MODULES = ("llama_cpp", "fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings",
                  "openai")  # fmt: skip
ALIAS = "smollm2-135m-instruct"
ARITHMETIC = [{"role": "user", "content": "What is 2 + 2?"}]
COLOUR = [{"role": "user", "content": "Name a colour."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(base_url: str, process: subprocess.Popen, log_path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"llama_cpp.server did not answer within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    missing = [name for name in SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"llama-cpp-python's server is not installed here (missing {', '.join(missing)}): "
                    "pip install 'llama-cpp-python[server]' openai")  # fmt: skip
    gguf = _gguf_path(EMBEDDED_MODELS[DEFAULT_MODEL])
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama-server") / "server.log"
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", ALIAS,
               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "2"]  # fmt: skip
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_serving(base_url, process, log_path)
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def test_models_endpoint_lists_the_embedded_model(llama_server):
    with urllib.request.urlopen(f"{llama_server}/models", timeout=10) as response:
        listed = json.load(response)
    assert [m["id"] for m in listed["data"]] == [ALIAS]


def test_openai_backend_gets_real_completions(llama_server):
    from directalign.generation.openai_backend import OpenAIGenerator

    generator = OpenAIGenerator(ALIAS, base_url=llama_server, timeout=120, max_retries=0, concurrency=2)
    [greedy] = generator.generate([ARITHMETIC], GenerationConfig(max_new_tokens=16, temperature=0, num_samples=2))
    assert greedy[0] == greedy[1] and "4" in greedy[0].text
    # The server runs the model directalign loads: its greedy first token is among transformers' three likeliest
    # (not always the first: llama.cpp multiplies the Q4_1 weights with 8-bit activations, which can swap a
    # near-tie).
    tokenizer, model = load_tokenizer(), load_model()
    prompt = tokenizer.apply_chat_template(ARITHMETIC, add_generation_prompt=True, tokenize=False)
    with torch.no_grad():
        logits = model(tokenizer(prompt, add_special_tokens=False, return_tensors="pt").input_ids).logits[0, -1]
    first = tokenizer(greedy[0].text, add_special_tokens=False).input_ids[0]
    assert first in logits.topk(3).indices.tolist()
    # llama.cpp answers one choice per request whatever n says: the backend asks again, one seed per request.
    sampled_config = GenerationConfig(max_new_tokens=12, temperature=1.0, num_samples=3, seed=7)
    [sampled] = generator.generate([COLOUR], sampled_config)
    assert len(sampled) == 3 and all(c.text.strip() for c in sampled)
    assert len({c.text for c in sampled}) > 1  # distinct samples, not one repeated
    assert all(c.finish_reason in ("stop", "length") for c in sampled)
    [again] = generator.generate([COLOUR], sampled_config)
    assert [c.text for c in again] == [c.text for c in sampled]  # the seeds reach the server's sampler


def test_pairwise_judge_gets_real_verdicts_in_both_orders(llama_server):
    from directalign.judges.backends import OpenAIJudge
    from directalign.judges.pairwise import judge_pairs, summarize

    judge = OpenAIJudge(ALIAS, base_url=llama_server, max_tokens=64, timeout=120, max_retries=0, concurrency=2)
    prompts = ["What is the capital of France?", "What is 2 + 2?"]
    judgements = judge_pairs(judge, prompts, ["Paris.", "5"], ["Berlin.", "4"])
    assert len(judgements) == 2
    for judgement in judgements:
        assert len(judgement.verdicts) == 2  # both orders were asked
        assert all(v.raw.strip() for v in judgement.verdicts)  # the server's own words came back
    # The JSON verdict format survives a real model: greedy, so the same verdicts parse on every run.
    assert sum(v.parsed for judgement in judgements for v in judgement.verdicts) >= 2
    summary = summarize(judgements)
    assert summary.n == 2 and summary.wins_a + summary.wins_b + summary.ties + summary.unparseable == 2
