"""The processes of a run: the accelerator, who this process is, and how the processes share what they computed.

Everything goes through torch.distributed as accelerate sets it up (gloo on CPU, nccl on CUDA, FSDP or DeepSpeed
from an accelerate config file); with one process every exchange below is the identity. Launch with
`python -m torch.distributed.run --nproc_per_node N -m directalign COMMAND ...` or
`accelerate launch --multi_gpu --num_processes N -m directalign COMMAND ...`; a run that asked for N processes
and got fewer stops at start-up (accelerate's `--cpu` launcher starts one: accelerate issue 2741).
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from directalign.errors import ConfigError


def make_accelerator(bf16: bool):
    """An Accelerator with bf16 autocast or none, on the CPU when there is no CUDA (so that torchrun's processes
    form a gloo group instead of each running alone). accelerate keeps one mixed-precision setting per process;
    a library call (a sweep, a notebook) may train in fp32 and then bf16, so that setting is reset when it
    differs, leaving the process group as it is."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    from directalign.engine import zero
    from directalign.engine.sharding import enable_fsdp_on_cpu

    wanted = "bf16" if bf16 else "no"
    state = AcceleratorState._shared_state
    if state and str(state.get("_mixed_precision", wanted)) != wanted:
        AcceleratorState._reset_state(reset_partial_state=False)
    with zero.hidden_from_accelerate() if zero.requested() else contextlib.nullcontext():
        accelerator = Accelerator(mixed_precision=wanted, cpu=not torch.cuda.is_available())
    enable_fsdp_on_cpu(accelerator)
    return accelerator


def requested_processes(expected: int | None) -> tuple[int | None, str]:
    """How many processes this run was asked to have, and who asked: the num_processes key, else an
    `accelerate launch --num_processes N` in the parent process's command line (accelerate does not pass it on)."""
    if expected is not None:
        return expected, "num_processes"
    try:
        with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
            parent = f.read().decode(errors="replace").split("\0")
    except OSError:
        return None, ""
    joined = " ".join(parent)
    if not re.search(r"accelerate(\.commands\.launch\b|\S*\s+launch\b)", joined):
        return None, ""
    for i, part in enumerate(parent):
        match = re.fullmatch(r"--num[_-]processes(?:=(\d+))?", part)
        if match:
            value = match.group(1) or (parent[i + 1] if i + 1 < len(parent) else "")
            if value.isdigit():
                return int(value), "accelerate launch --num_processes"
    return None, ""


def check_process_count(actual: int, expected: int | None) -> None:
    wanted, source = requested_processes(expected)
    if wanted is None or wanted == actual:
        return
    advice = ""
    if source.startswith("accelerate") and not torch.cuda.is_available():
        advice = (
            " On a CPU, `accelerate launch --cpu` starts a single process (accelerate issue 2741): use "
            f"`accelerate launch --multi_gpu --num_processes {wanted} -m directalign ...` or "
            f"`python -m torch.distributed.run --nproc_per_node {wanted} -m directalign ...`."
        )
    raise ConfigError(f"{source} asked for {wanted} processes but the run has {actual}.{advice}")


def match_threads_to_cores(local_processes: int) -> None:
    """One process per core group: intra-op threads = cores / processes on this machine, unless OMP_NUM_THREADS
    says otherwise (torchrun sets it to 1 with several processes)."""
    if "OMP_NUM_THREADS" in os.environ or local_processes <= 1:
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, cores // max(local_processes, 1)))


@dataclass
class Dist:
    """This process's place in the run and the exchanges between processes."""

    rank: int = 0
    world: int = 1
    local_world: int = 1
    # Whether evaluation and generation are shared out. Under FSDP and ZeRO-3 every forward pass is collective, so every
    # process must run the same passes: each one does all the work (`shard` keeps everything, `gather` adds
    # nothing), which gives the same results.
    shares_work: bool = True
    sharding: str = ""  # "ZeRO-2" or "ZeRO-3" under DeepSpeed, for the start-up summary (FSDP2 is read off the model)

    @classmethod
    def from_accelerator(cls, accelerator) -> Dist:
        if accelerator is None:
            return cls()
        local = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
        return cls(accelerator.process_index, accelerator.num_processes, local)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1 and torch_dist.is_available() and torch_dist.is_initialized()

    def bounds(self, n: int) -> tuple[int, int]:
        """[start, end) of this process's contiguous share of n items (shares differ in size by at most 1)."""
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (self.rank < extra)

    def shard(self, items: list) -> list:
        start, end = self.bounds(len(items))
        return list(items[start:end])

    def share_bounds(self, n: int) -> tuple[int, int]:
        """This process's part of evaluation or generation work over n items (all of it under FSDP)."""
        return self.bounds(n) if self.shares_work else (0, n)

    def share(self, items: list) -> list:
        start, end = self.share_bounds(len(items))
        return list(items[start:end])

    def pool(self, items: list) -> list:
        """The results of every process's `share` of some work, in order: gathered when the work was shared out,
        this process's own when every process did all of it."""
        return self.gather(items) if self.shares_work else list(items)

    def gather(self, items: list) -> list:
        """Every process's list, concatenated in rank order."""
        if not self.active:
            return list(items)
        parts: list = [None] * self.world
        torch_dist.all_gather_object(parts, list(items))
        return [item for part in parts for item in part]

    def sum(self, values: list[float]) -> list[float]:
        """Elementwise sum over processes, in float64 (gloo cannot reduce bf16; sums of counts stay exact)."""
        if not self.active or not values:
            return [float(v) for v in values]
        tensor = torch.tensor(values, dtype=torch.float64, device=self.device)
        torch_dist.all_reduce(tensor)
        return tensor.tolist()

    def any(self, flag: bool) -> bool:
        return self.sum([float(flag)])[0] > 0

    def broadcast(self, value: object) -> object:
        """The main process's value, on every process."""
        if not self.active:
            return value
        box = [value]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    @property
    def device(self) -> torch.device:
        backend = torch_dist.get_backend() if self.active else "gloo"
        return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
