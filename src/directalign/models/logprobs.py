"""Per-response log-probs from one forward pass, whatever the batch layout.

The decoder runs over the batch once; only the hidden states that predict a response token are taken, and they
go through the LM head in chunks inside a custom autograd function that recomputes each chunk's logits in the
backward pass, so the (tokens x vocabulary) logits tensor is never held at once: with a 49k vocabulary that
tensor, not the model, is what fills memory in DPO. The head runs in fp32 even under bf16 autocast: a log-softmax
over 49k logits rounded to bf16 (8 significant bits) would err by a few hundredths of a nat per token.

Attention implementations and the layouts' masks (check_attention, attention_mask_for):
- sdpa: per-record block attention (directalign.models.attention), which computes only the blocks the mask lets
  through, the prompt with the fused causal kernel;
- eager: the 4D mask as additive 0 / -inf floats;
- flash_attention_2/3 (varlen kernels) take no arbitrary mask, only padding or packed sequences that transformers
  detects from position_ids restarting at 0. That expresses independent causal sequences, i.e. the padded layout,
  not a prompt shared by sibling responses, so they are accepted with layout "padded" only.
- flex_attention (CUDA): the shared and packed layouts' mask as a BlockMask
  (torch.nn.attention.flex_attention.create_block_mask with mask_mod = lambda b, h, q, kv: mask[b, q, kv]), which
  skips the fully masked 128 x 128 blocks (other records, sibling responses); transformers takes a 4D BlockMask as
  it is. FlexAttention has no CPU backward, so on a CPU it is refused at start-up; its equivalence with the padded
  layout is tested on CUDA (tests marked `cuda`).
Any other combination is refused with a ConfigError, never run with a mask the kernel would ignore.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from directalign.data.batching import SequenceBatch
from directalign.models.attention import SEGMENT_ATTENTION, attention_implementation
from directalign.models.kernels import check_attention


class _ChunkedTokenLogProbs(torch.autograd.Function):
    """log softmax(h @ W^T + b)[label] for N rows, `chunk` rows at a time; nothing of size N x V is kept.

    When only the hidden states need a gradient (LoRA: the head is frozen), the forward pass also computes each
    row's Jacobian d logp / d h = (onehot(label) - softmax(logits)) @ W, an N x d tensor, while the chunk's logits
    are at hand, so that the backward pass is one multiplication by grad_out instead of recomputing every logit
    (the head's cost falls from three N x d x V matmuls to two). A trainable head takes the recomputing path.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk):
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        early = need_h and not need_w and not need_b
        jacobian = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device) if early else None
        with _no_autocast(hidden):
            for s in range(0, hidden.shape[0], chunk):
                logits = _logits(hidden[s : s + chunk], weight, bias)
                lse = logits.logsumexp(1)
                out[s : s + chunk] = logits.gather(1, labels[s : s + chunk, None]).squeeze(1) - lse
                if early:
                    g = _logp_grad_wrt_logits(logits, lse, labels[s : s + chunk])
                    jacobian[s : s + chunk] = g @ weight.float()
        if early:
            ctx.save_for_backward(jacobian)
        else:
            ctx.save_for_backward(hidden, weight, bias, labels)
        ctx.early, ctx.chunk, ctx.hidden_dtype = early, chunk, hidden.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        if ctx.early:
            (jacobian,) = ctx.saved_tensors
            return (jacobian * grad_out[:, None]).to(ctx.hidden_dtype), None, None, None, None
        hidden, weight, bias, labels = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        with _no_autocast(hidden):
            _chunked_backward(ctx.chunk, hidden, weight, bias, labels, grad_out, grad_h, grad_w, grad_b)
        grad_w = grad_w.to(weight.dtype) if need_w else None
        grad_b = grad_b.to(bias.dtype) if need_b else None
        return grad_h, grad_w, grad_b, None, None


def _chunked_backward(chunk, hidden, weight, bias, labels, grad_out, grad_h, grad_w, grad_b) -> None:
    for s in range(0, hidden.shape[0], chunk):
        h = hidden[s : s + chunk]
        logits = _logits(h, weight, bias)
        g = _logp_grad_wrt_logits(logits, logits.logsumexp(1), labels[s : s + chunk])
        g *= grad_out[s : s + chunk, None]
        if grad_h is not None:
            grad_h[s : s + chunk] = (g @ weight.float()).to(hidden.dtype)
        if grad_w is not None:
            grad_w += g.T @ h.float()
        if grad_b is not None:
            grad_b += g.sum(0)


def _logp_grad_wrt_logits(logits: torch.Tensor, lse: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """d logp[label] / d logits = onehot(label) - softmax(logits), computed in place over `logits`."""
    g = logits.sub_(lse[:, None]).exp_().neg_()
    return g.scatter_add_(1, labels[:, None], torch.ones_like(g[:, :1]))


def _no_autocast(tensor: torch.Tensor):
    return torch.autocast(tensor.device.type, enabled=False)


def _logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    logits = hidden.float() @ weight.T.float()
    if bias is not None and bias.numel():
        logits = logits + bias.float()
    return logits


def token_logprobs(
    hidden: torch.Tensor, head: nn.Linear, labels: torch.Tensor, chunk_size: int | None = 1024
) -> torch.Tensor:
    """Log-prob of each label under `head`; chunk_size=None computes all logits at once (the plain reference)."""
    bias = head.bias if head.bias is not None else torch.empty(0, device=hidden.device)
    if chunk_size is None:
        with _no_autocast(hidden):
            logits = _logits(hidden, head.weight, head.bias)
            return logits.gather(1, labels[:, None]).squeeze(1) - logits.logsumexp(1)
    return _ChunkedTokenLogProbs.apply(hidden, head.weight, bias, labels, chunk_size)


def causal_lm(model: nn.Module) -> nn.Module:
    """The *ForCausalLM module under PEFT / accelerate wrappers."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        else:
            return model


def attention_mask_for(model: nn.Module, mask: torch.Tensor, dtype: torch.dtype):
    """The layout's mask in the form the model's attention implementation takes (see the module docstring)."""
    if mask.dim() != 4:
        return mask
    impl = getattr(causal_lm(model).config, "_attn_implementation", "sdpa") or "sdpa"
    check_attention(impl, "shared/packed")
    if impl == "eager":
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)
    if impl == "flex_attention":
        return block_mask(mask)
    return mask


def block_mask(mask: torch.Tensor):
    """The (rows, 1, T, T) bool mask as a FlexAttention BlockMask (blocks wholly masked are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    dense = mask[:, 0].contiguous()

    def mask_mod(b, h, q, kv):
        return dense[b, q, kv]

    rows, _, length, _ = mask.shape
    return create_block_mask(mask_mod, B=rows, H=None, Q_LEN=length, KV_LEN=length, device=mask.device)


def decoder_hidden(model: nn.Module, batch: SequenceBatch, dtype: torch.dtype) -> torch.Tensor:
    """The decoder's last hidden states (rows, T, H) over a batch in any layout: its mask in the form the
    attention implementation takes, sdpa per record where the layout has record spans. `model` is a causal LM or
    a sequence classifier (anything whose unwrapped model has get_decoder), under PEFT / accelerate wrappers."""
    lm = causal_lm(model)
    mask = attention_mask_for(model, batch.attention_mask, dtype)
    impl, extra = lm.config._attn_implementation, {}
    if batch.record_spans is not None and impl == "sdpa":
        impl, extra = SEGMENT_ATTENTION, {"record_spans": batch.record_spans}
    with attention_implementation(lm.config, impl):
        return lm.get_decoder()(
            input_ids=batch.input_ids,
            attention_mask=mask,
            position_ids=batch.position_ids,
            use_cache=False,
            **extra,
        ).last_hidden_state


class ResponseLogProbs(nn.Module):
    """Wraps a causal LM so that forward(batch) returns the log-prob of every scored response token (N,).

    Being an nn.Module whose forward does the whole computation, it can be handed to accelerate.prepare (DDP,
    FSDP) like any model.
    """

    def __init__(self, model: nn.Module, chunk_size: int | None = 1024):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        # What FSDP's transformer-based auto-wrap shards by (the decoder layer class), as on the model itself.
        self._no_split_modules = getattr(causal_lm(model), "_no_split_modules", None)

    def forward(self, batch: SequenceBatch) -> torch.Tensor:
        head = causal_lm(self.model).get_output_embeddings()
        hidden = decoder_hidden(self.model, batch, next(head.parameters()).dtype)
        selected = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.gather_pos)
        return token_logprobs(selected, head, batch.gather_labels, self.chunk_size)

    @contextlib.contextmanager
    def reference(self):
        """The reference policy: the same weights with LoRA adapters disabled (no second copy in memory)."""
        inner = self.model
        while not hasattr(inner, "disable_adapter") and hasattr(inner, "module"):
            inner = inner.module
        if not hasattr(inner, "disable_adapter"):
            raise RuntimeError("the adapter-disabled reference needs a PEFT model")
        with inner.disable_adapter():
            yield self


def sequence_logps(token_logps: torch.Tensor, batch: SequenceBatch) -> torch.Tensor:
    """Sum the token log-probs of each response: (num_responses,)."""
    out = torch.zeros(batch.num_responses, dtype=token_logps.dtype, device=token_logps.device)
    return out.index_add(0, batch.gather_response, token_logps)
