"""Weights that may be sharded over the processes (FSDP2, through accelerate's FSDP plugin), read and written
whole where a checkpoint, a kept eval or the final save needs them, and gathered for generation.

With one process or DDP every process holds every weight, and each function here is the plain operation. Under
FSDP2 each process holds a shard: `full_weights` and `full_optimizer_state` gather them (torch.distributed
.checkpoint's full state dicts, every process taking part, the main one receiving), `load_full` hands each
process its shard of a full state, and `gathered` unshards the parameters around a generation call, which runs
submodules outside the sharded root's forward.

accelerate enables its FSDP plugin only for GPU process groups; on a CPU (gloo) group `enable_fsdp_on_cpu`
turns the same plugin on from the same accelerate config, so that FSDP2 runs and is tested here too.

Under DeepSpeed ZeRO (engine/zero.py) the optimizer is partitioned: `full_optimizer_state` gathers every
process's partition to the main one, and `load_full` gives each process back its own. ZeRO-1/2 keep the
parameters whole on every process; ZeRO-3 partitions them too (`is_partitioned`), and DeepSpeed's module hooks
gather each module's parameters around its forward and backward, generation included (so `gathered` has nothing
to do); the whole weights for a checkpoint, a kept eval or the final save are gathered with
`deepspeed.zero.GatheredParameters` (`whole`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch
import torch.distributed as torch_dist
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import FSDPModule

from directalign.engine import zero
from directalign.errors import ConfigError

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


def enable_fsdp_on_cpu(accelerator) -> None:
    """Turn on accelerate's FSDP plugin (configured by `accelerate launch --config_file` through the FSDP_* env)
    for a CPU process group, which accelerate itself leaves as plain data parallel."""
    if zero.requested():  # DeepSpeed is built by StepOptimizer.prepare, not by accelerate's plugin
        zero.check_request()
        return
    wanted = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    state = accelerator.state
    if wanted and accelerator.distributed_type == DistributedType.MULTI_CPU:
        plugin = FullyShardedDataParallelPlugin()
        if plugin.fsdp_version != 2:
            raise ConfigError("on a CPU directalign runs FSDP2 only: set fsdp_version: 2 in the accelerate config")
        state.distributed_type = DistributedType.FSDP
        state.fsdp_plugin = plugin


def sharding_requested() -> bool:
    """Whether the launch asks for the parameters sharded (FSDP, or DeepSpeed ZeRO-3), before any model is
    prepared."""
    fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    return fsdp or (zero.requested() and zero.requested_stage() == 3)


def is_sharded(model: torch.nn.Module | None) -> bool:
    """Whether FSDP2 holds the model's parameters in shards (read off the modules, not accelerate's state)."""
    return model is not None and any(isinstance(m, FSDPModule) for m in model.modules())


def is_partitioned(model: torch.nn.Module | None) -> bool:
    """Whether DeepSpeed ZeRO-3 holds the model's parameters in partitions (its parameters carry `ds_id`)."""
    return model is not None and any(hasattr(p, "ds_id") for p in model.parameters())


def numel(param: torch.Tensor) -> int:
    """A parameter's size, also when ZeRO-3 holds only a partition of it."""
    return int(getattr(param, "ds_numel", param.numel()))


@contextlib.contextmanager
def whole(params, write: bool = False) -> Iterator[None]:
    """ZeRO-3's partitioned `params` whole on every process inside the block (every process must enter it);
    with `write`, what the main process writes into them is partitioned again on the way out. A no-op for
    parameters that are not partitioned."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=0 if write else None):
        yield


def _trainable_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def full_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable weights, whole (on the main process under FSDP; every process must call it)."""
    if not is_sharded(model):
        trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        with whole([p for _, p in trainable]):
            return {n: p.detach().cpu().clone() for n, p in trainable}
    names = _trainable_names(model)
    return {n: t.clone() for n, t in get_model_state_dict(model, options=FULL).items() if n in names}


def full_model_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """Every weight, whole, on the main process under FSDP and on every process under ZeRO-3 (for
    save_pretrained); None when the model holds them whole already."""
    if is_partitioned(model):
        copies: dict[int, torch.Tensor] = {}  # a tied weight stays one tensor, which save_pretrained writes once
        with whole(list(model.parameters())):
            return {k: copies.setdefault(id(v), v.detach().cpu().clone())
                    for k, v in model.state_dict(keep_vars=True).items()}
    if not is_sharded(model):
        return None
    return get_model_state_dict(model, options=FULL)


def full_optimizer_state(model: torch.nn.Module, optimizer) -> dict | None:
    """The optimizer state for a checkpoint (every process must call it). Under ZeRO, on the main process:
    {"zero": {"stage", "world", "ranks": [each process's JSON part]}, "partitions": [each process's tensors]}."""
    if zero.is_zero_optimizer(optimizer):
        mine = zero.partition_state(optimizer)
        world = torch_dist.get_world_size() if torch_dist.is_initialized() else 1
        parts: list | None = [None] * world if _rank() == 0 else None
        if world > 1:
            torch_dist.gather_object(mine, parts, dst=0)
        else:
            parts = [mine]
        if parts is None:
            return None
        meta = {"stage": zero.requested_stage(), "world": world, "ranks": [m for _, m in parts]}
        return {"zero": meta, "partitions": [t for t, _ in parts]}
    if not is_sharded(model):
        return optimizer.state_dict()
    return get_optimizer_state_dict(model, getattr(optimizer, "optimizer", optimizer), options=FULL)


def load_full(model: torch.nn.Module, weights: dict, optimizer=None, optimizer_state=None) -> None:
    """Give each process its part of full trainable weights (and optimizer state)."""
    if optimizer is not None and "zero" in optimizer_state and not zero.is_zero_optimizer(optimizer):
        raise ConfigError("the checkpoint holds DeepSpeed ZeRO partitions of the optimizer: resume it with the "
                          "same accelerate config, or start over with --overwrite-output-dir true")
    if not is_sharded(model):
        params = dict(model.named_parameters())
        with whole([params[name] for name in weights], write=True), torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value.to(params[name].device))
        if optimizer is not None and zero.is_zero_optimizer(optimizer):
            _load_zero(optimizer, optimizer_state)
        elif optimizer is not None:
            optimizer.load_state_dict(optimizer_state)
        return
    options = StateDictOptions(full_state_dict=True, strict=False)
    set_model_state_dict(model, weights, options=options)
    if optimizer is not None:
        set_optimizer_state_dict(model, getattr(optimizer, "optimizer", optimizer), optimizer_state, options=options)


def _rank() -> int:
    return torch_dist.get_rank() if torch_dist.is_initialized() else 0


def _load_zero(optimizer, state: dict) -> None:
    meta = state.get("zero")
    if meta is None:
        raise ConfigError("the checkpoint holds a whole optimizer state, not ZeRO partitions: resume it without "
                          "DeepSpeed, or start over with --overwrite-output-dir true")
    world = torch_dist.get_world_size() if torch_dist.is_initialized() else 1
    if meta["world"] != world:
        raise ConfigError(f"the checkpoint holds the ZeRO partitions of {meta['world']} processes; resume it on "
                          f"{meta['world']} (this run has {world}), or start over with --overwrite-output-dir true")
    rank = _rank()
    zero.load_partition_state(optimizer, state["partitions"][rank], meta["ranks"][rank])


@contextlib.contextmanager
def gathered(model: torch.nn.Module) -> Iterator[None]:
    """Every parameter whole on every process inside the block (FSDP2's unshard; a no-op when unsharded)."""
    shards = [m for m in model.modules() if isinstance(m, FSDPModule)]
    if shards:
        # FSDP2 picks its root at the first forward; a generation before any training forward runs the layers
        # without the root, and each would claim to be root. Initialise from the outermost module first (what
        # the root's pre-forward does; idempotent, and there is no public call for it in torch 2.13).
        shards[0]._get_fsdp_state()._lazy_init()
    for m in shards:
        m.unshard()
    try:
        yield
    finally:
        for m in shards:
            m.reshard()
