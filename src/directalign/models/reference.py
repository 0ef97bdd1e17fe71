"""Reference policies: where pi_ref's log-probs come from.

- AdapterReference: the policy's own weights with its LoRA adapters disabled, so no second copy is in memory.
- FrozenReference: a separate frozen model (full fine-tuning, or a reference other than the base).
- CachedReference: log-probs computed once before training (`precompute_ref_log_probs`), carried by the records
  into each batch, so training runs no reference forward at all. They are cached on disk under
  DIRECTALIGN_HOME/ref-cache, keyed by everything they depend on (reference_cache_key), and so are reused across
  epochs, runs and sweeps that share the reference, the data and the tokenisation.
Reference-free losses (SimPO, ORPO, CPO) use none, and no reference is loaded or run for them.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from directalign.data.batching import SequenceBatch, build_batch
from directalign.data.types import TokenizedRecord
from directalign.engine.files import os_error_of, write_error
from directalign.models.loading import directalign_home
from directalign.models.logprobs import ResponseLogProbs, sequence_logps
from directalign.models.precision import store_frozen_linears_in


class AdapterReference:
    def __init__(self, policy: ResponseLogProbs):
        self.policy = policy

    @torch.no_grad()
    def sequence_logps(self, batch: SequenceBatch) -> torch.Tensor:
        with self.policy.reference():
            return sequence_logps(self.policy(batch), batch)


class FrozenReference:
    def __init__(self, model: torch.nn.Module, chunk_size: int | None = 1024):
        model = model.eval()
        model.requires_grad_(False)
        self.scorer = ResponseLogProbs(model, chunk_size)

    @classmethod
    def copy_of(cls, model: torch.nn.Module, chunk_size: int | None = 1024) -> FrozenReference:
        return cls(copy.deepcopy(model), chunk_size)

    @torch.no_grad()
    def sequence_logps(self, batch: SequenceBatch) -> torch.Tensor:
        return sequence_logps(self.scorer(batch), batch)


def frozen_copy(model: torch.nn.Module, bf16: bool = False) -> FrozenReference:
    """A frozen copy of `model` as a reference; under bf16 its linear weights are stored in bf16."""
    reference = FrozenReference.copy_of(model)
    if bf16:
        store_frozen_linears_in(reference.scorer.model, torch.bfloat16)
    return reference


def live_reference(cfg, policy: ResponseLogProbs) -> AdapterReference | FrozenReference:
    """The reference of a run that starts from `policy`: the policy with its adapter disabled under LoRA (no
    second copy in memory), else a frozen copy of the starting weights."""
    return AdapterReference(policy) if cfg.use_peft else frozen_copy(policy.model, cfg.bf16)


class CachedReference:
    """Reads the reference log-probs that records carry (see with_reference_logps) out of each batch; a batch of
    other sequences (samples for a held-out KL) goes to `live`, the reference itself, when one is kept."""

    def __init__(self, live: AdapterReference | FrozenReference | None = None):
        self.live = live

    def sequence_logps(self, batch: SequenceBatch) -> torch.Tensor:
        if batch.ref_logps is not None:
            return batch.ref_logps.to(batch.input_ids.device)
        if self.live is None:
            raise RuntimeError(
                "these sequences have no precomputed reference log-probs and no live reference is kept "
                "(full fine-tuning with precompute_ref_log_probs and kl_prompts 0)"
            )
        return self.live.sequence_logps(batch)


def weights_fingerprint(model: torch.nn.Module, skip: str = "lora_") -> str:
    """sha256 of every weight's name, dtype and bytes; names containing `skip` (the adapters a reference runs
    without) are left out, and tied weights are hashed once."""
    digest, seen = hashlib.sha256(), set()
    for name, tensor in sorted(model.state_dict().items()):
        if skip in name or tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def records_fingerprint(records: Sequence[TokenizedRecord]) -> str:
    digest = hashlib.sha256()
    for rec in records:
        lengths = [len(rec.prompt_ids)] + [len(r) for r in rec.response_ids]
        tokens = [rec.prompt_ids, *rec.response_ids]
        digest.update(np.asarray(lengths + [t for ids in tokens for t in ids], dtype=np.int64).tobytes())
    return digest.hexdigest()


def reference_cache_key(weights: str, records: Sequence[TokenizedRecord], **settings) -> str:
    """One hash of the reference weights' fingerprint, the token ids and the settings that shape the log-probs
    (model name, tokenizer, max lengths, precision); any change gives a new key, so a stale entry is never read."""
    parts = {"weights": weights, "records": records_fingerprint(records), **settings}
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


@torch.no_grad()
def compute_reference_logps(
    score: Callable[[SequenceBatch], torch.Tensor],
    records: Sequence[TokenizedRecord],
    *,
    pad_token_id: int,
    batch_size: int,
    layout: str,
    max_tokens_per_row: int | None = None,
    device: torch.device | str = "cpu",
    show_progress: bool = False,
) -> list[list[float]]:
    """Per-response log-probs of every record under `score` (batch -> (num_responses,)), batch_size records at
    once, with a progress bar (rate, ETA) when show_progress."""
    out: list[list[float]] = []
    starts = range(0, len(records), batch_size)
    bar = tqdm(starts, desc="reference log-probs", unit="batch", disable=not show_progress, dynamic_ncols=True)
    for start in bar:
        chunk = list(records[start : start + batch_size])
        batch = build_batch(chunk, pad_token_id, layout, max_tokens_per_row).to(device)
        logps = score(batch).float().cpu().tolist()
        for rec in chunk:
            out.append(logps[: len(rec.response_ids)])
            logps = logps[len(rec.response_ids) :]
    return out


def cache_path(key: str) -> Path:
    return directalign_home() / "ref-cache" / f"{key}.safetensors"


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_cached_logps(key: str, num_responses: list[int]) -> tuple[list[list[float]] | None, str]:
    """The log-probs stored under `key`, verified against the checksum stored with them, or (None, why not):
    "" when there is no entry, else what is wrong with it (it is then recomputed and rewritten)."""
    path = cache_path(key)
    if not path.is_file():
        return None, ""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        stored = load_file(str(path))
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        return None, f"unreadable ({(str(err).splitlines() or [type(err).__name__])[0][:80]})"
    if metadata.get("sha256") != _digest(stored):
        return None, "its checksum does not match"
    if stored.get("num_responses") is None or stored["num_responses"].tolist() != num_responses:
        return None, "it holds other records"
    flat = stored["logps"].tolist()
    bounds = np.cumsum([0, *num_responses]).tolist()
    return [flat[a:b] for a, b in zip(bounds, bounds[1:], strict=False)], ""


def write_cached_logps(key: str, logps: list[list[float]]) -> None:
    """Store log-probs under `key` with their checksum, atomically (a reader never sees half a file)."""
    tensors = {
        "logps": torch.tensor([x for rec in logps for x in rec], dtype=torch.float32),
        "num_responses": torch.tensor([len(rec) for rec in logps], dtype=torch.int64),
    }
    path = cache_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".staging-{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, staging, metadata={"sha256": _digest(tensors)})
        os.replace(staging, path)
    except Exception as err:
        if (os_error := os_error_of(err)) is None:
            raise
        raise write_error(os_error, path) from err
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


def cached_reference_logps(key: str, compute: Callable[[], list[list[float]]], num_responses: list[int]):
    """The log-probs stored under `key` (verified), or `compute()`'s, then stored. Returns (log-probs per
    record, whether they came from the cache)."""
    logps, _ = read_cached_logps(key, num_responses)
    if logps is not None:
        return logps, True
    logps = compute()
    write_cached_logps(key, logps)
    return logps, False


def with_reference_logps(records: Sequence[TokenizedRecord], logps: list[list[float]]) -> list[TokenizedRecord]:
    return [dataclasses.replace(rec, ref_logps=lp) for rec, lp in zip(records, logps, strict=True)]
