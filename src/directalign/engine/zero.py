"""DeepSpeed ZeRO stages 1, 2 and 3: the optimizer state (with stage 2 also the gradients, with stage 3 also the
parameters) split over the processes.

An accelerate config with `distributed_type: DEEPSPEED` (examples/accelerate/zero2.yaml) asks for it; accelerate
passes the request on as ACCELERATE_USE_DEEPSPEED and ACCELERATE_DEEPSPEED_* variables. directalign reads them
and builds the DeepSpeed engine itself (`deepspeed.initialize` over the run's own AdamW), instead of through
`accelerator.prepare`, whose DeepSpeed wrapper steps the optimizer inside `backward`: here the micro-batches
accumulate locally and `step` is the boundary (`managed_gradient_accumulation: false`), so the loop, the
normalisation by counts and the non-finite guard are those of every other run. The same path runs on a CPU
(DeepSpeed's CPU accelerator, gloo; tested) and is meant for CUDA (nccl; not run yet).

What the run's keys decide, not the accelerate config: the micro-batch (per_device_train_batch_size), clipping
(max_grad_norm) and precision (bf16 is autocast over fp32 weights, as without DeepSpeed); the accelerate config
decides the stage and the offload devices.

Checkpoints keep directalign's format, not DeepSpeed's (a pickle): each process's flat fp32 partition of the
trainable weights and its AdamW moments are tensors (`partition_state`), the rest JSON; a partition belongs to one
world size, so a checkpoint resumes only on as many processes as wrote it.

ZeRO-3 partitions the parameters as well. The model is loaded whole on every process and partitioned when the
engine is built (`zero3_init_flag`, which would build it partitioned, is not read); DeepSpeed's hooks gather
each module's parameters around its forward and backward, so every forward pass is collective and every process
runs the same evaluation and generation passes (`Dist.shares_work`, as under FSDP2); the whole weights for a
checkpoint or the final save are gathered by engine/sharding.py. `offload_param_device` is honoured.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

from directalign.errors import ConfigError

STAGE_ENV = "ACCELERATE_DEEPSPEED_ZERO_STAGE"
SUPPORTED_STAGES = (1, 2, 3)


def requested() -> bool:
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def requested_stage() -> int:
    value = os.environ.get(STAGE_ENV, "2")
    if not value.isdigit():
        raise ConfigError(f"the accelerate config's zero_stage is {value!r}: give 1, 2 or 3")
    return int(value)


def check_request() -> int:
    """The ZeRO stage asked for, once it is known to run here; a ConfigError naming what is missing."""
    stage = requested_stage()
    if stage not in SUPPORTED_STAGES:
        raise ConfigError(f"the accelerate config's zero_stage is {stage}: give 1, 2 or 3")
    if os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE"):
        raise ConfigError(
            "a DeepSpeed config file (deepspeed_config_file) is not read: give zero_stage and the offload "
            "devices in the accelerate config; the batch, clipping and precision come from directalign's keys"
        )
    try:
        # The step as the accumulation boundary (managed_gradient_accumulation: false) came with DeepSpeed 0.19;
        # an older one would ignore the key and reduce at every micro-batch.
        from deepspeed.runtime.constants import MANAGED_GRADIENT_ACCUMULATION  # noqa: F401
    except ImportError as err:
        raise ConfigError(f"the accelerate config asks for DeepSpeed, and DeepSpeed >= 0.19.8 does not import "
                          f"({err}): pip install 'directalign[deepspeed]'") from err
    return stage


def check_keys(cfg) -> None:
    """The accelerate config may not say otherwise than the run's keys, which decide (see the module docstring)."""
    clipping = os.environ.get("ACCELERATE_GRADIENT_CLIPPING", "")
    if clipping and float(clipping) != float(cfg.max_grad_norm):
        raise ConfigError(
            f"the accelerate config's gradient_clipping ({clipping}) is not max_grad_norm ({cfg.max_grad_norm}): "
            "directalign clips by max_grad_norm; give the same value, or drop gradient_clipping from the config"
        )


@contextlib.contextmanager
def hidden_from_accelerate() -> Iterator[None]:
    """accelerate, told to use DeepSpeed, would hand `prepare` and `backward` to its own DeepSpeed wrapper and
    turn its autocast off; directalign drives the engine itself, so the Accelerator is built as for data
    parallelism (the process group is the same)."""
    saved = os.environ.get("ACCELERATE_USE_DEEPSPEED")
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "false"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("ACCELERATE_USE_DEEPSPEED", None)
        else:
            os.environ["ACCELERATE_USE_DEEPSPEED"] = saved


def engine_config(cfg, stage: int) -> dict:
    offload = os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_OPTIMIZER_DEVICE", "none")
    zero: dict = {"stage": stage}
    if offload != "none":
        zero["offload_optimizer"] = {"device": offload}
    offload_param = os.environ.get("ACCELERATE_DEEPSPEED_OFFLOAD_PARAM_DEVICE", "none")
    if stage == 3 and offload_param != "none":
        zero["offload_param"] = {"device": offload_param}
    return {
        "train_micro_batch_size_per_gpu": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": 1,  # the run accumulates; step() is the boundary
        "managed_gradient_accumulation": False,
        "gradient_clipping": float(cfg.max_grad_norm),
        "zero_optimization": zero,
        "zero_force_ds_cpu_optimizer": False,  # the run's torch AdamW, also with the optimizer offloaded
        "steps_per_print": 2**31,
    }


def initialize(model: torch.nn.Module, optimizer: torch.optim.Optimizer, cfg, stage: int):
    """The DeepSpeed engine over `model` and the run's AdamW (whose param groups ZeRO rebinds to its partitions,
    so the run's scheduler keeps driving the learning rate)."""
    import deepspeed

    if not torch.cuda.is_available():
        # DeepSpeed's CPU backend compiles a shared-memory all-reduce (with the machine's C++ compiler, at the
        # first run) that only its inference path uses; training reduces through gloo.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=engine_config(cfg, stage))
    return engine


def is_zero_optimizer(optimizer) -> bool:
    return hasattr(optimizer, "single_partition_of_fp32_groups") or hasattr(optimizer, "fp32_partitioned_groups_flat")


def fp32_partitions(optimizer) -> list[torch.Tensor]:
    """This process's flat fp32 master weights, one per (sub-)group: ZeRO-3 names them otherwise than 1/2."""
    if hasattr(optimizer, "fp32_partitioned_groups_flat"):
        return list(optimizer.fp32_partitioned_groups_flat)
    return list(optimizer.single_partition_of_fp32_groups)


# A process's partition as tensors + JSON.


def partition_state(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """This process's flat fp32 weights and AdamW state, per param group: `<group>.fp32`, `<group>.<name>`."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    flats = fp32_partitions(optimizer)
    for i, flat in enumerate(flats):
        tensors[f"{i}.fp32"] = flat.detach().cpu().clone()
        for name, value in optimizer.optimizer.state.get(flat, {}).items():
            if isinstance(value, torch.Tensor):
                tensors[f"{i}.{name}"] = value.detach().cpu().clone().contiguous()
            else:
                scalars.setdefault(str(i), {})[name] = value
    groups = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.optimizer.param_groups]
    return tensors, {"param_groups": groups, "scalars": scalars,
                     "sizes": [int(f.numel()) for f in flats]}


def load_partition_state(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Put back what `partition_state` took (after the whole weights were copied into the model)."""
    flats = fp32_partitions(optimizer)
    sizes = [int(f.numel()) for f in flats]
    if meta["sizes"] != sizes:
        raise ConfigError(f"the checkpoint's ZeRO partitions hold {meta['sizes']} values, this run's {sizes}: "
                          "it was written for another model or number of processes")
    with torch.no_grad():
        for i, flat in enumerate(flats):
            flat.copy_(tensors[f"{i}.fp32"].to(flat.device))
            state = {name.split(".", 1)[1]: value.to(flat.device) for name, value in tensors.items()
                     if name.split(".", 1)[0] == str(i) and not name.endswith(".fp32")}
            state.update(meta["scalars"].get(str(i), {}))
            if state:
                optimizer.optimizer.state[flat] = state
    for group, saved in zip(optimizer.optimizer.param_groups, meta["param_groups"], strict=True):
        group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
