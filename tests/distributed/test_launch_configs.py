"""The accelerate config files in examples/accelerate parse as accelerate reads them, and say what they claim."""

import pytest
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.utils import DistributedType

from directalign.config import load_config
from directalign.engine import zero
from directalign.engine.sharding import enable_fsdp_on_cpu
from directalign.errors import ConfigError
from directalign.training.iterative import iterative_dpo
from tests.conftest import PROJECT_ROOT

EXAMPLES = PROJECT_ROOT / "examples" / "accelerate"


@pytest.mark.parametrize(
    "name, kind, processes",
    [("ddp", DistributedType.MULTI_GPU, 2), ("fsdp2", DistributedType.FSDP, 2), ("zero2", DistributedType.DEEPSPEED, 2),
     ("zero3", DistributedType.DEEPSPEED, 2), ("multi-node", DistributedType.MULTI_GPU, 16)],
)
def test_each_example_parses_as_accelerate_reads_it(name, kind, processes):
    config = load_config_from_file(str(EXAMPLES / f"{name}.yaml"))
    assert config.distributed_type == kind and config.num_processes == processes
    if name == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2
    if name.startswith("zero"):
        assert config.deepspeed_config["zero_stage"] == int(name[-1])
    if name == "multi-node":
        assert config.num_machines == 2 and config.main_process_ip


def test_a_zero_stage_deepspeed_does_not_have_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "4")
    with pytest.raises(ConfigError, match="zero_stage is 4: give 1, 2 or 3"):
        enable_fsdp_on_cpu(accelerator=None)


def test_iterative_dpo_under_zero3_is_refused_with_the_reason(monkeypatch, tiny_model_dir, tmp_path):
    """Each round merges its adapter into the base weights, which ZeRO-3 holds in partitions."""
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    cfg = load_config("iterative-dpo", overrides={"model": str(tiny_model_dir), "output_dir": str(tmp_path / "out"),
                                                  "kl_prompts": 0})
    with pytest.raises(ConfigError, match="merges each round's adapter.*ZeRO-3 shard"):
        iterative_dpo(cfg)


def test_a_deepspeed_config_file_is_refused_not_ignored(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "ds.json")
    with pytest.raises(ConfigError, match="deepspeed_config_file.* is not read"):
        enable_fsdp_on_cpu(accelerator=None)


def test_a_clipping_other_than_max_grad_norm_is_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_GRADIENT_CLIPPING", "0.5")
    with pytest.raises(ConfigError, match=r"gradient_clipping \(0.5\) is not max_grad_norm \(1.0\)"):
        zero.check_keys(load_config("train"))
