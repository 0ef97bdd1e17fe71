"""Native bf16 detection and the warning for bf16 on a CPU that emulates it."""

from __future__ import annotations

import json

import pytest
import torch

from directalign.models import cpu


@pytest.fixture(autouse=True)
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("DIRECTALIGN_HOME", str(tmp_path))
    cpu.native_bf16.cache_clear()
    yield
    cpu.native_bf16.cache_clear()


@pytest.mark.parametrize(("flags", "native"), [
    ({"avx2", "fma"}, False),
    ({"avx2", "avx512f", "avx512bw"}, False),
    ({"avx512f", "avx512_bf16"}, True),
    ({"amx_bf16", "amx_tile"}, True),
])
def test_native_bf16_reads_the_cpu_flags(monkeypatch, flags, native):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: flags)
    assert cpu.native_bf16() is native


def test_without_cpuinfo_torch_capability_decides(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", set)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert cpu.native_bf16() is False


def test_the_slowdown_is_measured_once_and_cached(tmp_path, monkeypatch):
    calls = []

    def timed(dtype, size, repeats):
        calls.append(dtype)
        return 0.05 if dtype == torch.bfloat16 else 0.01

    monkeypatch.setattr(cpu, "_time_matmul", timed)
    assert cpu.bf16_slowdown() == pytest.approx(5.0)
    assert cpu.bf16_slowdown() == pytest.approx(5.0) and len(calls) == 2  # the second read the cache
    assert json.loads((tmp_path / cpu.CACHE_FILE).read_text())["slowdown"] == pytest.approx(5.0)
    (tmp_path / cpu.CACHE_FILE).write_text("not json")
    assert cpu.bf16_slowdown() == pytest.approx(5.0) and len(calls) == 4  # a broken cache is re-measured


def test_a_real_measurement_is_a_positive_ratio():
    assert cpu.bf16_slowdown(size=64, repeats=2, cache=False) > 0


def test_the_warning_names_the_slowdown_and_the_remedy(monkeypatch):
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx2"})
    monkeypatch.setattr(cpu, "bf16_slowdown", lambda: 6.3)
    assert cpu.bf16_warning("cpu") == ("warning: bf16 on this CPU (no AVX512_BF16 or AMX) is emulated: a bf16 "
                                       "matmul took 6.3x the fp32 time here; set bf16 false (fp32) for speed")
    assert cpu.bf16_warning("cuda") is None
    monkeypatch.setattr(cpu, "cpu_flags", lambda: {"avx512_bf16"})
    cpu.native_bf16.cache_clear()
    assert cpu.bf16_warning("cpu") is None


def test_a_bf16_run_prints_the_warning(monkeypatch, tiny_model_dir, tmp_path, capsys):
    from directalign.config import load_config
    from directalign.engine import run as run_module
    from directalign.training.dpo import train

    monkeypatch.setattr(run_module, "bf16_warning", lambda device: f"warning: emulated bf16 on {device}")
    train(load_config("train", overrides=dict(model=str(tiny_model_dir), output_dir=str(tmp_path / "run"), bf16=True,
                                              max_steps=1, builtin_train_pairs=4, builtin_eval_pairs=0,
                                              kl_prompts=0)))
    out = capsys.readouterr()
    assert "warning: emulated bf16 on cpu" in out.out + out.err
    assert "bf16 autocast" in out.out + out.err  # the start-up summary's precision
