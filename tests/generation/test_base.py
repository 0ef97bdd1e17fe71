from __future__ import annotations

import sys
import types

import pytest

from directalign.errors import ConfigError
from directalign.generation.base import Completion, GenerationConfig, make_generator, repeat_greedy


def test_config_defaults_sample_from_the_policy():
    config = GenerationConfig()
    assert (config.temperature, config.top_p, config.top_k, config.num_samples) == (1.0, 1.0, 0, 1)
    assert not config.greedy
    assert GenerationConfig(temperature=0).greedy


def test_config_takes_a_single_stop_string():
    assert GenerationConfig(stop="###").stop == ["###"]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("max_new_tokens", 0, "max_new_tokens must be >= 1, got 0"),
        ("temperature", -0.1, "temperature must be >= 0"),
        ("top_p", 0.0, r"top_p must be in \(0, 1\]"),
        ("top_p", 1.5, r"top_p must be in \(0, 1\], got 1.5"),
        ("top_k", -1, "top_k must be >= 0"),
        ("num_samples", 0, "num_samples must be >= 1"),
        ("stop", [""], "stop must be a list of non-empty strings"),
    ],
)
def test_config_rejects_invalid_values(field, value, message):
    with pytest.raises(ConfigError, match=message):
        GenerationConfig(**{field: value})


def test_unknown_backend_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown generation backend 'vlm' \(did you mean 'vllm'\?\)"):
        make_generator("vlm")


def test_missing_vllm_is_a_config_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail as if not installed
    with pytest.raises(ConfigError, match="backend 'vllm' needs the vllm package"):
        make_generator("vllm", model="HuggingFaceTB/SmolLM2-135M-Instruct")


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeLLM:
    """Stands in for vllm.LLM: records its calls and answers n outputs per prompt."""

    def __init__(self, **kwargs):
        self.init_kwargs = kwargs
        self.calls = []

    def chat(self, prompts, params, use_tqdm=True):
        self.calls.append((prompts, params))
        return [
            types.SimpleNamespace(
                outputs=[
                    types.SimpleNamespace(
                        text=f"{prompt[-1]['content']} #{j}", token_ids=(40, j), finish_reason="length" if j else "stop"
                    )
                    for j in range(p.kwargs["n"])
                ]
            )
            for prompt, p in zip(prompts, params, strict=True)
        ]


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = FakeSamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return module


def test_vllm_backend_maps_the_config_to_sampling_params(fake_vllm):
    generator = make_generator("vllm", model="some/model", gpu_memory_utilization=0.3)
    assert generator.llm.init_kwargs == {"model": "some/model", "gpu_memory_utilization": 0.3}
    prompts = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    out = generator.generate(prompts, GenerationConfig(max_new_tokens=7, num_samples=2, top_p=0.8, seed=3, stop="!"))
    _, params = generator.llm.calls[0]
    assert params[1].kwargs == {
        "n": 2, "temperature": 1.0, "top_p": 0.8, "top_k": -1, "max_tokens": 7, "seed": 4, "stop": ["!"]
    }  # fmt: skip
    assert params[0].kwargs["seed"] == 3
    assert out == [
        [Completion("a #0", [40, 0], "stop"), Completion("a #1", [40, 1], "length")],
        [Completion("b #0", [40, 0], "stop"), Completion("b #1", [40, 1], "length")],
    ]


def test_vllm_backend_greedy_samples_once(fake_vllm):
    generator = make_generator("vllm", model=FakeLLM())
    out = generator.generate([[{"role": "user", "content": "a"}]], GenerationConfig(temperature=0, num_samples=3))
    assert generator.llm.calls[0][1][0].kwargs["n"] == 1
    assert out == [[Completion("a #0", [40, 0], "stop")] * 3]


def test_greedy_copies_do_not_share_token_lists():
    copies = repeat_greedy(Completion("hi", [5, 2], "stop"), 3)
    copies[0].token_ids.append(9)
    assert [c.token_ids for c in copies] == [[5, 2, 9], [5, 2], [5, 2]]


def test_real_vllm_samples_from_the_embedded_model():
    """The real engine, where it can run (Linux + CUDA + `pip install vllm`); the stand-in above covers the rest."""
    vllm = pytest.importorskip("vllm", reason="vllm is not installed (it needs Linux with a CUDA GPU)")
    import torch

    if not torch.cuda.is_available():
        pytest.skip("vllm is installed but no CUDA device is visible")
    from directalign.generation.base import GenerationConfig
    from directalign.models.loading import resolve_model

    llm = vllm.LLM(model=resolve_model("smollm2-135m-instruct"), gpu_memory_utilization=0.3, seed=0)
    generator = make_generator("vllm", model=llm)
    config = GenerationConfig(max_new_tokens=8, temperature=0.8, num_samples=3, seed=0)
    [samples] = generator.generate([[{"role": "user", "content": "Name a colour."}]], config)
    assert len(samples) == 3
    assert all(s.token_ids and len(s.token_ids) <= 8 and s.finish_reason in ("stop", "length") for s in samples)
